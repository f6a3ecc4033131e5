# License LGPL-3.0 or later (https://www.gnu.org/licenses/lgpl).
import json
import logging
import time
from unittest.mock import patch

from psycopg2 import OperationalError

from odoo import sql_db
from odoo.tests import HttpCase, new_test_user, tagged
from odoo.tools import mute_logger

from ...models import iot_credentials as credentials_module

TOKEN = "broker-t0ken-for-tests"
# What EMQX 5.8's HTTP authenticator sends (emqx_authn_http defaults)
EMQX_HEADERS = {
    "content-type": "application/json",
    "accept": "application/json",
    "cache-control": "no-cache",
    "connection": "keep-alive",
}


@tagged("post_install", "-at_install", "iot_emqx")
class TestBrokerHttp(HttpCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.env["ir.config_parameter"].sudo().set_param("iot_base.auth_token", TOKEN)
        cls.company = cls.env.ref("base.main_company")
        cls.ns = cls.company.iot_mqtt_namespace
        cls.other_company = cls.env["res.company"].create(
            {"name": "Acme Other", "iot_mqtt_namespace": "acme_other"}
        )
        cls.user = new_test_user(
            cls.env,
            login="mqtt.user@example.com",
            groups="base.group_user,iot_base.iot_base_group_user",
        )
        cls.manager = new_test_user(
            cls.env,
            login="mqtt.manager@example.com",
            groups="base.group_user,iot_base.iot_base_group_manager",
        )
        cls.user_creds = cls.user.with_user(cls.user).get_or_create_iot_credentials()
        cls.manager_creds = cls.manager.with_user(
            cls.manager
        ).get_or_create_iot_credentials()
        Credentials = cls.env["iot.credentials"]
        cls.device = Credentials.create(
            {"username": "device_ab12cd34", "kind": "device"}
        )
        cls.device_secret = cls.device.action_rotate_secret()["context"][
            "default_secret"
        ]
        cls.other_device = Credentials.create(
            {
                "username": "device_other01",
                "kind": "device",
                "company_id": cls.other_company.id,
            }
        )
        cls.other_device_secret = cls.other_device.action_rotate_secret()["context"][
            "default_secret"
        ]
        cls.superuser = Credentials.create(
            {"username": "service_bridge", "kind": "service", "is_superuser": True}
        )
        cls.superuser_secret = cls.superuser.action_rotate_secret()["context"][
            "default_secret"
        ]

    # helpers -----------------------------------------------------------

    def _post(self, path, body, headers=None, token=TOKEN):
        url = f"{path}/{token}" if token else path
        data = body if isinstance(body, bytes | str) else json.dumps(body)
        return self.url_open(
            url, data=data, headers=dict(EMQX_HEADERS, **(headers or {}))
        )

    def _auth(self, username, password, clientid=None, **kw):
        body = {
            "username": username,
            "password": password,
            # by default one the credential owns (the client id policy)
            "clientid": f"{username}~c1" if clientid is None else clientid,
            "peerhost": "10.1.2.3",
        }
        return self._post("/iot/auth", body, **kw)

    def _acl(self, username, action, topic, qos="0", retain="false", clientid=None):
        body = {
            "username": username,
            "clientid": f"{username}~c1" if clientid is None else clientid,
            "action": action,
            "topic": topic,
            "qos": qos,
            "retain": retain,
            "peerhost": "10.1.2.3",
        }
        return self._post("/iot/acl", body)

    def assertReply(self, response, result, status=200):
        self.assertEqual(response.status_code, status, response.text[:300])
        self.assertEqual(
            response.headers["Content-Type"], "application/json; charset=utf-8"
        )
        payload = response.json()
        self.assertEqual(payload["result"], result, payload)
        return payload

    def _log(self, **domain):
        return self.env["iot.auth.log"].search(
            [(key, "=", value) for key, value in domain.items()], limit=1
        )

    # authentication ------------------------------------------------------

    def test_allow_reply(self):
        payload = self.assertReply(
            self._auth(self.user_creds["username"], self.user_creds["password"]),
            "allow",
        )
        self.assertIs(payload["is_superuser"], False)
        self.assertEqual(payload["resource_type"], "user")
        self.assertEqual(payload["client_attrs"]["namespace"], self.ns)
        self.assertTrue(
            all(isinstance(v, str) for v in payload["client_attrs"].values())
        )
        self.assertIsInstance(payload["expire_at"], int)
        acl = payload["acl"]
        self.assertEqual(acl[-1], {"permission": "deny", "action": "all", "topic": "#"})
        self.assertIn(
            {
                "permission": "allow",
                "action": "subscribe",
                "topic": f"{self.ns}/devices/+/telemetry/#",
            },
            acl,
        )
        log = self._log(username=self.user_creds["username"], endpoint="auth")
        self.assertEqual(
            (log.result, log.reason, log.clientid, log.peer),
            ("allow", "ok", f"{self.user_creds['username']}~c1", "10.1.2.3"),
        )
        self.assertNotIn(
            self.user_creds["password"], json.dumps(log.read()[0], default=str)
        )

    def test_device_and_superuser_replies(self):
        payload = self.assertReply(
            self._auth("device_ab12cd34", self.device_secret), "allow"
        )
        self.assertEqual(payload["resource_type"], "device")
        self.assertNotIn("expire_at", payload, "long-lived secret: no expiry")
        self.assertIn(
            {
                "permission": "allow",
                "action": "publish",
                "topic": f"{self.ns}/devices/device_ab12cd34/telemetry/#",
            },
            payload["acl"],
        )
        payload = self.assertReply(
            self._auth("service_bridge", self.superuser_secret), "allow"
        )
        self.assertIs(payload["is_superuser"], True)
        self.assertEqual(payload["acl"][-1]["permission"], "deny")

    def test_deny_replies(self):
        wrong = self.device_secret[:8] + "0" * 32
        self.device.copy({"username": "device_revoked", "active": False})
        for username, password in [
            ("device_ab12cd34", wrong),
            ("nobody", self.device_secret),
            ("device_ab12cd34", ""),
            ("", ""),
            ("device_revoked", self.device_secret),
        ]:
            with self.subTest(username=username):
                self.assertEqual(
                    self.assertReply(self._auth(username, password), "deny"),
                    {"result": "deny"},
                )
        log = self._log(username="device_ab12cd34", endpoint="auth")
        self.assertEqual((log.result, log.reason), ("deny", "invalid_credentials"))

    def test_expired_and_archived_owner(self):
        self.user.action_archive()
        self.assertReply(
            self._auth(self.user_creds["username"], self.user_creds["password"]), "deny"
        )
        self.device.expires_at = "2000-01-01 00:00:00"
        self.assertReply(self._auth("device_ab12cd34", self.device_secret), "deny")

    def test_form_and_get_variants(self):
        body = {
            "username": "device_ab12cd34",
            "password": self.device_secret,
            "clientid": "device_ab12cd34",
        }
        self.assertReply(
            self._post(
                "/iot/auth",
                "&".join(f"{k}={v}" for k, v in body.items()),
                headers={"content-type": "application/x-www-form-urlencoded"},
            ),
            "allow",
        )
        response = self.url_open(
            f"/iot/auth/{TOKEN}?username=device_ab12cd34&password={self.device_secret}"
            "&clientid=device_ab12cd34"
        )
        self.assertReply(response, "allow")

    def test_token(self):
        good = {
            "username": "device_ab12cd34",
            "password": self.device_secret,
            "clientid": "device_ab12cd34",
        }
        with patch.object(credentials_module, "verify_secret") as verify:
            for token in ("wrong", TOKEN[:-1], TOKEN + "x", None):
                with (
                    self.subTest(token=token),
                    mute_logger("odoo.addons.iot_base.controllers.emqx.auth"),
                ):
                    self.assertReply(self._post("/iot/auth", good, token=token), "deny")
            verify.assert_not_called()
        self.assertEqual(self._log(reason="bad_token").result, "deny")
        # the same secret as a bearer token keeps it out of URLs
        self.assertReply(
            self._post(
                "/iot/auth",
                good,
                token=None,
                headers={"Authorization": f"Bearer {TOKEN}"},
            ),
            "allow",
        )
        with mute_logger("odoo.addons.iot_base.controllers.emqx.auth"):
            self.assertReply(
                self._post(
                    "/iot/auth",
                    good,
                    token=None,
                    headers={"Authorization": "Bearer nope"},
                ),
                "deny",
            )
            # no token configured: nothing passes
            self.env["ir.config_parameter"].sudo().set_param("iot_base.auth_token", "")
            self.assertReply(self._post("/iot/auth", good), "deny")
            self.assertReply(self._post("/iot/auth", good, token=""), "deny")

    def test_token_and_password_stay_out_of_access_log(self):
        secret = self.device_secret
        lines = []
        handler = logging.Handler()
        handler.emit = lambda record: lines.append(record.getMessage())
        werkzeug_logger = logging.getLogger("werkzeug")
        werkzeug_logger.addHandler(handler)
        self.addCleanup(werkzeug_logger.removeHandler, handler)
        self._auth("device_ab12cd34", secret)
        self.url_open(f"/iot/auth/{TOKEN}?username=device_ab12cd34&password={secret}")
        # the server thread logs a request after answering it
        for _wait in range(100):
            if len(lines) >= 2:
                break
            time.sleep(0.02)
        output = "\n".join(lines)
        self.assertEqual(len(lines), 2, output)
        self.assertIn("/iot/auth/***", output)
        self.assertNotIn(TOKEN, output)
        self.assertNotIn(secret, output)

    def test_bad_input_never_allows(self):
        secret = self.device_secret
        big = json.dumps(
            {
                "username": "device_ab12cd34",
                "password": secret,
                "pad": "x" * (1024 * 1024),
            }
        )
        for body in [
            b"",
            b"{not json",
            b"[]",
            b"42",
            b"null",
            b'"device_ab12cd34"',
            b'[{"username": "device_ab12cd34"}]',
            {},
            {"username": "device_ab12cd34"},
            {"username": "device_ab12cd34", "password": None},
            {"username": "device_ab12cd34", "password": 12345},
            {"username": "device_ab12cd34", "password": [secret]},
            {"username": "device_ab12cd34", "password": [secret, "guess"]},
            {"username": ["device_ab12cd34"], "password": secret},
            {"username": None, "password": secret},
            {"username": "device_ab12cd34", "password": {"$ne": ""}},
            {"username": "device_ab12cd34", "password": secret, "clientid": 7},
            {"username": "x" * 100000, "password": secret},
            b'\xff\xfe{"username": "device_ab12cd34"}',
            (
                '{"username": "device_ab12cd34", "password": "' + secret + '\xff"}'
            ).encode("latin-1"),
            big,
        ]:
            with self.subTest(body=repr(body)[:60]):
                self.assertEqual(
                    self.assertReply(self._post("/iot/auth", body), "deny"),
                    {"result": "deny"},
                )
        self.assertEqual(self._log(reason="bad_request").result, "deny")

    def test_database_unavailable_is_no_opinion(self):
        def broken(*_args, **_kwargs):
            raise OperationalError("server closed the connection unexpectedly")

        with (
            patch.object(
                type(self.env["iot.credentials"]), "_authenticate_secret", broken
            ),
            mute_logger("odoo.addons.iot_base.controllers.emqx.auth"),
        ):
            response = self._auth("device_ab12cd34", self.device_secret)
        self.assertReply(response, "ignore", status=503)

    def test_held_lock_is_no_opinion_within_emqx_timeout(self):
        """A table of the hot path locked by another transaction: the broker
        gets "no opinion" well inside EMQX's 5 s, never an allow, and the
        request is not replayed into a longer wait."""
        # a table this test's transaction has not locked (else NOWAIT fails)
        other = sql_db.db_connect(self.env.cr.dbname).cursor()
        self.addCleanup(other.close)
        other.execute("LOCK TABLE iot_auth_throttle IN ACCESS EXCLUSIVE MODE NOWAIT")
        try:
            start = time.monotonic()
            with mute_logger(
                "odoo.addons.iot_base.controllers.emqx.auth",
                "odoo.addons.iot_base.controllers.iot_request",
                "odoo.sql_db",  # "bad query": the statement that timed out
            ):
                response = self._auth("device_ab12cd34", self.device_secret)
            elapsed = time.monotonic() - start
        finally:
            other.rollback()
        self.assertReply(response, "ignore", status=503)
        self.assertLess(elapsed, 4)
        # and once the lock is gone, the same request gets in
        self.assertReply(self._auth("device_ab12cd34", self.device_secret), "allow")
        # a slow query is bounded too (SET LOCAL outlives the request's
        # savepoint in the test transaction)
        self.env.cr.execute("SHOW statement_timeout")
        self.assertEqual(self.env.cr.fetchone()[0], "3s")

    def _auth_from(self, peer, username, password):
        body = {"username": username, "password": password, "clientid": username}
        if peer:
            body["peerhost"] = peer
        return self._post("/iot/auth", body)

    def test_throttling(self):
        params = self.env["ir.config_parameter"].sudo()
        params.set_param("iot_base.throttle_max_failures", "3")
        for _attempt in range(3):
            self.assertReply(self._auth("device_ab12cd34", "f" * 40), "deny")
        # now even the right secret is refused from that peer, without hashing
        with patch.object(credentials_module, "verify_secret") as verify:
            self.assertReply(self._auth("device_ab12cd34", self.device_secret), "deny")
            verify.assert_not_called()
        self.assertEqual(self._log(reason="throttled").username, "device_ab12cd34")
        # the same peer, another username: its own count
        self.assertReply(self._auth("service_bridge", self.superuser_secret), "allow")
        # after the cool-down
        self.env.cr.execute("UPDATE iot_auth_throttle SET blocked_until = '2000-01-01'")
        self.assertReply(self._auth("device_ab12cd34", self.device_secret), "allow")

    def test_throttle_settings_out_of_range(self):
        """Settings too large for SQL integers or timedelta are cut to the
        highest value used: a failed login is still a logged deny, never an
        error."""
        params = self.env["ir.config_parameter"].sudo()
        params.set_param("iot_base.throttle_max_failures", str(10**12))
        params.set_param("iot_base.throttle_window_seconds", str(10**15))
        params.set_param("iot_base.throttle_cooldown_seconds", "9" * 30)
        self.assertReply(self._auth("device_ab12cd34", "f" * 40), "deny")
        denied = self._log(reason="invalid_credentials")
        self.assertEqual(denied.username, "device_ab12cd34")
        settings = self.env["iot.auth.throttle"]._settings()
        self.assertEqual(settings["throttle_max_failures"], 10**6)
        self.assertEqual(settings["throttle_window_seconds"], 366 * 24 * 3600)
        self.assertReply(self._auth("device_ab12cd34", self.device_secret), "allow")

    def test_no_lockout_from_another_peer(self):
        """Failures from an attacker's address never stop the right secret
        from another address, however many and however long."""
        self.env["ir.config_parameter"].sudo().set_param(
            "iot_base.throttle_max_failures", "3"
        )
        for _attempt in range(12):
            self.assertReply(
                self._auth_from("10.6.6.6", "device_ab12cd34", "f" * 40), "deny"
            )
        # the attacker's peer is blocked, for this username and the others
        with patch.object(credentials_module, "verify_secret") as verify:
            self.assertReply(
                self._auth_from("10.6.6.6", "device_ab12cd34", self.device_secret),
                "deny",
            )
            verify.assert_not_called()
        for index in range(12):
            self._auth_from("10.6.6.6", f"device_guess{index:02d}", "f" * 40)
        self.assertReply(
            self._auth_from("10.6.6.6", "service_bridge", self.superuser_secret),
            "deny",
        )
        # the device, from its own address, gets in
        self.assertReply(
            self._auth_from("10.1.2.3", "device_ab12cd34", self.device_secret),
            "allow",
        )
        self.assertReply(
            self._auth_from("10.1.2.4", "service_bridge", self.superuser_secret),
            "allow",
        )

    def test_broker_address_never_throttled(self):
        """Without ``peerhost`` the connection's address is the broker's:
        blocking it would lock every client out."""
        self.env["ir.config_parameter"].sudo().set_param(
            "iot_base.throttle_max_failures", "3"
        )
        for _attempt in range(20):
            self.assertReply(self._auth_from("", "device_ab12cd34", "f" * 40), "deny")
        self.assertReply(
            self._auth_from("", "device_ab12cd34", self.device_secret), "allow"
        )
        self.assertReply(
            self._auth_from("", "service_bridge", self.superuser_secret), "allow"
        )
        self.assertFalse(self.env["iot.auth.throttle"].search([]))

    def test_secret_must_be_exact(self):
        """HMAC pads a short key with zeros: the right secret plus a NUL
        would hash the same, so the format is checked first."""
        secret = self.device_secret
        for variant in [
            secret + "\x00",
            secret + "\x00\x00",
            secret.upper(),
            secret + " ",
            " " + secret,
            secret + "\n",
            secret[:-1],
            secret + "0",
        ]:
            with self.subTest(variant=repr(variant[-3:])):
                self.assertReply(
                    self._auth_from("", "device_ab12cd34", variant), "deny"
                )
        self.assertReply(self._auth_from("", "device_ab12cd34", secret), "allow")

    def test_audit_log_access(self):
        self._auth("device_ab12cd34", self.device_secret)
        self._auth("device_other01", self.other_device_secret)
        logs = self.env["iot.auth.log"].with_user(self.manager).search([])
        self.assertIn("device_ab12cd34", logs.mapped("username"))
        self.assertNotIn("device_other01", logs.mapped("username"), "other company")
        from odoo.exceptions import AccessError

        with self.assertRaises(AccessError):
            self.env["iot.auth.log"].with_user(self.user).search([])
        with self.assertRaises(AccessError):
            logs[:1].with_user(self.manager).unlink()
        # bounded: the vacuum keeps the newest rows only
        self.env["ir.config_parameter"].sudo().set_param("iot_base.audit_max_rows", "1")
        self.env["iot.auth.log"]._gc_auth_log()
        self.assertEqual(self.env["iot.auth.log"].search_count([]), 1)

    # authorization -------------------------------------------------------

    def test_acl_decisions(self):
        ns, user, dev = self.ns, self.user_creds["username"], "device_ab12cd34"
        manager = self.manager_creds["username"]
        table = [
            (user, "subscribe", f"{ns}/devices/+/telemetry/#", "allow"),
            (user, "subscribe", f"{ns}/devices/d1/telemetry/temp", "allow"),
            (user, "subscribe", f"{ns}/devices/+/status/#", "allow"),
            (user, "subscribe", f"$share/g1/{ns}/devices/+/status/#", "allow"),
            (user, "subscribe", f"{ns}/devices/#", "deny"),
            (user, "subscribe", f"{ns}/devices/+/+/#", "deny"),
            (user, "subscribe", f"{ns}/#", "deny"),
            (user, "subscribe", "#", "deny"),
            (user, "subscribe", "$SYS/#", "deny"),
            (user, "publish", f"{ns}/devices/d1/telemetry/x", "deny"),
            (user, "publish", f"{ns}/users/{user}/notes", "allow"),
            (user, "publish", f"{ns}/users/{user}", "allow"),
            (user, "subscribe", f"{ns}/users/{user}/#", "allow"),
            (user, "subscribe", f"{ns}/users/+/#", "deny"),
            (user, "publish", f"{ns}/users/user_someone_else/x", "deny"),
            (user, "subscribe", "acme_other/devices/+/telemetry/#", "deny"),
            (manager, "subscribe", f"{ns}/#", "allow"),
            (manager, "publish", f"{ns}/devices/{dev}/commands/reboot", "allow"),
            (manager, "publish", "acme_other/devices/x/commands/reboot", "deny"),
            (dev, "publish", f"{ns}/devices/{dev}/telemetry/temp", "allow"),
            (dev, "publish", f"{ns}/devices/{dev}/status", "allow"),
            (dev, "subscribe", f"{ns}/devices/{dev}/commands/#", "allow"),
            (dev, "subscribe", f"{ns}/devices/{dev}/#", "deny"),
            (dev, "publish", f"{ns}/devices/{dev}/commands/x", "deny"),
            (dev, "publish", f"{ns}/devices/device_zz/telemetry/temp", "deny"),
            (dev, "publish", f"{ns}/devices/+/telemetry/temp", "deny"),
            (
                "device_other01",
                "publish",
                "acme_other/devices/device_other01/telemetry/t",
                "allow",
            ),
            (
                "device_other01",
                "publish",
                f"{ns}/devices/device_other01/telemetry/t",
                "deny",
            ),
            ("service_bridge", "subscribe", "#", "allow"),
            ("nobody", "subscribe", f"{ns}/devices/+/telemetry/#", "deny"),
        ]
        for username, action, topic, expected in table:
            with self.subTest(username=username, action=action, topic=topic):
                self.assertReply(self._acl(username, action, topic), expected)
        log = self._log(endpoint="acl", topic="#")
        self.assertEqual(
            (log.result, log.reason, log.action), ("deny", "topic_denied", "subscribe")
        )

    def test_acl_bad_input(self):
        dev = "device_ab12cd34"
        for body in [
            b"{",
            b"[]",
            {},
            {"username": dev, "action": "publish"},
            {"username": dev, "action": "delete", "topic": "a"},
            {"username": dev, "action": "publish", "topic": 5},
            {"username": dev, "action": "publish", "topic": "a", "qos": "7"},
            {"username": dev, "action": "publish", "topic": "a", "qos": [1]},
            {"username": dev, "action": "publish", "topic": "a", "retain": "maybe"},
            {
                "username": dev,
                "action": "publish",
                "topic": f"{self.ns}/devices/{dev}/telemetry/#",
            },
            {"username": dev, "action": "publish", "topic": ""},
        ]:
            with self.subTest(body=repr(body)[:60]):
                self.assertReply(self._post("/iot/acl", body), "deny")
        # ints and booleans where EMQX sends strings are still understood
        self.assertReply(
            self._post(
                "/iot/acl",
                {
                    "username": dev,
                    "clientid": dev,
                    "action": "publish",
                    "qos": 1,
                    "retain": True,
                    "topic": f"{self.ns}/devices/{dev}/status",
                },
            ),
            "allow",
        )
