# License LGPL-3.0 or later (https://www.gnu.org/licenses/lgpl).
"""Seeded fuzzing of POST /iot/provision/claim over raw HTTP: whatever
arrives, the answer is JSON (never a 5xx or an HTML page), and a device only
ever comes to be in the company and fleet of the claim whose secret was
sent, within that claim's limits."""

import json
import logging
import random
import time
from datetime import timedelta
from urllib.parse import urlsplit

from odoo import fields
from odoo.tests import HttpCase, tagged

from . import test_provisioning_fuzz as provisioning_fuzz
from .test_provisioning_claim import make_csr, new_claim

_logger = logging.getLogger(__name__)

SEED = 20261207
REQUESTS = 1500
PATH = "/iot/provision/claim"
# a well-formed request with some claim's secret: any of these answers
MAY_SUCCEED = (200, 201, 403, 409, 422)
HARDWARE_POOL = [f"fz-{i:02d}" for i in range(24)] + [
    "aa:bb:cc:00:00:01",
    "AA-BB-CC-00-00-02",
    "aabb.cc00.0003",
    "11:22:33:44:55:66",
]
Fuzz = provisioning_fuzz.TestProvisioningFuzz


@tagged("post_install", "-at_install")
class TestClaimFuzz(HttpCase):
    # the provisioning API fuzzer's raw HTTP and generators, not its tests
    _send = Fuzz._send
    _text = Fuzz._text
    _value = Fuzz._value
    _dump = Fuzz._dump
    _broken_bytes = Fuzz._broken_bytes
    _chunked = Fuzz._chunked
    _length = Fuzz._length

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        # thousands of requests from one address: not a test of the rate
        cls.env["ir.config_parameter"].sudo().set_param(
            "iot_base.max_provisioning_per_minute", 10**6
        )
        main = cls.env.ref("base.main_company")
        other = cls.env["res.company"].create({"name": "Fuzz Claim Co"})
        Fleet = cls.env["iot.mqtt.fleet"]
        fleet_a = Fleet.create({"name": "Fuzz A", "company_id": main.id})
        fleet_b = Fleet.create({"name": "Fuzz B", "company_id": other.id})
        env_b = cls.env(context=dict(cls.env.context, allowed_company_ids=[other.id]))
        now = fields.Datetime.now()
        cls.claims = {}
        for key, env, vals in (
            ("a", cls.env, {"fleet_id": fleet_a.id, "max_devices": 10}),
            (
                "b",
                env_b,
                {"fleet_id": fleet_b.id, "max_devices": 6, "allow_reclaim": True},
            ),
            ("pattern", cls.env, {"hardware_id_pattern": "aa:bb:cc:*"}),
            ("tiny", env_b, {"max_devices": 1}),
            ("expired", cls.env, {}),
            ("revoked", env_b, {}),
        ):
            cls.claims[key] = new_claim(env, name=f"Fuzz {key}", **vals)
        cls.claims["expired"][0].expires_at = now - timedelta(minutes=1)
        cls.claims["revoked"][0].action_revoke()
        # CSRs good and bad (bad signature, huge subject, NUL and controls in
        # names); the route checks them, issues no certificate yet
        cls.csrs = [
            make_csr(),
            make_csr(mangle=True),
            make_csr("x" * 20000),
            make_csr("a\x00b"),
            make_csr("\u202e\n\r"),
            make_csr()[:-40],
            make_csr().replace("REQUEST", "REQUEST\x00"),
        ]
        # hardware ids already taken in the main company, by another path
        cls.env["iot.mqtt.device"]._register_device("fz-00", company=main)

    def setUp(self):
        super().setUp()
        url = urlsplit(self.base_url())
        self.address = (url.hostname, url.port)
        self.rng = random.Random(SEED)

    # ------------------------------------------------------------------

    def _secret(self):
        """(claim key or None, a claim secret, or something like one)."""
        rng = self.rng
        pick = rng.random()
        if pick < 0.8:
            key = rng.choice(list(self.claims))
            return key, self.claims[key][1]
        secret = rng.choice(list(self.claims.values()))[1]
        return None, rng.choice(
            [
                secret[:-1] + ("0" if secret[-1] != "0" else "1"),
                secret[:8] + "0" * 32,
                secret.upper(),
                secret + "0",
                secret[:39],
                "0" * 40,
                "",
                " " + secret,
            ]
        )

    def _valid_body(self):
        rng = self.rng
        key, secret = self._secret()
        body = {"hardware_id": rng.choice(HARDWARE_POOL), "claim_secret": secret}
        if rng.random() < 0.3:
            body["name"] = f"Fuzz {rng.randrange(100)}"
        if rng.random() < 0.2:
            body["firmware_version"] = "1.0.0"
        return key, body

    def _invalid_body(self):
        rng = self.rng
        _key, body = self._valid_body()
        field = rng.choice(
            ["hardware_id", "claim_secret", "name", "csr", "unknown", "types"]
        )
        if field == "unknown":
            body[self._text(10) or "x"] = self._value()
        elif field == "types":
            body[rng.choice(list(body))] = rng.choice(
                [5, [], {}, True, 1.5, [body["claim_secret"]], {"$ne": ""}]
            )
        elif field == "csr":
            body["csr"] = rng.choice(self.csrs + ["x", 5, "\x00", ""])
        elif field == "claim_secret":
            body.pop("claim_secret")
        else:
            value = self._text() or "\x00"
            body[field] = rng.choice(
                [None, "", "a b", "x" * 129, f"a{value}b", [], "é", "a\x00"]
            )
            if body[field] is None and field == "hardware_id":
                body.pop(field)
        return body

    def _case(self):
        """(method, path, headers, body, claim key or None, well-formed)."""
        rng = self.rng
        json_type = [("Content-Type", "application/json")]
        pick = rng.random()
        if pick < 0.06:
            method = rng.choice(["GET", "PUT", "PATCH", "OPTIONS", "DELETE"])
            return method, PATH, json_type, self._dump({}), None, False
        if pick < 0.10:
            return "POST", PATH + "/x", json_type, self._dump({}), None, False
        if pick < 0.16:
            content_type = rng.choice(
                ["text/plain", "application/x-www-form-urlencoded", "", "\x00"]
            )
            body = rng.choice([b"hardware_id=a&claim_secret=b", self._dump({})])
            return "POST", PATH, [("Content-Type", content_type)], body, None, False
        if pick < 0.20:
            return "POST", PATH, json_type, self._chunked(), None, False
        if pick < 0.40:
            return "POST", PATH, json_type, self._broken_bytes(), None, False
        if pick < 0.65:
            return (
                "POST",
                PATH,
                json_type,
                self._dump(self._invalid_body()),
                None,
                False,
            )
        key, body = self._valid_body()
        return "POST", PATH, json_type, self._dump(body), key, True

    # ------------------------------------------------------------------

    def test_fuzz_claim_route(self):
        Device = self.env["iot.mqtt.device"].with_context(active_test=False)
        companies = {key: claim.company_id for key, (claim, _s) in self.claims.items()}
        fleets = {key: claim.fleet_id for key, (claim, _s) in self.claims.items()}
        statuses = {}
        handed_out = {}
        started = time.monotonic()
        with self.assertNoLogs(level="WARNING"):
            for index in range(REQUESTS):
                method, path, headers, body, key, valid = self._case()
                marker = provisioning_fuzz.OK if valid else False
                if isinstance(body, provisioning_fuzz.ChunkedBody):
                    headers = [*headers, ("Transfer-Encoding", "chunked")]
                else:
                    headers = [*headers, ("Content-Length", self._length(body, marker))]
                status, reply_headers, payload = self._send(method, path, headers, body)
                statuses[status] = statuses.get(status, 0) + 1
                what = f"request {index}: {method} {path!r} {body[:100]!r} -> {status}"
                self.assertLess(status, 500, what)
                self.assertTrue(
                    reply_headers.get("content-type", "").startswith(
                        "application/json"
                    ),
                    what,
                )
                reply = json.loads(payload)
                if status >= 400:
                    self.assertTrue(reply["error"] and reply["code"], what)
                    self.assertNotIn("password", reply, what)
                    continue
                # an identity: only for a well-formed request with a live
                # claim's secret, in that claim's company and fleet
                self.assertTrue(valid, what)
                self.assertIn(key, ("a", "b", "pattern", "tiny"), what)
                self.assertIn(status, (200, 201), what)
                device = Device.browse(reply["device_id"])
                self.assertEqual(device.company_id, companies[key], what)
                self.assertEqual(device.fleet_id, fleets[key], what)
                self.assertEqual(device.username, reply["username"], what)
                handed_out.setdefault(key, set()).add(device.id)
                if valid and key in ("expired", "revoked"):
                    self.fail(what)
        self.env.invalidate_all()
        for key, (claim, _secret) in self.claims.items():
            claimed = claim.use_ids.filtered(lambda u: u.result == "claimed")
            self.assertLessEqual(claim.claimed_count, claim.max_devices, key)
            self.assertEqual(claim.claimed_count, len(claimed), key)
            self.assertEqual(
                claimed.device_id.company_id | companies[key], companies[key], key
            )
        for key in ("expired", "revoked"):
            self.assertFalse(handed_out.get(key), key)
            self.assertFalse(self.claims[key][0].claimed_count, key)
        self.assertEqual(self.claims["tiny"][0].claimed_count, 1)
        # fz-00 of the main company, registered by another path, was never
        # handed out through a claim
        self.assertEqual(
            Device.search_count(
                [("hardware_id", "=", "fz-00"), ("company_id", "=", companies["a"].id)]
            ),
            1,
        )
        # enough of every kind of answer, or the generator went blind
        for status in (200, 201, 400, 403, 405, 409, 411, 413, 415, 422):
            self.assertGreater(statuses.get(status, 0), 2, (status, statuses))
        _logger.info(
            "claim fuzz: %s requests in %.1f s, by status %s",
            REQUESTS,
            time.monotonic() - started,
            dict(sorted(statuses.items())),
        )
