# License LGPL-3.0 or later (https://www.gnu.org/licenses/lgpl).
"""MQTT topic rules: validation, matching (MQTT 3.1.1 section 4.7) and
first-match evaluation, default deny. Plain Python, no Odoo import: the
console's topic_acl.esm.js mirrors it, the EMQX export (tools/emqx/acl.py)
and the Mosquitto files are checked against it.

A SUBSCRIBE filter is allowed only if every topic name it can match is
allowed: a rule ``a/+`` must not admit ``a/#``.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable

__all__ = [
    "ALLOW",
    "DENY",
    "MAX_TOPIC_LENGTH",
    "Rule",
    "authorize",
    "expand_rule",
    "expand_rules",
    "filter_covers",
    "filters_intersect",
    "is_valid_topic_filter",
    "is_valid_topic_name",
    "retain_blind",
    "topic_matches",
]

ALLOW = "allow"
DENY = "deny"
PUBLISH = "publish"
SUBSCRIBE = "subscribe"
ALL = "all"

MAX_TOPIC_LENGTH = 65535  # bytes of UTF-8, MQTT 3.1.1 section 1.5.3

_PERMISSIONS = (ALLOW, DENY)
_ACTIONS = (PUBLISH, SUBSCRIBE, ALL)
_QOS = frozenset((0, 1, 2))

# A word that cannot be a real topic level (levels never contain NUL): stands
# for "any level that is not one of the literals under consideration".
_FRESH = "\x00"


# ---------------------------------------------------------------------------
# Validation
# ---------------------------------------------------------------------------


def _utf8_len_ok(s: str) -> bool:
    try:
        return len(s.encode("utf-8")) <= MAX_TOPIC_LENGTH
    except UnicodeEncodeError:  # lone surrogates are not valid UTF-8
        return False


def is_valid_topic_name(s) -> bool:
    """What PUBLISH may carry (MQTT 3.1.1 sections 1.5.3, 4.7.1)."""
    return (
        isinstance(s, str)
        and s != ""
        and "+" not in s
        and "#" not in s
        and "\x00" not in s
        and _utf8_len_ok(s)
    )


def is_valid_topic_filter(s) -> bool:
    """What SUBSCRIBE may carry: ``+`` a whole level, ``#`` only the last."""
    if not isinstance(s, str) or s == "" or "\x00" in s or not _utf8_len_ok(s):
        return False
    levels = s.split("/")
    last = len(levels) - 1
    for i, level in enumerate(levels):
        if level in ("+", ""):
            continue
        if level == "#":
            if i != last:
                return False
            continue
        if "+" in level or "#" in level:
            return False
    return True


# ---------------------------------------------------------------------------
# Matching primitives on level lists (internal; inputs assumed valid)
# ---------------------------------------------------------------------------


def _is_wild(token: str) -> bool:
    return token == "+" or token == "#"


def _is_dollar_literal(token: str) -> bool:
    return not _is_wild(token) and token.startswith("$")


def _match(flt, topic) -> bool:
    # ``a/#`` matches ``a``; a first-level wildcard never matches ``$...``
    n = len(topic)
    for i, f in enumerate(flt):
        if f == "#":
            return not (i == 0 and topic[0].startswith("$"))
        if i >= n:
            return False
        t = topic[i]
        if f == "+":
            if i == 0 and t.startswith("$"):
                return False
        elif f != t:
            return False
    return len(flt) == n


def _intersects(f1, f2) -> bool:
    n1, n2 = len(f1), len(f2)
    i = 0
    while True:
        a = f1[i] if i < n1 else None
        b = f2[i] if i < n2 else None
        if a == "#" or b == "#":
            other = b if a == "#" else a
            # '#' at level 0 never meets a '$' topic; otherwise the remainder
            # of the other filter (or the parent, if it ended here) is matched.
            return not (i == 0 and other is not None and _is_dollar_literal(other))
        if a is None or b is None:
            return a is None and b is None
        if a == "+" or b == "+":
            lit = b if a == "+" else a
            if i == 0 and lit != "+" and lit.startswith("$"):
                return False
        elif a != b:
            return False
        i += 1


