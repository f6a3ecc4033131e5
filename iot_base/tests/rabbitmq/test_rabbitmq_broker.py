# License LGPL-3.0 or later (https://www.gnu.org/licenses/lgpl).
"""A real RabbitMQ 3.10 node, whose only users are Odoo's credentials, driven
by real MQTT clients (paho-mqtt) over TCP and WebSocket.

The node calls this test's Odoo server (HttpCase), which answers inside the
test transaction: the records created here are what the broker sees. The
node is started once for the class and always stopped; without RabbitMQ
installed the class fails (it never skips).
"""

import contextlib
import json
import os
import queue
import time
from unittest.mock import patch

import paho.mqtt.client as mqtt

from odoo.tests import BaseCase, HttpCase, new_test_user, tagged

from ...models.iot_broker import REQUIRE_ISSUED_CLIENT_ID_PARAM
from ..brokers.rabbitmq import BrokerError, RabbitMQBroker, rabbitmq_config
from ..common import rabbitmq_client
from .test_rabbitmq_jwt import OAuth2BrokerCase

TOKEN = "rabbit-broker-t0ken"
WAIT = 15  # seconds, for anything the broker must do
QUIET = 2  # seconds of silence that prove a message was not delivered
REFUSED = "refused"  # _client's expect_rc for a refusal in any form


