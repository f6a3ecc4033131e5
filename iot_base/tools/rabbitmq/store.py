# License LGPL-3.0 or later (https://www.gnu.org/licenses/lgpl).
"""RabbitMQ 3.10 internal users rendered from Odoo's credentials (no Odoo).

* Password hash (``rabbit_password_hashing_sha256``, rabbit_password.erl):
  base64 of a 4-byte random salt followed by ``sha256(salt + password)``.
* The MQTT plugin (rabbit_mqtt_processor.erl, 3.10) publishes to the
  :data:`..rabbitmq.EXCHANGE` and, for a subscription, declares, binds and
  consumes its queues (:data:`..rabbitmq.QUEUE_PREFIX`). The resource
  permissions below allow those queues of the credential's own client ids
  (``<username>`` or ``<username>~<suffix>``) and the exchange, nothing else;
  a username RabbitMQ refuses (:func:`..rabbitmq.username_problem`) gets
  nothing at all.
* Topic permissions are regular expressions (PCRE, Erlang ``re``) over the
  routing key (:func:`..rabbitmq.to_routing_key`): publishing checks the
  routing key against ``write``, subscribing checks the binding key against
  ``read``. The expressions are compiled from the expanded first-match rules
  (as :func:`..rabbitmq.routing_key_rules` leaves them) so that RabbitMQ
  never allows what :func:`topic_acl.authorize` denies (property-tested).
"""

import base64
import hashlib
import os
import re

from .. import topic_acl
from . import (
    EXCHANGE,
    QUEUE_PREFIX,
    dotted,
    routing_key_rules,
    username_problem,
)

HASHING_ALGORITHM = "rabbit_password_hashing_sha256"
# marks the users Odoo manages: a full sync removes those of them Odoo no
# longer has, and never touches another user
TAG = "iot_base_store"
# the very end of the key: PCRE's (and Python's) "$" also matches before a
# final newline, which a topic may hold
END = r"(?![\s\S])"
# never matches a routing key: the "nothing allowed" expression
NOTHING = "^(?!)"
# a client id suffix (iot_credentials.CLIENT_ID_SUFFIX_RE)
_SUFFIX = "(~[A-Za-z0-9_.:@-]{1,64})?"


def rabbitmq_hash(secret, salt=None):
    """(RabbitMQ ``password_hash`` of ``secret``, None)."""
    salt = salt if salt is not None else os.urandom(4)
    digest = hashlib.sha256(salt + secret.encode()).digest()
    return base64.b64encode(salt + digest).decode(), None


def _client_ids(username):
    return re.escape(username) + _SUFFIX


def resource_permissions(username):
    """configure/write/read of ``username``: its own subscription queues,
    and the MQTT exchange for binding (read) and publishing (write);
    nothing for a username RabbitMQ refuses (every publish or subscription
    then closes the connection)."""
    if username_problem(username):
        return {"configure": NOTHING, "write": NOTHING, "read": NOTHING}
    # QUEUE_PREFIX holds no regex metacharacter ("-" is one only in a set)
    queues = f"{QUEUE_PREFIX}{_client_ids(username)}qos[01]"
    exchange = re.escape(EXCHANGE)
    both = f"^({exchange}|{queues}){END}"
    return {"configure": f"^{queues}{END}", "write": both, "read": both}


def _publish_regex(topic_filter):
    """Expression matching the routing keys of exactly the topic names that
    ``topic_filter`` matches (MQTT 3.1.1 §4.7, ``$`` rule included)."""
    levels = topic_filter.split("/")
    parts = []
    for index, level in enumerate(levels):
        first = index == 0
        if level == "#":
            # "a/#" matches "a" too; "#" alone matches no "$" topic
            if first:
                return r"^(?!\$)[\s\S]*" + END
            return "^" + "".join(parts) + r"(\.[\s\S]*)?" + END
        sep = "" if first else r"\."
        if level == "+":
            parts.append(sep + (r"(?!\$)[^.]*" if first else r"[^.]*"))
        else:
            # a literal level is one key word (routing_key_rules left no ".")
            parts.append(sep + re.escape(level))
    return "^" + "".join(parts) + END


