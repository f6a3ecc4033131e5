# License LGPL-3.0 or later (https://www.gnu.org/licenses/lgpl).
"""Tests for iot_base.tools.topic_acl (no database needed).

Oracles are independent of the module: a direct recursive reading of MQTT
3.1.1 section 4.7 over a small closed universe of topic names, and a port of
EMQX 5.8.9's matcher/authorizer for the export.
"""

import functools
import itertools
import re

from hypothesis import given, settings
from hypothesis import strategies as st

from odoo.tests.common import BaseCase

from odoo.addons.iot_base.tools import topic_acl
from odoo.addons.iot_base.tools.emqx.acl import compile_acl
from odoo.addons.iot_base.tools.topic_acl import (
    Rule,
    authorize,
    expand_rule,
    expand_rules,
    filter_covers,
    filters_intersect,
    is_valid_topic_filter,
    is_valid_topic_name,
    topic_matches,
)

# ---------------------------------------------------------------------------
# Reference semantics over a closed universe
# ---------------------------------------------------------------------------

# Rule filters use RULE_WORDS (+ wildcards, depth <= 3).  Topic names use one
# extra plain word "z" that no rule mentions (it stands for "any other word");
# a fresh "$" word is unnecessary: no filter over RULE_WORDS matches it.
RULE_WORDS = ("a", "b", "$s", "")
TOPIC_WORDS = RULE_WORDS + ("z",)
MAX_FILTER_DEPTH = 3
MAX_TOPIC_DEPTH = MAX_FILTER_DEPTH + 2

UNIVERSE = [
    "/".join(levels)
    for depth in range(1, MAX_TOPIC_DEPTH + 1)
    for levels in itertools.product(TOPIC_WORDS, repeat=depth)
    if "/".join(levels) != ""
]
UNIVERSE_LEVELS = [tuple(t.split("/")) for t in UNIVERSE]


def ref_match(flt, topic):
    """MQTT 3.1.1 4.7, read literally (filter and topic as level tuples)."""
    if flt[0] in ("+", "#") and topic[0].startswith("$"):
        return False

    def rec(f, t):
        if not f:
            return not t
        if f[0] == "#":
            return True  # this level and below, including the parent
        if not t:
            return False
        return (f[0] == "+" or f[0] == t[0]) and rec(f[1:], t[1:])

    return rec(tuple(flt), tuple(topic))


@functools.cache
def matched(flt):
    """Indices of UNIVERSE topics matched by filter string ``flt``."""
    levels = flt.split("/")
    return frozenset(i for i, t in enumerate(UNIVERSE_LEVELS) if ref_match(levels, t))


def oracle_publish(rules, topic, qos, retain):
    for r in rules:
        if r.action not in ("publish", "all"):
            continue
        if r.qos is not None and qos not in r.qos:
            continue
        if r.retain is not None and r.retain != retain:
            continue
        if ref_match(r.topic.split("/"), topic.split("/")):
            return r.permission
    return "deny"


def sub_rules(rules, qos):
    return [
        r
        for r in rules
        if r.action in ("subscribe", "all") and (r.qos is None or qos in r.qos)
    ]


def oracle_subscribe(rules, flt, qos):
    """Every universe topic matched by ``flt`` must be first-match allowed."""
    remaining = set(matched(flt))
    for r in sub_rules(rules, qos):
        hit = remaining & matched(r.topic)
        if hit and r.permission == "deny":
            return "deny"
        remaining -= hit
        if not remaining:
            return "allow"
    return "deny" if remaining else "allow"


# ---------------------------------------------------------------------------
# Port of EMQX 5.8.9 (apps/emqx/src/emqx_topic.erl match/2,
# apps/emqx_auth/src/emqx_authz/emqx_authz_rule.erl matches/4,
# apps/emqx_auth/src/emqx_authz/emqx_authz_rule_raw.erl parse_rule/1)
# ---------------------------------------------------------------------------

WILD = ("+", "#")


def emqx_words(topic):
    # words/1: '' -> '', "+" -> '+', "#" -> '#', other -> binary.  Plain str
    # suffices: a binary word can never be "+" or "#".
    return topic.split("/")


def _emqx_match_tokens(name, flt):
    if not name and not flt:  # match_tokens([], [])
        return True
    if name and flt and name[0] == flt[0]:  # [H|T1], [H|T2]
        return _emqx_match_tokens(name[1:], flt[1:])
    if name and flt and flt[0] == "+":  # [_H|T1], ['+'|T2]
        return _emqx_match_tokens(name[1:], flt[1:])
    if flt == ["#"]:  # (_, ['#'])
        return True
    return False


def _emqx_match_words(name, flt):
    # match_words([<<$$, _/binary>> | _], [W | _]) when ?IS_WILDCARD(W) -> false
    if (
        name
        and flt
        and name[0] not in WILD
        and name[0].startswith("$")
        and flt[0] in WILD
    ):
        return False
    return _emqx_match_tokens(name, flt)