def _covers(rule, sub) -> bool:
    nr = len(rule)
    for i, s in enumerate(sub):
        if i >= nr:
            return False
        r = rule[i]
        if r == "#":
            return not (i == 0 and _is_dollar_literal(s))
        if s == "#":
            # sub matches the parent (length i, if i > 0) and everything below;
            # with r != '#' the rule needs more than i levels, so the parent is
            # missed -- except at level 0, where '#' has no parent and rule
            # '+/#' matches every non-'$' topic.
            return i == 0 and r == "+" and nr == 2 and rule[1] == "#"
        if s == "+":
            if r != "+":
                return False
        elif r == "+":
            if i == 0 and s.startswith("$"):
                return False
        elif r != s:
            return False
    n = len(sub)
    return nr == n or (nr == n + 1 and rule[n] == "#")


# ---------------------------------------------------------------------------
# Public matching API
# ---------------------------------------------------------------------------


def topic_matches(topic_filter: str, topic: str) -> bool:
    if not (is_valid_topic_filter(topic_filter) and is_valid_topic_name(topic)):
        return False
    return _match(topic_filter.split("/"), topic.split("/"))


def filter_covers(rule_filter: str, sub_filter: str) -> bool:
    """Whether every topic ``sub_filter`` matches is matched by ``rule_filter``."""
    if not (is_valid_topic_filter(rule_filter) and is_valid_topic_filter(sub_filter)):
        return False
    return _covers(rule_filter.split("/"), sub_filter.split("/"))


def filters_intersect(filter_a: str, filter_b: str) -> bool:
    """Whether some topic is matched by both filters."""
    if not (is_valid_topic_filter(filter_a) and is_valid_topic_filter(filter_b)):
        return False
    return _intersects(filter_a.split("/"), filter_b.split("/"))


# ---------------------------------------------------------------------------
# Rules
# ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Rule:
    """One rule; ``qos`` and ``retain`` None mean any (``retain`` only
    matters for PUBLISH); ``qos`` may be given as an int or any iterable."""

    permission: str
    action: str
    topic: str
    qos: frozenset | None = None
    retain: bool | None = None
    levels: tuple = dataclasses.field(init=False, repr=False, compare=False)

    def __post_init__(self):
        if self.permission not in _PERMISSIONS:
            raise ValueError(f"invalid permission {self.permission!r}")
        if self.action not in _ACTIONS:
            raise ValueError(f"invalid action {self.action!r}")
        if not is_valid_topic_filter(self.topic):
            raise ValueError(f"invalid topic filter {self.topic!r}")
        qos = self.qos
        if qos is not None:
            if isinstance(qos, int) and not isinstance(qos, bool):
                qos = (qos,)
            try:
                qos = frozenset(qos)
            except TypeError:
                raise ValueError(f"invalid qos {self.qos!r}") from None
            if (
                not all(isinstance(q, int) and not isinstance(q, bool) for q in qos)
                or not qos <= _QOS
            ):
                raise ValueError(f"invalid qos {self.qos!r}")
            object.__setattr__(self, "qos", qos)
        if self.retain is not None and not isinstance(self.retain, bool):
            raise ValueError(f"invalid retain {self.retain!r}")
        object.__setattr__(self, "levels", tuple(self.topic.split("/")))

    def applies_to(self, action: str, qos: int, retain: bool = False) -> bool:
        """Whether the rule is about such a request (its topic aside)."""
        if self.action != ALL and self.action != action:
            return False
        if self.qos is not None and qos not in self.qos:
            return False
        if action == PUBLISH and self.retain is not None and self.retain != retain:
            return False
        return True


