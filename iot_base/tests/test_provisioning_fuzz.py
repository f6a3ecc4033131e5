# License LGPL-3.0 or later (https://www.gnu.org/licenses/lgpl).
"""Seeded fuzzing of the provisioning API over raw HTTP: whatever arrives, the
answer is a JSON 4xx (or the device), never a 5xx, an HTML page or a logged
error, and no invalid body creates anything."""

import json
import logging
import random
import string
import time
from urllib.parse import quote, urlsplit

from odoo.tests import HttpCase, new_test_user, tagged

from odoo.addons.iot_base.tools.names import name_problem

from .common import raw_http_exchange

_logger = logging.getLogger(__name__)

SEED = 20261201
REQUESTS = 2000
PATH = "/iot/provision/devices"
OK = "may succeed"  # a well-formed request: 200, 201 or 409 (revoked)
FIELDS = ("hardware_id", "name", "firmware_version", "fleet", "tags", "rotate")
NASTY = [
    "\x00",
    "\ud800",
    "\udfff",
    "\u202e",
    "\u200b",
    "\n",
    "\r\n",
    "\t",
    "\x7f",
    "\ufeff",
    "\u2028",
    "\U0010ffff",
    "'; DROP TABLE x; --",
    "%s%s%n",
    "../../etc/passwd",
    "<script>",
    "${jndi:x}",
    "{random8}",
    "#",
    "+/#",
]