def emqx_match(name, flt):
    """emqx_topic:match(Name, Filter); str arguments are binaries, lists are
    word lists."""
    if isinstance(name, str) and isinstance(flt, str):
        if name.startswith("$") and (flt.startswith("+") or flt.startswith("#")):
            return False
        return _emqx_match_words(emqx_words(name), emqx_words(flt))
    if isinstance(name, str):
        name = emqx_words(name)
    if isinstance(flt, str):
        flt = emqx_words(flt)
    return _emqx_match_words(list(name), list(flt))


_EMQX_PLACEHOLDER = re.compile(r"\$\{[.]?([a-zA-Z0-9._]*)\}")
_EMQX_ALLOWED_VARS = ("username", "clientid", "cert_common_name", "zone")


def emqx_compile(raw):
    perm = {"allow": "allow", "deny": "deny"}[raw["permission"]]
    action = {
        "pub": "publish",
        "publish": "publish",
        "sub": "subscribe",
        "subscribe": "subscribe",
        "all": "all",
    }[raw["action"]]
    topic = raw["topic"]
    assert isinstance(topic, str)
    if topic.startswith("eq "):
        cond = ("eq", emqx_words(topic[3:]))
    else:
        for m in _EMQX_PLACEHOLDER.finditer(topic):
            var = m.group(1)
            assert var not in _EMQX_ALLOWED_VARS and not var.startswith(
                "client_attrs."
            ), f"EMQX would render {topic!r} as a template"
        cond = ("pat", emqx_words(topic))
    qos = raw.get("qos", [0, 1, 2])
    qos = [qos] if isinstance(qos, int) else list(qos)
    assert all(q in (0, 1, 2) for q in qos)
    retain = raw.get("retain", "all") if action != "subscribe" else "all"
    assert retain in ("all", True, False)
    return perm, action, qos, retain, cond


class CompiledAcl(tuple):
    """An ACL list as EMQX holds it after parse_and_compile_rules/1."""


def emqx_compile_acl(acl):
    return acl if isinstance(acl, CompiledAcl) else CompiledAcl(map(emqx_compile, acl))


def emqx_authorize(acl, action, topic, qos, retain=False):
    """First match over the ACL (raw or compiled); 'nomatch' if none."""
    words = emqx_words(topic)
    for perm, r_action, r_qos, r_retain, (kind, r_words) in emqx_compile_acl(acl):
        if action == "publish":
            ok = r_action in ("publish", "all") and qos in r_qos
            ok = ok and (r_retain == "all" or r_retain == retain)
        else:
            ok = r_action in ("subscribe", "all") and qos in r_qos
        if not ok:
            continue
        if kind == "eq":
            hit = words == r_words
        else:
            hit = emqx_match(words, r_words)
        if hit:
            return perm
    return "nomatch"


def emqx_decision(acl, action, topic, qos, retain=False):
    """Decision with the no-match default at 'deny' (authorization.no_match)."""
    res = emqx_authorize(acl, action, topic, qos, retain)
    if res == "nomatch":
        # the final deny-all must catch everything except '$' first levels
        assert topic.split("/")[0].startswith("$"), (topic, acl)
        return "deny"
    return res


# ---------------------------------------------------------------------------
# Strategies
# ---------------------------------------------------------------------------


def _filter_strategy(words, max_depth=MAX_FILTER_DEPTH):
    def build(parts):
        levels, last = parts
        return "/".join(list(levels) + [last])

    return (
        st.tuples(
            st.lists(st.sampled_from(words + ("+",)), max_size=max_depth - 1),
            st.sampled_from(words + ("+", "#")),
        )
        .map(build)
        .filter(lambda f: f != "")
    )


rule_filters = _filter_strategy(RULE_WORDS)
request_filters = _filter_strategy(TOPIC_WORDS)
topic_names = st.sampled_from(UNIVERSE)
qos_levels = st.sampled_from((0, 1, 2))

rules_strategy = st.lists(
    st.builds(
        Rule,
        permission=st.sampled_from(("allow", "deny")),
        action=st.sampled_from(("publish", "subscribe", "all")),
        topic=rule_filters,
        qos=st.one_of(st.none(), st.frozensets(st.sampled_from((0, 1, 2)), max_size=3)),
        retain=st.one_of(st.none(), st.booleans()),
    ),
    max_size=5,
)

# every valid request filter of depth <= 3 over TOPIC_WORDS
ALL_REQUEST_FILTERS = [
    f
    for depth in range(1, MAX_FILTER_DEPTH + 1)
    for levels in itertools.product(TOPIC_WORDS + ("+", "#"), repeat=depth)
    for f in ["/".join(levels)]
    if is_valid_topic_filter(f)
]
SHORT_TOPICS = [t for t in UNIVERSE if t.count("/") < MAX_FILTER_DEPTH]