def _subscribe_allowed(rules, sub) -> bool:
    """Whether every topic ``sub`` (a level list) can match is first-match
    allowed by ``rules``, ``(permission, levels)`` already filtered for the
    request's action and QoS.

    The first rule meeting ``sub`` decides when it covers it or denies;
    only an allow that merely intersects needs a search for a denied topic.
    The search is exact and finite: words equal to none of the rules'
    literals at a level behave alike (one representative, ``_FRESH``), as do
    topics longer than every rule, and the future of a branch depends only
    on its depth and the rules still alive (memoised).
    """
    for idx, (perm, r) in enumerate(rules):
        if not _intersects(r, sub):
            continue
        if _covers(r, sub):
            return perm == ALLOW
        if perm == DENY:
            return False
        return not _find_denied_topic(rules[idx:], sub)
    return False


def _find_denied_topic(rules, sub) -> bool:
    """Whether some topic ``sub`` matches is not allowed (see above)."""
    n = len(sub)
    hash_pos = n - 1 if sub[-1] == "#" else None
    memo: dict = {}

    def step(r, k, w):
        # rule r (alive after k levels) consumes word w at level k
        nr = len(r)
        if r[-1] == "#" and nr - 1 < k:
            return True
        if nr <= k:
            return False
        t = r[k]
        if t == "+" or t == "#":
            return not (k == 0 and w.startswith("$"))
        return t == w

    def bad(k, alive):
        key = (k, alive)
        hit = memo.get(key)
        if hit is None:
            hit = memo[key] = _bad(k, alive)
        return hit

    def _bad(k, alive):
        if not alive:
            return True
        perm0, r0 = rules[alive[0]]
        if k >= 1 and r0[-1] == "#" and len(r0) - 1 <= k:
            # the first alive rule matches this topic and all continuations
            return perm0 != ALLOW
        in_hash = hash_pos is not None and k >= hash_pos
        can_end = k >= 1 and (in_hash if hash_pos is not None else k == n)
        if can_end:
            for i in alive:
                perm, r = rules[i]
                nr = len(r)
                if nr == k or (r[-1] == "#" and nr - 1 <= k):
                    if perm != ALLOW:
                        return True
                    break
            else:
                return True
        if in_hash or k < n:
            if not in_hash and sub[k] != "+":
                words = (sub[k],)
            else:
                lits = {
                    rules[i][1][k]
                    for i in alive
                    if len(rules[i][1]) > k and not _is_wild(rules[i][1][k])
                }
                if k == 0:  # a wildcard at level 0 never yields '$' topics
                    lits = {w for w in lits if not w.startswith("$")}
                words = sorted(lits)
                words.append(_FRESH)
            seen = set()
            for w in words:
                nxt = tuple(i for i in alive if step(rules[i][1], k, w))
                if nxt in seen:
                    continue
                seen.add(nxt)
                if bad(k + 1, nxt):
                    return True
        return False

    return bad(0, tuple(range(len(rules))))


def authorize(
    rules: Iterable[Rule], action: str, topic: str, qos: int = 0, retain: bool = False
) -> str:
    """ "allow" or "deny": the first rule about the request whose filter
    matches decides, nothing matching denies. For SUBSCRIBE ``topic`` is a
    filter, allowed only if every topic it can match is (retain ignored).
    Invalid topics and QoS deny; an unknown action raises ValueError.
    """
    if action not in (PUBLISH, SUBSCRIBE):
        raise ValueError(f"invalid action {action!r}")
    if not isinstance(qos, int) or isinstance(qos, bool) or qos not in _QOS:
        return DENY
    if action == PUBLISH:
        if not is_valid_topic_name(topic):
            return DENY
        retain = bool(retain)
        levels = topic.split("/")
        for rule in rules:
            if rule.applies_to(PUBLISH, qos, retain) and _match(rule.levels, levels):
                return rule.permission
        return DENY
    if not is_valid_topic_filter(topic):
        return DENY
    applicable = [
        (rule.permission, rule.levels)
        for rule in rules
        if rule.applies_to(SUBSCRIBE, qos)
    ]
    return ALLOW if _subscribe_allowed(applicable, topic.split("/")) else DENY


# ---------------------------------------------------------------------------
# Placeholders
# ---------------------------------------------------------------------------

