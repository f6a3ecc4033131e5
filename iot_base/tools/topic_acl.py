# License LGPL-3.0 or later (https://www.gnu.org/licenses/lgpl).
"""MQTT topic ACLs: validation, matching, rule evaluation and EMQX export.

Plain Python 3.10+, no Odoo import, no third-party dependency.

Semantics follow MQTT 3.1.1 section 4.7 exactly:

* topic levels are separated by ``/``; empty levels are legal (``a//b``,
  ``/a``, ``a/``);
* ``+`` matches exactly one level, which may be empty;
* ``#`` matches its own level and every level below, *including the parent*
  (``a/#`` matches ``a``; ``#`` matches every topic);
* a wildcard in the first level of a filter never matches a topic whose
  first level starts with ``$`` (``#`` and ``+/x`` do not match ``$SYS/x``,
  ``$SYS/#`` does).

Rules are evaluated first-match, default deny.  For SUBSCRIBE the requested
*filter* is allowed iff **every** topic name it can match would be allowed by
first-match evaluation of the subscribe rules (see :func:`authorize`).

:func:`to_emqx_acl` exports rules in the ACL format EMQX 5.8 accepts in an
HTTP-authentication reply.  EMQX matches a SUBSCRIBE filter against a rule
token by token (``emqx_topic:match/2`` applied to the *filter*), so a rule
``+`` also accepts a literal ``#``/``+`` level of the requested filter and a
deny rule that merely *intersects* the requested filter never fires.  The
export compensates; it is exact for PUBLISH and never more permissive than
:func:`authorize` for SUBSCRIBE (details in :func:`to_emqx_acl`).
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
    "to_emqx_acl",
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
    """True iff ``s`` is a valid MQTT topic *name* (what PUBLISH carries):
    a non-empty str without ``+``, ``#`` or NUL, at most 65535 UTF-8 bytes."""
    return (
        isinstance(s, str)
        and s != ""
        and "+" not in s
        and "#" not in s
        and "\x00" not in s
        and _utf8_len_ok(s)
    )


def is_valid_topic_filter(s) -> bool:
    """True iff ``s`` is a valid MQTT topic *filter*: non-empty, no NUL, at
    most 65535 UTF-8 bytes, ``+`` occupying a whole level, ``#`` only as the
    whole last level."""
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
    """Does filter ``flt`` match topic name ``topic`` (both level lists)?"""
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
    """Is there a topic name matched by both filters?"""
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
    """Is every topic name matched by ``sub`` matched by ``rule``?"""
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


def _emqx_match(name, flt) -> bool:
    """Port of emqx_topic:match/2 on word lists (EMQX 5.8.9), where ``name``
    may itself contain '+'/'#' words (that is how EMQX authorizes SUBSCRIBE)."""
    if name and flt and _is_dollar_literal(name[0]) and _is_wild(flt[0]):
        return False
    n = len(name)
    for i, f in enumerate(flt):
        if f == "#" and i == len(flt) - 1:
            return True
        if i >= n:
            return False
        if f == "+" or f == name[i]:
            continue
        return False
    return len(flt) == n


# ---------------------------------------------------------------------------
# Public matching API
# ---------------------------------------------------------------------------


def topic_matches(topic_filter: str, topic: str) -> bool:
    """True iff the topic name ``topic`` is matched by ``topic_filter``
    (False if either is invalid)."""
    if not (is_valid_topic_filter(topic_filter) and is_valid_topic_name(topic)):
        return False
    return _match(topic_filter.split("/"), topic.split("/"))


def filter_covers(rule_filter: str, sub_filter: str) -> bool:
    """True iff every topic name matched by ``sub_filter`` is matched by
    ``rule_filter`` (exact; False if either filter is invalid)."""
    if not (is_valid_topic_filter(rule_filter) and is_valid_topic_filter(sub_filter)):
        return False
    return _covers(rule_filter.split("/"), sub_filter.split("/"))


def filters_intersect(filter_a: str, filter_b: str) -> bool:
    """True iff some topic name is matched by both filters (False if either
    filter is invalid)."""
    if not (is_valid_topic_filter(filter_a) and is_valid_topic_filter(filter_b)):
        return False
    return _intersects(filter_a.split("/"), filter_b.split("/"))