FAST = settings(max_examples=100, deadline=None, derandomize=True, database=None)
MEDIUM = settings(max_examples=40, deadline=None, derandomize=True, database=None)
SLOW = settings(max_examples=15, deadline=None, derandomize=True, database=None)


# ---------------------------------------------------------------------------
# Tests
# ---------------------------------------------------------------------------


class TestTopicValidation(BaseCase):
    def test_names(self):
        for name in ("a", "a/b", "/", "a//b", "/a", "a/", "$SYS/x", " ", "é/ü"):
            self.assertTrue(is_valid_topic_name(name), name)
        for name in ("", "a/+", "+", "#", "a/#", "a+", "a#b", "a\x00b", None, b"a", 3):
            self.assertFalse(is_valid_topic_name(name), repr(name))
        self.assertTrue(is_valid_topic_name("x" * 65535))
        self.assertFalse(is_valid_topic_name("x" * 65536))
        self.assertFalse(is_valid_topic_name("é" * 32768))  # 65536 bytes
        self.assertFalse(is_valid_topic_name("a\ud800"))  # not encodable

    def test_filters(self):
        for flt in (
            "#",
            "+",
            "a/#",
            "a/+",
            "+/+",
            "+/#",
            "a//b",
            "/a",
            "a/",
            "/",
            "/#",
            "+/a/#",
            "$SYS/#",
            "a/+/b/#",
        ):
            self.assertTrue(is_valid_topic_filter(flt), flt)
        for flt in (
            "",
            "a#",
            "a/#/b",
            "#/a",
            "a+",
            "+a/b",
            "a/b+",
            "##",
            "++",
            "a\x00",
            "x" * 65536,
            None,
        ):
            self.assertFalse(is_valid_topic_filter(flt), repr(flt))

    @FAST
    @given(st.text(alphabet="ab+#/$\x00", max_size=8))
    def test_validity_definitions(self, s):
        levels = s.split("/")
        expected_filter = (
            s != ""
            and "\x00" not in s
            and all(
                lv in ("+", "#") or ("+" not in lv and "#" not in lv) for lv in levels
            )
            and all(lv != "#" for lv in levels[:-1])
        )
        self.assertEqual(is_valid_topic_filter(s), expected_filter)
        self.assertEqual(
            is_valid_topic_name(s), expected_filter and "+" not in s and "#" not in s
        )


class TestMatching(BaseCase):
    def test_spec_table(self):
        table = [
            ("sport/tennis/player1/#", "sport/tennis/player1", True),
            ("sport/tennis/player1/#", "sport/tennis/player1/ranking", True),
            ("sport/tennis/player1/#", "sport/tennis/player1/score/wimbledon", True),
            ("sport/#", "sport", True),
            ("#", "a/b/c", True),
            ("#", "/", True),
            ("sport/tennis/+", "sport/tennis/player1", True),
            ("sport/tennis/+", "sport/tennis/player1/ranking", False),
            ("sport/+", "sport", False),
            ("sport/+", "sport/", True),
            ("+/+", "/finance", True),
            ("/+", "/finance", True),
            ("+", "/finance", False),
            ("a//b", "a//b", True),
            ("a/+/b", "a//b", True),
            ("#", "$SYS/x", False),
            ("+/x", "$SYS/x", False),
            ("+", "$SYS", False),
            ("$SYS/#", "$SYS/x", True),
            ("$SYS/#", "$SYS", True),
            ("$SYS/+", "$SYS/x", True),
            ("a/$x/+", "a/$x/y", True),
            ("a/+", "a/$x", True),  # '$' only special at the first level
            ("a", "a/b", False),
            ("a/b", "a", False),
            ("a/+", "a/b", True),
            ("a/#", "a+", False),  # invalid topic name
            ("a/#/b", "a/x/b", False),  # invalid filter
        ]
        for flt, topic, expected in table:
            self.assertEqual(topic_matches(flt, topic), expected, (flt, topic))

    @FAST
    @given(rule_filters, topic_names)
    def test_matches_reference(self, flt, topic):
        self.assertEqual(
            topic_matches(flt, topic), ref_match(flt.split("/"), topic.split("/"))
        )

    def test_covers_table(self):
        table = [
            ("a/+", "a/#", False),
            ("a/#", "a/+/b", True),
            ("a/#", "a", True),
            ("a/#", "a/#", True),
            ("a/+", "a/+", True),
            ("a/+", "a/b", True),
            ("a/b", "a/+", False),
            ("+/x", "+/x", True),
            ("#", "$SYS/#", False),
            ("#", "$SYS", False),
            ("$SYS/#", "$SYS/+", True),
            ("+/#", "#", True),
            ("+", "#", False),
            ("#", "#", True),
            ("#", "+/+", True),
            ("+/+", "#", False),
            ("a/+/#", "a/#", False),
            ("a/#", "a/+/#", True),
            ("+/+", "/+", True),
            ("a", "a", True),
            ("a", "a/#", False),
            ("a/+", "a/", True),
            ("a/#", "b/#", False),
            ("a/+", "a/#/", False),  # invalid sub
        ]
        for rule, sub, expected in table:
            self.assertEqual(filter_covers(rule, sub), expected, (rule, sub))

    @FAST
    @given(rule_filters, request_filters)
    def test_covers_oracle(self, rule, sub):
        expected = matched(sub) <= matched(rule)
        self.assertEqual(filter_covers(rule, sub), expected)

    @FAST
    @given(rule_filters, request_filters)
    def test_intersect_oracle(self, f1, f2):
        expected = bool(matched(f1) & matched(f2))
        self.assertEqual(filters_intersect(f1, f2), expected)
        self.assertEqual(filters_intersect(f2, f1), expected)


