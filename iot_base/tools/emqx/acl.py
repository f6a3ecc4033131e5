# License LGPL-3.0 or later (https://www.gnu.org/licenses/lgpl).
"""Topic rules as the ``acl`` list of an EMQX 5.8 HTTP authentication reply,
so that EMQX decides every publish and subscribe without calling Odoo.

How EMQX 5.8.9 reads it (``emqx_authz_rule:matches/4``, first match wins):
a rule matches when ``emqx_topic:match(words(Topic), RuleWords)`` holds, or
for ``eq T`` when the words are equal. For PUBLISH that is exactly
:func:`topic_acl.topic_matches`, so publish rules are emitted verbatim. For
SUBSCRIBE ``Topic`` is the requested *filter*, compared word by word: a rule
``a/+`` would admit ``a/#``, and a deny that merely intersects the filter
never fires. Subscribe entries are therefore compiled (:func:`_subscribe_section`).

Guarantee, property-tested against a port of EMQX's matcher: EMQX never
allows a SUBSCRIBE that :func:`topic_acl.authorize` denies, and agrees with
it for every filter with at most one "other" level (a wildcard, or a word no
relevant rule has there). It is stricter only where EMQX's rule language
cannot tell filters apart: with only ``allow +/+`` it denies ``x/y`` (since
``x/#`` must be denied). Prefer ``.../#`` over ``.../+`` after another
wildcard level.

EMQX's ``#`` does not match ``$`` topics: such a topic no entry matches falls
through to ``authorization.no_match`` (keep it ``deny``).
"""

import re

from ..topic_acl import (
    _FRESH,
    ALL,
    ALLOW,
    DENY,
    PUBLISH,
    SUBSCRIBE,
    _covers,
    _intersects,
    _is_dollar_literal,
    _is_wild,
    _subscribe_allowed,
)

# EMQX renders every non-"eq" rule topic as a template (emqx_template):
# such text, or a leading "eq ", can only be written literally as "eq ...".
_EMQX_TEMPLATE_RE = re.compile(r"\$\{[.]?[a-zA-Z0-9._]*\}")


def _emqx_unsafe_level(level: str, index: int) -> bool:
    if index == 0 and level.startswith("eq "):
        return True
    return bool(_EMQX_TEMPLATE_RE.search(level))


def _emqx_topic(levels) -> str | None:
    """The EMQX topic meaning ``levels``, or None if none can."""
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


def _emqx_match(name, flt) -> bool:
    """emqx_topic:match/2 (5.8.9) on word lists; ``name`` may itself hold
    ``+``/``#`` words (a requested filter)."""
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


def _subscribe_section(rules, max_nodes):
    """``[(permission, "eq"|"pat", levels)]`` for one QoS group's
    ``(permission, levels)`` rules.

    A requested filter is classified level by level: one of the literals the
    rules still relevant there have, or "other" (any other word, ``+``, a
    final ``#``), which EMQX cannot tell apart. Each class gets one pattern
    (``+`` for "other") whose verdict is "allow" only if every member with an
    ordinary word in an "other" level is allowed, plus ``eq`` entries for
    its all-wildcard members where :func:`_subscribe_allowed` disagrees.
    Literal classes come first (EMQX's first match picks the most specific);
    subtrees that provably share one verdict collapse into ``.../#``.
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
        # the class of filters of exactly len(prefix) levels; records its
        # "eq" exceptions; None if not applicable
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
    """Drop denies no later allow overlaps: the final deny-all catches the
    same (except on ``$`` first levels, which ``#`` does not reach)."""
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
    """``[(permission, levels, payload)]`` one by one, as
    ``[(permission, "eq"|"pat", levels, payload)]``, never more permissive:
    an allow EMQX cannot be told is dropped, such a deny widened (its levels
    to ``+``), or, on a ``$`` first level no pattern reaches, dropped with
    every later allow it overlaps. ``literal_allows_only``: the subscribe
    fallback, which also drops every allow with a wildcard.
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


def compile_acl(rules, *, max_nodes=20000):
    """The (expanded) rules as EMQX's ``acl`` list: publish entries, then
    subscribe entries per group of QoS levels with the same rules (no
    ``qos`` key when all agree), then a deny of everything, without which
    EMQX would fall through to allow. A QoS group needing more than
    ``max_nodes`` classes falls back to its denies and wildcard-free allows.
    """
    rules = list(rules)
    result = []

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
