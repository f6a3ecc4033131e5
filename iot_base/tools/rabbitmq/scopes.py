# License LGPL-3.0 or later (https://www.gnu.org/licenses/lgpl).
"""Topic rules as the scopes of a RabbitMQ 3.10 OAuth 2 token.

Plain Python, no Odoo import. :func:`compile_scopes` turns (already expanded)
:class:`topic_acl.Rule` lists into the ``scope`` claim that
``rabbitmq_auth_backend_oauth2`` 3.10 checks; :func:`scope_allows` is a port
of that plugin's check (``rabbit_oauth2_scope`` and ``wildcard``), used by the
tests to prove the scopes never allow what the addon's evaluator denies.

What RabbitMQ 3.10 does (read from its 3.10.8 beams):

* a scope is ``<permission>:<vhost>/<name>[/<routing key>]`` after the
  ``<resource_server_id>.`` prefix is stripped; the parts are split on ``/``
  first, then each part is split on ``*`` and every piece URL-decoded
  (``cow_qs:urldecode``: ``%XX``, and ``+`` is a space);
* ``wildcard:match`` is a glob where ``*`` matches any run of bytes, dots
  included; it finds each piece at its leftmost place, so it matches no more
  than a true glob (``a*b`` does not match ``abab``);
* a resource check (queue, exchange) matches vhost and name of any scope of
  that permission, ignoring the routing key; a topic check needs a scope
  with a routing key that matches too; scopes can only allow;
* the MQTT plugin's routing keys are :func:`..rabbitmq.to_routing_key`;
  the addon's evaluator for RabbitMQ (:func:`evaluator_allows`) reads a key
  back with :func:`..rabbitmq.routing_key_to_mqtt` and asks
  :func:`topic_acl.authorize` for every QoS (and retain flag), on the rules
  of :func:`..rabbitmq.routing_key_rules`: RabbitMQ does not say which.

Compilation (never more permissive than that evaluator):

* a *prefix* scope ``<K>.*`` (any routing key under ``K.``) is emitted for
  the literal prefixes ``K`` of the allow rules when the evaluator allows
  everything under it: the filter ``<K>/#`` for reading (a subscription to
  ``<K>/#`` binds ``K.#``, which also gets ``K`` itself) and the topics of
  ``<K>/+/#`` for writing;
* an *exact* scope (no glob) for each rule topic the evaluator allows as it
  is (the rule's own filter as a subscription, a wildcard-free topic as a
  publish), unless a prefix scope covers it already;
* nothing else: a ``+`` level cannot be written as a glob (``*`` would cross
  levels), so a filter narrower than a rule with ``+`` is refused by
  RabbitMQ even where the evaluator would allow it.

Outside what a glob can express: a routing key under an allowed prefix that
has no valid MQTT reading (a topic name with ``+``, ``#`` or ``*`` in it,
which 3.10 publishes without checking; a ``#`` inside a filter) is allowed by
a prefix scope while the HTTP evaluator refuses it. Such a message or binding
stays under the granted prefix: a literal ``*``/``#`` word routes like any
other word of that level, so it reaches no binding a granted topic does not.
"""

from .. import topic_acl
from ..client_ids import CLIENT_ID_SEPARATOR
from . import (
    EXCHANGE,
    QUEUE_PREFIX,
    QUEUE_SUFFIXES,
    routing_key_rules,
    routing_key_to_mqtt,
    to_routing_key,
    username_problem,
)

__all__ = [
    "compile_scopes",
    "evaluator_allows",
    "queue_scopes",
    "scope_allows",
    "wildcard_match",
]

READ, WRITE, CONFIGURE = "read", "write", "configure"
_UNRESERVED = frozenset(
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.~"
)


# ---------------------------------------------------------------------------
# The addon's evaluator on the MQTT plugin's routing keys
# ---------------------------------------------------------------------------


def evaluator_allows(rules, action, routing_key):
    """The addon's RabbitMQ decision for ``routing_key`` (``action``
    "publish" or "subscribe"): allowed for every QoS and retain flag (what
    models/rabbitmq/iot_broker_rabbitmq.py answers)."""
    rules = routing_key_rules(rules)
    topic = routing_key_to_mqtt(routing_key)
    retains = (False, True) if action == topic_acl.PUBLISH else (False,)
    return all(
        topic_acl.authorize(rules, action, topic, qos=qos, retain=retain)
        == topic_acl.ALLOW
        for qos in (0, 1, 2)
        for retain in retains
    )


def _all_published_allowed(rules, topic_filter):
    """Does every topic name ``topic_filter`` matches get publish "allow"
    for every QoS and retain flag? (The subscribe evaluator answers "every
    topic of a filter" exactly; the publish rules that apply are given to it
    as subscribe rules.)"""
    for qos in (0, 1, 2):
        for retain in (False, True):
            as_subscribe = [
                topic_acl.Rule(rule.permission, topic_acl.SUBSCRIBE, rule.topic)
                for rule in rules
                if rule.applies_to(topic_acl.PUBLISH, qos, retain)
            ]
            if (
                topic_acl.authorize(as_subscribe, topic_acl.SUBSCRIBE, topic_filter)
                != topic_acl.ALLOW
            ):
                return False
    return True


# ---------------------------------------------------------------------------
# Port of rabbit_oauth2_scope / wildcard (3.10.8)
# ---------------------------------------------------------------------------