class TestRule(BaseCase):
    def test_normalisation_and_validation(self):
        r = Rule("allow", "publish", "a/+", qos=[0, 1], retain=True)
        self.assertEqual(r.qos, frozenset({0, 1}))
        self.assertEqual(Rule("allow", "publish", "a", qos=2).qos, frozenset({2}))
        self.assertEqual(r, Rule("allow", "publish", "a/+", qos=(1, 0), retain=True))
        for bad in (
            dict(permission="maybe", action="all", topic="a"),
            dict(permission="allow", action="pub", topic="a"),
            dict(permission="allow", action="all", topic="a/#/b"),
            dict(permission="allow", action="all", topic=""),
            dict(permission="allow", action="all", topic="a", qos=3),
            dict(permission="allow", action="all", topic="a", qos=[True]),
            dict(permission="allow", action="all", topic="a", qos="01"),
            dict(permission="allow", action="all", topic="a", retain=1),
        ):
            with self.assertRaises(ValueError):
                Rule(**bad)


class TestAuthorize(BaseCase):
    def test_publish_table(self):
        rules = [
            Rule("deny", "all", "$SYS/#"),
            Rule("deny", "publish", "devices/c1/secret"),
            Rule("allow", "publish", "devices/c1/#", qos={0, 1}),
            Rule("allow", "publish", "retained/+", retain=True),
            Rule("allow", "subscribe", "up/#"),
        ]
        self.assertEqual(authorize(rules, "publish", "devices/c1/x"), "allow")
        self.assertEqual(authorize(rules, "publish", "devices/c1"), "allow")
        self.assertEqual(authorize(rules, "publish", "devices/c1/x", qos=2), "deny")
        self.assertEqual(authorize(rules, "publish", "devices/c1/secret"), "deny")
        self.assertEqual(authorize(rules, "publish", "devices/c2/x"), "deny")
        self.assertEqual(
            authorize(rules, "publish", "retained/a", retain=True), "allow"
        )
        self.assertEqual(
            authorize(rules, "publish", "retained/a", retain=False), "deny"
        )
        self.assertEqual(authorize(rules, "publish", "up/x"), "deny")  # subscribe-only
        self.assertEqual(authorize(rules, "publish", "devices/c1/+"), "deny")  # invalid
        self.assertEqual(authorize(rules, "publish", "devices/c1/x", qos=3), "deny")
        self.assertEqual(authorize([], "publish", "a"), "deny")
        with self.assertRaises(ValueError):
            authorize(rules, "connect", "a")

    def test_subscribe_table(self):
        rules = [
            Rule("deny", "subscribe", "a/b"),
            Rule("allow", "subscribe", "a/#"),
            Rule("allow", "all", "c/+"),
            Rule("allow", "subscribe", "d"),
            Rule("allow", "subscribe", "d/+/#"),
            Rule("allow", "subscribe", "q/#", qos=0),
            Rule("allow", "subscribe", "$SYS/#"),
            Rule("allow", "subscribe", "e/+"),
            Rule("allow", "subscribe", "e/+/+"),
        ]
        cases = [
            ("a/c", "allow"),
            ("a/b", "deny"),
            ("a/+", "deny"),  # reaches a/b
            ("a/#", "deny"),
            ("a/b/c", "allow"),
            ("a/+/c", "allow"),
            ("a", "allow"),
            ("c/x", "allow"),
            ("c/+", "allow"),
            ("c/#", "deny"),  # rule c/+ does not cover c/# (c, c/x/y)
            ("c", "deny"),
            ("d/#", "allow"),  # union of 'd' and 'd/+/#'
            ("d/x/#", "allow"),
            ("e/#", "deny"),  # e and e/x/y/z are not allowed
            ("e/+/#", "deny"),
            ("e/+/+", "allow"),
            ("#", "deny"),
            ("+/#", "deny"),
            ("$SYS/#", "allow"),
            ("$SYS/+", "allow"),
            ("+", "deny"),
            ("q/#", "allow"),
            ("a/b/+/#/x", "deny"),  # invalid
            ("", "deny"),  # invalid
        ]
        for flt, expected in cases:
            self.assertEqual(authorize(rules, "subscribe", flt), expected, flt)
        self.assertEqual(authorize(rules, "subscribe", "q/#", qos=1), "deny")
        self.assertEqual(authorize([], "subscribe", "a"), "deny")
        self.assertEqual(
            authorize([Rule("allow", "subscribe", "#")], "subscribe", "#"), "allow"
        )
        self.assertEqual(
            authorize([Rule("allow", "subscribe", "#")], "subscribe", "$SYS/#"), "deny"
        )
        self.assertEqual(
            authorize([Rule("allow", "subscribe", "+/x")], "subscribe", "+/x"), "allow"
        )

    @FAST
    @given(rules_strategy, topic_names, qos_levels, st.booleans())
    def test_publish_oracle(self, rules, topic, qos, retain):
        self.assertEqual(
            authorize(rules, "publish", topic, qos=qos, retain=retain),
            oracle_publish(rules, topic, qos, retain),
        )

    @FAST
    @given(rules_strategy, request_filters, qos_levels)
    def test_subscribe_oracle(self, rules, flt, qos):
        self.assertEqual(
            authorize(rules, "subscribe", flt, qos=qos),
            oracle_subscribe(rules, flt, qos),
        )

    @MEDIUM
    @given(
        st.lists(
            st.builds(
                Rule,
                permission=st.sampled_from(("allow", "deny")),
                action=st.just("subscribe"),
                topic=rule_filters,
            ),
            min_size=3,
            max_size=8,
        ),
        request_filters,
    )
    def test_subscribe_oracle_longer_lists(self, rules, flt):
        self.assertEqual(
            authorize(rules, "subscribe", flt), oracle_subscribe(rules, flt, 0)
        )

    def test_realistic_rule_list(self):
        rules = [
            Rule("deny", "all", "$SYS/#"),
            Rule("deny", "subscribe", "tenant/acme/devices/+/secret/#"),
            Rule("allow", "all", "tenant/acme/devices/dev-1/#"),
            Rule("allow", "publish", "tenant/acme/telemetry/dev-1/+/+/+"),
            Rule("allow", "subscribe", "tenant/acme/devices/+/status"),
            Rule("allow", "subscribe", "tenant/acme/devices/+/telemetry/#"),
            Rule("allow", "subscribe", "tenant/acme/broadcast/+"),
            Rule("deny", "subscribe", "tenant/acme/devices/dev-2/#"),
            Rule("allow", "subscribe", "tenant/acme/devices/+/+/+/+"),
            Rule("allow", "subscribe", "tenant/acme/devices/+/+/+/+/+/#"),
        ]
        requests = [
            "tenant/acme/devices/dev-1/cfg/#",
            "tenant/acme/devices/dev-1/#",  # reaches devices/+/secret/#
            "tenant/acme/devices/+/status",
            "tenant/acme/devices/+/telemetry/#",
            "tenant/acme/devices/#",
            "tenant/acme/devices/+/+/+/+/#",
            "tenant/acme/devices/dev-3/+/+/+",
            "tenant/+/devices/+/+/+/#",
            "#",
            "+/+/+/+/+/+/+",
            "tenant/acme/broadcast/+",
        ]
        expected = [authorize(rules, "subscribe", f) for f in requests]
        # speed is measured by bench/, not asserted here
        self.assertEqual(
            expected,
            [
                "allow",
                "deny",
                "allow",
                "allow",
                "deny",
                "deny",
                "deny",
                "deny",
                "deny",
                "deny",
                "allow",
            ],
        )


