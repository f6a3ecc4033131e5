# License LGPL-3.0 or later (https://www.gnu.org/licenses/lgpl).
import json

from psycopg2 import IntegrityError

from odoo.exceptions import ValidationError
from odoo.tests import HttpCase, tagged
from odoo.tools import mute_logger

from odoo.addons.iot_base.tools import topic_acl
from odoo.addons.iot_base.tools.limits import LIMIT_DEFAULTS, company_limit
from odoo.addons.iot_base.tools.mosquitto import files as mosquitto_files

from .common import IotCommonCase
from .emqx.test_emqx_http import EMQX_HEADERS, TOKEN
from .test_topic_acl import emqx_decision


@tagged("post_install", "-at_install")
class TestAclRules(IotCommonCase):
    def test_namespaces(self):
        self.assertTrue(self.company.iot_mqtt_namespace)
        twin = self.env["res.company"].create({"name": self.company.name + "!"})
        self.assertNotEqual(twin.iot_mqtt_namespace, self.company.iot_mqtt_namespace)
        twin.name = "Renamed"
        self.assertTrue(
            twin.iot_mqtt_namespace.startswith(self.company.iot_mqtt_namespace)
        )
        # "acme.x": on RabbitMQ, acme's acme/# (key acme.#) would reach it
        for bad in ("a/b", "+", "#", "$sys", "", "UPPER", "x" * 64, "acme\n", "acme.x"):
            with (
                self.subTest(bad=bad),
                self.assertRaises(ValidationError),
                self.env.cr.savepoint(),
            ):
                twin.iot_mqtt_namespace = bad
                twin.flush_recordset()
        with (
            self.assertRaises(IntegrityError),
            self.env.cr.savepoint(),
            mute_logger("odoo.sql_db"),
        ):
            twin.iot_mqtt_namespace = self.company.iot_mqtt_namespace
            twin.flush_recordset()

    def test_rule_validation(self):
        Rule = self.env["iot.acl.rule"]
        for topic, qos in [
            ("a/#/b", ""),
            ("a+/b", ""),
            ("${password}/x", ""),
            ("a", "3"),
            ("a", "x"),
            ("", ""),
        ]:
            with (
                self.subTest(topic=topic, qos=qos),
                self.assertRaises(ValidationError),
                self.env.cr.savepoint(),
            ):
                Rule.create({"name": "bad", "topic": topic, "qos": qos})
        rule = Rule.create(
            {"name": "ok", "topic": "${namespace}/x/${clientid}", "qos": "0,1"}
        )
        self.assertEqual(rule._qos_levels(), frozenset({0, 1}))

    def test_rules_follow_changes(self):
        self.iot_user.with_user(self.iot_user).get_or_create_iot_credentials()
        credential = self.Credentials.search([("user_id", "=", self.iot_user.id)])
        ns = self.company.iot_mqtt_namespace
        before = self.env["iot.acl.rule"]._rules_for(credential, "c1")
        self.assertEqual(
            [r.topic for r in before],
            [
                f"{ns}/devices/+/telemetry/#",
                f"{ns}/devices/+/status/#",
                f"{ns}/users/{credential.username}/#",
            ],
        )
        # a rule for this credential only, first in line, is seen at once
        self.env["iot.acl.rule"].create(
            {
                "name": "No status for this one",
                "sequence": 1,
                "permission": "deny",
                "action": "subscribe",
                "topic": "${namespace}/devices/+/status/#",
                "credential_ids": [(4, credential.id)],
            }
        )
        rules = self.env["iot.acl.rule"]._rules_for(credential, "c1")
        self.assertEqual(len(rules), 4)
        self.assertEqual(
            topic_acl.authorize(rules, "subscribe", f"{ns}/devices/+/status/#"), "deny"
        )
        self.assertEqual(
            topic_acl.authorize(rules, "subscribe", f"{ns}/devices/+/telemetry/#"),
            "allow",
        )
        other = self.Credentials.search(
            [("user_id", "=", self.iot_manager.id)]
        ) or self.Credentials.create(
            {"username": "user_x", "kind": "user", "user_id": self.iot_manager.id}
        )
        self.assertEqual(
            topic_acl.authorize(
                self.env["iot.acl.rule"]._rules_for(other, "c1"),
                "subscribe",
                f"{ns}/devices/+/status/#",
            ),
            "allow",
        )

    def test_company_scoped_rule_and_namespace_change(self):
        device = self._device("device_scope01")
        self.env["iot.acl.rule"].create(
            {
                "name": "Other company only",
                "sequence": 1,
                "topic": "shared/#",
                "company_id": self.other_company.id,
            }
        )
        rules = self.env["iot.acl.rule"]._rules_for(device, "c1")
        self.assertEqual(topic_acl.authorize(rules, "publish", "shared/x"), "deny")
        self.company.iot_mqtt_namespace = "renamed_ns"
        rules = self.env["iot.acl.rule"]._rules_for(device, "c1")
        self.assertEqual(
            topic_acl.authorize(
                rules, "publish", "renamed_ns/devices/device_scope01/telemetry/t"
            ),
            "allow",
        )

    def test_clientid_placeholder(self):
        device = self._device("device_cid01")
        self.env["iot.acl.rule"].create(
            {
                "name": "Per-client inbox",
                "sequence": 1,
                "topic": "inbox/${clientid}/#",
                "credential_kind": "device",
            }
        )
        rules = self.env["iot.acl.rule"]._rules_for(device, "client-7")
        self.assertEqual(
            topic_acl.authorize(rules, "publish", "inbox/client-7/x"), "allow"
        )
        self.assertEqual(
            topic_acl.authorize(rules, "publish", "inbox/client-8/x"), "deny"
        )
        # a client id that would inject a wildcard never widens a rule
        rules = self.env["iot.acl.rule"]._rules_for(device, "#")
        self.assertEqual(
            topic_acl.authorize(rules, "publish", "inbox/anything/x"), "deny"
        )

    def test_rule_limit_per_company(self):
        """Issue 16/3: one RPC-sized create beyond the per-company cap is
        refused whole; another company and global rules are not counted."""
        Rule = self.env["iot.acl.rule"]
        key = "iot_base.max_rules_per_company"
        self.assertEqual(company_limit(self.env, key), LIMIT_DEFAULTS[key])
        cap = LIMIT_DEFAULTS[key]

        def batch(count, prefix):
            return [
                {"name": f"{prefix} {i}", "topic": f"${{namespace}}/{prefix}/{i}"}
                for i in range(count)
            ]

        manager_b = Rule.with_user(self.other_manager)
        # as an RPC would: the refused call's transaction is rolled back
        with (
            self.assertRaisesRegex(ValidationError, "rules per company"),
            self.env.cr.savepoint(),
        ):
            manager_b.create(batch(cap + 1, "flood"))
        self.assertEqual(
            Rule.search_count([("company_id", "=", self.other_company.id)]), 0
        )

        self.env["ir.config_parameter"].sudo().set_param(key, "5")
        # global rules (administrators') count for no company
        Rule.create(batch(6, "global"))
        manager_a = Rule.with_user(self.iot_manager)
        manager_a.create(batch(4, "a"))
        archived = manager_a.create(batch(1, "a_archived"))
        archived.active = False  # still counted: it can be reactivated
        with (
            self.assertRaisesRegex(ValidationError, "at most 5 rules"),
            self.env.cr.savepoint(),
        ):
            manager_a.create(batch(1, "a_more"))
        # the other company is unaffected by the first one's rules
        rules_b = manager_b.create(batch(5, "b"))
        self.assertEqual(len(rules_b), 5)
        # moving a rule into a full company is refused too
        spare = Rule.create(batch(1, "spare"))
        with (
            self.assertRaisesRegex(ValidationError, "at most 5 rules"),
            self.env.cr.savepoint(),
        ):
            spare.company_id = self.company

    def test_limit_settings(self):
        """The four per-company limits are settings: shown with their
        defaults, saved into the parameters tools/limits.py reads."""
        admin = self.env.ref("base.user_admin")
        Settings = self.env["res.config.settings"].with_user(admin)
        fields_of = {
            "iot_max_rules_per_company": "iot_base.max_rules_per_company",
            "iot_max_devices_per_company": "iot_base.max_devices_per_company",
            "iot_max_credentials_per_company": "iot_base.max_credentials_per_company",
            "iot_max_provisioning_per_minute": "iot_base.max_provisioning_per_minute",
        }
        self.assertEqual(set(fields_of.values()), set(LIMIT_DEFAULTS))
        shown = Settings.create({})
        for name, key in fields_of.items():
            self.assertEqual(shown[name], LIMIT_DEFAULTS[key], name)
        Settings.create({name: 7 + i for i, name in enumerate(fields_of)}).execute()
        for i, key in enumerate(fields_of.values()):
            self.assertEqual(company_limit(self.env, key), 7 + i, key)
        Settings.create({"iot_max_rules_per_company": 0}).execute()
        self.assertEqual(
            company_limit(self.env, "iot_base.max_rules_per_company"),
            LIMIT_DEFAULTS["iot_base.max_rules_per_company"],
        )


