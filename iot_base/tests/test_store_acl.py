# License LGPL-3.0 or later (https://www.gnu.org/licenses/lgpl).
"""The broker stores' renderings of the topic rules, against the addon's
evaluator (:func:`topic_acl.authorize`): never more permissive."""

import itertools
import random
import re

from odoo.tests import BaseCase, tagged

from odoo.addons.iot_base.tools import topic_acl
from odoo.addons.iot_base.tools.emqx import store as emqx_store
from odoo.addons.iot_base.tools.rabbitmq import store as rabbitmq_store

WORDS = ["a", "b", "$s", "c.d", "e*f", ""]


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


@tagged("post_install", "-at_install")
class TestRabbitmqTopicRegex(BaseCase):
    def test_publish_never_more_permissive(self):
        rng = random.Random(1010)
        for _case in range(300):
            rules = _rules(rng)
            write, _notes = rabbitmq_store.topic_regex(rules, topic_acl.PUBLISH)
            pattern = re.compile(write)
            for topic in TOPICS:
                if not topic_acl.is_valid_topic_name(topic):
                    continue  # MQTT refuses it before any check
                # RabbitMQ runs the expression unanchored (re:run)
                if not pattern.search(rabbitmq_store.mqtt_to_routing_key(topic)):
                    continue
                for qos, retain in itertools.product((0, 1, 2), (False, True)):
                    self.assertEqual(
                        topic_acl.authorize(rules, "publish", topic, qos, retain),
                        "allow",
                        f"{rules} {topic} qos {qos} retain {retain}: {write}",
                    )

    def test_subscribe_never_more_permissive(self):
        rng = random.Random(2020)
        for _case in range(300):
            rules = _rules(rng)
            read, _notes = rabbitmq_store.topic_regex(rules, topic_acl.SUBSCRIBE)
            pattern = re.compile(read)
            for topic_filter in FILTERS:
                if not topic_acl.is_valid_topic_filter(topic_filter):
                    continue
                key = rabbitmq_store.mqtt_to_routing_key(topic_filter)
                if not pattern.search(key):
                    continue
                for qos in (0, 1, 2):
                    self.assertEqual(
                        topic_acl.authorize(rules, "subscribe", topic_filter, qos),
                        "allow",
                        f"{rules} {topic_filter} qos {qos}: {read}",
                    )

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
        perms = rabbitmq_store.resource_permissions("dev.1")
        configure = re.compile(perms["configure"])
        self.assertTrue(configure.search("mqtt-subscription-dev.1qos1"))
        self.assertTrue(configure.search("mqtt-subscription-dev.1~a1qos0"))
        self.assertFalse(configure.search("mqtt-subscription-devX1qos1"))
        self.assertFalse(configure.search("mqtt-subscription-dev.1~a/bqos1"))
        self.assertFalse(configure.search("mqtt-subscription-dev.2qos1"))
        self.assertFalse(configure.search("amq.topic"))
        for name in ("write", "read"):
            expression = re.compile(perms[name])
            self.assertTrue(expression.search("amq.topic"))
            self.assertFalse(expression.search("amq.direct"))
            self.assertFalse(expression.search("amq.topic\n"))


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
