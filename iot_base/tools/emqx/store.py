# License LGPL-3.0 or later (https://www.gnu.org/licenses/lgpl).
"""EMQX 5 built-in database users and rules rendered from Odoo's
credentials (no Odoo).

* Users (``POST /api/v5/authentication/password_based%3Abuilt_in_database/
  import_users?type=hash``): ``{user_id, password_hash, salt, is_superuser}``.
  The authenticator is ``password_hash_algorithm = {name = sha256,
  salt_position = prefix}``: EMQX compares ``hex(sha256(salt + password))``
  case-insensitively, using the salt as the raw bytes of the JSON string, so
  the salt is ASCII (a binary salt with bytes >= 0x80 would arrive changed).
  Odoo's secrets are 160 random bits: a salted sha256 is as strong against
  guessing as any KDF, and costs EMQX nothing per CONNECT (PBKDF2 at 25,000
  rounds is ~17 ms of EMQX's CPU each).
* Rules (``PUT /api/v5/authorization/sources/built_in_database/rules/users/
  {username}``): at most 100 per user, first match wins, and no match falls
  through to EMQX's default (allow): the list always ends with a deny of
  everything.
"""

import hashlib
import secrets

from .acl import compile_acl

MAX_RULES = 100
IMPORT_BATCH = 1000  # users per import_users call (one transaction each)
DENY_ALL = {"permission": "deny", "action": "all", "topic": "#"}


def emqx_hash(secret, salt=None):
    """(hex ``sha256(salt + secret)``, ASCII salt) for EMQX's salted sha256."""
    salt = salt if salt is not None else secrets.token_hex(8)
    return hashlib.sha256((salt + secret).encode()).hexdigest(), salt


def user_entry(login, hash_, salt, superuser):
    """One element of the import_users array."""
    return {
        "user_id": login,
        "password_hash": hash_,
        "salt": salt,
        "is_superuser": bool(superuser),
    }


def user_rules(rules, superuser=False):
    """(EMQX rules, notes) of the expanded first-match ``rules``: the EMQX
    export of the topic evaluator (:func:`.acl.compile_acl`), cut to
    EMQX's 100 rules per user. Cutting a first-match list and ending it with
    a deny of everything only makes it stricter."""
    if superuser:
        return [{"permission": "allow", "action": "all", "topic": "#"}], []
    entries = compile_acl(rules)
    notes = []
    if len(entries) > MAX_RULES:
        notes.append(
            f"{len(entries)} rules cut to EMQX's {MAX_RULES}: the rest is denied"
        )
        entries = entries[: MAX_RULES - 1] + [dict(DENY_ALL)]
    return [_built_in_rule(entry) for entry in entries], notes


def _built_in_rule(entry):
    """An HTTP-reply ACL entry as a built-in database rule (same fields;
    ``retain`` is a boolean or ``"all"``)."""
    rule = {
        "topic": entry["topic"],
        "permission": entry["permission"],
        "action": entry["action"],
    }
    if "qos" in entry:
        rule["qos"] = list(entry["qos"])
    if "retain" in entry:
        rule["retain"] = entry["retain"]
    return rule


def batches(items, size=IMPORT_BATCH):
    for start in range(0, len(items), size):
        yield items[start : start + size]
