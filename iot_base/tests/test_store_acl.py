# License LGPL-3.0 or later (https://www.gnu.org/licenses/lgpl).
"""The broker stores' renderings of the topic rules, against the addon's
evaluator (:func:`topic_acl.authorize`): never more permissive."""

import itertools
import random
import re

from odoo.tests import BaseCase, tagged

from odoo.addons.iot_base.tools import topic_acl
from odoo.addons.iot_base.tools.emqx import store as emqx_store
from odoo.addons.iot_base.tools.rabbitmq import (
    routing_key_rules,
    to_routing_key,
)
from odoo.addons.iot_base.tools.rabbitmq import store as rabbitmq_store

WORDS = ["a", "b", "$s", "a.b", "e*f", ""]


def _filters(rng, wildcards=True):
    while True:
        topic_filter = _random_filter(rng, wildcards)
        if topic_acl.is_valid_topic_filter(topic_filter):
            return topic_filter


def _random_filter(rng, wildcards):
    levels = rng.randint(1, 3)
    out = []
    for index in range(levels):
        choices = WORDS + (["+", "#"] if wildcards else [])
        word = rng.choice(choices)
        if word == "#" and index != levels - 1:
            word = "+"
        out.append(word)
    return "/".join(out)


def _rules(rng):
    rules = []
    for _ in range(rng.randint(1, 5)):
        qos = rng.choice([None, None, frozenset((0,)), frozenset((1, 2))])
        retain = rng.choice([None, None, True, False])
        rules.append(
            topic_acl.Rule(
                rng.choice(["allow", "allow", "deny"]),
                rng.choice(["publish", "subscribe", "all"]),
                _filters(rng),
                qos,
                retain,
            )
        )
    return rules


# every topic name and filter of up to three levels over WORDS
TOPICS = [
    "/".join(levels)
    for size in (1, 2, 3)
    for levels in itertools.product(WORDS, repeat=size)
]
FILTERS = (
    TOPICS
    + [
        "/".join(levels)
        for size in (1, 2, 3)
        for levels in itertools.product(WORDS + ["+"], repeat=size)
        if "+" in levels
    ]
    + [
        "/".join(levels) + "/#"
        for size in (0, 1, 2)
        for levels in itertools.product(WORDS[:3] + ["+"], repeat=size)
    ]
)
FILTERS = [f.lstrip("/") if f.startswith("/#") else f for f in FILTERS]


def _levels(topic):
    """The levels RabbitMQ routes ``topic`` by (rabbitmq.to_routing_key): a
    ``.`` splits a level, a literal ``*`` of a topic name stays a word."""
    return topic.replace(".", "/")


def _approximated(notes):
    """Whether the compiler left out something the evaluator would allow
    (an allow with a "." in a level is not: the evaluator's levels never
    hold one, so such a rule matches none of them)."""
    return any("routing-key separator" not in note for note in notes)