_PLACEHOLDER_RE = re.compile(r"\$\{(username|clientid|namespace)\}")


def _safe_value(value) -> bool:
    return (
        isinstance(value, str)
        and value != ""
        and not any(c in value for c in "+#/\x00")
    )


def expand_rule(rule: Rule, username, clientid, namespace) -> tuple[Rule, ...]:
    """The rule with ``${username}``, ``${clientid}``, ``${namespace}``
    substituted (simultaneously: a value is never expanded again).

    A value that is empty, not a str, or holds ``+ # /`` or NUL would change
    the levels or inject a wildcard: an allow using it is dropped, a deny
    widened to ``<safe levels before it>/#`` (plus ``<$segment>/#`` when the
    literal reading starts with ``$``, which ``#`` does not reach).
    """
    values = {"username": username, "clientid": clientid, "namespace": namespace}
    topic = rule.topic
    if not _PLACEHOLDER_RE.search(topic):
        return (rule,)

    def subst(text):
        return _PLACEHOLDER_RE.sub(lambda m: values[m.group(1)], text)

    def unsafe_in(text):
        return any(
            not _safe_value(values[m.group(1)]) for m in _PLACEHOLDER_RE.finditer(text)
        )

    levels = topic.split("/")
    first_bad = next((i for i, lv in enumerate(levels) if unsafe_in(lv)), None)
    if first_bad is None:
        new_topic = subst(topic)
        if is_valid_topic_filter(new_topic):
            return (dataclasses.replace(rule, topic=new_topic),)
        first_bad = 0  # e.g. too long: treat the whole topic as unsafe
    if rule.permission == ALLOW:
        return ()
    prefix = [subst(lv) for lv in levels[:first_bad]]
    new_topic = "/".join(prefix + ["#"])
    if not is_valid_topic_filter(new_topic):  # e.g. prefix too long
        new_topic = "#"
        first_bad = 0
    out = [dataclasses.replace(rule, topic=new_topic)]
    if first_bad == 0:
        # Placeholder values may be non-str here; only str values are literal.
        literal = _PLACEHOLDER_RE.sub(
            lambda m: values[m.group(1)] if isinstance(values[m.group(1)], str) else "",
            levels[0],
        )
        seg = literal.split("/", 1)[0]
        if seg.startswith("$") and "+" not in seg and "#" not in seg:
            extra = seg + "/#"
            if is_valid_topic_filter(extra):
                out.append(dataclasses.replace(rule, topic=extra))
    return tuple(out)


def expand_rules(rules: Iterable[Rule], username, clientid, namespace) -> list[Rule]:
    out: list[Rule] = []
    for rule in rules:
        out.extend(expand_rule(rule, username, clientid, namespace))
    return out


def retain_blind(rules: Iterable[Rule]) -> list[Rule]:
    """The rules as a broker that never learns a PUBLISH's retain flag
    (Mosquitto's ACL file, RabbitMQ 3.10's topic checks) applies them: a
    deny limited to retained publishes is left out, since applied there it
    would refuse the non-retained publishes it is not about (the broker's
    own limits bound retained messages instead: README, Security model).
    No decision on a non-retained publish or a subscribe changes; allows
    limited to a retain flag are kept, and stay conditional (stricter)."""
    out = []
    for rule in rules:
        if rule.permission == DENY and rule.retain is True:
            if rule.action == PUBLISH:
                continue
            if rule.action == ALL:
                rule = dataclasses.replace(rule, action=SUBSCRIBE, retain=None)
        out.append(rule)
    return out


def rule_applies(row, kind, group_ids, credential_id, company_id):
    """Whether a row of ``iot.acl.rule._rule_table`` is about a credential
    of ``kind`` and ``company_id`` whose owner is in ``group_ids``: the one
    place that says which rules a credential gets."""
    _name, rule_kind, groups, credentials, rule_company, _rule = row
    return not (
        (rule_kind and rule_kind != kind)
        or (groups and not groups & group_ids)
        or (credentials and credential_id not in credentials)
        or (rule_company and rule_company != company_id)
    )
