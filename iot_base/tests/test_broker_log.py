# License LGPL-3.0 or later (https://www.gnu.org/licenses/lgpl).
"""No broker token, MQTT secret or request body reaches a log line, however
the broker spells the URL (tools/log_redaction.py)."""

import contextlib
import json
import logging
import secrets
import time
from urllib.parse import quote

from odoo.tests import HttpCase, new_test_user, tagged

from odoo.addons.iot_base.tools import log_redaction

from .common import raw_http_exchange

# loggers whose lines this test provokes on purpose (bad tokens, a garbage
# request line werkzeug reports at ERROR): captured here, not passed on
NOISY = (
    "werkzeug",
    "odoo.addons.iot_base.controllers.emqx.auth",
    "odoo.addons.iot_base.controllers.rabbitmq.auth",
    "odoo.addons.iot_base.controllers.iot_request",
    "odoo.http",
    # Odoo 18's request handler fails on a garbage request line (its
    # send_header reads headers not parsed yet): a traceback, no content
    "odoo.service.server",
)


class _Capture(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        self.lines = []

    def emit(self, record):
        self.lines.append(self.format(record))


@tagged("post_install", "-at_install")
class TestBrokerLogRedaction(HttpCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.token = f"Tok-{secrets.token_hex(12)}"
        cls.env["ir.config_parameter"].sudo().set_param(
            "iot_base.auth_token", cls.token
        )
        Credentials = cls.env["iot.credentials"]
        cls.device = Credentials.create(
            {"username": "device_lg12cd34", "kind": "device"}
        )
        cls.device_secret = cls.device.action_rotate_secret()["context"][
            "default_secret"
        ]
        user = new_test_user(
            cls.env,
            login="log.user@example.com",
            groups="base.group_user,iot_base.iot_base_group_user",
        )
        cls.user_creds = user.with_user(user).get_or_create_iot_credentials()

    @contextlib.contextmanager
    def _capture(self):
        capture = _Capture()
        root = logging.getLogger()
        saved = {}
        for name in NOISY:
            logger = logging.getLogger(name)
            saved[name] = (logger.handlers, logger.propagate)
            logger.handlers, logger.propagate = [capture], False
        root.addHandler(capture)
        try:
            yield capture
        finally:
            root.removeHandler(capture)
            for name, (handlers, propagate) in saved.items():
                logger = logging.getLogger(name)
                logger.handlers, logger.propagate = handlers, propagate

    def _raw(self, data):
        raw_http_exchange(("127.0.0.1", self.http_port()), data, timeout=10)

    def test_no_secret_in_any_log_line(self):
        token, secret = self.token, self.device_secret
        user_secret = self.user_creds["password"]
        login = {"username": "device_lg12cd34", "password": secret}
        json_login = json.dumps(login)
        form_login = f"username=device_lg12cd34&password={secret}"
        encoded_token = "".join(f"%{byte:02X}" for byte in token.encode())
        requests = [
            ("POST", f"/iot/auth/{token}", json_login),
            ("POST", f"/iot/auth//{token}", json_login),
            ("POST", f"/iot//auth/{token}", json_login),
            ("POST", f"/IOT/auth/{token}", json_login),
            ("POST", f"/Iot/Acl/{token}", json_login),
            ("POST", f"/%69ot/auth/{token}", json_login),
            ("POST", f"/iot/auth/{encoded_token}", json_login),
            ("POST", f"/iot%2Fauth%2F{token}", json_login),
            ("POST", f"/iot/rabbitmq/{token}", form_login),
            ("POST", f"/iot/rabbitmq/{token}/user", form_login),
            ("POST", f"/iot/rabbitmq//{token}/user", form_login),
            ("POST", f"/iot/{token}", json_login),
            ("GET", f"/iot/auth?token={token}&{form_login}", None),
            ("GET", f"/iot/auth/{token}?{form_login}", None),
            ("GET", f"/iot/acl?token={token}&password={user_secret}", None),
            ("GET", f"/iot/rabbitmq/user?token={token}&{form_login}", None),
            ("GET", f"/web/login?redirect=/iot/auth/{token}", None),
        ]
        raw = [
            # a broken chunked body carrying a password
            (
                f"POST /iot/auth/{token} HTTP/1.1\r\nHost: x\r\n"
                "Content-Type: application/x-www-form-urlencoded\r\n"
                f"Transfer-Encoding: chunked\r\n\r\n{form_login}\r\n0\r\n\r\n"
            ).encode(),
            (
                f"POST /iot/rabbitmq/{token}/user HTTP/1.1\r\nHost: x\r\n"
                "Content-Type: application/json\r\n"
                f"Transfer-Encoding: chunked\r\n\r\nzz\r\n{json_login}\r\n0\r\n\r\n"
            ).encode(),
            # a body where a request line is expected: werkzeug quotes it
            f"{form_login}\r\n\r\n".encode(),
            f"POST /iot/auth/{token} {secret}\r\n\r\n".encode(),
        ]
        with self._capture() as capture:
            for method, path, body in requests:
                self.opener.request(
                    method,
                    self.base_url() + path,
                    data=body,
                    headers={"Content-Type": "application/json"}
                    if body and body.startswith("{")
                    else {"Content-Type": "application/x-www-form-urlencoded"},
                    timeout=12,
                    allow_redirects=False,
                )
            for data in raw:
                self._raw(data)
            # the server thread logs a request after answering it
            for _wait in range(100):
                if sum(" werkzeug: " in line for line in capture.lines) >= len(
                    requests
                ) + len(raw):
                    break
                time.sleep(0.02)
        output = "\n".join(capture.lines)
        self.assertGreaterEqual(output.count(" werkzeug: "), len(requests), output)
        self.assertIn("/iot/auth/***", output)
        for value in (token, secret, user_secret):
            for spelling in {value, value.lower(), value.upper(), quote(value)}:
                self.assertNotIn(spelling, output)
            self.assertNotIn(value[8:], output)

    def test_bad_query_parameters(self):
        record = logging.LogRecord(
            "odoo.sql_db",
            logging.ERROR,
            __file__,
            1,
            "bad query: %s\nERROR: %s",
            ("SELECT 1 WHERE s.index = 'ab12cd34' AND c.username = 'it''s'", "x"),
            None,
        )
        message = log_redaction.redact_record(record).getMessage()
        self.assertNotIn("ab12cd34", message)
        self.assertNotIn("it''s", message)
        self.assertIn("s.index = '***'", message)

    def test_redact(self):
        redact = log_redaction.redact
        for text, expected in [
            (
                '"POST /iot/auth/T HTTP/1.1" 200 -',
                '"POST /iot/auth/*** HTTP/1.1" 200 -',
            ),
            ("GET /IOT//acl//T?x=1 HTTP/1.1", "GET /iot/acl/*** HTTP/1.1"),
            ("/%69ot/rabbitmq/T/user", "/iot/rabbitmq/***"),
            ("http://h:8069/iot%2Fauth%2FT", "http://h:8069/iot/auth/***"),
            ("/iot/T", "/iot/***"),
            ("/iot/authT/x", "/iot/***"),
            ("/web/login", "/web/login"),
            # the public key set stays readable; anything after it is cut
            (
                '"GET /iot/jwks.json HTTP/1.1" 200 -',
                '"GET /iot/jwks.json HTTP/1.1" 200 -',
            ),
            ("GET /IOT//jwks.json HTTP/1.1", "GET /iot/jwks.json HTTP/1.1"),
            ("/iot/jwks.json?t=T", "/iot/jwks.json***"),
            ("/iot/jwks.jsonT", "/iot/jwks.json***"),
            ("/iot/jwks.json/T", "/iot/jwks.json***"),
            # a quote or bracket inside the token does not end the redaction
            (
                '"POST /iot/auth/ab\'cdSECRET HTTP/1.1" 200 -',
                '"POST /iot/auth/*** HTTP/1.1" 200 -',
            ),
            ('"POST /iot/auth/ab"SECRET HTTP/1.1"', '"POST /iot/auth/*** HTTP/1.1"'),
            ("GET /iot/acl/x<SECRET>y", "GET /iot/acl/***"),
            ("('/iot/auth/SECRET', 'x')", "('/iot/auth/*** 'x')"),
            (
                "invalid literal for int() with base 16: 'password=x'",
                "invalid literal for int() with base 16: ***",
            ),
        ]:
            with self.subTest(text=text):
                self.assertEqual(redact(text), expected)
