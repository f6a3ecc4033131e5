# License LGPL-3.0 or later (https://www.gnu.org/licenses/lgpl).
"""A client id belongs to one credential: the policy function, and the
EMQX and RabbitMQ endpoints refusing any id the credential does not own."""

import json
import random
from unittest.mock import patch

from odoo.tests import BaseCase, HttpCase, new_test_user, tagged

from odoo.addons.iot_base.models import iot_credentials as credentials_model
from odoo.addons.iot_base.models.iot_broker import REQUIRE_ISSUED_CLIENT_ID_PARAM
from odoo.addons.iot_base.tools import client_ids
from odoo.addons.iot_base.tools.client_ids import (
    client_id_owner,
    make_client_id,
    owns_client_id,
)

TOKEN = "client-id-broker-t0ken"
USERNAME_CHARS = "abcXYZ019_.:@-"


@tagged("post_install", "-at_install")
class TestClientIdPolicy(BaseCase):
    def test_owned(self):
        for username, client_id in [
            ("device_01", "device_01"),
            ("device_01", "device_01~a"),
            ("device_01", "device_01~0a1b2c3d"),
            ("device_01", "device_01~tab.2:x@y-z_"),
            ("a", "a~" + "x" * 64),
            ("u" * 128, "u" * 128),
            ("u" * 128, "u" * 128 + "~1"),
            ("user_admin_example_com", "user_admin_example_com~12"),  # Mosquitto
        ]:
            with self.subTest(client_id=client_id):
                self.assertEqual(client_id_owner(client_id), username)
                self.assertTrue(owns_client_id(username, client_id))

    def test_refused(self):
        username = "device_01"
        for client_id in [
            "",
            "~",
            "~x",
            "device_01~",
            "device_01x",  # a prefix is not ownership
            "device_01_2",
            "device_0",
            "device_01 ",
            " device_01",
            "device_01\n",
            "device_01\x00",
            "device_01~a\x00",
            "device_01~\n",
            "device_01~a~b",
            "device_01~a/b",
            "device_01~+",
            "device_01~#",
            "device_01~a b",
            "device_01~é",
            "device_01~\ud800",
            "device_01\ud800",
            "device_01~" + "x" * 65,
            "DEVICE_01",
            "device_02",
            "device_02~device_01",
            "odoo_user_device_01_0a1b2c3d",
            "device_01/x",
            "x" * 100000,
            None,
            42,
            ["device_01"],
            b"device_01",
        ]:
            with self.subTest(client_id=repr(client_id)[:40]):
                self.assertFalse(owns_client_id(username, client_id))
        self.assertIsNone(client_id_owner("u" * 129))
        self.assertIsNone(client_id_owner("u" * 129 + "~1"))
        for not_a_username in (None, 7, "", ["device_01"]):
            self.assertFalse(owns_client_id(not_a_username, "device_01"))
            self.assertFalse(owns_client_id(not_a_username, ""))

    def test_one_owner(self):
        """However usernames are chosen (prefixes of each other included),
        no client id is owned by two of them."""
        rng = random.Random(8)
        usernames = {"dev", "dev_1", "dev.1", "dev-1", "dev:1", "dev@1", "d"}
        while len(usernames) < 200:
            username = "".join(
                rng.choice(USERNAME_CHARS) for _i in range(rng.randint(1, 6))
            )
            if username.strip("."):  # dots only: no username (test_only_dots)
                usernames.add(username)
        suffixes = ["1", "a", "dev", "0a1b2c3d", ".", "x" * 64]
        for username in usernames:
            self.assertTrue(client_ids.USERNAME_RE.fullmatch(username))
            for client_id in [username] + [
                make_client_id(username, suffix) for suffix in suffixes
            ]:
                owners = [u for u in usernames if owns_client_id(u, client_id)]
                self.assertEqual(owners, [username], client_id)

    def test_separator_never_in_a_username(self):
        separator = client_ids.CLIENT_ID_SEPARATOR
        self.assertIsNone(client_ids.USERNAME_RE.fullmatch(separator))
        self.assertIsNone(client_ids.USERNAME_RE.fullmatch(f"a{separator}b"))

    def test_only_dots(self):
        """A username made of dots is a REST path dot-segment on RabbitMQ's
        and EMQX's APIs (``..`` addresses the parent collection): nobody's,
        and no client id of it is anybody's."""
        problem = client_ids.username_problem
        for username in (".", "..", "...", "." * 128):
            with self.subTest(username=username):
                self.assertEqual(problem(username), client_ids.ONLY_DOTS)
                self.assertEqual(problem(username, odoo_own=True), "dots")
                self.assertIsNone(client_id_owner(username))
                self.assertIsNone(client_id_owner(f"{username}~1"))
                with self.assertRaises(ValueError):
                    make_client_id(username, "1")
        # dots beside other characters address the user itself: still valid
        for username in (".a", "a.", "a..b", "dev.1", "a:b@c.d-e_f"):
            with self.subTest(username=username):
                self.assertIsNone(problem(username))
                self.assertEqual(client_id_owner(f"{username}~1"), username)

    def test_reserved(self):
        problem = client_ids.username_problem
        for username in ("odoo_publisher", "odoo_listener_99", "odoo_"):
            self.assertEqual(problem(username), client_ids.RESERVED)
            self.assertIsNone(problem(username, odoo_own=True))
        for username in ("odoo", "odoo-x", "xodoo_", "ODOO_x"):
            self.assertIsNone(problem(username))
        for username in ("", "a b", "a~b", "a/b", "a+b", "a#b", "a%b", "é", None, 7):
            self.assertEqual(problem(username), client_ids.BAD_CHARSET)

    def test_make_client_id(self):
        self.assertEqual(make_client_id("device_01", "ab12"), "device_01~ab12")
        for suffix in ("", "a/b", "x" * 65, "~", "a\n"):
            with self.subTest(suffix=suffix), self.assertRaises(ValueError):
                make_client_id("device_01", suffix)
        with self.assertRaises(ValueError):
            make_client_id("bad~name", "1")