class TestPlaceholders(BaseCase):
    def test_safe_substitution(self):
        r = Rule("allow", "all", "t/${namespace}/dev-${clientid}/${username}/#", qos=1)
        (out,) = expand_rule(r, "bob", "c1", "acme")
        self.assertEqual(out, Rule("allow", "all", "t/acme/dev-c1/bob/#", qos=1))
        self.assertEqual(
            expand_rule(Rule("deny", "all", "a/+"), None, None, None),
            (Rule("deny", "all", "a/+"),),
        )
        # substitution is simultaneous: a value is never expanded again
        (out,) = expand_rule(
            Rule("allow", "all", "${username}/x"), "${clientid}", "c", "n"
        )
        self.assertEqual(out.topic, "${clientid}/x")
        # '$' values are plain text
        (out,) = expand_rule(Rule("allow", "all", "${username}/x"), "$SYS", "c", "n")
        self.assertEqual(out.topic, "$SYS/x")

    def test_unsafe_allow_dropped(self):
        for bad in ("a/b", "+", "#", "x+y", "x#", "a\x00", "", None, 3):
            r = Rule("allow", "subscribe", "devices/${clientid}/#")
            self.assertEqual(expand_rule(r, "u", bad, "n"), (), repr(bad))
            rules = expand_rules([r, Rule("allow", "all", "pub/x")], "u", bad, "n")
            self.assertEqual(rules, [Rule("allow", "all", "pub/x")])
            self.assertEqual(authorize(rules, "subscribe", "devices/a/b"), "deny")

    def test_unsafe_deny_widened(self):
        r = Rule("deny", "publish", "t/${namespace}/x/${clientid}/y", retain=True)
        self.assertEqual(
            expand_rule(r, "u", "a/b", "acme"),
            (Rule("deny", "publish", "t/acme/x/#", retain=True),),
        )
        self.assertEqual(
            expand_rule(Rule("deny", "all", "${username}/x"), "+", "c", "n"),
            (Rule("deny", "all", "#"),),
        )
        self.assertEqual(
            expand_rule(Rule("deny", "all", "${username}/x"), "$SYS/brokers", "c", "n"),
            (Rule("deny", "all", "#"), Rule("deny", "all", "$SYS/#")),
        )

    @FAST
    @given(
        st.sampled_from(("allow", "deny")),
        st.lists(
            st.sampled_from(
                (
                    "a",
                    "+",
                    "${username}",
                    "${clientid}",
                    "x${namespace}",
                    "${username}${clientid}",
                    "",
                )
            ),
            min_size=1,
            max_size=3,
        ).filter(lambda levels: levels != [""]),  # "" is not a filter
        st.booleans(),
        *[
            st.sampled_from(
                (
                    "a",
                    "b",
                    "$s",
                    "z",
                    "a/b",
                    "$s/a",
                    "+",
                    "#",
                    "a+",
                    "",
                    None,
                    "a\x00",
                    "${clientid}",
                    "/",
                    "$s/+",
                )
            )
            for _ in range(3)
        ],
    )
    def test_placeholder_safety(
        self, permission, levels, hashed, username, clientid, ns
    ):
        template = "/".join(levels + (["#"] if hashed else []))
        rule = Rule(permission, "all", template, qos={0, 2}, retain=False)
        values = {"username": username, "clientid": clientid, "namespace": ns}
        used = re.findall(r"\$\{(username|clientid|namespace)\}", template)
        safe = all(
            isinstance(values[v], str)
            and values[v]
            and not set(values[v]) & set("+#/\x00")
            for v in used
        )
        out = expand_rule(rule, username, clientid, ns)
        literal = re.sub(
            r"\$\{(username|clientid|namespace)\}",
            lambda m: values[m.group(1)] if isinstance(values[m.group(1)], str) else "",
            template,
        )
        for r in out:
            self.assertEqual(
                (r.permission, r.action, r.qos, r.retain),
                (permission, "all", {0, 2}, False),
            )
        if safe:
            self.assertEqual([r.topic for r in out], [literal])
            return
        if permission == "allow":
            self.assertEqual(out, ())
            return
        # a deny must keep denying everything it could mean: the literal
        # substitution read as a filter, or as a topic name
        meant = set()
        if is_valid_topic_filter(literal):
            meant |= matched(literal)
        if literal in UNIVERSE:
            meant.add(UNIVERSE.index(literal))
        denied = set().union(*(matched(r.topic) for r in out)) if out else set()
        self.assertLessEqual(meant, denied, (template, values, [r.topic for r in out]))


