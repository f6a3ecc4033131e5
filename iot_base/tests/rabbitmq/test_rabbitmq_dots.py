# License LGPL-3.0 or later (https://www.gnu.org/licenses/lgpl).
"""A ``.`` in MQTT topics and usernames on RabbitMQ 3.10 (tools/rabbitmq).

The MQTT plugin maps ``/`` to ``.`` and keeps a ``.``: a dot inside a level
is a routing-key word separator. Checked here:

* the one reading and what each compiler makes of dotted rules and names;
* on a real node, in each mode (HTTP backend, console tokens, internal-user
  store): a client whose topic levels hold ``.`` publishes and receives its
  own topics and is refused another's; with the rule ``ns/${username}/#``,
  whose key pattern ``ns.dev.#`` of ``dev`` holds every key of ``dev.1``, the
  dotted ``dev.1`` gets nothing: RabbitMQ refuses a username with ``.``.
"""

import os
import re
import time

from odoo.tests import BaseCase, HttpCase, new_test_user, tagged

from ...models import iot_store_sync as engine
from ...tools import topic_acl
from ...tools.rabbitmq import (
    DOTTED_USERNAME,
    routing_key_rules,
    routing_key_to_mqtt,
    to_routing_key,
    username_problem,
)
from ...tools.rabbitmq import scopes as rabbitmq_scopes
from ...tools.rabbitmq import store as rabbitmq_store
from ..brokers.rabbitmq import RabbitMQBroker
from ..common import rabbitmq_client
from .test_rabbitmq_jwt import OAuth2BrokerCase
from .test_rabbitmq_store import enable_store

TOKEN = "rabbit-dots-t0ken"
WAIT = 15
# the rule of the dev / dev.1 attack: each credential's own subtree
OWN = "${namespace}/own/${username}/#"
DEV, DEV_DOT = "dev_dots", "dev_dots.1"


def _rule(permission, action, topic):
    return topic_acl.Rule(permission, action, topic)


def node_refused(case, broker, text):
    """The node's log says it refused ``text`` (its own check)."""
    log_dir = os.path.join(broker.base_dir, "log")
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        for name in os.listdir(log_dir):
            with open(os.path.join(log_dir, name), errors="replace") as handle:
                if text in handle.read():
                    return
        time.sleep(0.1)
    case.fail(f"the node never logged {text!r}:\n{broker.log_tail()}")


@tagged("post_install", "-at_install", "iot_rabbitmq")
class TestRabbitmqTopicReading(BaseCase):
    """The one topic <-> routing key reading, without a node."""

    def test_one_reading(self):
        # rabbit_mqtt_util 3.10.8 (read with erl from its beam): / -> .,
        # + -> *, # kept, . kept
        self.assertEqual(to_routing_key("a/b.c/+/#"), "a.b.c.*.#")
        self.assertEqual(to_routing_key("a.b/c"), to_routing_key("a/b/c"))
        for routing_key, topic in [
            ("a.b.c", "a/b/c"),
            ("a.*.#", "a/+/#"),
            ("a..b", "a//b"),
            ("$SYS.x", "$SYS/x"),
            ("", ""),
        ]:
            self.assertEqual(routing_key_to_mqtt(routing_key), topic)
        # the reading has no "." left: it is a level separator
        self.assertEqual(routing_key_to_mqtt(to_routing_key("ns/d/a.b")), "ns/d/a/b")

    def test_routing_key_rules(self):
        rules = [
            _rule("deny", "publish", "ns/d/secret.x/#"),
            _rule("allow", "all", "ns/d.1/#"),
            _rule("allow", "subscribe", "ns/+/a.b"),
            _rule("allow", "all", "ns/d/#"),
        ]
        self.assertEqual(
            routing_key_rules(rules),
            [
                # the deny refuses the key it names; the dotted allows go
                _rule("deny", "publish", "ns/d/secret/x/#"),
                _rule("allow", "all", "ns/d/#"),
            ],
        )

    def test_dotted_username_gets_nothing(self):
        self.assertEqual(username_problem(DEV_DOT), DOTTED_USERNAME)
        self.assertIsNone(username_problem(DEV))
        own = _rule("allow", "all", OWN)
        dev = topic_acl.expand_rules([own], DEV, f"{DEV}~1", "ns")
        dot = topic_acl.expand_rules([own], DEV_DOT, f"{DEV_DOT}~1", "ns")
        # why: dev's own key space holds every key of dev.1
        key = to_routing_key(f"ns/own/{DEV_DOT}/x")
        write = re.compile(rabbitmq_store.topic_permissions(dev)[0]["write"])
        self.assertTrue(write.search(key))
        # tokens: no scope at all (no vhost: the node refuses the CONNECT)
        self.assertEqual(rabbitmq_scopes.compile_scopes(dot, f"{DEV_DOT}~1"), [])
        self.assertTrue(rabbitmq_scopes.compile_scopes(dev, f"{DEV}~1"))
        # store: no queue, no exchange, no topic; the run says why
        perms, notes = rabbitmq_store.topic_permissions(dot)
        self.assertEqual(
            (perms["write"], perms["read"]),
            (rabbitmq_store.NOTHING, rabbitmq_store.NOTHING),
        )
        self.assertIn("routing-key separator", " ".join(notes))
        for name, expression in rabbitmq_store.resource_permissions(DEV_DOT).items():
            for subject in (f"mqtt-subscription-{DEV_DOT}qos1", "amq.topic"):
                self.assertIsNone(re.search(expression, subject), name)
        # HTTP backend: the evaluator's rules keep nothing of dev.1's own
        self.assertEqual(routing_key_rules(dot), [])


