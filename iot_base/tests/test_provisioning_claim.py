# License LGPL-3.0 or later (https://www.gnu.org/licenses/lgpl).
"""Zero-touch claim provisioning (issue 19): POST /iot/provision/claim, the
claim model's limits, its audit trail and who may see what."""

import base64
import json
import threading
import time
from datetime import timedelta
from unittest.mock import patch

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import NameOID
from psycopg2 import IntegrityError

from odoo import SUPERUSER_ID, api, fields
from odoo.api import Transaction
from odoo.exceptions import AccessError, UserError, ValidationError
from odoo.modules.registry import Registry
from odoo.tests import BaseCase, HttpCase, get_db_name, new_test_user, tagged
from odoo.tools import mute_logger

from ..models.iot_provisioning_claim import ClaimRefused, glob_matches
from ..tools.secret_hash import SECRET_CRYPT_CONTEXT
from .common import MosquittoClientMixin, start_synced_mosquitto

PATH = "/iot/provision/claim"


def make_csr(common_name="device", key=None, mangle=False):
    """A PEM CSR (EC P-256 unless ``key``); ``mangle`` breaks its signature."""
    key = key or ec.generate_private_key(ec.SECP256R1())
    algorithm = None if isinstance(key, ed25519.Ed25519PrivateKey) else hashes.SHA256()
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .sign(key, algorithm)
    )
    der = bytearray(csr.public_bytes(serialization.Encoding.DER))
    if mangle:
        der[-3] ^= 0x01
    body = base64.encodebytes(bytes(der)).decode()
    label = "CERTIFICATE REQUEST"
    return f"-----BEGIN {label}-----\n{body}-----END {label}-----\n"


TOKEN = "claim-test-broker-token-0123456789abcdef"


def new_claim(env, **vals):
    """(claim, its secret in clear)."""
    claim = env["iot.provisioning.claim"].create(dict({"name": "Batch"}, **vals))
    secret = claim.action_new_secret()["context"]["default_secret"]
    return claim, secret


class ClaimHttpMixin:
    def claim_request(self, body, raw=None, method="POST"):
        data = raw if raw is not None else json.dumps(body)
        response = self.opener.request(
            method,
            self.base_url() + PATH,
            data=data,
            headers={"Content-Type": "application/json"},
            timeout=30,
        )
        # the request ran in the test's transaction, in another environment
        self.env.invalidate_all()
        return response

    def assertJsonError(self, response, status, code):
        self.assertEqual(response.status_code, status, response.text[:300])
        self.assertTrue(
            response.headers["Content-Type"].startswith("application/json"),
            response.headers["Content-Type"],
        )
        self.assertEqual(response.json()["code"], code, response.text[:300])
        self.assertNotIn("password", response.json())

    def emqx_auth(self, username, password, clientid=""):
        response = self.url_open(
            f"/iot/auth/{TOKEN}",
            data=json.dumps(
                {
                    "username": username,
                    "password": password,
                    "clientid": clientid,
                    "peerhost": "",
                }
            ),
            headers={"Content-Type": "application/json"},
        )
        self.assertEqual(response.status_code, 200, response.text[:200])
        return response.json()["result"]