class TestEmqxPort(BaseCase):
    """Our port reproduces the EMQX behaviour we rely on (cases taken from
    apps/emqx/test/emqx_topic_SUITE.erl plus the SUBSCRIBE quirks)."""

    def test_port_table(self):
        self.assertTrue(emqx_match("a/b/c", "a/b/+"))
        self.assertFalse(emqx_match("$share/x/y", "+/+/#"))
        self.assertFalse(emqx_match("house", "house/+"))
        self.assertTrue(emqx_match("sport/", "sport/+"))
        self.assertTrue(emqx_match("/finance", "+/+"))
        self.assertTrue(emqx_match("sport", "sport/#"))
        # SUBSCRIBE filters are matched as if their wildcards were words:
        self.assertTrue(emqx_match(["a", "#"], ["a", "+"]))  # rule a/+ admits a/#
        self.assertTrue(emqx_match(["#"], ["+"]))  # rule + admits #
        self.assertTrue(emqx_match(["a", "#"], ["a", "+", "#"]))
        self.assertFalse(emqx_match(["a", "+"], ["a", "b"]))  # deny a/b misses a/+
        self.assertFalse(emqx_match(["$SYS", "#"], ["#"]))
        self.assertTrue(emqx_match(["+", "x"], ["+", "x"]))
        acl = [{"permission": "allow", "action": "subscribe", "topic": "a/+"}]
        self.assertEqual(emqx_authorize(acl, "subscribe", "a/#", 0), "allow")
        acl = [{"permission": "deny", "action": "subscribe", "topic": "eq a/#"}] + acl
        self.assertEqual(emqx_authorize(acl, "subscribe", "a/#", 0), "deny")
        self.assertEqual(emqx_authorize(acl, "subscribe", "a/x", 0), "allow")
        with self.assertRaises(AssertionError):
            emqx_compile(
                {"permission": "allow", "action": "all", "topic": "${username}/#"}
            )