@tagged("post_install", "-at_install", "iot_rabbitmq")
class TestRabbitmqBroker(HttpCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.env["ir.config_parameter"].sudo().set_param("iot_base.auth_token", TOKEN)
        cls.ns = cls.env.ref("base.main_company").iot_mqtt_namespace
        Credentials = cls.env["iot.credentials"]
        cls.device = Credentials.create({"username": "device_rmq01", "kind": "device"})
        cls.device_secret = cls.device.action_rotate_secret()["context"][
            "default_secret"
        ]
        cls.other = Credentials.create({"username": "device_rmq02", "kind": "device"})
        cls.other_secret = cls.other.action_rotate_secret()["context"]["default_secret"]
        cls.commander = Credentials.create(
            {"username": "svc_rmq_commands", "kind": "service", "is_superuser": True}
        )
        cls.commander_secret = cls.commander.action_rotate_secret()["context"][
            "default_secret"
        ]
        user = new_test_user(
            cls.env,
            login="rabbit.console@example.com",
            groups="base.group_user,iot_base.iot_base_group_user",
        )
        cls.user_creds = user.with_user(user).get_or_create_iot_credentials()
        cls.broker = RabbitMQBroker(cls.base_url(), TOKEN)
        cls.addClassCleanup(cls.broker.stop)
        cls.broker.start()

    def _client(
        self,
        username,
        password,
        transport="tcp",
        expect_rc=0,
        client_id=None,
        clean_session=True,
    ):
        """A connected paho client (loop running, disconnected at cleanup)
        with queues of what it receives; asserts the CONNACK code. Its client
        id is by default one of the credential's own (``<username>~<hex>``)."""
        client = rabbitmq_client(
            self,
            self.broker,
            username,
            password,
            transport,
            client_id=client_id,
            clean_session=clean_session,
        )
        if expect_rc == REFUSED:
            self._wait_refused(client)
            return client
        rc = client.connacks.get(timeout=WAIT)
        self.assertEqual(rc.value, expect_rc, f"CONNACK: {rc}")
        return client

    def _wait_refused(self, client):
        """A refused CONNACK or, over WebSocket (web_mqtt 3.10 closes the
        socket of a refused login without a CONNACK), a closed connection."""
        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline:
            with contextlib.suppress(queue.Empty):
                rc = client.connacks.get(timeout=0.05)
                self.assertTrue(rc.is_failure, f"CONNACK: {rc}")
                return
            if not client.disconnected.empty():
                return
        self.fail("neither refused nor disconnected")

    def _subscribe(self, client, topic_filter, qos=1):
        _result, mid = client.subscribe(topic_filter, qos=qos)
        got_mid, reason_codes = client.subacks.get(timeout=WAIT)
        self.assertEqual(got_mid, mid)
        return reason_codes[0]

    def _publish(self, client, topic, payload, qos=1):
        info = client.publish(topic, payload, qos=qos)
        info.wait_for_publish(timeout=WAIT)
        return info

    def _assert_denied(self, action, topic):
        """Odoo's topic rules made the decision (not some other failure)."""
        # the broker's calls share the test cursor: take the test lock
        with self.registry.test_lock:
            log = self.env["iot.auth.log"].search(
                [
                    ("endpoint", "=", "rabbitmq"),
                    ("username", "=", "device_rmq01"),
                    ("action", "=", action),
                    ("topic", "=", topic),
                ]
            )
        self.assertTrue(log)
        self.assertEqual(set(log.mapped("reason")), {"topic_denied"})

    def _device(self, transport="tcp"):
        return self._client("device_rmq01", self.device_secret, transport)

    def _user(self, transport="tcp"):
        return self._client(
            self.user_creds["username"], self.user_creds["password"], transport
        )

    def test_device_telemetry_reaches_user(self):
        user = self._user()
        granted = self._subscribe(user, f"{self.ns}/devices/+/telemetry/#")
        self.assertFalse(granted.is_failure, granted)
        device = self._device()
        topic = f"{self.ns}/devices/device_rmq01/telemetry/temp"
        self.assertTrue(self._publish(device, topic, b"21.5").is_published())
        self.assertEqual(user.messages.get(timeout=WAIT), (topic, b"21.5"))
        # the broker's calls share the test cursor: take the test lock
        with self.registry.test_lock:
            log = self.env["iot.auth.log"].search(
                [("endpoint", "=", "rabbitmq"), ("username", "=", "device_rmq01")],
                limit=1,
            )
        self.assertEqual((log.result, log.reason), ("allow", "ok"))

    def test_wrong_secret_refused(self):
        wrong = self.device_secret[:8] + "0" * 32
        # RabbitMQ 3.10 answers a refused login with CONNACK code 4
        # (bad user name or password), paho's reason code 134
        for username, password in [
            ("device_rmq01", wrong),
            ("nobody", wrong),
            ("device_rmq02", wrong),
        ]:
            with self.subTest(username=username):
                client = self._client(username, password, expect_rc=134)
                client.loop_stop()
        # the broker's calls share the test cursor: take the test lock
        with self.registry.test_lock:
            log = self.env["iot.auth.log"].search(
                [("endpoint", "=", "rabbitmq"), ("username", "=", "device_rmq01")],
                limit=1,
            )
        self.assertEqual((log.result, log.reason), ("deny", "invalid_credentials"))
        # anonymous login is disabled
        client = self._client(None, None, expect_rc=134)
        client.loop_stop()

    def test_forbidden_subscription(self):
        device = self._device()
        # RabbitMQ 3.10 sends no SUBACK 0x80: the refused queue.bind closes
        # the client's channel, and with it the MQTT connection
        device.subscribe(f"{self.ns}/devices/device_rmq02/commands/#", qos=1)
        device.disconnected.get(timeout=WAIT)
        self.assertTrue(device.subacks.empty(), "no subscription may be granted")
        self._assert_denied("subscribe", f"{self.ns}/devices/device_rmq02/commands/#")
        # its own commands are fine
        device = self._device()
        granted = self._subscribe(device, f"{self.ns}/devices/device_rmq01/commands/#")
        self.assertFalse(granted.is_failure, granted)

    def test_forbidden_publish_not_delivered(self):
        user = self._user()
        self._subscribe(user, f"{self.ns}/devices/+/telemetry/#")
        device = self._device()
        # another device's telemetry: refused, and the publisher disconnected
        device.publish(
            f"{self.ns}/devices/device_rmq02/telemetry/temp", b"forged", qos=0
        )
        device.disconnected.get(timeout=WAIT)
        self._assert_denied("publish", f"{self.ns}/devices/device_rmq02/telemetry/temp")
        # a message published after it arrives, the forged one never did
        device = self._device()
        topic = f"{self.ns}/devices/device_rmq01/telemetry/temp"
        self._publish(device, topic, b"genuine")
        self.assertEqual(user.messages.get(timeout=WAIT), (topic, b"genuine"))
        with self.assertRaises(queue.Empty):
            user.messages.get(timeout=QUIET)

    def test_websocket(self):
        user = self._user(transport="websockets")
        self._subscribe(user, f"{self.ns}/devices/+/status/#")
        device = self._device(transport="websockets")
        topic = f"{self.ns}/devices/device_rmq01/status"
        self._publish(device, topic, b"online")
        self.assertEqual(user.messages.get(timeout=WAIT), (topic, b"online"))
        self.assertTrue(self.broker.ws_url.endswith("/mqtt"))

    def test_client_id_takeover_refused(self):
        """Device B, with valid credentials of its own, presents device A's
        client id with clean_session=false: refused, gets none of A's queued
        commands, does not end A's connection; A gets every command."""
        commands = f"{self.ns}/devices/device_rmq01/commands"
        device_a = self._client(
            "device_rmq01",
            self.device_secret,
            client_id="device_rmq01",
            clean_session=False,
        )
        self.assertFalse(self._subscribe(device_a, f"{commands}/#").is_failure)
        device_a.disconnect()
        device_a.disconnected.get(timeout=WAIT)
        device_a.loop_stop()
        commander = self._client("svc_rmq_commands", self.commander_secret)
        self._publish(commander, f"{commands}/door", b"door-code=4711")
        for transport in ("tcp", "websockets"):
            with self.subTest(transport=transport):
                device_b = self._client(
                    "device_rmq02",
                    self.other_secret,
                    transport,
                    expect_rc=REFUSED,
                    client_id="device_rmq01",
                    clean_session=False,
                )
                device_b.loop_stop()
                self.assertTrue(device_b.messages.empty())
        device_a = self._client(
            "device_rmq01",
            self.device_secret,
            client_id="device_rmq01",
            clean_session=False,
        )
        self.assertEqual(
            device_a.messages.get(timeout=WAIT), (f"{commands}/door", b"door-code=4711")
        )
        # while A is connected: refused again, and A is not kicked out
        self._client(
            "device_rmq02",
            self.other_secret,
            expect_rc=134,
            client_id="device_rmq01",
            clean_session=False,
        ).loop_stop()
        self._publish(commander, f"{commands}/light", b"on")
        self.assertEqual(
            device_a.messages.get(timeout=WAIT), (f"{commands}/light", b"on")
        )
        with self.assertRaises(queue.Empty):
            device_a.disconnected.get(timeout=QUIET)
        # the broker's calls share the test cursor: take the test lock
        with self.registry.test_lock:
            log = self.env["iot.auth.log"].search(
                [("endpoint", "=", "rabbitmq"), ("username", "=", "device_rmq02")]
            )
        self.assertTrue(log)
        self.assertEqual(set(log.mapped("reason")), {"clientid_denied"})
        self.assertEqual(set(log.mapped("clientid")), {"device_rmq01"})

    def test_odoo_publisher_client_id(self):
        """Odoo's own client connects with a client id of its credential."""
        params = self.env["ir.config_parameter"].sudo()
        params.set_param("iot_base.mqtt_host", "127.0.0.1")
        params.set_param("iot_base.mqtt_port", str(self.broker.mqtt_port))
        device = self._device()
        commands = f"{self.ns}/devices/device_rmq01/commands"
        self._subscribe(device, f"{commands}/#")
        self.env["iot.mqtt.client"]._publish([(f"{commands}/ping", b"1", 1, False)])
        self.assertEqual(device.messages.get(timeout=WAIT), (f"{commands}/ping", b"1"))
        with self.registry.test_lock:
            log = self.env["iot.auth.log"].search(
                [("endpoint", "=", "rabbitmq"), ("username", "=", "odoo_publisher")],
                limit=1,
            )
        self.assertEqual((log.result, log.reason), ("allow", "ok"))
        self.assertRegex(log.clientid, r"^odoo_publisher~[0-9a-f]{16}$")

    def test_client_ids_of_the_policy(self):
        """Only the credential's own ids connect: its username, or
        ``<username>~<suffix>``; lookalikes and broker-made ids do not."""
        for client_id in ("device_rmq01", "device_rmq01~a-1", "device_rmq01~x.y@z"):
            with self.subTest(client_id=client_id):
                self._client(
                    "device_rmq01", self.device_secret, client_id=client_id
                ).disconnect()
        for client_id in (
            "device_rmq01x",
            "device_rmq01~",
            "device_rmq01~a/b",
            "device_rmq02~1",
            self.user_creds["username"],
        ):
            with self.subTest(client_id=client_id):
                self._client(
                    "device_rmq01",
                    self.device_secret,
                    expect_rc=134,
                    client_id=client_id,
                ).loop_stop()
        # an empty client id gets a name made up by RabbitMQ: nobody's
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="")
        client.connacks = queue.Queue()
        client.on_connect = lambda _c, _u, _f, rc, _p: client.connacks.put(rc)
        client.username_pw_set("device_rmq01", self.device_secret)
        client.connect("127.0.0.1", self.broker.mqtt_port, keepalive=30)
        client.loop_start()
        self.addCleanup(client.loop_stop)
        self.assertEqual(client.connacks.get(timeout=WAIT).value, 134)