@tagged("post_install", "-at_install")
class TestProvisioningClaim(ClaimHttpMixin, HttpCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.company = cls.env.ref("base.main_company")
        cls.other_company = cls.env["res.company"].create({"name": "Claim Other Co"})
        cls.manager = new_test_user(
            cls.env,
            login="claim.manager",
            groups="base.group_user,iot_base.iot_base_group_manager",
        )
        cls.other_manager = new_test_user(
            cls.env,
            login="claim.other.manager",
            groups="base.group_user,iot_base.iot_base_group_manager",
            company_id=cls.other_company.id,
            company_ids=[cls.other_company.id],
        )
        cls.iot_user = new_test_user(
            cls.env,
            login="claim.iot.user",
            groups="base.group_user,iot_base.iot_base_group_user",
        )
        cls.env["ir.config_parameter"].sudo().set_param("iot_base.auth_token", TOKEN)
        cls.fleet = cls.env["iot.mqtt.fleet"].create({"name": "Claimed Fleet"})
        cls.claim, cls.secret = new_claim(
            cls.env(user=cls.manager), fleet_id=cls.fleet.id, max_devices=3
        )

    def _body(self, hardware_id, secret=None, **extra):
        return dict(
            {"hardware_id": hardware_id, "claim_secret": secret or self.secret},
            **extra,
        )

    # ------------------------------------------------------------------

    def test_claim_registers_device_and_its_secret_logs_in(self):
        response = self.claim_request(self._body("AA-BB-CC-00-00-01", name="Pump 1"))
        self.assertEqual(response.status_code, 201, response.text)
        self.assertEqual(response.headers["Cache-Control"], "no-store")
        reply = response.json()
        # the reply of the provisioning API: identity, broker, topics
        self.assertEqual(reply["hardware_id"], "aa:bb:cc:00:00:01")
        self.assertEqual(
            set(reply),
            {
                "device_id",
                "hardware_id",
                "name",
                "username",
                "client_id",
                "password",
                "broker",
                "topics",
            },
        )
        self.assertEqual(set(reply["broker"]), {"host", "port", "tls", "websocket_url"})
        self.assertNotEqual(reply["password"], self.secret)
        device = self.env["iot.mqtt.device"].browse(reply["device_id"])
        self.assertEqual(device.company_id, self.claim.company_id)
        self.assertEqual(device.fleet_id, self.fleet)
        self.assertEqual(device.name, "Pump 1")
        self.assertEqual(device.username, reply["username"])
        self.assertEqual(self.claim.claimed_count, 1)
        use = self.claim.use_ids
        self.assertEqual(len(use), 1)
        self.assertEqual(
            (use.result, use.device_id, use.hardware_id, use.peer),
            ("claimed", device, "AA-BB-CC-00-00-01", "127.0.0.1"),
        )
        self.assertTrue(use.create_date)
        # the device's own secret logs in; the claim secret never does
        self.assertEqual(
            self.emqx_auth(reply["username"], reply["password"], reply["client_id"]),
            "allow",
        )
        for username in (reply["username"], self.claim.name, ""):
            self.assertEqual(self.emqx_auth(username, self.secret), "deny")

    def test_second_claim_conflicts_unless_reclaim_allowed(self):
        first = self.claim_request(self._body("dev-1")).json()
        again = self.claim_request(self._body("dev-1"))
        self.assertJsonError(again, 409, "already_claimed")
        self.assertEqual(self.claim.claimed_count, 1)
        self.assertEqual(self.claim.use_ids[0].result, "already_claimed")

        self.claim.allow_reclaim = True
        again = self.claim_request(self._body("dev-1"))
        self.assertEqual(again.status_code, 200, again.text)
        reply = again.json()
        self.assertEqual(reply["device_id"], first["device_id"])
        self.assertNotEqual(reply["password"], first["password"])
        self.assertEqual(self.claim.claimed_count, 1)  # re-claims are not counted
        self.assertEqual(self.emqx_auth(first["username"], first["password"]), "deny")
        self.assertEqual(
            self.emqx_auth(reply["username"], reply["password"], reply["client_id"]),
            "allow",
        )

    def test_reclaim_never_takes_over_a_device_it_did_not_register(self):
        self.claim.allow_reclaim = True
        self.env["iot.mqtt.device"]._register_device("dev-admin", name="Admin's")
        self.assertJsonError(
            self.claim_request(self._body("dev-admin")), 409, "already_claimed"
        )

    def test_revoked_device_cannot_be_reclaimed(self):
        self.claim.allow_reclaim = True
        reply = self.claim_request(self._body("dev-2")).json()
        self.env["iot.mqtt.device"].browse(reply["device_id"]).action_revoke()
        self.assertJsonError(self.claim_request(self._body("dev-2")), 409, "revoked")

    def test_expired_revoked_exhausted_claims_refused(self):
        claim, secret = new_claim(self.env, max_devices=1)
        self.assertEqual(
            self.claim_request(self._body("ex-1", secret)).status_code, 201
        )
        self.assertEqual(claim.state, "exhausted")
        self.assertJsonError(
            self.claim_request(self._body("ex-2", secret)), 403, "claim_exhausted"
        )
        claim.expires_at = fields.Datetime.now() - timedelta(seconds=1)
        self.assertEqual(claim.state, "expired")
        self.assertJsonError(
            self.claim_request(self._body("ex-3", secret)), 403, "claim_expired"
        )
        claim.expires_at = fields.Datetime.now() + timedelta(days=1)
        claim.action_revoke()
        self.assertEqual(claim.state, "revoked")
        self.assertJsonError(
            self.claim_request(self._body("ex-4", secret)), 403, "claim_revoked"
        )
        with self.assertRaises(UserError):
            claim.action_new_secret()
        with self.assertRaises(UserError):
            claim.write({"revoked_at": False})
        # its uses are an audit trail: a used claim is revoked, not deleted
        with self.assertRaises(UserError):
            claim.unlink()
        unused, _secret = new_claim(self.env)
        unused.unlink()
        # a claim of a deleted fleet would become company-wide
        with self.assertRaises(IntegrityError), mute_logger("odoo.sql_db"):
            self.fleet.unlink()
        self.assertEqual(
            claim.use_ids.mapped("result"),
            ["claim_revoked", "claim_expired", "claim_exhausted", "claimed"],
        )
        self.assertEqual(
            self.env["iot.mqtt.device"].search_count(
                [("hardware_id", "in", ["ex-2", "ex-3", "ex-4"])]
            ),
            0,
        )

    def test_new_secret_replaces_the_old_one(self):
        claim, old = new_claim(self.env)
        new = claim.action_new_secret()["context"]["default_secret"]
        self.assertJsonError(
            self.claim_request(self._body("ns-1", old)), 403, "invalid_claim"
        )
        self.assertEqual(self.claim_request(self._body("ns-1", new)).status_code, 201)

    def test_hardware_id_pattern(self):
        claim, secret = new_claim(self.env, hardware_id_pattern="aa:bb:cc:*")
        self.assertEqual(
            self.claim_request(self._body("AABBCC000099", secret)).status_code, 201
        )
        self.assertJsonError(
            self.claim_request(self._body("11:22:33:44:55:66", secret)),
            403,
            "hardware_id_not_allowed",
        )
        with self.assertRaises(ValidationError):
            claim.hardware_id_pattern = "(a+)+$"

    def test_wrong_secret_and_bad_input_are_json_4xx(self):
        wrong = "0" * 40 if self.secret != "0" * 40 else "1" * 40
        self.assertJsonError(
            self.claim_request(self._body("w-1", wrong)), 403, "invalid_claim"
        )
        self.assertJsonError(
            self.claim_request(self._body("w-1", self.secret[:8] + "0" * 32)),
            403,
            "invalid_claim",
        )
        self.assertJsonError(
            self.claim_request(self._body("w-1", self.secret + "\x00")),
            400,
            "bad_request",
        )
        cases = [
            ({"hardware_id": "w-2"}, None, 400, "invalid"),
            ({"hardware_id": 5, "claim_secret": self.secret}, None, 400, "invalid"),
            (self._body("w-2", name=["x"]), None, 400, "invalid"),
            (self._body("w-2", extra=1), None, 400, "invalid"),
            (self._body("a b"), None, 400, "invalid"),
            (self._body("w-2", csr="-----BEGIN"), None, 400, "invalid_csr"),
            (self._body("w-2", csr=make_csr()), None, 422, "csr_unsupported"),
            (self._body("w-2", csr=make_csr(mangle=True)), None, 400, "invalid_csr"),
            (
                self._body(
                    "w-2", csr=make_csr(key=ed25519.Ed25519PrivateKey.generate())
                ),
                None,
                400,
                "invalid_csr",
            ),
            (
                self._body(
                    "w-2",
                    csr=make_csr(
                        key=rsa.generate_private_key(
                            public_exponent=65537, key_size=1024
                        )
                    ),
                ),
                None,
                400,
                "invalid_csr",
            ),
            (self._body("w-2", csr=make_csr("x" * 20000)), None, 400, "invalid_csr"),
            (None, b"{", 400, "bad_request"),
            (None, b"[]", 400, "bad_request"),
            (None, b'{"a":' * 5000 + b"1" + b"}" * 5000, 400, "bad_request"),
            (None, b"x" * (65 * 1024), 413, "request_entity_too_large"),
        ]
        for body, raw, status, code in cases:
            with self.subTest(body=body, raw=raw and raw[:20]):
                self.assertJsonError(self.claim_request(body, raw=raw), status, code)
        for method in ("GET", "PUT", "DELETE"):
            self.assertJsonError(
                self.claim_request({}, method=method), 405, "method_not_allowed"
            )
        self.assertFalse(
            self.env["iot.mqtt.device"].search([("hardware_id", "like", "w-")])
        )
        Use = self.env["iot.provisioning.claim.use"]
        self.assertTrue(
            Use.search([("claim_id", "=", False), ("hardware_id", "=", "w-1")])
        )

    def test_throttled_per_address(self):
        self.env["ir.config_parameter"].sudo().set_param(
            "iot_base.max_provisioning_per_minute", 3
        )
        statuses = [
            self.claim_request(self._body(f"t-{i}", "f" * 40)).status_code
            for i in range(3)
        ]
        self.assertEqual(statuses, [403, 403, 403])
        # even with the right secret: the address is over its rate
        response = self.claim_request(self._body("t-9"))
        self.assertJsonError(response, 429, "too_many_requests")
        self.assertGreater(int(response.headers["Retry-After"]), 0)
        self.assertFalse(
            self.env["iot.mqtt.device"].search([("hardware_id", "=", "t-9")])
        )

    def test_throttled_per_claim(self):
        """Many addresses, one leaked secret: the claim's own rate holds."""
        self.env["ir.config_parameter"].sudo().set_param(
            "iot_base.max_provisioning_per_minute", 2
        )
        Claim = self.env["iot.provisioning.claim"].sudo()
        for index in range(2):
            Claim._claim(self._body(f"tc-{index}"), f"10.0.0.{index}")
        # not assertRaises, whose savepoint would undo the recorded use
        try:
            Claim._claim(self._body("tc-9"), "10.0.0.9")
        except ClaimRefused as exc:
            self.assertEqual(exc.status, 429)
        else:
            self.fail("the claim's rate was not enforced")
        self.assertEqual(self.claim.claimed_count, 2)
        self.env.invalidate_all()
        self.assertEqual(
            self.claim.use_ids.mapped("result"),
            ["too_many_requests", "claimed", "claimed"],
        )

    def test_company_limit_applies(self):
        self.env["ir.config_parameter"].sudo().set_param(
            "iot_base.max_devices_per_company", 1
        )
        claim, secret = new_claim(self.env(user=self.other_manager))
        self.assertEqual(
            self.claim_request(self._body("cl-1", secret)).status_code, 201
        )
        self.assertJsonError(
            self.claim_request(self._body("cl-2", secret)), 422, "limit"
        )
        self.assertEqual(claim.claimed_count, 1)

    def test_identity_only_in_the_claims_company(self):
        # the same hardware in the main company: the other company's claim
        # registers its own device, never hands out the main company's
        mine, _secret = self.env["iot.mqtt.device"]._register_device("shared-hw")
        claim, secret = new_claim(self.env(user=self.other_manager), allow_reclaim=True)
        reply = self.claim_request(self._body("shared-hw", secret)).json()
        device = self.env["iot.mqtt.device"].browse(reply["device_id"])
        self.assertNotEqual(device, mine)
        self.assertEqual(device.company_id, self.other_company)
        self.assertEqual(device.credential_id.company_id, self.other_company)
        # a claim's fleet is of its company
        with self.assertRaises(UserError):
            claim.sudo().fleet_id = self.fleet

    def test_access_rules(self):
        Claim = self.env["iot.provisioning.claim"]
        other, _secret = new_claim(self.env(user=self.other_manager))
        self.claim_request(self._body("acc-1"))
        as_manager = Claim.with_user(self.manager)
        self.assertIn(self.claim, as_manager.search([]))
        self.assertNotIn(other, as_manager.search([]))
        with self.assertRaises(AccessError):
            other.with_user(self.manager).read(["name"])
        with self.assertRaises(AccessError):
            self.claim.with_user(self.other_manager).read(["name"])
        with self.assertRaises(AccessError):
            as_manager.create({"name": "x", "company_id": self.other_company.id})
        with self.assertRaises(AccessError):
            self.claim.with_user(self.iot_user).read(["name"])
        Use = self.env["iot.provisioning.claim.use"]
        self.assertTrue(Use.with_user(self.manager).search([]))
        self.assertFalse(Use.with_user(self.other_manager).search([]))
        with self.assertRaises(AccessError):
            Use.with_user(self.iot_user).search([])
        with self.assertRaises(AccessError):
            self.claim.use_ids.with_user(self.manager).write({"result": "claimed"})
        # no claim, nothing revoked (and no broken SQL)
        as_manager.browse().action_revoke()
        # the counters are the claim's own
        with self.assertRaises(UserError):
            self.claim.with_user(self.manager).write({"claimed_count": 0})
        # the secret is in no field: not readable, searchable or exported
        for name in ("secret_hash", "secret_index"):
            self.assertNotIn(name, Claim._fields)
            with self.assertRaises(ValueError):
                self.claim.sudo().read([name])
        self.assertNotIn(self.secret, json.dumps(self.claim.sudo().read(), default=str))

    def test_one_hash_per_request_whatever_the_secret(self):
        """A wrong secret costs what a right one does: one hash check, whether
        its index matches a claim or not, or it is not even well-formed."""
        Claim = self.env["iot.provisioning.claim"].sudo()
        for secret, found in (
            (self.secret, True),
            (self.secret[:8] + "0" * 32, False),
            ("1" * 40 if self.secret[:8] != "1" * 8 else "2" * 40, False),
            ("not a secret", False),
        ):
            with patch.object(
                SECRET_CRYPT_CONTEXT, "verify", wraps=SECRET_CRYPT_CONTEXT.verify
            ) as verify:
                self.assertEqual(bool(Claim._find_by_secret(secret)), found)
            self.assertEqual(verify.call_count, 1, secret)

    def test_hash_reaches_no_orm_path(self):
        self.env.cr.execute(
            "SELECT secret_hash FROM iot_provisioning_claim WHERE id = %s",
            [self.claim.id],
        )
        secret_hash = self.env.cr.fetchone()[0]
        self.assertTrue(secret_hash)
        salt = secret_hash.split("$")[3]
        names = list(self.claim._fields)
        for user in (self.manager, self.env.ref("base.user_admin")):
            claim = self.claim.with_user(user)
            results = [
                claim.read(names),
                claim.search_read([], names),
                claim.web_read({name: {} for name in names}),
                claim.fields_get(),
                claim.copy_data(),
            ]
            if user.has_group("base.group_allow_export"):
                results.append(claim.export_data(names))
            text = json.dumps(results, default=str)
            for value in (self.secret, secret_hash, salt):
                self.assertNotIn(value, text, user.login)

    def test_glob_is_linear(self):
        self.assertTrue(glob_matches("aa:*:?c", "aa:bb:cc"))
        self.assertTrue(glob_matches("*", ""))
        self.assertFalse(glob_matches("a?", "a"))
        self.assertFalse(glob_matches("a*b", "aXc"))
        self.assertTrue(glob_matches("*a*b*c", "xxaxxbxxc"))
        started = time.monotonic()
        self.assertFalse(glob_matches("*a" * 60 + "b", "a" * 128))
        self.assertLess(time.monotonic() - started, 0.5)


@tagged("post_install", "-at_install", "iot_mosquitto")
class TestClaimMosquitto(ClaimHttpMixin, MosquittoClientMixin, HttpCase):
    """The claimed identity against a real Mosquitto 2.0 on loopback."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.broker = start_synced_mosquitto(cls)
        cls.claim, cls.secret = new_claim(cls.env)

    def test_claimed_device_connects_claim_secret_refused(self):
        response = self.claim_request(
            {"hardware_id": "mq-1", "claim_secret": self.secret}
        )
        self.assertEqual(response.status_code, 201, response.text)
        reply = response.json()
        self.env.flush_all()
        result = self.env["iot.mosquitto.sync"]._sync(force=True)
        self.assertTrue(result["ok"], result)
        client = self.connect(reply["username"], reply["password"])
        self.assertTrue(client.is_connected())
        for username in (reply["username"], self.claim.name):
            self.assertFalse(
                self.broker.can_connect(username, self.secret),
                f"the claim secret logged in as {username}",
            )


@tagged("post_install", "-at_install")
class TestClaimLastSlotRace(BaseCase):
    """Two claims for the last free slot, in real committed transactions:
    one device, never two."""

    def setUp(self):
        super().setUp()
        self.registry = Registry(get_db_name())
        with self.registry.cursor() as cr:
            env = api.Environment(cr, SUPERUSER_ID, {})
            claim, self.secret = new_claim(env, name="Race", max_devices=1)
            self.claim_id = claim.id
        self.addCleanup(self._cleanup)

    def _cleanup(self):
        with self.registry.cursor() as cr:
            env = api.Environment(cr, SUPERUSER_ID, {})
            env["iot.mqtt.device"].with_context(active_test=False).search(
                [("hardware_id", "in", ["race-a", "race-b"])]
            ).unlink()
            # a used claim cannot be deleted through the ORM (its audit trail)
            cr.execute(
                "DELETE FROM iot_provisioning_claim WHERE id = %s", [self.claim_id]
            )

    def _env(self, cr):
        cr.transaction = Transaction(self.registry)
        return api.Environment(cr, SUPERUSER_ID, {})

    def test_last_slot_goes_to_one_claim(self):
        results = {}
        with self.registry.cursor() as cr_a:
            env_a = self._env(cr_a)
            # the snapshot of B starts before A commits
            started_b = threading.Event()

            def claim_b():
                with self.registry.cursor() as cr_b:
                    env_b = self._env(cr_b)
                    env_b.cr.execute("SELECT 1")
                    started_b.set()
                    try:
                        env_b["iot.provisioning.claim"]._claim(
                            {"hardware_id": "race-b", "claim_secret": self.secret},
                            "10.1.0.2",
                        )
                        results["b"] = "claimed"
                    except ClaimRefused as exc:
                        results["b"] = exc.code

            env_a["iot.provisioning.claim"]._claim(
                {"hardware_id": "race-a", "claim_secret": self.secret}, "10.1.0.1"
            )
            thread = threading.Thread(target=claim_b)
            thread.start()
            started_b.wait(10)
            time.sleep(0.5)  # B waits on A's lock of the claim row
            cr_a.commit()
        thread.join(30)
        self.assertFalse(thread.is_alive())
        self.assertIn(results["b"], ("concurrent", "claim_exhausted"))
        with self.registry.cursor() as cr:
            env = api.Environment(cr, SUPERUSER_ID, {})
            devices = env["iot.mqtt.device"].search(
                [("hardware_id", "in", ["race-a", "race-b"])]
            )
            self.assertEqual(devices.mapped("hardware_id"), ["race-a"])
            self.assertEqual(
                env["iot.provisioning.claim"].browse(self.claim_id).claimed_count, 1
            )


@tagged("post_install", "-at_install")
class TestClaimViews(HttpCase):
    """The claim screens open in the browser (the all-views walk of
    test_all_views.py), for an IoT manager: the claim list and form, the
    fleet form with its Claims tab, and the "shown once" secret dialog."""

    def test_claim_screens_open(self):
        manager = new_test_user(
            self.env,
            login="claim.views.manager",
            groups="base.group_user,iot_base.iot_base_group_manager",
        )
        env = self.env(user=manager)
        fleet = env["iot.mqtt.fleet"].create({"name": "Views Fleet"})
        claim, secret = new_claim(env, fleet_id=fleet.id)
        env["iot.provisioning.claim"].sudo()._claim(
            {"hardware_id": "views-1", "claim_secret": secret}, "127.0.0.1"
        )
        draft = env["iot.provisioning.claim"].create({"name": "Draft"})
        claims = self.env.ref("iot_base.iot_provisioning_claim_action")
        fleets = self.env.ref("iot_base.iot_mqtt_fleet_action")
        steps = [
            {"kind": "view", "label": label, "action_id": action.id, **extra}
            for label, action, extra in (
                ("claims (list)", claims, {"view_type": "list"}),
                ("claim (form)", claims, {"view_type": "form", "res_id": claim.id}),
                ("claim (new)", claims, {"view_type": "form"}),
                ("fleet (form)", fleets, {"view_type": "form", "res_id": fleet.id}),
            )
        ]
        steps[3]["expect"] = [{"selector": ".o_notebook", "text": "Batch"}]
        steps.append(
            {
                "kind": "button",
                "label": "claim: Issue Claim Secret",
                "model": "iot.provisioning.claim",
                "res_id": draft.id,
                "type": "object",
                "name": "action_new_secret",
            }
        )
        steps.append(
            {
                "kind": "button",
                "label": "claim: Claimed Devices",
                "model": "iot.provisioning.claim",
                "res_id": claim.id,
                "type": "object",
                "name": "action_view_devices",
            }
        )
        module = "@iot_base/../tests/backend_tours/iot_all_views"
        # not /odoo, whose first app (the fleet dashboard) would still be
        # loading when the first step replaces it
        self.browser_js(
            "/odoo/action-iot_base.iot_provisioning_claim_action",
            f"odoo.loader.modules.get({module!r}).openAllViews({json.dumps(steps)})",
            ready=f"!!(odoo.isReady && odoo.loader.modules.get({module!r}))",
            login=manager.login,
            timeout=300,
            success_signal="iot all views succeeded",
        )
        self.assertTrue(claim.with_user(manager).use_ids)
