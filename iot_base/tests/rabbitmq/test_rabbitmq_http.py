# License LGPL-3.0 or later (https://www.gnu.org/licenses/lgpl).
"""The RabbitMQ 3.10 rabbitmq_auth_backend_http endpoints, request by request
(what a real node sends is in test_rabbitmq_broker.py)."""

import json
from unittest.mock import patch
from urllib.parse import urlencode

from psycopg2 import OperationalError

from odoo.tests import HttpCase, new_test_user, tagged
from odoo.tools import mute_logger

from ...models import iot_credentials as credentials_module

TOKEN = "rabbit-t0ken-for-tests"
CONTROLLER_LOGGER = "odoo.addons.iot_base.controllers.rabbitmq.auth"
DEVICE = "device_rb12cd34"
# a client id of DEVICE's (the client id policy: <username>~<suffix>)
CLIENT = f"{DEVICE}~sensor-1"


@tagged("post_install", "-at_install", "iot_rabbitmq")
class TestRabbitmqHttp(HttpCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.env["ir.config_parameter"].sudo().set_param("iot_base.auth_token", TOKEN)
        cls.ns = cls.env.ref("base.main_company").iot_mqtt_namespace
        cls.user = new_test_user(
            cls.env,
            login="rabbit.user@example.com",
            groups="base.group_user,iot_base.iot_base_group_user",
        )
        cls.user_creds = cls.user.with_user(cls.user).get_or_create_iot_credentials()
        Credentials = cls.env["iot.credentials"]
        cls.device = Credentials.create({"username": DEVICE, "kind": "device"})
        cls.device_secret = cls.device.action_rotate_secret()["context"][
            "default_secret"
        ]
        cls.superuser = Credentials.create(
            {"username": "service_rabbit", "kind": "service", "is_superuser": True}
        )
        cls.superuser_secret = cls.superuser.action_rotate_secret()["context"][
            "default_secret"
        ]

    # helpers -----------------------------------------------------------

    def _ask(self, check, token=TOKEN, method="POST", headers=None, **fields):
        """One request as rabbit_auth_backend_http 3.10 makes it."""
        path = f"/iot/rabbitmq/{token}/{check}" if token else f"/iot/rabbitmq/{check}"
        if method == "GET":
            return self.url_open(f"{path}?{urlencode(fields)}", headers=headers)
        return self.url_open(path, data=fields, headers=headers)

    def assertAnswer(self, response, expected, status=200):
        self.assertEqual(response.status_code, status, response.text[:300])
        self.assertEqual(response.headers["Content-Type"], "text/plain; charset=utf-8")
        self.assertEqual(response.text, expected)

    def _user(self, username, password, **kw):
        return self._ask(
            "user",
            username=username,
            password=password,
            vhost="/",
            client_id=f"{username}~sensor-1",
            **kw,
        )

    def _resource(
        self, resource, name, permission, username=DEVICE, vhost="/", **extra
    ):
        return self._ask(
            "resource",
            username=username,
            vhost=vhost,
            resource=resource,
            name=name,
            permission=permission,
            tags="",
            **dict({"client_id": CLIENT}, **extra),
        )

    def _topic(self, username, permission, routing_key, name="amq.topic", vhost="/"):
        return self._ask(
            "topic",
            username=username,
            vhost=vhost,
            resource="topic",
            name=name,
            permission=permission,
            routing_key=routing_key,
            tags="",
            **{
                "variable_map.client_id": f"{username}~sensor-1",
                "variable_map.username": username,
                "variable_map.vhost": vhost,
            },
        )

    def _last_log(self, **domain):
        return self.env["iot.auth.log"].search(
            [("endpoint", "=", "rabbitmq")] + [(k, "=", v) for k, v in domain.items()],
            limit=1,
        )

    # user ----------------------------------------------------------------

    def test_user(self):
        self.assertAnswer(self._user(DEVICE, self.device_secret), "allow")
        log = self._last_log(username=DEVICE)
        self.assertEqual(
            (log.result, log.reason, log.clientid, log.credential_id),
            ("allow", "ok", CLIENT, self.device),
        )
        self.assertNotIn(self.device_secret, json.dumps(log.read()[0], default=str))
        self.assertAnswer(
            self._user(self.user_creds["username"], self.user_creds["password"]),
            "allow",
        )
        # a broker superuser is no RabbitMQ administrator: no tags
        self.assertAnswer(self._user("service_rabbit", self.superuser_secret), "allow")
        # the GET variant, and the token as a bearer header
        self.assertAnswer(self._user(DEVICE, self.device_secret, method="GET"), "allow")
        self.assertAnswer(
            self._user(
                DEVICE,
                self.device_secret,
                token=None,
                headers={"Authorization": f"Bearer {TOKEN}"},
            ),
            "allow",
        )

    def test_user_denied(self):
        wrong = self.device_secret[:8] + "0" * 32
        self.device.copy({"username": "device_rb_revoked", "active": False})
        expired = self.device.copy({"username": "device_rb_expired"})
        expired_secret = expired.action_rotate_secret()["context"]["default_secret"]
        expired.expires_at = "2000-01-01 00:00:00"
        for username, password in [
            (DEVICE, wrong),
            ("nobody", self.device_secret),
            (DEVICE, ""),
            ("", ""),
            ("device_rb_revoked", self.device_secret),
            ("device_rb_expired", expired_secret),
        ]:
            with self.subTest(username=username, password=password[:4]):
                self.assertAnswer(self._user(username, password), "deny")
        log = self._last_log(username=DEVICE)
        self.assertEqual((log.result, log.reason), ("deny", "invalid_credentials"))
        # an archived Odoo user loses its MQTT access at once
        self.user.action_archive()
        self.assertAnswer(
            self._user(self.user_creds["username"], self.user_creds["password"]), "deny"
        )

    def test_user_never_locked_out(self):
        """RabbitMQ's user check names no client address: failures for a
        username (not a secret) must never lock its owner out."""
        self.env["ir.config_parameter"].sudo().set_param(
            "iot_base.throttle_max_failures", "3"
        )
        for _attempt in range(20):
            self.assertAnswer(self._user(DEVICE, "f" * 40), "deny")
        self.assertAnswer(self._user(DEVICE, self.device_secret), "allow")
        # every client comes from the broker's address: that is not throttled
        self.assertAnswer(self._user("service_rabbit", self.superuser_secret), "allow")
        self.assertEqual(self._last_log(username=DEVICE).reason, "ok")

    # vhost ---------------------------------------------------------------

    def test_vhost(self):
        for username, vhost, expected in [
            (DEVICE, "/", "allow"),
            (self.user_creds["username"], "/", "allow"),
            (DEVICE, "/other", "deny"),
            (DEVICE, "", "deny"),
            ("nobody", "/", "deny"),
        ]:
            with self.subTest(username=username, vhost=vhost):
                self.assertAnswer(
                    self._ask(
                        "vhost",
                        username=username,
                        vhost=vhost,
                        ip="10.1.2.3",
                        tags="",
                        client_id=f"{username}~sensor-1",
                    ),
                    expected,
                )
        log = self._last_log(username="nobody")
        self.assertEqual((log.reason, log.peer), ("unknown_user", "10.1.2.3"))
        self.env["ir.config_parameter"].sudo().set_param(
            "iot_base.rabbitmq_vhost", "iot"
        )
        self.assertAnswer(self._ask("vhost", username=DEVICE, vhost="/"), "deny")
        self.assertAnswer(self._ask("vhost", username=DEVICE, vhost="iot"), "allow")
        self.device.action_revoke()
        self.assertAnswer(self._ask("vhost", username=DEVICE, vhost="iot"), "deny")

    # resource ------------------------------------------------------------

    def test_resource(self):
        own0, own1 = (
            f"mqtt-subscription-{CLIENT}qos0",
            f"mqtt-subscription-{CLIENT}qos1",
        )
        table = [
            ("exchange", "amq.topic", "write", {}, "allow"),
            ("exchange", "amq.topic", "read", {}, "allow"),
            ("exchange", "amq.topic", "configure", {}, "deny"),
            ("exchange", "amq.direct", "write", {}, "deny"),
            ("exchange", "amq.default", "write", {}, "deny"),
            ("exchange", "", "write", {}, "deny"),
            ("queue", own0, "configure", {}, "allow"),
            ("queue", own0, "write", {}, "allow"),
            ("queue", own0, "read", {}, "allow"),
            ("queue", own1, "configure", {}, "allow"),
            ("queue", own1, "read", {}, "allow"),
            ("queue", own0, "delete", {}, "deny"),
            ("queue", "mqtt-subscription-other-clientqos0", "read", {}, "deny"),
            ("queue", f"mqtt-subscription-{CLIENT}qos2", "read", {}, "deny"),
            ("queue", "amq.gen-abc", "configure", {}, "deny"),
            ("queue", own0, "read", {"vhost": "/other"}, "deny"),
            ("queue", own0, "read", {"username": "nobody"}, "deny"),
            # plain AMQP connections carry no client id: no queue at all
            ("queue", "mqtt-subscription-qos0", "configure", {"client_id": ""}, "deny"),
            ("topic", "amq.topic", "write", {}, "deny"),
            ("vhost", "/", "write", {}, "deny"),
        ]
        for resource, name, permission, extra, expected in table:
            with self.subTest(
                resource=resource, name=name, permission=permission, extra=extra
            ):
                self.assertAnswer(
                    self._resource(resource, name, permission, **extra), expected
                )
        log = self._last_log(topic="exchange amq.direct (write)")
        self.assertEqual(
            (log.result, log.reason, log.username), ("deny", "topic_denied", DEVICE)
        )
        # no client id field at all
        self.assertAnswer(
            self._ask(
                "resource",
                username=DEVICE,
                vhost="/",
                resource="queue",
                name="mqtt-subscription-qos0",
                permission="read",
            ),
            "deny",
        )

    # topic ---------------------------------------------------------------

    def test_topic(self):
        ns, dev, user = self.ns, DEVICE, self.user_creds["username"]
        table = [
            (dev, "write", f"{ns}.devices.{dev}.telemetry.temp", "allow"),
            (dev, "write", f"{ns}.devices.{dev}.telemetry", "allow"),
            (dev, "write", f"{ns}.devices.{dev}.status", "allow"),
            (dev, "write", f"{ns}.devices.{dev}.commands.reboot", "deny"),
            (dev, "write", f"{ns}.devices.device_zz.telemetry.temp", "deny"),
            (dev, "write", f"{ns}.devices.*.telemetry.temp", "deny"),
            (dev, "write", f"{ns}.devices.{dev}.telemetry.#", "deny"),
            (dev, "write", "", "deny"),
            (dev, "read", f"{ns}.devices.{dev}.commands.#", "allow"),
            (dev, "read", f"{ns}.devices.{dev}.commands.*", "allow"),
            (dev, "read", f"{ns}.devices.device_zz.commands.#", "deny"),
            (dev, "read", f"{ns}.devices.*.commands.#", "deny"),
            (dev, "read", f"{ns}.devices.{dev}.#", "deny"),
            (user, "read", f"{ns}.devices.*.telemetry.#", "allow"),
            (user, "read", f"{ns}.devices.*.status.#", "allow"),
            (user, "read", f"{ns}.devices.#", "deny"),
            (user, "read", "#", "deny"),
            (user, "read", f"{ns}.devices.*.*.#", "deny"),
            (user, "write", f"{ns}.devices.d1.telemetry.x", "deny"),
            (user, "write", f"{ns}.users.{user}.notes", "allow"),
            (user, "read", f"{ns}.users.{user}.#", "allow"),
            (user, "read", f"{ns}.users.*.#", "deny"),
            ("service_rabbit", "read", "#", "allow"),
            ("service_rabbit", "write", "anything.at.all", "allow"),
            ("nobody", "read", f"{ns}.devices.*.telemetry.#", "deny"),
            (dev, "configure", f"{ns}.devices.{dev}.telemetry.t", "deny"),
        ]
        for username, permission, routing_key, expected in table:
            with self.subTest(
                username=username, permission=permission, key=routing_key
            ):
                self.assertAnswer(
                    self._topic(username, permission, routing_key), expected
                )
        # another exchange or vhost: never
        key = f"{ns}.devices.{dev}.telemetry.t"
        self.assertAnswer(self._topic(dev, "write", key, name="amq.direct"), "deny")
        self.assertAnswer(self._topic(dev, "write", key, vhost="/other"), "deny")
        log = self._last_log(topic=f"{ns}/devices/device_zz/commands/#")
        self.assertEqual(
            (log.result, log.reason, log.action, log.clientid),
            ("deny", "topic_denied", "subscribe", CLIENT),
        )

    def test_topic_rule_limited_to_qos(self):
        """RabbitMQ does not say which QoS: a rule for QoS 0 only must not
        allow a publish that could be QoS 1."""
        self.env["iot.acl.rule"].create(
            {
                "sequence": 1,
                "name": "qos0 only",
                "credential_kind": "device",
                "action": "publish",
                "topic": "${namespace}/devices/${username}/fast/#",
                "qos": "0",
            }
        )
        key = f"{self.ns}.devices.{DEVICE}.fast.x"
        self.assertAnswer(self._topic(DEVICE, "write", key), "deny")

    # token and bad input -------------------------------------------------

    def test_token(self):
        fields = {"username": DEVICE, "password": self.device_secret}
        with (
            patch.object(credentials_module, "verify_secret") as verify,
            mute_logger(CONTROLLER_LOGGER),
        ):
            for token in ("wrong", TOKEN[:-1], TOKEN + "x", None):
                for check in ("user", "vhost", "resource", "topic"):
                    with self.subTest(token=token, check=check):
                        self.assertAnswer(
                            self._ask(check, token=token, **fields), "deny"
                        )
            self.assertAnswer(
                self._ask(
                    "user",
                    token=None,
                    headers={"Authorization": "Bearer nope"},
                    **fields,
                ),
                "deny",
            )
            verify.assert_not_called()
            self.assertEqual(self._last_log(reason="bad_token").result, "deny")
            # no token configured: nothing passes
            self.env["ir.config_parameter"].sudo().set_param("iot_base.auth_token", "")
            self.assertAnswer(self._ask("user", **fields), "deny")
            self.assertAnswer(self._ask("user", token="", **fields), "deny")

    def test_bad_input_never_allows(self):
        url = f"/iot/rabbitmq/{TOKEN}/user"
        good = urlencode({"username": DEVICE, "password": self.device_secret})
        for body, content_type in [
            (b"", "application/x-www-form-urlencoded"),
            (b"username=" + DEVICE.encode(), "application/x-www-form-urlencoded"),
            (
                b"password=" + self.device_secret.encode(),
                "application/x-www-form-urlencoded",
            ),
            (b"\xff\xfe=\xff", "application/x-www-form-urlencoded"),
            (
                good.encode() + b"&pad=" + b"x" * (64 * 1024),
                "application/x-www-form-urlencoded",
            ),
            (b"[]", "application/json"),
            (b"{not json", "application/json"),
            (
                json.dumps(
                    {"username": DEVICE, "password": [self.device_secret]}
                ).encode(),
                "application/json",
            ),
            (
                json.dumps(
                    {"username": DEVICE, "password": self.device_secret, "x": 1}
                ).encode(),
                "application/json",
            ),
            (good.encode(), "text/plain"),
        ]:
            with self.subTest(body=body[:50], content_type=content_type):
                response = self.url_open(
                    url, data=body, headers={"Content-Type": content_type}
                )
                self.assertAnswer(response, "deny")
        for check in ("vhost", "resource", "topic"):
            with self.subTest(check=check):
                self.assertAnswer(self._ask(check), "deny")
                self.assertAnswer(self._ask(check, username=DEVICE), "deny")
        self.assertAnswer(
            self._ask(
                "topic",
                username=DEVICE,
                vhost="/",
                resource="topic",
                name="amq.topic",
                permission="write",
            ),
            "deny",
        )
        # an unknown question is no route: RabbitMQ's deny (models/ir_http.py)
        self.assertAnswer(self._ask("admin", username=DEVICE), "deny")

    def test_database_unavailable(self):
        def broken(*_args, **_kwargs):
            raise OperationalError("server closed the connection unexpectedly")

        with (
            patch.object(
                type(self.env["iot.credentials"]), "_authenticate_secret", broken
            ),
            patch.object(type(self.env["iot.credentials"]), "_find_live", broken),
            mute_logger(CONTROLLER_LOGGER),
        ):
            self.assertAnswer(
                self._user(DEVICE, self.device_secret), "deny", status=503
            )
            self.assertAnswer(self._topic(DEVICE, "write", "a.b"), "deny", status=503)