def _urldecode(text):
    """cow_qs:urldecode/1 on UTF-8 bytes; None where it would raise."""
    raw = text.encode("utf-8")
    out = bytearray()
    i = 0
    while i < len(raw):
        byte = raw[i]
        if byte == 0x25:  # %
            pair = raw[i + 1 : i + 3]
            if len(pair) != 2 or not all(c in b"0123456789abcdefABCDEF" for c in pair):
                return None
            out.append(int(pair, 16))
            i += 3
            continue
        out.append(0x20 if byte == 0x2B else byte)  # + is a space
        i += 1
    return bytes(out)


def wildcard_match(subject, pattern):
    """wildcard:match/2 of rabbitmq_auth_backend_oauth2 3.10.8, on str."""
    parts = [_urldecode(part) for part in pattern.split("*")]
    if any(part is None for part in parts):
        return False
    subject = subject.encode("utf-8")
    first, rest = parts[0], parts[1:]
    if not subject.startswith(first):
        return False
    pos, length = len(first), len(subject)
    while True:
        if rest == [b""]:
            return True
        if not rest:
            return pos == length
        if pos == length:
            return False
        if rest[0] == b"":
            rest = rest[1:]
            continue
        found = subject.find(rest[0], pos)
        if found < 0:
            return False
        pos = found + len(rest[0])
        rest = rest[1:]


def _parse(scope):
    permission, sep, resource = scope.partition(":")
    if not sep or permission not in (READ, WRITE, CONFIGURE):
        return None
    parts = resource.split("/")
    if len(parts) == 2:
        return permission, parts[0], parts[1], None
    if len(parts) == 3:
        return permission, parts[0], parts[1], parts[2]
    return None


def scope_allows(scopes, permission, vhost, name, routing_key=None):
    """rabbit_oauth2_scope's resource check (``routing_key`` None) or topic
    check, for ``scopes`` without their resource server prefix."""
    for scope in scopes:
        parsed = _parse(scope)
        if not parsed:
            continue
        granted, vhost_pat, name_pat, key_pat = parsed
        if granted != permission:
            continue
        if routing_key is not None and key_pat is None:
            continue
        if not (wildcard_match(vhost, vhost_pat) and wildcard_match(name, name_pat)):
            continue
        if routing_key is None or wildcard_match(routing_key, key_pat):
            return True
    return False


# ---------------------------------------------------------------------------
# Compilation
# ---------------------------------------------------------------------------


def _encode(text):
    """A literal for a scope part: every byte but the unreserved ones as
    %XX (so ``*``, ``/``, ``+``, ``%`` and spaces are plain bytes)."""
    return "".join(
        chr(byte) if byte in _UNRESERVED else f"%{byte:02X}"
        for byte in text.encode("utf-8")
    )


def queue_scopes(client_id, vhost="/"):
    """configure, write and read on the two subscription queues of
    ``client_id``, and nothing else: the client id policy of the token
    (RabbitMQ never checks the MQTT client id against the token)."""
    scopes = []
    for suffix in QUEUE_SUFFIXES:
        queue = _encode(f"{QUEUE_PREFIX}{client_id}{suffix}")
        scopes.extend(
            f"{permission}:{_encode(vhost)}/{queue}"
            for permission in (CONFIGURE, WRITE, READ)
        )
    return scopes


def _literal_prefixes(rule):
    """Routing-key prefixes of the literal leading levels of ``rule``."""
    levels = []
    for level in rule.levels:
        if level in ("+", "#"):
            break
        levels.append(level)
        yield to_routing_key("/".join(levels))


def _topic_keys(rules, action):
    """(prefixes, exact keys) the evaluator allows for ``action``."""
    actions = (action, topic_acl.ALL)
    candidates = [r for r in rules if r.permission == "allow" and r.action in actions]
    prefixes = []
    for rule in candidates:
        for key in _literal_prefixes(rule):
            if any(key == p or key.startswith(p + ".") for p in prefixes):
                break
            under = routing_key_to_mqtt(key)
            if action == topic_acl.SUBSCRIBE:
                ok = evaluator_allows(rules, action, key + ".#")
            else:
                ok = topic_acl.is_valid_topic_filter(
                    under + "/+/#"
                ) and _all_published_allowed(rules, under + "/+/#")
            if ok:
                prefixes = [p for p in prefixes if not p.startswith(key + ".")]
                prefixes.append(key)
                break
    exact = []
    for rule in candidates:
        if action == topic_acl.PUBLISH and any(lv in ("+", "#") for lv in rule.levels):
            continue
        key = to_routing_key(rule.topic)
        covered = any(key.startswith(p + ".") for p in prefixes)
        if not covered and key not in exact and evaluator_allows(rules, action, key):
            exact.append(key)
    return prefixes, exact


def compile_scopes(rules, client_id, vhost="/", exchange=EXCHANGE):
    """The scopes (without the resource server prefix) of a token for
    ``client_id`` with the (expanded) topic ``rules``: its own queues, and
    the topics of the rules, never more than the evaluator allows (see the
    module docstring). None at all for a username RabbitMQ refuses
    (:func:`..rabbitmq.username_problem`): the node then refuses the
    CONNECT, as it has no vhost scope."""
    if username_problem(client_id.partition(CLIENT_ID_SEPARATOR)[0]):
        return []
    # the node never sees the retain flag, nor a "." inside a level
    rules = routing_key_rules(topic_acl.retain_blind(rules))
    scopes = queue_scopes(client_id, vhost)
    base = f"{_encode(vhost)}/{_encode(exchange)}"
    for action, permission in (
        (topic_acl.SUBSCRIBE, READ),
        (topic_acl.PUBLISH, WRITE),
    ):
        prefixes, exact = _topic_keys(rules, action)
        scopes.extend(f"{permission}:{base}/{_encode(p + '.')}*" for p in prefixes)
        scopes.extend(f"{permission}:{base}/{_encode(key)}" for key in exact)
    return scopes