@tagged("post_install", "-at_install")
class TestProvisioningFuzz(HttpCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.manager = new_test_user(
            cls.env,
            login="fuzz.manager",
            groups="base.group_user,iot_base.iot_base_group_manager",
        )
        user = new_test_user(
            cls.env,
            login="fuzz.user",
            groups="base.group_user,iot_base.iot_base_group_user",
        )
        Keys = cls.env["res.users.apikeys"]
        cls.key = Keys.with_user(cls.manager).sudo()._generate("rpc", "fuzz", None)
        cls.user_key = Keys.with_user(user).sudo()._generate("rpc", "fuzz", None)
        # thousands of requests with one key: not a test of the rate limit
        cls.env["ir.config_parameter"].sudo().set_param(
            "iot_base.max_provisioning_per_minute", 10**6
        )

    def setUp(self):
        super().setUp()
        url = urlsplit(self.base_url())
        self.address = (url.hostname, url.port)
        self.rng = random.Random(SEED)
        self.valid_ids = []

    # ------------------------------------------------------------------
    # raw HTTP: Odoo's werkzeug server closes every connection after one
    # answer (werkzeug 2.2 serving.py sends "Connection: close"), so there
    # is no keep-alive to reuse; a loopback connect costs ~0.1 ms.
    # ------------------------------------------------------------------

    def _send(self, method, path, headers, body=b""):
        lines = [f"{method} {path} HTTP/1.1", f"Host: {self.address[0]}"]
        lines += [f"{name}: {value}" for name, value in headers]
        raw = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body
        head, _sep, payload = raw_http_exchange(self.address, raw).partition(
            b"\r\n\r\n"
        )
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        reply_headers = {}
        for line in header_lines:
            name, _sep, value = line.partition(":")
            reply_headers[name.strip().lower()] = value.strip()
        return int(status_line.split()[1]), reply_headers, payload

    # ------------------------------------------------------------------
    # generators: each returns (method, path, headers, body, valid)
    # ------------------------------------------------------------------

    def _text(self, max_length=40):
        rng = self.rng
        pick = rng.random()
        if pick < 0.3:
            return rng.choice(NASTY)
        if pick < 0.5:
            alphabet = string.printable
        elif pick < 0.7:
            return "".join(chr(rng.randrange(0x20, 0x3000)) for _i in range(5))
        else:
            alphabet = string.ascii_letters + string.digits + ":-_. "
        return "".join(rng.choice(alphabet) for _i in range(rng.randrange(max_length)))

    def _quoted(self):
        return quote(self._text().encode("utf-8", "surrogatepass"), safe="")

    def _value(self, depth=0):
        rng = self.rng
        pick = rng.randrange(9)
        if pick == 0 and depth < 3:
            return [self._value(depth + 1) for _i in range(rng.randrange(4))]
        if pick == 1 and depth < 3:
            return {self._text(8): self._value(depth + 1) for _i in range(3)}
        return rng.choice(
            [
                None,
                True,
                False,
                0,
                -1,
                2**70,
                1.5,
                float("inf"),
                "",
                " ",
                self._text(),
                "x" * rng.choice([64, 65, 128, 129, 5000]),
            ]
        )

    def _valid_body(self):
        rng = self.rng
        hardware_id = "fz-" + "".join(rng.choice("0123456789abcdef") for _i in range(6))
        self.valid_ids.append(hardware_id)
        body = {"hardware_id": hardware_id, "name": f"Fuzz {hardware_id}"}
        if rng.random() < 0.5:
            body["fleet"] = rng.choice(["Alpha", "Beta"])
        if rng.random() < 0.5:
            body["tags"] = rng.sample(["t1", "t2", "t3"], 2)
        return body

    def _invalid_body(self):
        """A JSON object that breaks at least one rule of the API."""
        rng = self.rng
        body = self._valid_body()
        self.valid_ids.pop()
        field = rng.choice((*FIELDS, "unknown"))
        if field == "unknown":
            body[self._text(10) or "x"] = self._value()
        elif field == "hardware_id":
            body["hardware_id"] = rng.choice(
                [None, "", " ", 5, [], "a b", "x/y", "é", "a" * 129, self._text()]
            )
            if body["hardware_id"] and isinstance(body["hardware_id"], str):
                # inside, where normalization (strip, lower) cannot drop it
                body["hardware_id"] = f"a{rng.choice(NASTY[:12])}b{body['hardware_id']}"
        elif field == "tags":
            body["tags"] = rng.choice(
                [
                    "t",
                    [1],
                    [None],
                    [""],
                    [" "],
                    ["t"] * 33,
                    ["ok", rng.choice(NASTY[:12])],
                    [{"a": 1}],
                ]
            )
        elif field == "rotate":
            body["rotate"] = rng.choice(["yes", 1, 0, [], {}, "true"])
        else:
            body[field] = rng.choice(
                [
                    "",
                    "  ",
                    5,
                    [],
                    {},
                    True,
                    "x" * 129,
                    "ok" + rng.choice(NASTY[:12]),
                ]
            )
        return body

    def _case(self):
        rng = self.rng
        auth = [("Authorization", f"Bearer {self.key}")]
        json_type = [("Content-Type", "application/json")]
        pick = rng.random()
        if pick < 0.15:
            return "POST", PATH, self._wrong_auth() + json_type, self._dump({}), False
        if pick < 0.22:
            content_type = rng.choice(
                [
                    "text/plain",
                    "application/x-www-form-urlencoded",
                    "multipart/form-data; boundary=zz",
                    "application/jso",
                    "",
                    "\x00",
                    "application/json\x00",
                ]
            )
            body = rng.choice([b"a=1&b=2", b"--zz\r\n\r\n--zz--", self._dump({})])
            return "POST", PATH, [*auth, ("Content-Type", content_type)], body, False
        if pick < 0.28:
            return "POST", PATH, auth + json_type, self._chunked(), False
        if pick < 0.36:
            return rng.choice(
                [
                    (rng.choice(["GET", "PUT", "PATCH", "OPTIONS", "HEAD"]), PATH),
                    ("POST", f"{PATH}/{self._quoted()}"),
                    ("GET", f"/iot/provision/{self._quoted()}"),
                    ("DELETE", f"{PATH}/{self._quoted()}x"),
                ]
            ) + (auth + json_type, self._dump({}), False)
        if pick < 0.60:
            return "POST", PATH, auth + json_type, self._broken_bytes(), False
        if pick < 0.90:
            return (
                "POST",
                PATH,
                auth + json_type,
                self._dump(self._invalid_body()),
                False,
            )
        if self.valid_ids and rng.random() < 0.4:
            hardware_id = rng.choice(self.valid_ids)
            if rng.random() < 0.3:
                return "DELETE", f"{PATH}/{hardware_id}", auth, b"", OK
            body = {"hardware_id": hardware_id, "rotate": rng.random() < 0.5}
            return "POST", PATH, auth + json_type, self._dump(body), OK
        return "POST", PATH, auth + json_type, self._dump(self._valid_body()), OK

    def _wrong_auth(self):
        rng = self.rng
        key = self.key
        return [
            (
                "Authorization",
                rng.choice(
                    [
                        "",
                        "Bearer",
                        "Bearer ",
                        f"Basic {key}",
                        f"Bearer {key[:-1]}{'1' if key[-1] == '0' else '0'}",
                        f"Bearer {key}\x00",
                        f"Bearer {key[:20]}",
                        f"Bearer {key}{key}",
                        f"Bearer {self.user_key}",
                        "Bearer "
                        + "".join(rng.choice("0123456789abcdef") for _i in range(40)),
                        "Bearer " + self._header_text(),
                        "Bearer " + "a" * 5000,
                    ]
                ),
            )
        ]

    def _header_text(self):
        """Any bytes a header value can carry: all but CR and LF, which would
        end the header (that is the HTTP framing, not the API, under test)."""
        raw = self._text().encode("utf-8", "surrogatepass").decode("latin-1")
        return raw.replace("\r", "").replace("\n", "")

    def _dump(self, body):
        return json.dumps(body, ensure_ascii=self.rng.random() < 0.5).encode(
            "utf-8", "surrogatepass"
        )

    def _broken_bytes(self):
        rng = self.rng
        depth = rng.choice([100, 1000, 5000, 30000])
        return rng.choice(
            [
                b"",
                b"null",
                b"[]",
                b'"x"',
                b"{",
                b"[" * depth,
                b'{"a":' * depth + b"1" + b"}" * depth,
                b"[" * depth + b"]" * depth,
                b'{"hardware_id": "a\x00"}',
                b'{"hardware_id": "\\ud800"}',
                b'{"hardware_id": "x", "name": "\\udfff"}',
                b'{"hardware_id": "x", "name": "\xed\xa0\x80"}',
                b"\xff\xfe{\x00}\x00",
                b'{"hardware_id": NaN}',
                b'{"hardware_id": 1' + b"0" * 5000 + b"}",
                b'{"hardware_id": "x",}',
                bytes(rng.randrange(256) for _i in range(rng.randrange(1, 200))),
                b'{"tags": ' + b"[" * depth + b"]" * depth + b"}",
                b"x" * (64 * 1024 + 1),
            ]
        )

    def _length(self, body, valid):
        """The body's Content-Length, or for some invalid requests a lie."""
        rng = self.rng
        if valid is OK or rng.random() < 0.9:
            return str(len(body))
        return rng.choice(
            [str(len(body) + 10), str(max(len(body) - 1, 0)), "abc", "-1", "", "1e3"]
        )

    def _chunked(self):
        """Body bytes to send under Transfer-Encoding: chunked."""
        body = self.rng.choice(
            [
                b'5\r\n{"a":\r\n0\r\n\r\n',
                b"zz\r\nhello\r\n0\r\n\r\n",
                b"-5\r\nhello\r\n",
                b"ffffffffffffffff\r\nx",
                b"3\r\n{}",
                b"",
            ]
        )
        return ChunkedBody(body)

    # ------------------------------------------------------------------

    def test_fuzz_provisioning_api(self):
        Device = self.env["iot.mqtt.device"].with_context(active_test=False)
        devices_before = Device.search_count([])
        statuses = {}
        created = set()
        started = time.monotonic()
        with self.assertNoLogs(level="WARNING"):
            for index in range(REQUESTS):
                method, path, headers, body, valid = self._case()
                if isinstance(body, ChunkedBody):
                    headers = [*headers, ("Transfer-Encoding", "chunked")]
                else:
                    headers = [*headers, ("Content-Length", self._length(body, valid))]
                status, reply_headers, payload = self._send(method, path, headers, body)
                statuses[status] = statuses.get(status, 0) + 1
                what = f"request {index}: {method} {path!r} {body[:80]!r} -> {status}"
                self.assertLess(status, 500, what)
                self.assertTrue(
                    reply_headers.get("content-type", "").startswith(
                        "application/json"
                    ),
                    what,
                )
                if method != "HEAD":
                    reply = json.loads(payload)
                    if status >= 400:
                        self.assertTrue(reply["error"] and reply["code"], what)
                if valid is OK:
                    self.assertIn(status, (200, 201, 409), what)
                    if status == 201:
                        created.add(json.loads(body)["hardware_id"])
                else:
                    self.assertGreaterEqual(status, 400, what)
        elapsed = time.monotonic() - started
        self.assertEqual(Device.search_count([]), devices_before + len(created))
        self.assertEqual(
            set(Device.search([]).mapped("hardware_id")) & set(self.valid_ids),
            created,
        )
        for model in ("iot.mqtt.fleet", "iot.mqtt.device.tag"):
            for record in self.env[model].search([]):
                self.assertIsNone(
                    name_problem(self.env, record.name, model), record.name
                )
        # enough of every kind of answer, or the generator went blind
        for status in (200, 201, 400, 401, 403, 404, 405, 409, 411, 413, 415):
            self.assertGreater(statuses.get(status, 0), 5, (status, statuses))
        _logger.info(
            "provisioning fuzz: %s requests in %.1f s, by status %s",
            REQUESTS,
            elapsed,
            dict(sorted(statuses.items())),
        )


class ChunkedBody(bytes):
    """Bytes to send under ``Transfer-Encoding: chunked``, as they are."""


@tagged("post_install", "-at_install")
class TestProvisioningRate(HttpCase):
    """Issue 16 point 3: registrations per API key and minute are limited by
    ``iot_base.max_provisioning_per_minute``."""

    LIMIT = 5

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        Keys = cls.env["res.users.apikeys"]
        cls.keys = []
        for login in ("rate.manager.1", "rate.manager.2"):
            manager = new_test_user(
                cls.env,
                login=login,
                groups="base.group_user,iot_base.iot_base_group_manager",
            )
            cls.keys.append(Keys.with_user(manager).sudo()._generate("rpc", "r", None))
        cls.env["ir.config_parameter"].sudo().set_param(
            "iot_base.max_provisioning_per_minute", cls.LIMIT
        )

    def _register(self, key, hardware_id):
        return self.opener.post(
            self.base_url() + PATH,
            data=json.dumps({"hardware_id": hardware_id}),
            headers={
                "Content-Type": "application/json",
                "Authorization": f"Bearer {key}",
            },
            timeout=30,
        )

    def test_burst_over_the_limit_is_refused(self):
        first, second = self.keys
        for i in range(self.LIMIT):
            response = self._register(first, f"rate-a-{i}")
            self.assertEqual(response.status_code, 201, response.text)
        refused = self._register(first, "rate-a-over")
        self.assertEqual(refused.status_code, 429, refused.text)
        self.assertTrue(refused.headers["Content-Type"].startswith("application/json"))
        self.assertEqual(refused.json()["code"], "too_many_requests")
        self.assertIn(int(refused.headers["Retry-After"]), range(1, 61))
        self.assertNotIn(first, refused.text)
        Device = self.env["iot.mqtt.device"].sudo()
        self.assertFalse(Device.search([("hardware_id", "=", "rate-a-over")]))
        # another key is counted apart
        response = self._register(second, "rate-b-0")
        self.assertEqual(response.status_code, 201, response.text)
        # what the table keeps is a digest, never the key
        self.env.cr.execute("SELECT key FROM iot_auth_throttle")
        self.assertFalse([key for (key,) in self.env.cr.fetchall() if first in key])