@tagged("post_install", "-at_install")
class TestClientIdEndpoints(HttpCase):
    """EMQX's /iot/auth and /iot/acl and RabbitMQ's four checks, asked with
    client ids of other credentials."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.env["ir.config_parameter"].sudo().set_param("iot_base.auth_token", TOKEN)
        cls.ns = cls.env.ref("base.main_company").iot_mqtt_namespace
        Credentials = cls.env["iot.credentials"]
        cls.device_a = Credentials.create({"username": "dev_a", "kind": "device"})
        cls.secret_a = cls.device_a.action_rotate_secret()["context"]["default_secret"]
        cls.device_b = Credentials.create({"username": "dev_b", "kind": "device"})
        cls.secret_b = cls.device_b.action_rotate_secret()["context"]["default_secret"]
        # named so that a prefix test would let it claim dev_a's ids
        cls.lookalike = Credentials.create({"username": "dev_a_2", "kind": "device"})
        cls.lookalike_secret = cls.lookalike.action_rotate_secret()["context"][
            "default_secret"
        ]

    FOREIGN = ("dev_a", "dev_a~1", "dev_a~dev_b", "dev_b_", "dev_bx", "", "dev_b~")

    def _emqx(self, endpoint, **body):
        response = self.url_open(
            f"/iot/{endpoint}/{TOKEN}",
            data=json.dumps(body),
            headers={"Content-Type": "application/json"},
        )
        self.assertEqual(response.status_code, 200, response.text[:200])
        self.assertEqual(
            response.headers["Content-Type"], "application/json; charset=utf-8"
        )
        return response.json()["result"]

    def _rabbit(self, check, **fields):
        response = self.url_open(f"/iot/rabbitmq/{TOKEN}/{check}", data=fields)
        self.assertEqual(response.status_code, 200, response.text[:200])
        return response.text

    def _last_log(self, username):
        return self.env["iot.auth.log"].search([("username", "=", username)], limit=1)

    def test_emqx_auth(self):
        for client_id in self.FOREIGN:
            with (
                self.subTest(client_id=client_id),
                patch.object(credentials_model, "verify_secret") as verify,
            ):
                self.assertEqual(
                    self._emqx(
                        "auth",
                        username="dev_b",
                        password=self.secret_b,
                        clientid=client_id,
                        peerhost="10.0.0.2",
                    ),
                    "deny",
                )
                verify.assert_not_called()  # refused before any secret check
                log = self._last_log("dev_b")
                self.assertEqual(
                    (log.endpoint, log.result, log.reason, log.clientid or ""),
                    ("auth", "deny", "clientid_denied", client_id),
                )
        # the lookalike name does not own dev_a's ids either
        self.assertEqual(
            self._emqx(
                "auth",
                username="dev_a_2",
                password=self.lookalike_secret,
                clientid="dev_a~2",
            ),
            "deny",
        )
        # a missing client id (an EMQX template without ${clientid}) is no id
        self.assertEqual(
            self._emqx("auth", username="dev_b", password=self.secret_b), "deny"
        )
        # not a throttle failure: the owner still gets in at once
        for client_id in ("dev_b", "dev_b~tab-1"):
            with self.subTest(client_id=client_id):
                self.assertEqual(
                    self._emqx(
                        "auth",
                        username="dev_b",
                        password=self.secret_b,
                        clientid=client_id,
                        peerhost="10.0.0.2",
                    ),
                    "allow",
                )

    def test_emqx_acl(self):
        topic = f"{self.ns}/devices/dev_b/telemetry/t"
        for client_id in self.FOREIGN:
            with self.subTest(client_id=client_id):
                self.assertEqual(
                    self._emqx(
                        "acl",
                        username="dev_b",
                        clientid=client_id,
                        action="publish",
                        topic=topic,
                    ),
                    "deny",
                )
                self.assertEqual(self._last_log("dev_b").reason, "clientid_denied")
        self.assertEqual(
            self._emqx(
                "acl",
                username="dev_b",
                clientid="dev_b~1",
                action="publish",
                topic=topic,
            ),
            "allow",
        )

    def test_rabbitmq_checks(self):
        queue_a = "mqtt-subscription-dev_aqos1"
        cases = [
            ("user", {"password": self.secret_b, "vhost": "/"}),
            ("vhost", {"vhost": "/", "ip": "10.0.0.3", "tags": ""}),
            (
                "resource",
                {
                    "vhost": "/",
                    "resource": "queue",
                    "name": queue_a,
                    "permission": "read",
                    "tags": "",
                },
            ),
            (
                "resource",
                {
                    "vhost": "/",
                    "resource": "exchange",
                    "name": "amq.topic",
                    "permission": "write",
                    "tags": "",
                },
            ),
        ]
        for check, fields in cases:
            for client_id in ("dev_a", "dev_a~1", "dev_bx"):
                with self.subTest(check=check, fields=fields, client_id=client_id):
                    self.assertEqual(
                        self._rabbit(
                            check, username="dev_b", client_id=client_id, **fields
                        ),
                        "deny",
                    )
                    log = self._last_log("dev_b")
                    self.assertEqual(
                        (log.endpoint, log.reason, log.clientid),
                        ("rabbitmq", "clientid_denied", client_id),
                    )
        # the topic check names the client id in its variable map
        topic_fields = {
            "username": "dev_b",
            "vhost": "/",
            "resource": "topic",
            "name": "amq.topic",
            "permission": "write",
            "routing_key": f"{self.ns}.devices.dev_b.telemetry.t",
            "tags": "",
            "variable_map.username": "dev_b",
            "variable_map.vhost": "/",
        }
        self.assertEqual(
            self._rabbit(
                "topic", **topic_fields, **{"variable_map.client_id": "dev_a"}
            ),
            "deny",
        )
        self.assertEqual(self._last_log("dev_b").reason, "clientid_denied")
        self.assertEqual(
            self._rabbit(
                "topic", **topic_fields, **{"variable_map.client_id": "dev_b~1"}
            ),
            "allow",
        )
        # the owner gets its queue; the queue of dev_a stays dev_a's
        own = {"vhost": "/", "resource": "queue", "permission": "read", "tags": ""}
        self.assertEqual(
            self._rabbit(
                "resource",
                username="dev_a",
                client_id="dev_a",
                name=queue_a,
                **own,
            ),
            "allow",
        )
        self.assertEqual(
            self._rabbit(
                "resource",
                username="dev_b",
                client_id="dev_b",
                name=queue_a,
                **own,
            ),
            "deny",
        )
        self.assertEqual(
            self._rabbit(
                "user",
                username="dev_b",
                password=self.secret_b,
                vhost="/",
                client_id="dev_b~x",
            ),
            "allow",
        )


@tagged("post_install", "-at_install")
class TestIssuedClientId(HttpCase):
    """The client id issued with a device's secret, and its requirement on
    the HTTP paths, where Odoo sees the client id (EMQX, RabbitMQ)."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        params = cls.env["ir.config_parameter"].sudo()
        params.set_param("iot_base.auth_token", TOKEN)
        params.set_param(REQUIRE_ISSUED_CLIENT_ID_PARAM, "True")
        cls.device, cls.secret = cls.env["iot.mqtt.device"]._register_device("issued-1")
        cls.username = cls.device.username
        cls.issued = client_ids.issued_client_id(cls.username, cls.secret)

    _emqx = TestClientIdEndpoints._emqx
    _rabbit = TestClientIdEndpoints._rabbit

    def test_issued_id(self):
        self.assertRegex(self.issued, rf"^{self.username}~[0-9a-f]{{32}}$")
        self.assertNotIn(self.issued[len(self.username) + 1 :], self.secret)
        self.assertTrue(
            client_ids.is_issued_client_id(self.username, self.secret, self.issued)
        )
        other_secret = self.device._issue_device_secret()
        self.assertNotEqual(
            client_ids.issued_client_id(self.username, other_secret), self.issued
        )
        for wrong in (self.username, self.username + "~1", self.issued + "0", None):
            self.assertFalse(
                client_ids.is_issued_client_id(self.username, self.secret, wrong)
            )
        self.assertFalse(
            client_ids.is_issued_client_id(self.username, None, self.issued)
        )

    def test_shown_with_the_secret(self):
        action = self.device.action_rotate_secret()
        context = action["context"]
        self.assertEqual(
            context["default_client_id"],
            client_ids.issued_client_id(self.username, context["default_secret"]),
        )
        service = self.env["iot.credentials"].create(
            {"username": "svc_issued01", "kind": "service"}
        )
        self.assertFalse(service.action_rotate_secret()["context"]["default_client_id"])

    def test_required_on_http_paths(self):
        """Required: the device's CONNECT with its username (or any other of
        its ids) is refused on EMQX and RabbitMQ; the issued id gets in;
        console users and services keep their own ids."""
        for client_id in (self.username, self.username + "~tab-1"):
            with self.subTest(client_id=client_id):
                self.assertEqual(
                    self._emqx(
                        "auth",
                        username=self.username,
                        password=self.secret,
                        clientid=client_id,
                    ),
                    "deny",
                )
                log = self.env["iot.auth.log"].search(
                    [("username", "=", self.username)], limit=1
                )
                self.assertEqual(
                    (log.result, log.reason, log.clientid),
                    ("deny", "clientid_denied", client_id),
                )
                self.assertEqual(
                    self._rabbit(
                        "user",
                        username=self.username,
                        password=self.secret,
                        vhost="/",
                        client_id=client_id,
                    ),
                    "deny",
                )
        self.assertEqual(
            self._emqx(
                "auth",
                username=self.username,
                password=self.secret,
                clientid=self.issued,
            ),
            "allow",
        )
        self.assertTrue(
            self._rabbit(
                "user",
                username=self.username,
                password=self.secret,
                vhost="/",
                client_id=self.issued,
            ).startswith("allow")
        )
        # not required: the username id works again
        self.env["ir.config_parameter"].sudo().set_param(
            REQUIRE_ISSUED_CLIENT_ID_PARAM, "False"
        )
        self.assertEqual(
            self._emqx(
                "auth",
                username=self.username,
                password=self.secret,
                clientid=self.username,
            ),
            "allow",
        )

    def test_console_and_services_unaffected(self):
        user = new_test_user(
            self.env,
            login="issued.console",
            groups="base.group_user,iot_base.iot_base_group_user",
        )
        creds = user.with_user(user).get_or_create_iot_credentials()
        service = self.env["iot.credentials"].create(
            {"username": "svc_issued02", "kind": "service"}
        )
        service_secret = service.action_rotate_secret()["context"]["default_secret"]
        for username, password in (
            (creds["username"], creds["password"]),
            ("svc_issued02", service_secret),
        ):
            with self.subTest(username=username):
                self.assertEqual(
                    self._emqx(
                        "auth",
                        username=username,
                        password=password,
                        clientid=f"{username}~0a1b2c3d",
                    ),
                    "allow",
                )
