# License LGPL-3.0 or later (https://www.gnu.org/licenses/lgpl).
"""What every broker store adapter shares (no Odoo): the rows they read, the
selection of a credential's rules, the error a sync shows as is, and the
plan of an incremental run."""

import hashlib
import heapq
import json
from collections import defaultdict, namedtuple

from . import topic_acl

# one active rule of ``iot.acl.rule._rule_table``, in rule order
RuleRow = namedtuple("RuleRow", "name kind group_ids credential_ids company_id rule")
# what chooses a credential's rules (``iot.acl.rule._rule_keys``): its kind,
# company, its owner's groups among those the rules of its company (and the
# global ones) name, and its id when such a rule names it
RuleKey = namedtuple("RuleKey", "kind company_id group_ids credential_id")
# a live credential with its newest live long-lived secret, under its
# username (``iot.store.api._live_logins``); hash and salt: the secret's
# form for one store (None when it has none: issued before the store was on)
LiveLogin = namedtuple(
    "LiveLogin",
    "credential_id username kind company_id user_id superuser expires_at hash salt",
)


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


def applicable_rules(rule_rows):
    """A function of a :class:`RuleKey` that returns the rows of
    ``rule_rows`` about it, in order, cached per key; a key's rules are looked
    up among the global rows and its company's only, so another company's
    rules cost it nothing (topic_acl.rule_applies decides each row)."""
    by_company = defaultdict(list)
    for index, row in enumerate(rule_rows):
        by_company[row.company_id].append((index, row))
    cache = {}

    def applicable(key):
        if key not in cache:
            candidates = heapq.merge(
                by_company.get(None, ()),
                by_company.get(key.company_id, ())
                if key.company_id is not None
                else (),
                key=lambda item: item[0],
            )
            cache[key] = [
                row
                for _index, row in candidates
                if topic_acl.rule_applies(
                    row, key.kind, key.group_ids, key.credential_id, key.company_id
                )
            ]
        return cache[key]

    return applicable