@tagged("post_install", "-at_install", "iot_rabbitmq")
class TestRabbitmqBrokerSupport(BaseCase):
    def test_missing_server_fails_clearly(self):
        with (
            patch.dict(
                os.environ, {"IOT_RABBITMQ_SERVER": "/nonexistent/rabbitmq-server"}
            ),
            self.assertRaisesRegex(BrokerError, "RabbitMQ is not installed"),
        ):
            RabbitMQBroker("http://127.0.0.1:1", TOKEN).start()

    def test_config(self):
        conf = rabbitmq_config(
            "http://127.0.0.1:8069/",
            "tok",
            1884,
            8083,
            5673,
            management_port=15673,
            management_password="pw",
        )
        for line in [
            # internal first, for Odoo's management user only (no permission)
            "auth_backends.1 = internal",
            "auth_backends.2 = http",
            "management.tcp.ip = 127.0.0.1",
            "management.tcp.port = 15673",
            "auth_http.http_method = post",
            "auth_http.user_path = http://127.0.0.1:8069/iot/rabbitmq/tok/user",
            "auth_http.vhost_path = http://127.0.0.1:8069/iot/rabbitmq/tok/vhost",
            "auth_http.resource_path = http://127.0.0.1:8069/iot/rabbitmq/tok/resource",
            "auth_http.topic_path = http://127.0.0.1:8069/iot/rabbitmq/tok/topic",
            "mqtt.allow_anonymous = false",
            "mqtt.listeners.tcp.1 = 127.0.0.1:1884",
            "web_mqtt.tcp.listener = 127.0.0.1:8083",
            "web_mqtt.ws_path = /mqtt",
            "listeners.tcp.1 = 127.0.0.1:5673",
        ]:
            self.assertIn(line + "\n", conf)