# ---------------------------------------------------------------------------
# Rules
# ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Rule:
    """One ACL rule.

    ``permission``: "allow" | "deny"; ``action``: "publish" | "subscribe" |
    "all"; ``topic``: a topic filter (may contain ``${username}``,
    ``${clientid}``, ``${namespace}`` before :func:`expand_rule`);
    ``qos``: None (any) or a set of QoS levels the rule applies to (an int or
    any iterable is accepted and normalised to a frozenset);
    ``retain``: None (any) / True / False, only consulted for PUBLISH.
    """

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
        """Do the action/qos/retain constraints of this rule accept a request
        (topic not considered)?  ``retain`` only matters for publish."""
        if self.action != ALL and self.action != action:
            return False
        if self.qos is not None and qos not in self.qos:
            return False
        if action == PUBLISH and self.retain is not None and self.retain != retain:
            return False
        return True


def _subscribe_allowed(rules, sub) -> bool:
    """Exact SUBSCRIBE decision.

    ``rules``: ordered list of ``(permission, levels)`` already filtered for
    action/qos.  ``sub``: the requested filter as a level list (may contain
    the internal ``_FRESH`` word).

    Allowed iff every topic name matched by ``sub`` is first-match allowed.

    Fast path: the first rule that intersects ``sub`` decides when it covers
    ``sub`` (all of sub's topics reach it first) or when it is a deny (some
    topic of the intersection reaches it first).  Only when it is an allow
    that merely intersects do we search for a counter-example topic.

    Search (why it is exact and finite): whether a rule matches a topic is
    decided level by level, a level only being compared with the literal the
    rule has at that position, and at level 0 also tested for a leading '$'.
    Hence all words that equal none of the literals the rules have at that
    position behave identically (one representative, ``_FRESH``, suffices; at
    level 0 a wildcard of ``sub`` excludes '$' words, so no '$'
    representative is needed), and all topics longer than every rule behave
    like one another, since only rules ending in '#' can still match them and
    they ignore the extra levels.  The depth-first search below walks the
    levels of the topics of ``sub``, branching on the literals of the rules
    still alive plus ``_FRESH``, and memoises on (depth, set of rules still
    alive): the future of a branch depends on nothing else.  It stops a
    branch as soon as the first rule still alive matches every continuation
    (a completed '#').  The number of states is bounded by
    depth x (number of distinct alive-sets), small for realistic rule lists.
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
    """True iff some topic name matched by ``sub`` is not first-match allowed
    by ``rules``.  See :func:`_subscribe_allowed` for the argument."""
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
    """Return "allow" or "deny" for one request; rules are tried in order,
    nothing matching means deny.

    * ``action == "publish"``: ``topic`` is a topic name (invalid -> deny);
      the first rule whose action, qos and retain constraints accept the
      request and whose filter matches ``topic`` decides.
    * ``action == "subscribe"``: ``topic`` is a topic filter (invalid ->
      deny); allowed iff every topic name the filter can match would be
      allowed by first-match evaluation of the rules whose action and qos
      accept the request (retain is ignored).  Computed exactly, see
      :func:`_subscribe_allowed`.

    An invalid ``qos`` (not the int 0, 1 or 2) is denied; an unknown action
    raises ValueError.
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
    """Substitute ``${username}``, ``${clientid}``, ``${namespace}`` in the
    rule topic; returns the resulting rules (usually exactly one).

    A value is *unsafe* if it is not a non-empty str, or contains ``+``,
    ``#``, ``/`` or NUL (it would change the level structure or inject a
    wildcard), or if the substituted filter would be invalid (too long).
    A rule using an unsafe value:

    * ``allow`` -> dropped (empty tuple): it never matches;
    * ``deny``  -> kept, denying a superset of everything it could mean: the
      levels before the first level that uses an unsafe value are kept (with
      safe substitutions) and the rest becomes ``#`` (``#`` alone if that is
      level 0).  Because ``#`` never matches ``$`` topics, when the unsafe
      level is level 0 and the literal substitution starts with ``$``, a
      second deny ``<first segment>/#`` is added (when that segment is a valid
      level) so the ``$`` reading is denied too.

    Substitution is simultaneous: a value containing ``${...}`` is never
    expanded again.
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
    """:func:`expand_rule` over a list, order preserved."""
    out: list[Rule] = []
    for rule in rules:
        out.extend(expand_rule(rule, username, clientid, namespace))
    return out


# ---------------------------------------------------------------------------
# EMQX 5.8 export
# ---------------------------------------------------------------------------

# EMQX parses every non-"eq" rule topic as a template (emqx_template, regex
# below); placeholders of allowed variables are rendered from the client
# info.  We treat any such text, and a topic starting with "eq ", as not
# representable literally except through the "eq " form.
_EMQX_TEMPLATE_RE = re.compile(r"\$\{[.]?[a-zA-Z0-9._]*\}")


def _emqx_unsafe_level(level: str, index: int) -> bool:
    if index == 0 and level.startswith("eq "):
        return True
    return bool(_EMQX_TEMPLATE_RE.search(level))


def _emqx_topic(levels) -> str | None:
    """EMQX topic string with the same meaning as ``levels``, or None."""
    text = "/".join(levels)
    if not any(_emqx_unsafe_level(lv, i) for i, lv in enumerate(levels)):
        return text
    if not any(_is_wild(lv) for lv in levels):
        return "eq " + text  # "eq " topics are neither templated nor re-parsed
    return None


class _NodeBudgetExceeded(Exception):
    pass


class _Uniform:
    __slots__ = ("decision",)

    def __init__(self, decision):
        self.decision = decision


_BOT = None  # class token: "a word that is none of the literals branched on"


def _subscribe_section(rules, max_nodes):
    """EMQX subscribe entries for one qos group.

    ``rules``: ordered ``(permission, levels)`` applicable to the group.
    Returns ``[(permission, kind, levels)]`` with kind "eq" or "pat".
    See :func:`to_emqx_acl` for the construction and its guarantees.
    """
    if not rules:
        return []
    depth = max(len(r) for _, r in rules)
    k_max = depth + 2
    cache: dict = {}
    exceptions: dict = {}
    nodes = [0]

    def decide(tokens):
        key = tuple(tokens)
        hit = cache.get(key)
        if hit is None:
            if key == ("",):
                hit = "n/a"  # the empty filter is not a valid request
            else:
                hit = ALLOW if _subscribe_allowed(rules, list(key)) else DENY
            cache[key] = hit
        return None if hit == "n/a" else hit

    def leaf(prefix):
        """EMQX decision for filters of exactly this class (all lengths equal
        to len(prefix)); records 'eq' exceptions.  Returns None if n/a."""
        k = len(prefix)
        bots = [i for i, t in enumerate(prefix) if t is _BOT]
        if not bots:
            return decide(prefix)
        verdict = ALLOW
        for b in bots:
            toks = [
                t
                if t is not _BOT
                else (_FRESH if i == b else ("#" if i == k - 1 else "+"))
                for i, t in enumerate(prefix)
            ]
            if decide(toks) != ALLOW:
                verdict = DENY
                break
        t1 = ["+" if t is _BOT else t for t in prefix]
        candidates = [t1]
        if prefix[-1] is _BOT:
            candidates.append(t1[:-1] + ["#"])
        for toks in candidates:
            d = decide(toks)
            if d is not None and d != verdict:
                exceptions[tuple(toks)] = d
        return verdict

    def alive_after(alive, k, word):
        out = []
        for i in alive:
            r = rules[i][1]
            nr = len(r)
            if r[-1] == "#" and nr - 1 < k:
                out.append(i)
            elif nr > k:
                t = r[k]
                if word is _BOT:
                    # a non-branched level: a fresh non-'$' word, '+' or '#'
                    if _is_wild(t) or not (k == 0 and t.startswith("$")):
                        out.append(i)
                elif _is_wild(t):
                    if not (k == 0 and word.startswith("$")):
                        out.append(i)
                elif t == word:
                    out.append(i)
            elif word is _BOT and nr == k:
                out.append(i)  # the requested filter may end in '#' here
        return tuple(out)

    def build(prefix, alive):
        nodes[0] += 1
        if nodes[0] > max_nodes:
            raise _NodeBudgetExceeded
        k = len(prefix)
        if k >= k_max:
            # Every filter below has >= 2 levels past the deepest rule: the
            # hardest member bounds them all (and they cannot be separated).
            hard = ["+" if t is _BOT else t for t in prefix] + ["#"]
            return _Uniform(decide(hard))
        if k > 0 and not alive:
            return _Uniform(DENY)
        if k > 0:
            # Every filter of this subtree matches a subset of what `hard`
            # matches.  If `hard` is allowed, all of them are; if the first
            # rule that may still matter covers `hard`, it decides them all.
            hard = ["+" if t is _BOT else t for t in prefix]
            if prefix[-1] is _BOT:
                hard[-1] = "#"
            else:
                hard.append("#")
            perm0, r0 = rules[alive[0]]
            if _covers(r0, hard):
                return _Uniform(perm0)
            # Each filter here matches everything its variant with a fresh
            # word at an "other" level b matches.  If no allow rule that may
            # still matter can match a fresh word at b, those variants (and
            # so all filters here) are denied.
            allows = [rules[i][1] for i in alive if rules[i][0] == ALLOW]
            for b, t in enumerate(prefix):
                if t is _BOT and all(len(r) > b and not _is_wild(r[b]) for r in allows):
                    return _Uniform(DENY)
            if decide(hard) == ALLOW:
                return _Uniform(ALLOW)
        lits = set()
        for i in alive:
            r = rules[i][1]
            if len(r) > k and not _is_wild(r[k]):
                lits.add(r[k])
        good = sorted(w for w in lits if not _emqx_unsafe_level(w, k))
        bad = [w for w in lits if _emqx_unsafe_level(w, k)]
        children = [(w, build(prefix + [w], alive_after(alive, k, w))) for w in good]
        end = leaf(prefix) if k > 0 else None
        shadow = bool(bad) and not (k == 0 and all(w.startswith("$") for w in bad))
        bot = None if shadow else build(prefix + [_BOT], alive_after(alive, k, _BOT))
        if (
            k > 0
            and not shadow
            and isinstance(bot, _Uniform)
            and all(isinstance(res, _Uniform) for _, res in children)
        ):
            decisions = {res.decision for _, res in children}
            decisions.update((end, bot.decision))
            decisions.discard(None)
            if len(decisions) <= 1:
                return _Uniform(decisions.pop() if decisions else None)
        pat = ["+" if t is _BOT else t for t in prefix]
        if shadow:
            default = DENY
        elif isinstance(bot, _Uniform):
            default = bot.decision or DENY
        else:
            default = None
        out = []
        for w, res in children:
            if isinstance(res, _Uniform):
                d = res.decision or DENY
                if default is None or d != default or (k == 0 and w.startswith("$")):
                    out.append((d, "pat", pat + [w, "#"]))
            else:
                out.extend(res)
        if end is not None and end != default:
            out.append((end, "pat", pat))
        if shadow:
            out.append((DENY, "pat", pat + ["+", "#"]))
        elif isinstance(bot, _Uniform):
            if not (k == 0 and default == DENY):  # the final deny-all does it
                out.append((default, "pat", pat + ["#"]))
        else:
            out.extend(bot)
        return out

    body = build([], tuple(range(len(rules))))
    entries = [(d, "eq", list(t)) for t, d in sorted(exceptions.items())] + body
    return _prune_denies(entries)


def _prune_denies(entries):
    """Drop deny entries that no later allow entry overlaps: what they catch
    ends at the final deny-all anyway.  Denies on '$' first levels are kept
    (the final ``#`` deny does not reach '$' topics in EMQX)."""
    kept = []
    later_allows = []
    for perm, kind, toks in reversed(entries):
        if perm == ALLOW:
            kept.append((perm, kind, toks))
            later_allows.append((kind, toks))
            continue
        if _is_dollar_literal(toks[0]):
            kept.append((perm, kind, toks))
            continue
        needed = False
        for akind, atoks in later_allows:
            if kind == "eq" and akind == "eq":
                needed = toks == atoks
            elif kind == "eq":
                needed = _emqx_match(toks, atoks)
            elif akind == "eq":
                needed = _emqx_match(atoks, toks)
            else:
                needed = _intersects(toks, atoks)
            if needed:
                break
        if needed:
            kept.append((perm, kind, toks))
    kept.reverse()
    return kept


def _verbatim_section(rules, literal_allows_only):
    """Rules emitted one by one, made never more permissive where a topic
    cannot be written for EMQX: such allows are dropped; such denies are
    widened (offending levels -> '+'), or, when the offending level is a '$'
    first level (no EMQX pattern can reach it), dropped together with every
    later allow that overlaps them.  With ``literal_allows_only`` every allow
    containing a wildcard is dropped as well (subscribe fallback).

    ``rules``: ``[(permission, levels, payload)]``; returns
    ``[(permission, kind, levels, payload)]``, kind "eq" or "pat".
    """
    out = []
    lost_denies = []
    for perm, levels, payload in rules:
        levels = list(levels)
        text = _emqx_topic(levels)
        kind = "eq" if text is not None and text.startswith("eq ") else "pat"
        if perm == ALLOW:
            if literal_allows_only and any(_is_wild(lv) for lv in levels):
                continue
            if text is None or any(_intersects(d, levels) for d in lost_denies):
                continue
            out.append((perm, kind, levels, payload))
            continue
        if text is not None:
            out.append((perm, kind, levels, payload))
            continue
        unsafe = {i for i, lv in enumerate(levels) if _emqx_unsafe_level(lv, i)}
        if 0 in unsafe and levels[0].startswith("$"):
            lost_denies.append(levels)
            continue
        widened = ["+" if i in unsafe else lv for i, lv in enumerate(levels)]
        out.append((perm, "pat", widened, payload))
    return out


def _entry_to_dict(perm, action, kind, levels, qos=None, retain=None):
    text = "/".join(levels)
    item = {
        "permission": perm,
        "action": action,
        "topic": ("eq " + text) if kind == "eq" else text,
    }
    if qos is not None:
        item["qos"] = sorted(qos)
    if retain is not None:
        item["retain"] = retain
    return item


def to_emqx_acl(rules: Iterable[Rule], *, max_nodes: int = 20000) -> list[dict]:
    """Export (already expanded) rules as the ``acl`` list of an EMQX 5.8
    HTTP-authentication reply.

    Output: ``{"permission", "action", "topic"}`` dicts (plus ``"qos"`` /
    ``"retain"`` when constrained), publish entries first, then subscribe
    entries, always ending with ``{"permission": "deny", "action": "all",
    "topic": "#"}``.

    How EMQX 5.8.9 decides (emqx_authz_rule:matches/4, first match wins;
    emqx_authz_client_info: no match falls through to the next source): a
    rule matches when ``emqx_topic:match(words(Topic), RuleWords)`` holds,
    or, for ``"eq T"`` topics, when ``words(Topic) =:= words(T)``.  For
    SUBSCRIBE ``Topic`` is the requested *filter*, compared word by word:
    a rule ``+`` matches any word including a ``#``/``+`` word of the filter,
    a rule ``#`` matches any rest, literals must be equal, and a ``$`` first
    word is never matched by a rule wildcard.

    PUBLISH: for a topic name that comparison is exactly :func:`topic_matches`
    (including the ``a/#`` parent and ``$`` rules), so publish entries are
    the publish/all rules verbatim (action "publish", qos and retain kept) and
    EMQX decides exactly like :func:`authorize`.

    SUBSCRIBE cannot be mirrored rule by rule: ``a/+`` would admit ``a/#``,
    and deny ``a/b`` then allow ``a/#`` would admit ``a/+`` and ``#``.  The
    subscribe entries are therefore *compiled* per group of QoS levels with
    the same applicable rules.  A requested filter is classified level by
    level: a level is either one of the literals that the rules still
    relevant at that point have there, or "other" (any other word, ``+``, or
    a final ``#``).  Without an ``eq`` entry EMQX cannot tell members of one
    class apart, and ``eq`` can only single out finitely many filters.  For
    each class the compiler emits one pattern (literals, ``+`` for "other",
    ``#`` for deeper classes with one verdict) whose verdict is "allow" only
    if every member with at least one ordinary word in an "other" level is
    allowed by :func:`authorize`, plus ``eq`` entries for the (at most two)
    members made only of wildcards (``+``…, ``+``…``/#``) where
    :func:`authorize` disagrees with that verdict.  Literal classes are
    emitted before the "other" class so EMQX's first match picks the most
    specific one; whole subtrees collapse into one ``…/#`` entry when they
    provably share one verdict.  A last pass drops deny entries that no later
    allow entry overlaps, and qos groups that compile to the same entries are
    merged (no ``"qos"`` key when all three agree).

    Guarantee (property-tested against a port of EMQX's matcher): EMQX never
    allows a SUBSCRIBE that :func:`authorize` denies, and decides exactly
    like it for every filter with at most one "other" level -- in particular
    whenever at most one level of the filter is a wildcard or a word that no
    rule overlapping the filter has at that position, and for every class
    whose members all get the same answer (barring the template/``eq``
    topics below).  It is stricter exactly for
    filters with two or more "other" levels whose class also contains a
    denied member, e.g. with only ``allow +/+`` EMQX denies ``x/y`` (because
    ``x/#`` must be denied and, for arbitrary ``x``, cannot be told apart
    from ``x/y``), and with ``deny a/#, allow #`` it denies ``x/y`` (as
    ``+/y`` reaches ``a/y``).  Both are impossible to express exactly in
    EMQX's rule language.  Prefer ``…/#`` over ``…/+`` after another wildcard
    level, e.g. ``devices/+/telemetry/#`` rather than
    ``devices/+/telemetry/+``.

    Topics EMQX would read as a template (``${…}``) or as an ``eq`` topic are
    written with the ``eq `` prefix when they have no wildcard; otherwise the
    entry is made stricter (allow dropped, deny widened).  If the compiler
    would exceed ``max_nodes`` classes for a qos group, that group falls back
    to the deny rules verbatim plus the wildcard-free allow rules (still never
    more permissive).

    Deployment notes (EMQX behaviour, not changed by this export): EMQX's
    ``#`` does not match ``$`` topics, so a ``$`` topic no entry matches falls
    through to the next authorization source / ``authorization.no_match``
    (keep it "deny"); EMQX authorizes ``$share/g/t`` on ``t`` and
    ``$delayed/n/t`` on ``t``, while :func:`authorize` treats such strings
    literally.
    """
    rules = list(rules)
    result: list[dict] = []

    pub_rules = [
        (r.permission, r.levels, r) for r in rules if r.action in (PUBLISH, ALL)
    ]
    for perm, kind, levels, rule in _verbatim_section(
        pub_rules, literal_allows_only=False
    ):
        result.append(
            _entry_to_dict(
                perm, PUBLISH, kind, levels, qos=rule.qos, retain=rule.retain
            )
        )

    groups: dict = {}
    for q in (0, 1, 2):
        key = tuple(i for i, r in enumerate(rules) if r.applies_to(SUBSCRIBE, q))
        groups.setdefault(key, []).append(q)
    sections: dict = {}  # identical compiled sections share one qos list
    for key, qos_list in groups.items():
        applicable = [(rules[i].permission, rules[i].levels) for i in key]
        try:
            entries = _subscribe_section(applicable, max_nodes)
        except _NodeBudgetExceeded:
            entries = [
                e[:3]
                for e in _verbatim_section(
                    [(p, lv, None) for p, lv in applicable], literal_allows_only=True
                )
            ]
        frozen = tuple((p, kind, tuple(lv)) for p, kind, lv in entries)
        sections.setdefault(frozen, []).extend(qos_list)
    for frozen, qos_list in sections.items():
        qos = None if len(sections) == 1 else sorted(qos_list)
        for perm, kind, levels in frozen:
            result.append(_entry_to_dict(perm, SUBSCRIBE, kind, list(levels), qos=qos))

    result.append({"permission": DENY, "action": ALL, "topic": "#"})
    return result