@tagged("post_install", "-at_install")
class TestRetainedTelemetry(HttpCase):
    """Issue 16/9: the default rules refuse retained telemetry where the
    broker reports the retain flag (EMQX: the ACL of the auth reply and
    /iot/acl), and keep a device's telemetry working where it cannot
    (RabbitMQ's topic check, Mosquitto's ACL file)."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.env["ir.config_parameter"].sudo().set_param("iot_base.auth_token", TOKEN)
        cls.ns = cls.env.ref("base.main_company").iot_mqtt_namespace
        cls.device = cls.env["iot.credentials"].create(
            {"username": "device_rt01", "kind": "device"}
        )
        cls.secret = cls.device.action_rotate_secret()["context"]["default_secret"]

    def _post(self, path, body):
        response = self.url_open(
            f"{path}/{TOKEN}", data=json.dumps(body), headers=EMQX_HEADERS
        )
        self.assertEqual(response.status_code, 200)
        return response.json()

    def test_default_rules_refuse_retained_telemetry(self):
        dev, ns = "device_rt01", self.ns
        telemetry, status = (
            f"{ns}/devices/{dev}/telemetry/t",
            f"{ns}/devices/{dev}/status",
        )
        reply = self._post(
            "/iot/auth",
            {
                "username": dev,
                "password": self.secret,
                "clientid": dev,
                "peerhost": "h",
            },
        )
        self.assertEqual(reply["result"], "allow")
        acl = reply["acl"]
        for qos in (0, 1, 2):
            self.assertEqual(emqx_decision(acl, "publish", telemetry, qos), "allow")
            self.assertEqual(
                emqx_decision(acl, "publish", telemetry, qos, retain=True), "deny"
            )
            # a retained status (the Last Will) stays allowed
            self.assertEqual(
                emqx_decision(acl, "publish", status, qos, retain=True), "allow"
            )
        for retain, expected in (("false", "allow"), ("true", "deny")):
            body = {
                "username": dev,
                "clientid": dev,
                "action": "publish",
                "topic": telemetry,
                "qos": "1",
                "retain": retain,
            }
            self.assertEqual(self._post("/iot/acl", body)["result"], expected)

        # RabbitMQ 3.10 tells no retain flag: telemetry is allowed there
        # (the deny cannot be applied without refusing every publish)
        self.assertTrue(
            self.env["iot.broker.rabbitmq"]._topic_allowed(
                self.device, dev, "publish", telemetry, (0, 1, 2), (False, True)
            )
        )
        rules = self.env["iot.acl.rule"]._rules_for(self.device, None)
        self.assertIn(
            ("deny", "publish", f"{ns}/devices/{dev}/telemetry/#", True),
            [(r.permission, r.action, r.topic, r.retain) for r in rules],
        )
        # Mosquitto's ACL file: the telemetry write is kept, nothing is noted
        entries, notes = mosquitto_files.translate_rules(rules)
        self.assertIn(("write", f"{ns}/devices/{dev}/telemetry/#"), entries)
        self.assertEqual(notes, [])