@tagged("post_install", "-at_install", "iot_rabbitmq")
class TestRabbitmqTopicRegex(BaseCase):
    """The store's topic permissions over the routing keys of generated
    topics (and filters), ``.`` levels among them, against the evaluator on
    the levels RabbitMQ sees: never more permissive, and exact whenever the
    compiler reports no approximation (for subscriptions: with one allow,
    as a binding key is matched against each rule on its own)."""

    def _check(self, action, rules, candidates, counts):
        expression, notes = rabbitmq_store.topic_regex(rules, action)
        pattern = re.compile(expression)
        kept = routing_key_rules(rules)
        allows = [
            r for r in kept if r.permission == "allow" and r.action in (action, "all")
        ]
        exact = not _approximated(notes) and (action == "publish" or len(allows) <= 1)
        flags = (
            itertools.product((0, 1, 2), (False, True))
            if action == "publish"
            else ((qos, False) for qos in (0, 1, 2))
        )
        flags = list(flags)
        for topic in candidates:
            # RabbitMQ runs the expression unanchored (re:run)
            granted = bool(pattern.search(to_routing_key(topic)))
            levels = _levels(topic)
            allowed = all(
                topic_acl.authorize(rules, action, levels, qos, retain) == "allow"
                and topic_acl.authorize(kept, action, levels, qos, retain) == "allow"
                for qos, retain in flags
            )
            if granted:
                counts["granted"] += 1
                self.assertTrue(allowed, f"{rules} {action} {topic}: {expression}")
            # a binding word with a literal "*" is left to no "+" (stricter)
            if exact and not (action == "subscribe" and "*" in topic):
                counts["exact"] += 1
                counts["exact_allowed"] += allowed
                counts["dotted"] += "." in topic
                self.assertEqual(
                    granted, allowed, f"{rules} {action} {topic}: {expression}"
                )

    def _run(self, action, seed, candidates):
        rng = random.Random(seed)
        counts = dict.fromkeys(("granted", "exact", "exact_allowed", "dotted"), 0)
        dotted_rules = 0
        for _case in range(300):
            rules = _rules(rng)
            dotted_rules += any("." in rule.topic for rule in rules)
            self._check(action, rules, candidates, counts)
        # the checks ran, both ways, and on "." levels (rules and topics)
        self.assertGreater(counts["granted"], 200, counts)
        self.assertGreater(counts["exact"], 10000, counts)
        self.assertGreater(counts["exact_allowed"], 200, counts)
        self.assertGreater(counts["exact"] - counts["exact_allowed"], 1000, counts)
        self.assertGreater(counts["dotted"], 1000, counts)
        self.assertGreater(dotted_rules, 50)

    def test_publish_never_more_permissive(self):
        names = [topic for topic in TOPICS if topic_acl.is_valid_topic_name(topic)]
        self._run("publish", 1010, names)

    def test_subscribe_never_more_permissive(self):
        filters = [f for f in FILTERS if topic_acl.is_valid_topic_filter(f)]
        self._run("subscribe", 2020, filters)

    def test_exact_where_it_can_be(self):
        """The usual device rules come out exact, not merely safe."""
        rules = [
            topic_acl.Rule("allow", "publish", "ns/devices/d1/telemetry/#"),
            topic_acl.Rule("allow", "subscribe", "ns/devices/d1/commands/#"),
            topic_acl.Rule("deny", "all", "#"),
        ]
        perms, notes = rabbitmq_store.topic_permissions(rules)
        self.assertEqual(notes, [])
        write, read = re.compile(perms["write"]), re.compile(perms["read"])
        self.assertTrue(write.search("ns.devices.d1.telemetry"))
        self.assertTrue(write.search("ns.devices.d1.telemetry.x.y"))
        self.assertFalse(write.search("ns.devices.d2.telemetry"))
        self.assertFalse(write.search("ns.devices.d1.telemetry\n"))
        self.assertTrue(read.search("ns.devices.d1.commands.#"))
        self.assertTrue(read.search("ns.devices.d1.commands.*"))
        self.assertFalse(read.search("ns.devices.*.commands"))
        self.assertFalse(read.search("ns.devices.d1.telemetry"))

    def test_resource_permissions_own_queues_only(self):
        perms = rabbitmq_store.resource_permissions("dev_1")
        configure = re.compile(perms["configure"])
        self.assertTrue(configure.search("mqtt-subscription-dev_1qos1"))
        self.assertTrue(configure.search("mqtt-subscription-dev_1~a.1qos0"))
        self.assertFalse(configure.search("mqtt-subscription-dev_1~a/bqos1"))
        self.assertFalse(configure.search("mqtt-subscription-dev_2qos1"))
        self.assertFalse(configure.search("mqtt-subscription-dev_1qos2"))
        self.assertFalse(configure.search("amq.topic"))
        for name in ("write", "read"):
            expression = re.compile(perms[name])
            self.assertTrue(expression.search("amq.topic"))
            self.assertFalse(expression.search("amq.direct"))
            self.assertFalse(expression.search("amq.topic\n"))
        # a name with "." gets nothing on RabbitMQ (tools/rabbitmq)
        for expression in rabbitmq_store.resource_permissions("dev.1").values():
            for subject in (
                "mqtt-subscription-dev.1qos1",
                "mqtt-subscription-devX1qos1",
                "amq.topic",
            ):
                self.assertIsNone(re.search(expression, subject))


@tagged("post_install", "-at_install")
class TestEmqxRules(BaseCase):
    def test_cut_to_100_ends_with_deny(self):
        rules = [
            topic_acl.Rule("allow", "publish", f"t/{index}") for index in range(150)
        ]
        entries, notes = emqx_store.user_rules(rules)
        self.assertEqual(len(entries), emqx_store.MAX_RULES)
        self.assertEqual(entries[-1], emqx_store.DENY_ALL)
        self.assertTrue(notes)
        self.assertEqual(entries[0]["topic"], "t/0")

    def test_short_list_ends_with_deny(self):
        entries, notes = emqx_store.user_rules([topic_acl.Rule("allow", "all", "a/#")])
        self.assertEqual(entries[-1], emqx_store.DENY_ALL)
        self.assertEqual(notes, [])
        self.assertLessEqual(len(entries), emqx_store.MAX_RULES)

    def test_hash_is_emqx_salted_sha256(self):
        hash_, salt = emqx_store.emqx_hash("ab" * 20)
        self.assertTrue(salt.isascii() and len(salt) == 16)
        self.assertRegex(hash_, "^[0-9a-f]{64}$")
        self.assertNotEqual(emqx_store.emqx_hash("ab" * 20)[1], salt)