def _subscribe_regex(topic_filter):
    """Expression matching the binding keys of the subscription filters
    that ``topic_filter`` covers, or None when it cannot be written.

    A binding key word ``*`` or ``#`` is a wildcard: a literal level of the
    rule admits only itself, a ``+`` level any word but ``#`` (and, first,
    none starting with ``$``), a final ``#`` any rest."""
    levels = topic_filter.split("/")
    parts = []
    for index, level in enumerate(levels):
        first = index == 0
        sep = "" if first else r"\."
        if level == "#":
            if first:
                return r"^(?!\$)[\s\S]*" + END
            return "^" + "".join(parts) + r"(\.[\s\S]*)?" + END
        if level == "+":
            # "*" (itself) or a word without wildcard characters
            word = r"(\*|[^.*#$][^.*#]*|)" if first else r"(\*|[^.*#]*)"
            parts.append(sep + word)
            continue
        if "*" in level or "#" in level:
            return None  # RabbitMQ would read such a word as a wildcard
        parts.append(sep + re.escape(level))
    return "^" + "".join(parts) + END


def _conditional(rule, action):
    if rule.qos is not None and not rule.qos >= {0, 1, 2}:
        return True
    return action == topic_acl.PUBLISH and rule.retain is not None


def topic_regex(rules, action):
    """One expression for ``action`` (publish → write, subscribe → read)
    from expanded first-match ``rules``; returns (expression, notes).

    An allow rule is kept only when it holds for every QoS and retain flag
    (RabbitMQ's topic check sees neither) and no earlier rule that could
    deny overlaps it: then every key it matches is allowed by first-match
    evaluation. Everything else is left out (stricter; said in the notes).
    """
    compile_one = _publish_regex if action == topic_acl.PUBLISH else _subscribe_regex
    kept, denies = [], []
    notes = [
        f"{rule.topic}: a '.' inside a level is a routing-key separator, left out"
        for rule in rules
        if rule.permission == topic_acl.ALLOW
        and rule.action in (action, topic_acl.ALL)
        and dotted(rule)
    ]
    for rule in routing_key_rules(rules):
        if rule.action not in (action, topic_acl.ALL):
            continue
        if rule.permission == topic_acl.DENY:
            denies.append(rule.topic)
            continue
        if _conditional(rule, action):
            notes.append(f"{rule.topic}: QoS/retain-limited allow left out")
            continue
        if any(topic_acl.filters_intersect(deny, rule.topic) for deny in denies):
            notes.append(f"{rule.topic}: allow after an overlapping deny left out")
            continue
        expression = compile_one(rule.topic)
        if expression is None:
            notes.append(f"{rule.topic}: not writable as a binding key, left out")
            continue
        kept.append(expression)
    if not kept:
        return NOTHING, notes
    if len(kept) == 1:
        return kept[0], notes
    return "|".join(f"(?:{expression})" for expression in kept), notes


def topic_permissions(rules, superuser=False):
    """({"exchange", "write", "read"}, notes) of expanded ``rules``."""
    if superuser:
        return {"exchange": EXCHANGE, "write": ".*", "read": ".*"}, []
    rules = topic_acl.retain_blind(rules)  # the node never sees the flag
    write, notes = topic_regex(rules, topic_acl.PUBLISH)
    read, read_notes = topic_regex(rules, topic_acl.SUBSCRIBE)
    return {"exchange": EXCHANGE, "write": write, "read": read}, notes + read_notes


def login_state(hash_, permissions, topic_perms, vhost="/"):
    """What the broker holds for one login, in one comparable form (the
    same whether built from Odoo's data or read back from the broker)."""
    return {
        "vhost": vhost,
        "password_hash": hash_,
        "hashing_algorithm": HASHING_ALGORITHM,
        "tags": [TAG],
        "configure": permissions["configure"],
        "write": permissions["write"],
        "read": permissions["read"],
        "topic_write": topic_perms["write"],
        "topic_read": topic_perms["read"],
    }


def definitions(states, vhost):
    """The definitions document (POST /api/definitions) of ``states``
    ({login: login_state}): users, permissions, topic permissions."""
    users, permissions, topic_perms = [], [], []
    for login, state in sorted(states.items()):
        users.append(
            {
                "name": login,
                "password_hash": state["password_hash"],
                "hashing_algorithm": state["hashing_algorithm"],
                "tags": ",".join(state["tags"]),
            }
        )
        permissions.append(
            {
                "user": login,
                "vhost": vhost,
                "configure": state["configure"],
                "write": state["write"],
                "read": state["read"],
            }
        )
        topic_perms.append(
            {
                "user": login,
                "vhost": vhost,
                "exchange": EXCHANGE,
                "write": state["topic_write"],
                "read": state["topic_read"],
            }
        )
    return {
        "users": users,
        "permissions": permissions,
        "topic_permissions": topic_perms,
    }