class DotsCase(HttpCase):
    """A real node per class and the credentials of the dot tests."""

    @classmethod
    def _start_node(cls):
        cls.broker = RabbitMQBroker(cls.base_url(), TOKEN)
        cls.addClassCleanup(cls.broker.stop)
        cls.broker.start()

    @classmethod
    def _setup_credentials(cls):
        cls.ns = cls.env.ref("base.main_company").iot_mqtt_namespace
        cls.env["iot.acl.rule"].create(
            {
                "name": "test: own subtree",
                "sequence": 1,
                "credential_kind": "device",
                "topic": OWN,
            }
        )
        cls.secrets = {}
        for username, kind, superuser in (
            (DEV, "device", False),
            (DEV_DOT, "device", False),
            ("dev_dots_other", "device", False),
            ("svc_dots", "service", True),
        ):
            credential = cls.env["iot.credentials"].create(
                {"username": username, "kind": kind, "is_superuser": superuser}
            )
            cls.secrets[username] = credential.action_rotate_secret()["context"][
                "default_secret"
            ]

    def _mqtt(self, username, password=None, client_id=None):
        return rabbitmq_client(
            self,
            self.broker,
            username,
            password or self.secrets[username],
            client_id=client_id,
        )

    def _connected(self, username, password=None, client_id=None):
        client = self._mqtt(username, password, client_id)
        rc = client.connacks.get(timeout=WAIT)
        self.assertFalse(rc.is_failure, f"CONNACK {rc}")
        return client

    def _refused_at_connect(self, username):
        client = self._mqtt(username)
        rc = client.connacks.get(timeout=WAIT)
        # RabbitMQ 3.10 answers a refused user check with CONNACK 4 (bad
        # user name or password), paho's 134
        self.assertEqual(rc.value, 134, f"CONNACK {rc}")

    def _subscribed(self, client, topic_filter):
        _result, mid = client.subscribe(topic_filter, qos=1)
        got, codes = client.subacks.get(timeout=WAIT)
        self.assertEqual(got, mid)
        self.assertFalse(codes[0].is_failure, codes)

    def _acked(self, client, topic, payload):
        info = client.publish(topic, payload, qos=1)
        info.wait_for_publish(timeout=WAIT)
        self.assertTrue(info.is_published(), topic)

    def _received(self, client, topic, payload):
        """The next message ``client`` gets is ``payload`` on ``topic``."""
        self.assertEqual(client.messages.get(timeout=WAIT), (topic, payload))

    def _closed(self, client):
        """RabbitMQ 3.10 closes the connection of a refused PUBLISH or
        SUBSCRIBE (no SUBACK 0x80): the close, and nothing granted."""
        client.disconnected.get(timeout=WAIT)
        self.assertTrue(client.subacks.empty(), "nothing may be granted")

    def _node_refused(self, text):
        node_refused(self, self.broker, text)

    def _logged(self, username, reason, topic=None):
        # the broker's calls share the test cursor: take the test lock
        with self.registry.test_lock:
            domain = [
                ("endpoint", "=", "rabbitmq"),
                ("username", "=", username),
                ("reason", "=", reason),
            ]
            if topic:
                domain.append(("topic", "=", topic))
            self.assertTrue(self.env["iot.auth.log"].search(domain, limit=1))

    def _others_dotted_telemetry_refused(self):
        device = self._connected(DEV)
        device.publish(f"{self.ns}/devices/dev_dots_other/telemetry/a.b", b"x", qos=1)
        self._closed(device)

    def _own_dotted_topics(self, device, subscriber):
        """``device`` publishes telemetry under a dotted level, and gets its
        own commands under one; RabbitMQ hands them on in the one reading."""
        ns = self.ns
        self._subscribed(subscriber, f"{ns}/devices/+/telemetry/#")
        self._acked(device, f"{ns}/devices/{DEV}/telemetry/a.b", b"t")
        self._received(subscriber, f"{ns}/devices/{DEV}/telemetry/a/b", b"t")
        self._subscribed(device, f"{ns}/devices/{DEV}/commands/x.y/#")
        self._acked(subscriber, f"{ns}/devices/{DEV}/commands/x.y/go", b"c")
        self._received(device, f"{ns}/devices/{DEV}/commands/x/y/go", b"c")