class TestEmqxExport(BaseCase):
    def assertExportSafe(self, rules, acl, exact_where=None):
        """Publish: EMQX == ours.  Subscribe: EMQX allow => ours allow, and
        equality where ``exact_where(filter, qos)`` holds."""
        self.assertEqual(acl[-1], {"permission": "deny", "action": "all", "topic": "#"})
        acl = emqx_compile_acl(acl)
        for q in (0, 1, 2):
            for retain in (False, True):
                for topic in SHORT_TOPICS:
                    self.assertEqual(
                        emqx_decision(acl, "publish", topic, q, retain),
                        authorize(rules, "publish", topic, qos=q, retain=retain),
                        (topic, q, retain, rules, acl),
                    )
            for flt in ALL_REQUEST_FILTERS:
                ours = authorize(rules, "subscribe", flt, qos=q)
                theirs = emqx_decision(acl, "subscribe", flt, q)
                if theirs == "allow":
                    self.assertEqual(ours, "allow", (flt, q, rules, acl))
                if exact_where is not None and exact_where(flt, q):
                    self.assertEqual(theirs, ours, (flt, q, rules, acl))

    def test_spec_example(self):
        rules = [
            Rule("deny", "all", "$SYS/#"),
            Rule("allow", "all", "a/#"),
            Rule("allow", "subscribe", "b/+"),
            Rule("allow", "publish", "z", qos=(0, 1), retain=False),
        ]
        acl = compile_acl(rules)
        self.assertEqual(
            acl,
            [
                {"permission": "deny", "action": "publish", "topic": "$SYS/#"},
                {"permission": "allow", "action": "publish", "topic": "a/#"},
                {
                    "permission": "allow",
                    "action": "publish",
                    "topic": "z",
                    "qos": [0, 1],
                    "retain": False,
                },
                {"permission": "deny", "action": "subscribe", "topic": "eq b/#"},
                {"permission": "deny", "action": "subscribe", "topic": "$SYS/#"},
                {"permission": "allow", "action": "subscribe", "topic": "a/#"},
                {"permission": "allow", "action": "subscribe", "topic": "b/+"},
                {"permission": "deny", "action": "all", "topic": "#"},
            ],
        )
        self.assertEqual(emqx_decision(acl, "subscribe", "b/#", 0), "deny")
        self.assertEqual(emqx_decision(acl, "subscribe", "b/z", 0), "allow")
        self.assertExportSafe(rules, acl, exact_where=lambda f, q: True)

    def test_realistic_configs_exact(self):
        configs = [
            [
                Rule("deny", "all", "$s/#"),
                Rule("allow", "all", "a/b/#"),
                Rule("allow", "subscribe", "b/+"),
                Rule("allow", "subscribe", "a/+/a"),
            ],
            [
                Rule("deny", "subscribe", "a/b/a"),
                Rule("allow", "subscribe", "a/+/a"),
                Rule("allow", "publish", "a/+/b", qos={1, 2}),
            ],
            [
                Rule("allow", "subscribe", "a/#", qos=0),
                Rule("allow", "subscribe", "a/+", qos={1, 2}),
                Rule("allow", "subscribe", "$s/+/b"),
            ],
            [
                Rule("allow", "subscribe", "a"),
                Rule("allow", "subscribe", "a/+/#"),  # together they cover a/#
                Rule("allow", "subscribe", "+/b/#"),
            ],
        ]
        for rules in configs:
            self.assertExportSafe(
                rules, compile_acl(rules), exact_where=lambda f, q: True
            )

    def test_documented_stricter_cases(self):
        # allow +/+: x/# must be denied and cannot be told apart from x/y
        rules = [Rule("allow", "subscribe", "+/+")]
        acl = compile_acl(rules)
        self.assertEqual(authorize(rules, "subscribe", "z/z"), "allow")
        self.assertEqual(emqx_decision(acl, "subscribe", "z/z", 0), "deny")
        self.assertEqual(emqx_decision(acl, "subscribe", "+/+", 0), "allow")  # via eq
        self.assertEqual(emqx_decision(acl, "subscribe", "z/#", 0), "deny")
        self.assertExportSafe(rules, acl)
        # deny a/#, allow #: +/b reaches a/b and cannot be told apart from z/b
        rules = [Rule("deny", "subscribe", "a/#"), Rule("allow", "subscribe", "#")]
        acl = compile_acl(rules)
        self.assertEqual(authorize(rules, "subscribe", "z/b"), "allow")
        self.assertEqual(emqx_decision(acl, "subscribe", "z/b", 0), "deny")
        self.assertEqual(emqx_decision(acl, "subscribe", "z", 0), "allow")
        # b is as "fresh" as z here: b/# has two unresolvable levels
        self.assertEqual(authorize(rules, "subscribe", "b/#"), "allow")
        self.assertEqual(emqx_decision(acl, "subscribe", "b/#", 0), "deny")
        for flt in ("#", "+/b", "+", "a/+", "+/#", "a/#", "a"):
            self.assertEqual(emqx_decision(acl, "subscribe", flt, 0), "deny", flt)
        self.assertExportSafe(rules, acl)

    def test_template_and_eq_topics(self):
        rules = [
            Rule("deny", "all", "a/${clientid}/b"),  # wildcard-free: exact via eq
            Rule("deny", "all", "b/${username}/+"),  # widened to b/+/+
            Rule("allow", "all", "${zone}/+"),  # dropped
            Rule("allow", "all", "eq x/y"),  # wildcard-free -> "eq eq x/y"
            Rule("allow", "all", "a/#"),
            Rule("allow", "all", "b/#"),
        ]
        acl = compile_acl(rules)
        for item in acl:
            emqx_compile(item)  # asserts no topic is rendered as a template
        topics = [(i["action"], i["permission"], i["topic"]) for i in acl]
        self.assertIn(("publish", "deny", "eq a/${clientid}/b"), topics)
        self.assertIn(("publish", "deny", "b/+/+"), topics)
        self.assertIn(("publish", "allow", "eq eq x/y"), topics)
        self.assertNotIn("${zone}/+", [t for _, _, t in topics])
        pub = lambda t: emqx_decision(acl, "publish", t, 0)  # noqa: E731
        self.assertEqual(pub("a/${clientid}/b"), "deny")
        self.assertEqual(pub("a/c/b"), "allow")
        self.assertEqual(pub("b/x/y"), "deny")
        self.assertEqual(pub("eq x/y"), "allow")
        self.assertEqual(pub("${zone}/x"), "deny")
        for topic in ("a/${clientid}/b", "a/c/b", "b/${username}/y", "b/x", "eq x/y"):
            self.assertEqual(
                emqx_decision(acl, "subscribe", topic, 0) == "allow"
                and authorize(rules, "subscribe", topic) != "allow",
                False,
                topic,
            )

    @MEDIUM
    @given(rules_strategy)
    def test_export_property(self, rules):
        acl = compile_acl(rules)

        def simple(flt, q):
            # at most one level is a wildcard or a word that no overlapping
            # applicable rule has at that position
            app = [r for r in sub_rules(rules, q) if matched(r.topic) & matched(flt)]
            odd = 0
            for j, w in enumerate(flt.split("/")):
                if w in ("+", "#") or not any(
                    j < len(r.levels) and r.levels[j] == w for r in app
                ):
                    odd += 1
            return odd <= 1

        self.assertExportSafe(rules, acl, exact_where=simple)

    @SLOW
    @given(rules_strategy)
    def test_export_fallback_is_safe(self, rules):
        self.assertExportSafe(rules, compile_acl(rules, max_nodes=0))

    @SLOW
    @given(rules_strategy)
    def test_export_is_deterministic_and_well_formed(self, rules):
        acl = compile_acl(rules)
        self.assertEqual(acl, compile_acl(list(rules)))
        for item in acl:
            self.assertLessEqual(
                set(item), {"permission", "action", "topic", "qos", "retain"}
            )
            self.assertIn(item["permission"], ("allow", "deny"))
            self.assertIn(item["action"], ("publish", "subscribe", "all"))
            topic = item["topic"]
            self.assertTrue(
                is_valid_topic_filter(topic[3:] if topic.startswith("eq ") else topic),
                topic,
            )
            if "retain" in item:
                self.assertEqual(item["action"], "publish")


class TestModuleHygiene(BaseCase):
    def test_no_odoo_import(self):
        with open(topic_acl.__file__, encoding="utf-8") as fh:
            source = fh.read()
        self.assertNotRegex(source, r"(?m)^\s*(from|import)\s+odoo")
        self.assertEqual(
            sorted(topic_acl.__all__),
            sorted(n for n in topic_acl.__all__ if hasattr(topic_acl, n)),
        )