@tagged("post_install", "-at_install", "iot_rabbitmq")
class TestRabbitmqIssuedClientId(OAuth2BrokerCase):
    """RabbitMQ 3.10 registers MQTT client ids cluster-wide by the id alone
    (``rabbit_mqtt_collector:register/2``) and its OAuth 2 backend binds no
    id to a token: any console token holder can take over, and so knock
    off, a connection whose client id it knows. A device's issued client id
    (``<username>~<HMAC of its secret>``) is in no topic or field another
    user can read, so nobody can knock that device off."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.env["ir.config_parameter"].sudo().set_param(
            REQUIRE_ISSUED_CLIENT_ID_PARAM, "True"
        )
        groups = "base.group_user,iot_base.iot_base_group_user"
        company_b = cls.env["res.company"].create({"name": "Knock B Co"})
        cls.reader_a = new_test_user(
            cls.env, login="knock.reader.a@example.com", groups=groups
        )
        cls.user_b = new_test_user(
            cls.env,
            login="knock.user.b@example.com",
            groups=groups,
            company_id=company_b.id,
            company_ids=[company_b.id],
        )
        Device = cls.env["iot.mqtt.device"]
        cls.device, secret = Device._register_device("knock-a1", name="Knock A1")
        cls.reply = cls.device._provisioning_reply(secret)
        control = cls.env["iot.credentials"].create(
            {"username": "svc_knock_control", "kind": "service"}
        )
        cls.control_secret = control.action_rotate_secret()["context"]["default_secret"]

    def _device_a(self):
        return self._connected(
            self.reply["username"],
            self.reply["password"],
            self.reply["client_id"],
            transport="tcp",
        )

    def _assert_stays(self, client):
        with self.assertRaises(queue.Empty):
            client.disconnected.get(timeout=QUIET)

    def test_token_holders_cannot_knock_off_a_device(self):
        username, issued = self.reply["username"], self.reply["client_id"]
        suffix = issued.split("~", 1)[1]
        self.assertRegex(suffix, r"^[0-9a-f]{32}$")
        device = self._device_a()
        # an IoT user of company A reads all its telemetry: topics carry the
        # username, never the client id
        reader_config = self._console_config(self.reader_a)
        reader = self._connected(
            reader_config["credentials"]["username"],
            reader_config["credentials"]["password"],
            reader_config["client_id"],
        )
        self._subscribed(reader, f"{self.ns}/devices/+/telemetry/#")
        self._subscribed(reader, f"{self.ns}/devices/+/status/#")
        telemetry = self.reply["topics"]["telemetry"] + "/temp"
        device.publish(telemetry, b'{"t": 21}', qos=1).wait_for_publish(WAIT)
        device.publish(self.reply["topics"]["status"], b"online", qos=1)
        seen = [reader.messages.get(timeout=WAIT) for _i in range(2)]
        self.assertIn((telemetry, b'{"t": 21}'), seen)
        self.assertEqual({topic.split("/")[2] for topic, _p in seen}, {username})
        # ... nor any field either of them may read, nor their page config
        config_b = self._console_config(self.user_b)
        for user, config in ((self.reader_a, reader_config), (self.user_b, config_b)):
            with self.subTest(user=user.login):
                self.assertNotIn(suffix, json.dumps(config, default=str))
                self.assertNotIn(suffix, self._readable(user))
        # what they know (the username, and ids of its form) knocks nothing
        for user, config in ((self.user_b, config_b), (self.reader_a, reader_config)):
            for client_id in (username, f"{username}~1", f"{username}~{'0' * 32}"):
                with self.subTest(user=user.login, client_id=client_id):
                    self._mqtt(
                        config["credentials"]["username"],
                        config["credentials"]["password"],
                        client_id,
                    ).connacks.get(timeout=WAIT)
        self._assert_stays(device)
        device.publish(telemetry, b'{"t": 22}', qos=1).wait_for_publish(WAIT)
        self.assertEqual(reader.messages.get(timeout=WAIT), (telemetry, b'{"t": 22}'))

    def test_username_id_is_knocked_off_and_refused(self):
        """The control: a client on its username id (a service, which the
        requirement does not cover) is knocked off by a company-B token at
        once; a device's CONNECT on its username id is refused by Odoo."""
        victim = self._connected(
            "svc_knock_control", self.control_secret, "svc_knock_control", "tcp"
        )
        config_b = self._console_config(self.user_b)
        self._connected(
            config_b["credentials"]["username"],
            config_b["credentials"]["password"],
            "svc_knock_control",
        )
        victim.disconnected.get(timeout=WAIT)
        username = self.reply["username"]
        self._refused(username, self.reply["password"], username, transport="tcp")
        with self.registry.test_lock:
            log = self.env["iot.auth.log"].search(
                [("endpoint", "=", "rabbitmq"), ("username", "=", username)], limit=1
            )
            self.assertEqual((log.reason, log.clientid), ("clientid_denied", username))

    def _readable(self, user):
        """Everything ``user`` may read of iot_base's models, as text."""
        texts = []
        with self.registry.test_lock:
            for model in self.env.registry:
                if not model.startswith("iot.") or self.env[model]._abstract:
                    continue
                records = self.env[model].with_user(user)
                if not records.has_access("read"):
                    continue
                texts.append(json.dumps(records.search_read([]), default=str))
        self.assertTrue(texts)
        return "\n".join(texts)