@tagged("post_install", "-at_install", "iot_rabbitmq")
class TestRabbitmqDotsHttp(DotsCase):
    """HTTP backend: Odoo answers every check."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.env["ir.config_parameter"].sudo().set_param("iot_base.auth_token", TOKEN)
        cls._setup_credentials()
        cls._start_node()

    def test_own_dotted_topics(self):
        self._own_dotted_topics(self._connected(DEV), self._connected("svc_dots"))

    def test_another_devices_dotted_topic_refused(self):
        self._others_dotted_telemetry_refused()
        # Odoo judged the one reading of the key
        self._logged(
            DEV, "topic_denied", f"{self.ns}/devices/dev_dots_other/telemetry/a/b"
        )
        device = self._connected(DEV)
        device.subscribe(f"{self.ns}/devices/dev_dots_other/commands/x.y/#", qos=1)
        self._closed(device)

    def test_dotted_deny_refuses_its_key(self):
        """A deny naming a dotted level refuses its routing key, in either
        spelling (before, it matched no reading and the allow let it by)."""
        self.env["iot.acl.rule"].create(
            {
                "name": "test: no secret.x",
                "sequence": 0,
                "permission": "deny",
                "credential_kind": "device",
                "action": "publish",
                "topic": "${namespace}/devices/${username}/telemetry/secret.x",
            }
        )
        for topic in ("secret.x", "secret/x"):
            with self.subTest(topic=topic):
                device = self._connected(DEV)
                device.publish(
                    f"{self.ns}/devices/{DEV}/telemetry/{topic}", b"x", qos=1
                )
                self._closed(device)
        self._logged(DEV, "topic_denied", f"{self.ns}/devices/{DEV}/telemetry/secret/x")
        self._acked(
            self._connected(DEV), f"{self.ns}/devices/{DEV}/telemetry/secret.y", b"y"
        )

    def test_dotted_username_refused(self):
        self._refused_at_connect(DEV_DOT)
        self._logged(DEV_DOT, "username_denied")
        # the dot-free neighbour keeps its own subtree
        self._acked(self._connected(DEV), f"{self.ns}/own/{DEV}/x", b"x")


@tagged("post_install", "-at_install", "iot_rabbitmq")
class TestRabbitmqDotsTokens(OAuth2BrokerCase):
    """Console tokens: the node checks the scopes itself."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        groups = "base.group_user,iot_base.iot_base_group_user"
        cls.alice = new_test_user(
            cls.env, login="rmq.dots.a@example.com", groups=groups
        )
        cls.bob = new_test_user(cls.env, login="rmq.dots.b@example.com", groups=groups)
        cls.carol = new_test_user(
            cls.env, login="rmq.dots.c@example.com", groups=groups
        )
        cls.me = cls.alice._iot_user_credential().username
        cls.other = cls.bob._iot_user_credential().username
        # carol's credential named like a sub-level of alice's
        cls.carol._iot_user_credential().username = f"{cls.me}.1"

    def _token_login(self, user):
        config = self._console_config(user)
        return config, self._mqtt(
            config["credentials"]["username"],
            config["credentials"]["password"],
            config["client_id"],
            transport="tcp",
        )

    def test_own_dotted_topics(self):
        _config, client = self._token_login(self.alice)
        self.assertFalse(client.connacks.get(timeout=WAIT).is_failure)
        self._subscribed(client, f"{self.ns}/users/{self.me}/#")
        info = client.publish(f"{self.ns}/users/{self.me}/a.b", b"m", qos=1)
        info.wait_for_publish(timeout=WAIT)
        self.assertEqual(
            client.messages.get(timeout=WAIT), (f"{self.ns}/users/{self.me}/a/b", b"m")
        )

    def test_another_users_dotted_topic_refused(self):
        _config, client = self._token_login(self.alice)
        self.assertFalse(client.connacks.get(timeout=WAIT).is_failure)
        client.publish(f"{self.ns}/users/{self.other}/a.b", b"x", qos=1)
        self._dropped(client)
        # the node's own scope check, on the key of the one reading
        node_refused(
            self,
            self.broker,
            f"access to topic '{self.ns}.users.{self.other}.a.b' in exchange "
            f"'amq.topic' in vhost '/' refused for user '{self.me}'",
        )
        _config, client = self._token_login(self.alice)
        self.assertFalse(client.connacks.get(timeout=WAIT).is_failure)
        client.subscribe(f"{self.ns}/users/{self.other}/a.b/#", qos=1)
        self._dropped(client)

    def test_dotted_username_refused(self):
        config, client = self._token_login(self.carol)
        self.assertEqual(config["credentials"]["username"], f"{self.me}.1")
        claims = self._claims(config["credentials"]["password"])
        self.assertEqual(claims["scope"], "", "a dotted name gets no scope")
        rc = client.connacks.get(timeout=WAIT)
        self.assertEqual(rc.value, 135, f"CONNACK {rc}")


