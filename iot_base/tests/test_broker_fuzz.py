# License LGPL-3.0 or later (https://www.gnu.org/licenses/lgpl).
"""Seeded fuzzing of the broker endpoints: whatever arrives, the answer is
the protocol's deny, never a 5xx, an HTML page, an allow or an ERROR line.

Every request names a real username with a secret that is not exactly the
issued one, or a username that does not exist, so no answer may be an allow.
"""

import json
import logging
import random
import time
from urllib.parse import quote

from odoo.tests import HttpCase, new_test_user, tagged
from odoo.tools import mute_logger

from .common import raw_http_exchange

SEED = 20261201
REQUESTS_PER_ENDPOINT = 2000
TOKEN = "fuzz-t0ken-for-tests"
DEVICE = "device_fz12cd34"
LOGGERS = (
    "odoo.addons.iot_base.controllers.emqx.auth",
    "odoo.addons.iot_base.controllers.rabbitmq.auth",
    "odoo.addons.iot_base.controllers.iot_request",
)
RABBITMQ_CHECKS = ("user", "vhost", "resource", "topic")


class _Capture(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.records = []

    def emit(self, record):
        self.records.append(f"{record.levelname} {record.name}: {self.format(record)}")


class Fuzzer:
    """Generates broker requests from one seed: (method, path, headers, body)."""

    def __init__(self, seed, usernames, secrets):
        self.rng = random.Random(seed)
        self.usernames = usernames
        self.secrets = secrets

    # values --------------------------------------------------------------

    def hostile_string(self):
        rng = self.rng
        return rng.choice(
            [
                lambda: "",
                lambda: "\x00",
                lambda: "a\x00b",
                lambda: "\ud800",
                lambda: "x\udfff",
                lambda: "é" * rng.randint(1, 50),
                lambda: "\u202e\ufeff\U0001f600",
                lambda: "../" * rng.randint(1, 20),
                lambda: "' OR 1=1 --",
                lambda: "%00%ff",
                lambda: "#",
                lambda: "$SYS/#",
                lambda: "x" * rng.choice([300, 5000, 20000]),
                lambda: "".join(chr(rng.randint(1, 0x2FFF)) for _ in range(20)),
            ]
        )()

    def wrong_secret(self):
        rng = self.rng
        secret = rng.choice(self.secrets)
        i = rng.randrange(len(secret))
        other = rng.choice([c for c in "0123456789abcdef" if c != secret[i]])
        return rng.choice(
            [
                lambda: secret + "\x00",
                lambda: secret + "\x00" * rng.randint(1, 30),
                lambda: secret + rng.choice(["0", "f", " ", "\n", "\t"]),
                lambda: secret[:-1],
                lambda: secret[:8],
                lambda: secret.upper(),
                lambda: " " + secret,
                lambda: secret[:i] + other + secret[i + 1 :],
                lambda: secret[:i] + "\x00" + secret[i + 1 :],
                lambda: secret + "\ud800",
                lambda: secret[:20] + "é" + secret[21:],
                lambda: f"{rng.getrandbits(160):040x}",
                lambda: secret * 2,
                lambda: self.hostile_string(),
            ]
        )()

    def wrong_username(self):
        rng = self.rng
        name = rng.choice(self.usernames)
        return rng.choice(
            [
                lambda: name.upper(),
                lambda: name + "\x00",
                lambda: name[:-1],
                lambda: name + " ",
                lambda: "nobody_" + str(rng.randint(0, 999)),
                lambda: name + "%",
                lambda: self.hostile_string(),
            ]
        )()

    def odd_value(self, valid):
        """``valid`` most of the time, else something of the wrong kind."""
        rng = self.rng
        if rng.random() < 0.6:
            return valid
        return rng.choice(
            [
                lambda: None,
                lambda: rng.randint(-(2**70), 2**70),
                lambda: rng.random(),
                lambda: True,
                lambda: [valid],
                lambda: [valid, "x"],
                lambda: {"$ne": ""},
                lambda: {"value": valid},
                lambda: self.hostile_string(),
            ]
        )()

    # bodies --------------------------------------------------------------

    def fields(self, kind):
        """The fields of one request of ``kind`` (login or question)."""
        rng = self.rng
        if kind == "login":
            # a real username with a wrong secret, or any username at all
            username = (
                rng.choice(self.usernames)
                if rng.random() < 0.7
                else self.wrong_username()
            )
            fields = {"username": username, "password": self.wrong_secret()}
        else:
            fields = {"username": self.wrong_username()}
        fields = {key: self.odd_value(value) for key, value in fields.items()}
        # a client id the username owns, so that fuzzing reaches the secret
        owned = f"{username}~c1" if kind == "login" else "c1"
        extras = {
            "clientid": rng.choice([owned, "c1", "sensor-1", self.hostile_string()]),
            "client_id": "sensor-1",
            "peerhost": rng.choice(["10.1.2.3", "::1", "", self.hostile_string()]),
            "action": rng.choice(["publish", "subscribe", "delete", ""]),
            "topic": rng.choice(["a/b", "#", "+/+", "$share/g/#", "\x00"]),
            "qos": rng.choice(["0", "1", "2", "3", 1, -1, "x"]),
            "retain": rng.choice(["true", "false", True, "yes"]),
            "vhost": rng.choice(["/", "/other", ""]),
            "ip": rng.choice(["10.1.2.3", "\x00"]),
            "resource": rng.choice(["queue", "exchange", "topic", "x"]),
            "name": rng.choice(["amq.topic", "mqtt-subscription-sensor-1qos1"]),
            "permission": rng.choice(["configure", "write", "read", "all"]),
            "routing_key": rng.choice(["a.b", "#", "*.x", ""]),
            "tags": "",
        }
        for key in rng.sample(sorted(extras), rng.randint(0, len(extras))):
            fields[key] = self.odd_value(extras[key])
        if rng.random() < 0.05:
            fields[self.hostile_string()] = "x"
        if rng.random() < 0.03:
            fields["self"] = "x"  # a keyword Odoo's dispatch would choke on
        return fields

    def json_body(self, fields):
        rng = self.rng
        roll = rng.random()
        if roll < 0.05:
            depth = rng.choice([100, 5000, 50000])
            return ('{"username": ' + "[" * depth + "]" * depth + "}").encode()
        if roll < 0.08:
            return rng.choice(
                [b"", b"{", b"[]", b"null", b"42", b'"x"', b"\xff\xfe{}", b"{}" * 9]
            )
        if roll < 0.1:
            return json.dumps(fields).encode()[: rng.randint(0, 60)]
        # ensure_ascii: lone surrogates travel as \udXXX escapes
        return json.dumps(fields).encode()

    @staticmethod
    def encode(value):
        if not isinstance(value, str):
            value = json.dumps(value) if not isinstance(value, bytes) else value
        if isinstance(value, str):
            value = value.encode("utf-8", "surrogatepass")
        return quote(value, safe="")

    def form_body(self, fields):
        return "&".join(
            f"{self.encode(key)}={self.encode(value)}" for key, value in fields.items()
        ).encode()

    # requests ------------------------------------------------------------

    def token_and_headers(self):
        rng = self.rng
        headers = {}
        roll = rng.random()
        token, query_token = TOKEN, None
        if roll < 0.15:
            token = rng.choice(
                [TOKEN.upper(), TOKEN[:-1], TOKEN + "x", "x", "%00", "%ED%A0%80"]
            )
        elif roll < 0.25:
            token = None
            headers["Authorization"] = rng.choice(
                [f"Bearer {TOKEN}", "Bearer wrong", f"Basic {TOKEN}", "Bearer"]
            )
        elif roll < 0.3:
            token, query_token = None, rng.choice([TOKEN, "wrong"])
        elif roll < 0.33:
            token = None
        return token, query_token, headers

    def request(self, endpoint):
        rng = self.rng
        token, query_token, headers = self.token_and_headers()
        if endpoint == "rabbitmq":
            check = rng.choice(RABBITMQ_CHECKS)
            kind = "login" if check == "user" else "question"
            path = (
                f"/iot/rabbitmq/{token}/{check}" if token else f"/iot/rabbitmq/{check}"
            )
        else:
            kind = "login" if endpoint == "auth" else "question"
            path = f"/iot/{endpoint}/{token}" if token else f"/iot/{endpoint}"
        fields = self.fields(kind)
        if query_token:
            fields["token"] = query_token
        method = "GET" if rng.random() < 0.2 else "POST"
        if method == "GET":
            return method, f"{path}?{self.form_body(fields).decode()}", headers, None
        style = rng.choice(["json", "json", "form", "form", "odd"])
        if style == "json":
            headers["Content-Type"] = rng.choice(
                ["application/json", "application/json; charset=utf-8"]
            )
            body = self.json_body(fields)
        elif style == "form":
            headers["Content-Type"] = "application/x-www-form-urlencoded"
            body = self.form_body(fields)
        else:
            headers["Content-Type"] = rng.choice(
                ["text/plain", "multipart/form-data", "application/xml", "", "x/x"]
            )
            body = rng.choice([self.json_body(fields), self.form_body(fields)])
        if rng.random() < 0.02:
            body += b"x" * (32 * 1024)  # over the routes' limit
        return method, path, headers, body

    def raw_chunked(self, endpoint):
        """A raw request whose chunked body is broken, with a password in it."""
        rng = self.rng
        path = {
            "auth": f"/iot/auth/{TOKEN}",
            "acl": f"/iot/acl/{TOKEN}",
            "rabbitmq": f"/iot/rabbitmq/{TOKEN}/user",
        }[endpoint]
        content_type = rng.choice(
            ["application/json", "application/x-www-form-urlencoded"]
        )
        payload = (
            json.dumps({"username": DEVICE, "password": self.wrong_secret()})
            if content_type == "application/json"
            else f"username={DEVICE}&password={self.encode(self.wrong_secret())}"
        ).encode("utf-8", "surrogatepass")
        size = len(payload)
        body = rng.choice(
            [
                payload + b"\r\n0\r\n\r\n",  # no chunk header
                b"zz\r\n" + payload + b"\r\n0\r\n\r\n",  # not hex
                b"-5\r\n" + payload + b"\r\n0\r\n\r\n",  # negative
                b"%x\r\n" % size + payload + b"XX0\r\n\r\n",  # no terminator
                b"%x\r\n" % (size + 1000) + payload + b"\r\n0\r\n\r\n",  # too long
                b"%x\r\n" % size + payload + b"\r\n0\r\n\r\n",  # well formed
            ]
        )
        extra = "Content-Length: 5\r\n" if rng.random() < 0.2 else ""
        return (
            f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Content-Type: {content_type}\r\nTransfer-Encoding: chunked\r\n"
            f"{extra}Connection: close\r\n\r\n"
        ).encode() + body


@tagged("post_install", "-at_install")
class TestBrokerFuzz(HttpCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.env["ir.config_parameter"].sudo().set_param("iot_base.auth_token", TOKEN)
        # what is counted must not get blocked before it is tried
        cls.env["ir.config_parameter"].sudo().set_param(
            "iot_base.throttle_max_failures", "100000"
        )
        Credentials = cls.env["iot.credentials"]
        cls.device = Credentials.create({"username": DEVICE, "kind": "device"})
        cls.device_secret = cls.device.action_rotate_secret()["context"][
            "default_secret"
        ]
        cls.superuser = Credentials.create(
            {"username": "service_fuzz", "kind": "service", "is_superuser": True}
        )
        cls.superuser_secret = cls.superuser.action_rotate_secret()["context"][
            "default_secret"
        ]
        user = new_test_user(
            cls.env,
            login="fuzz.user@example.com",
            groups="base.group_user,iot_base.iot_base_group_user",
        )
        cls.user_creds = user.with_user(user).get_or_create_iot_credentials()
        cls.usernames = [DEVICE, "service_fuzz", cls.user_creds["username"]]
        cls.secrets = [
            cls.device_secret,
            cls.superuser_secret,
            cls.user_creds["password"],
        ]

    def setUp(self):
        super().setUp()
        self.capture = _Capture()
        self.capture.setFormatter(logging.Formatter("%(message)s"))
        root = logging.getLogger()
        root.addHandler(self.capture)
        self.addCleanup(root.removeHandler, self.capture)

    def _check(self, endpoint, status, content_type, text, what):
        self.assertLess(status, 500, what)
        self.assertNotIn("html", content_type.lower(), what)
        if endpoint == "rabbitmq":
            self.assertEqual(
                (status, content_type, text),
                (200, "text/plain; charset=utf-8", "deny"),
                what,
            )
        else:
            self.assertEqual(status, 200, what)
            self.assertEqual(content_type, "application/json; charset=utf-8", what)
            self.assertEqual(json.loads(text), {"result": "deny"}, what)

    def _fuzz(self, endpoint):
        fuzzer = Fuzzer(f"{SEED}-{endpoint}", self.usernames, self.secrets)
        session = self.opener
        base = self.base_url()
        start = time.monotonic()
        with mute_logger(*LOGGERS):
            for number in range(REQUESTS_PER_ENDPOINT):
                method, path, headers, body = fuzzer.request(endpoint)
                response = session.request(
                    method, base + path, data=body, headers=headers, timeout=30
                )
                what = f"#{number} {method} {path[:80]!r} {headers} {body!r:.120}"
                self._check(
                    endpoint,
                    response.status_code,
                    response.headers.get("Content-Type", ""),
                    response.text,
                    what,
                )
            for number in range(50):
                raw = fuzzer.raw_chunked(endpoint)
                status, content_type, text = self._send_raw(raw)
                self._check(endpoint, status, content_type, text, f"raw #{number}")
        elapsed = time.monotonic() - start
        logging.getLogger(__name__).info(
            "fuzzed %s: %d requests in %.1f s",
            endpoint,
            REQUESTS_PER_ENDPOINT + 50,
            elapsed,
        )
        self.assertEqual(self.capture.records, [])
        Log = self.env["iot.auth.log"]
        self.assertFalse(Log.search_count([("result", "=", "allow")]))
        # the fuzz reached the decisions behind the token check, not only
        # the token check itself: most requests carry the right token
        denials = dict(
            Log._read_group([("endpoint", "=", endpoint)], ["reason"], ["__count"])
        )
        past_token = sum(n for reason, n in denials.items() if reason != "bad_token")
        self.assertGreater(
            denials.get("bad_token", 0), REQUESTS_PER_ENDPOINT // 20, denials
        )
        self.assertGreater(past_token, REQUESTS_PER_ENDPOINT // 4, denials)
        self.assertGreater(len(denials), 2, denials)

    def _send_raw(self, raw):
        data = raw_http_exchange(("127.0.0.1", self.http_port()), raw, timeout=10)
        head, _sep, body = data.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = dict(line.split(": ", 1) for line in lines[1:] if ": " in line)
        if headers.get("Transfer-Encoding") == "chunked":
            decoded = b""
            while body:
                size_line, _sep, body = body.partition(b"\r\n")
                size = int(size_line, 16)
                if not size:
                    break
                decoded, body = decoded + body[:size], body[size + 2 :]
            body = decoded
        return status, headers.get("Content-Type", ""), body.decode()

    def test_fuzz_emqx_auth(self):
        self._fuzz("auth")

    def test_fuzz_emqx_acl(self):
        self._fuzz("acl")

    def test_fuzz_rabbitmq(self):
        self._fuzz("rabbitmq")

    def test_right_secrets_still_allowed(self):
        """The fuzzed fields are the real ones: the exact secrets get in."""
        for username, secret in zip(self.usernames, self.secrets, strict=True):
            response = self.url_open(
                f"/iot/auth/{TOKEN}",
                data=json.dumps(
                    {"username": username, "password": secret, "clientid": username}
                ),
                headers={"Content-Type": "application/json"},
            )
            self.assertEqual(response.json()["result"], "allow")


@tagged("post_install", "-at_install")
class TestProtocolPaths(HttpCase):
    """Issue 16 point 11: every method on every path a broker or a device
    uses, and the same paths in another case or with an extra segment, get
    an answer in the protocol's own form: never HTML, never a 5xx, and an
    allow only for the path and method a broker really uses."""

    METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS")

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        params = cls.env["ir.config_parameter"].sudo()
        params.set_param("iot_base.auth_token", TOKEN)
        params.set_param("iot_base.throttle_max_failures", "100000")
        params.set_param("iot_base.max_provisioning_per_minute", "100000")
        device = cls.env["iot.credentials"].create(
            {"username": DEVICE, "kind": "device"}
        )
        secret = device.action_rotate_secret()["context"]["default_secret"]
        cls.login = {
            "username": DEVICE,
            "password": secret,
            "clientid": DEVICE,
            "peerhost": "10.1.2.3",
        }
        manager = new_test_user(
            cls.env,
            login="paths.manager",
            groups="base.group_user,iot_base.iot_base_group_manager",
        )
        cls.api_key = (
            cls.env["res.users.apikeys"]
            .with_user(manager)
            .sudo()
            ._generate("rpc", "paths", None)
        )

    def _request(self, method, path, kind):
        if kind == "provisioning":
            headers = {
                "Authorization": f"Bearer {self.api_key}",
                "Content-Type": "application/json",
            }
            data = json.dumps({"hardware_id": "paths-hw-1"})
        elif kind == "emqx":
            headers = {"Content-Type": "application/json"}
            data = json.dumps(self.login)
        else:
            headers = {"Content-Type": "application/x-www-form-urlencoded"}
            data = self.login
        return self.opener.request(
            method,
            self.base_url() + path,
            data=data,
            headers=headers,
            allow_redirects=False,
            timeout=30,
        )

    def _check(self, method, path, kind, served):
        """``served``: the path and method a broker or a device does use."""
        response = self._request(method, path, kind)
        what = f"{method} {path}"
        content_type = response.headers.get("Content-Type", "")
        self.assertLess(response.status_code, 500, what)
        self.assertNotIn("html", content_type.lower(), what)
        self.assertNotIn("<", response.text, what)
        if served:
            return response
        if kind == "provisioning":
            self.assertTrue(content_type.startswith("application/json"), what)
            self.assertIn(response.status_code, range(400, 500), what)
            if method != "HEAD":
                self.assertIn("code", response.json(), what)
        elif kind == "emqx":
            self.assertEqual(response.status_code, 200, what)
            self.assertTrue(content_type.startswith("application/json"), what)
            if method != "HEAD":
                self.assertEqual(response.json(), {"result": "deny"}, what)
        else:
            self.assertEqual(response.status_code, 200, what)
            self.assertTrue(content_type.startswith("text/plain"), what)
            if method != "HEAD":
                self.assertEqual(response.text, "deny", what)
        return response

    def test_methods_and_case_variants(self):
        paths = {
            "emqx": [
                f"/iot/auth/{TOKEN}",
                f"/iot/acl/{TOKEN}",
                "/iot/auth",
                "/iot/acl",
            ],
            "rabbitmq": [
                path
                for check in RABBITMQ_CHECKS
                for path in (f"/iot/rabbitmq/{TOKEN}/{check}", f"/iot/rabbitmq/{check}")
            ],
            "provisioning": ["/iot/provision/devices", "/iot/provision/devices/no-hw"],
        }
        variants = {
            "emqx": [
                f"/IOT/AUTH/{TOKEN}",
                f"/iot/Auth/{TOKEN}",
                f"/Iot/acl/{TOKEN}",
                f"/iot/ACL/{TOKEN}",
                f"/iot/auth/{TOKEN}/extra",
                f"/iot/auth//{TOKEN}",
                "/iot/auth/",
                "/IOT/EMQX/anything",
            ],
            "rabbitmq": [
                f"/IOT/RABBITMQ/{TOKEN}/USER",
                f"/iot/rabbitmq/{TOKEN}/User",
                f"/iot/RabbitMQ/{TOKEN}/vhost",
                f"/iot/rabbitmq/{TOKEN}/user/extra",
                f"/iot/rabbitmq/{TOKEN}/nothing",
                "/iot/rabbitmq",
                "/iot/rabbitmq/",
            ],
            "provisioning": [
                "/IOT/Provision/Devices",
                "/iot/PROVISION/devices",
                "/iot/provision/Devices",
                "/iot/provision/devices/no-hw/extra",
                "/iot/provision/",
            ],
        }
        served = {
            "emqx": ("GET", "POST"),
            "rabbitmq": ("GET", "POST"),
            "provisioning": (),  # the routes answer a wrong method themselves
        }
        # the login is a real one: the served paths do allow it
        allowed = self._check("POST", f"/iot/auth/{TOKEN}", "emqx", True)
        self.assertEqual(allowed.json()["result"], "allow")
        allowed = self._check("POST", f"/iot/rabbitmq/{TOKEN}/user", "rabbitmq", True)
        self.assertTrue(allowed.text.startswith("allow"), allowed.text)
        Device = self.env["iot.mqtt.device"].sudo()
        with mute_logger(*LOGGERS):
            for kind, kind_paths in variants.items():
                for path in kind_paths:
                    for method in self.METHODS:
                        with self.subTest(method=method, path=path):
                            self._check(method, path, kind, False)
            self.assertFalse(Device.search([("hardware_id", "=", "paths-hw-1")]))
            for kind, kind_paths in paths.items():
                for path in kind_paths:
                    for method in self.METHODS:
                        with self.subTest(method=method, path=path):
                            is_served = method in served[kind]
                            if kind == "provisioning":
                                is_served = (method, path) in (
                                    ("POST", "/iot/provision/devices"),
                                    ("DELETE", "/iot/provision/devices/no-hw"),
                                )
                            self._check(method, path, kind, is_served)
