# License LGPL-3.0 or later (https://www.gnu.org/licenses/lgpl).
"""What every broker store adapter shares (no Odoo): the error a sync shows
as is, and the plan of an incremental run."""

import hashlib
import json


class SyncError(Exception):
    """A sync problem to show as is (configuration, files, broker)."""


def digest(value):
    """A stable fingerprint of a JSON-able ``value``: what was pushed for one
    login, compared at the next run instead of asking the broker."""
    text = json.dumps(value, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def plan(desired, pushed):
    """(logins to push, logins to delete, number unchanged) that turn the
    store Odoo last pushed (``pushed``: {login: digest}) into ``desired``
    ({login: digest})."""
    to_push = sorted(login for login, fp in desired.items() if pushed.get(login) != fp)
    to_delete = sorted(set(pushed) - set(desired))
    return to_push, to_delete, len(desired) - len(to_push)