@tagged("post_install", "-at_install", "iot_rabbitmq")
class TestRabbitmqDotsStore(DotsCase):
    """Internal-user store: the node decides alone, on the permissions Odoo
    pushed (its own log gives the reason of a refusal)."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls._start_node()
        enable_store(cls.env, cls.broker, TOKEN)
        cls._setup_credentials()

    def setUp(self):
        super().setUp()
        self.env.flush_all()
        self.result = engine.run_sync(
            self.env.cr.dbname, force=True, adapters=["iot.rabbitmq.store"]
        )
        self.assertTrue(self.result["ok"], self.result.get("error"))
        # no connection of these tests reaches Odoo's HTTP backend
        self.env["ir.config_parameter"].sudo().set_param("iot_base.auth_token", "")

    def test_own_dotted_topics(self):
        self._own_dotted_topics(self._connected(DEV), self._connected("svc_dots"))

    def test_another_devices_dotted_topic_refused(self):
        self._others_dotted_telemetry_refused()
        self._node_refused(
            f"access to topic '{self.ns}.devices.dev_dots_other.telemetry.a.b' "
            f"in exchange 'amq.topic' in vhost '/' refused for user '{DEV}'"
        )

    def test_dotted_username_refused(self):
        notes = " ".join(self.result["approximations"])
        self.assertIn(f"{DEV_DOT}: {self.ns}/own/{DEV_DOT}/#: a '.'", notes)
        for action in ("publish", "subscribe"):
            with self.subTest(action=action):
                client = self._connected(DEV_DOT)
                if action == "publish":
                    client.publish(f"{self.ns}/own/{DEV_DOT}/x", b"x", qos=1)
                else:
                    client.subscribe(f"{self.ns}/own/{DEV_DOT}/#", qos=1)
                self._closed(client)
        self._node_refused(f"in vhost '/' refused for user '{DEV_DOT}'")
        self._acked(self._connected(DEV), f"{self.ns}/own/{DEV}/x", b"x")
