# License LGPL-3.0 or later (https://www.gnu.org/licenses/lgpl).
from odoo.exceptions import AccessError, UserError, ValidationError
from odoo.tests import tagged

from odoo.addons.iot_base.tools import topic_acl
from odoo.addons.iot_base.tools.settings import bool_param

from .common import IotCommonCase


@tagged("post_install", "-at_install")
class TestAccess(IotCommonCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.own = cls.iot_user.with_user(cls.iot_user).get_or_create_iot_credentials()
        cls.iot_user2.with_user(cls.iot_user2).get_or_create_iot_credentials()
        cls.own_credential = cls.env["iot.credentials"].browse(cls.own["credential_id"])
        cls.device = cls.env["iot.credentials"].create(
            {"username": "device_main", "kind": "device", "company_id": cls.company.id}
        )
        cls.other_device = cls.env["iot.credentials"].create(
            {
                "username": "device_other",
                "kind": "device",
                "company_id": cls.other_company.id,
            }
        )

    def _visible(self, user):
        return self.env["iot.credentials"].with_user(user).search([]).mapped("username")

    def test_hash_and_index_are_not_orm_fields(self):
        fields = self.env["iot.credentials.secret"]._fields
        self.assertNotIn("hash", fields)
        self.assertNotIn("index", fields)
        with self.assertRaises(ValueError):
            self.env["iot.credentials.secret"].search([]).read(["hash"])

    def test_iot_user_sees_only_own(self):
        user = self.iot_user
        self.assertEqual(self._visible(user), [self.own["username"]])
        self.own_credential.with_user(user).read(["username", "last_auth_at"])
        secrets = self.env["iot.credentials.secret"].with_user(user).search([])
        self.assertEqual(secrets.credential_id, self.own_credential)
        for record in (self.device, self.other_device):
            with self.assertRaises(AccessError):
                record.with_user(user).read(["username"])
        with self.assertRaises(AccessError):
            self.own_credential.with_user(user).write({"is_superuser": True})
        with self.assertRaises(AccessError):
            self.env["iot.credentials"].with_user(user).create(
                {"username": "device_mine", "kind": "device"}
            )
        with self.assertRaises(AccessError):
            self.own_credential.with_user(user).unlink()
        with self.assertRaises(AccessError):
            self.own_credential.with_user(user).action_revoke()
        with self.assertRaises(AccessError):
            self.env["iot.credentials.new"].with_user(user).create({"username": "x_1"})
        with self.assertRaises(AccessError):
            self.iot_user2.with_user(user).get_or_create_iot_credentials()

    def test_manager_manages_own_company(self):
        manager = self.iot_manager
        visible = self._visible(manager)
        self.assertIn("device_main", visible)
        self.assertIn(self.own["username"], visible)
        self.assertNotIn("device_other", visible)
        device = self.device.with_user(manager)
        device.write({"note": "rack 4"})
        self.assertTrue(device.action_rotate_secret()["context"]["default_secret"])
        self.assertTrue(
            self.env["iot.credentials.secret"].with_user(manager).search([])
        )
        created = (
            self.env["iot.credentials"]
            .with_user(manager)
            .create({"username": "device_new", "kind": "device"})
        )
        created.unlink()
        with self.assertRaises(AccessError):
            self.other_device.with_user(manager).read(["username"])
        with self.assertRaises(AccessError):
            self.other_device.with_user(manager).action_rotate_secret()

    def test_manager_of_other_company(self):
        manager = self.other_manager
        self.assertEqual(self._visible(manager), ["device_other"])
        for record in (self.device, self.own_credential):
            with self.assertRaises(AccessError):
                record.with_user(manager).read(["username"])
            with self.assertRaises(AccessError):
                record.with_user(manager).write({"note": "x"})
        secrets = self.env["iot.credentials.secret"].with_user(manager).search([])
        self.assertNotIn(self.own_credential, secrets.credential_id)

    def test_no_access_without_iot_group(self):
        for user in (self.internal_user, self.portal_user, self.public_user):
            with self.subTest(user=user.login):
                for model in ("iot.credentials", "iot.credentials.secret"):
                    with self.assertRaises(AccessError):
                        self.env[model].with_user(user).search([])
                with self.assertRaises(AccessError):
                    self.own_credential.with_user(user).read(["username"])
                with self.assertRaises(AccessError):
                    user.with_user(user).get_or_create_iot_credentials()
                with self.assertRaises(AccessError):
                    self.env["iot.credentials.new"].with_user(user).create(
                        {"username": "x_2"}
                    )
                # the one2many on users is hidden from them as well
                with self.assertRaises(AccessError):
                    self.iot_user.with_user(user).read(["iot_credential_ids"])

    def test_broker_token_is_admin_only(self):
        self.env["ir.config_parameter"].sudo().set_param("iot_base.auth_token", "t0ken")
        for user in (self.iot_manager, self.iot_user):
            with self.assertRaises(AccessError):
                self.env["ir.config_parameter"].with_user(user).get_param(
                    "iot_base.auth_token"
                )

    def test_admin_is_manager(self):
        admin = self.env.ref("base.user_admin")
        self.assertTrue(admin.has_group("iot_base.iot_base_group_manager"))
        self.assertTrue(admin.has_group("iot_base.iot_base_group_user"))

    def test_settings(self):
        settings = self.env["res.config.settings"].create({})
        self.assertEqual(settings.iot_mqtt_broker_url, "ws://localhost:8083/mqtt")
        self.assertEqual(settings.iot_session_lifetime_hours, 12.0)
        settings.iot_mqtt_broker_url = "wss://mqtt.example.com/mqtt"
        settings.execute()
        params = self.env["ir.config_parameter"].sudo()
        self.assertEqual(
            params.get_param("iot_base.mqtt_broker_url"), "wss://mqtt.example.com/mqtt"
        )
        settings.action_iot_generate_auth_token()
        token = params.get_param("iot_base.auth_token")
        self.assertGreaterEqual(len(token), 40)
        settings.action_iot_generate_auth_token()
        self.assertNotEqual(params.get_param("iot_base.auth_token"), token)

    def test_boolean_settings_read_as_the_code_reads_them(self):
        """Issue 16 point 16: a parameter holding "False" is off on the
        settings page and in the code; "True" is on in both."""
        params = self.env["ir.config_parameter"].sudo()
        Settings = self.env["res.config.settings"]
        readers = {
            "iot_mqtt_tls": lambda: self.env["iot.mqtt.client"]._settings()["tls"],
            "iot_mosquitto_sync_enabled": lambda: self.env[
                "iot.mosquitto.sync"
            ]._is_enabled(),
        }
        booleans = [
            name
            for name, field in Settings._fields.items()
            if field._module == "iot_base"
            and field.type == "boolean"
            and getattr(field, "config_parameter", None)
        ]
        self.assertIn("iot_mqtt_tls", booleans)
        for stored, expected in (
            ("False", False),
            ("false", False),
            ("0", False),
            ("True", True),
            ("1", True),
        ):
            for name in booleans:
                with self.subTest(field=name, stored=stored):
                    parameter = Settings._fields[name].config_parameter
                    params.set_param(parameter, stored)
                    self.assertIs(Settings.default_get([name])[name], expected)
                    self.assertIs(Settings.create({})[name], expected)
                    self.assertIs(bool_param(self.env, parameter), expected)
                    if name in readers:
                        self.assertIs(bool(readers[name]()), expected)
                    params.set_param(parameter, False)


@tagged("post_install", "-at_install")
class TestCompanyManagers(IotCommonCase):
    """The manager of company B (``other_manager``) attacks company A and
    what the addon ships; the manager of A works on A."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.admin = cls.env.ref("base.user_admin")
        cls.publisher = cls.env.ref("iot_base.iot_credentials_odoo_publisher")
        cls.device_a = cls._device(cls, "device_a01")
        cls.device_b = cls._device(cls, "device_b01", company=cls.other_company)
        cls.superuser_a = cls._device(
            cls, "service_bridge_a", kind="service", is_superuser=True
        )
        cls.superuser_a.action_rotate_secret()
        cls.shipped_rule = cls.env.ref("iot_base.iot_acl_rule_device_telemetry")
        cls.ns_a = cls.company.iot_mqtt_namespace
        cls.ns_b = cls.other_company.iot_mqtt_namespace
        cls.Rule = cls.env["iot.acl.rule"]

    def _as(self, user, records):
        return records.with_user(user)

    def test_superuser_flag_is_for_admins(self):
        for manager, credential in (
            (self.other_manager, self.device_b),
            (self.iot_manager, self.device_a),
        ):
            with self.assertRaises(AccessError):
                credential.with_user(manager).write({"is_superuser": True})
            with self.assertRaises(AccessError):
                self.Credentials.with_user(manager).create(
                    {
                        "username": f"service_{manager.id}",
                        "kind": "service",
                        "is_superuser": True,
                    }
                )
            wizard = (
                self.env["iot.credentials.new"]
                .with_user(manager)
                .create({"username": f"svc_{manager.id}", "is_superuser": True})
            )
            with self.assertRaises(AccessError):
                wizard.action_create()
        # nor may a manager touch a superuser credential of their company
        superuser = self.superuser_a.with_user(self.iot_manager)
        self.assertTrue(superuser.is_superuser, "readable")
        for attack in (
            lambda: superuser.write({"is_superuser": False}),
            lambda: superuser.write({"note": "mine now"}),
            superuser.action_rotate_secret,
            superuser.action_revoke,
            superuser.action_archive,
            superuser.unlink,
        ):
            with self.assertRaises(AccessError), self.env.cr.savepoint():
                attack()
        with self.assertRaises(AccessError):
            superuser.secret_ids.unlink()
        self.assertFalse(self.device_a.is_superuser)
        self.assertTrue(self.superuser_a.active)
        # an administrator may
        self.device_a.with_user(self.admin).write({"is_superuser": True})
        self.assertTrue(self.device_a.is_superuser)
        self.device_a.with_user(self.admin).write({"is_superuser": False})
        # and the manager still manages the ordinary credentials of A
        self.device_a.with_user(self.iot_manager).write({"note": "rack 4"})
        self.assertTrue(
            self.device_a.with_user(self.iot_manager).action_rotate_secret()
        )
        self.device_a.with_user(self.iot_manager).action_revoke()

    def test_odoo_publisher_is_protected(self):
        publisher = self.publisher.with_user(self.iot_manager)
        self.assertEqual(publisher.username, "odoo_publisher")
        for attack in (
            publisher.unlink,
            publisher.action_revoke,
            lambda: publisher.write({"username": "odoo_publisher_x"}),
        ):
            with self.assertRaises(AccessError), self.env.cr.savepoint():
                attack()
        with self.assertRaises(AccessError):
            self.publisher.with_user(self.other_manager).read(["username"])
        # not even an administrator deletes it: the MQTT client needs it
        with self.assertRaises(UserError), self.env.cr.savepoint():
            self.publisher.with_user(self.admin).unlink()
        self.assertTrue(self.env.ref("iot_base.iot_credentials_odoo_publisher"))
        self.assertTrue(self.publisher.active)
        self.assertEqual(
            self.env["iot.mqtt.client"]._publisher_login()[0], "odoo_publisher"
        )

    def test_global_rules_are_for_admins(self):
        Rule = self.Rule.with_user(self.other_manager)
        shipped = self.shipped_rule.with_user(self.other_manager)
        self.assertTrue(shipped.read(["topic"]), "managers read global rules")
        for attack in (
            lambda: shipped.write({"topic": "#"}),
            lambda: shipped.write({"company_id": self.other_company.id}),
            lambda: shipped.write({"active": False}),
            shipped.unlink,
        ):
            with self.assertRaises(AccessError), self.env.cr.savepoint():
                attack()
        for topic in ("#", "${namespace}/#"):
            with self.assertRaises(ValidationError), self.env.cr.savepoint():
                Rule.create({"name": "global", "topic": topic, "company_id": False})
        self.assertEqual(
            self.shipped_rule.topic, "${namespace}/devices/${username}/telemetry/#"
        )
        # an administrator changes them
        self.shipped_rule.with_user(self.admin).write({"qos": "0,1"})
        self.Rule.with_user(self.admin).create({"name": "bridge", "topic": "#"})

    def test_company_rules_stay_in_their_namespace(self):
        Rule = self.Rule.with_user(self.other_manager)
        outside = [
            "#",
            "+/#",
            f"{self.ns_a}/#",
            f"{self.ns_b}/#",
            "${username}/#",
            "${clientid}/#",
            "${namespace}x/#",
            "$SYS/#",
        ]
        for topic in outside:
            with (
                self.subTest(topic=topic),
                self.assertRaises(ValidationError),
                self.env.cr.savepoint(),
            ):
                Rule.create(
                    {
                        "name": "wide",
                        "topic": topic,
                        "company_id": self.other_company.id,
                    }
                )
        # the other company's rules are out of reach
        with self.assertRaises(ValidationError), self.env.cr.savepoint():
            Rule.create(
                {"name": "A", "topic": "${namespace}/#", "company_id": self.company.id}
            )
        rule_a = self.Rule.create(
            {
                "name": "A own",
                "topic": "${namespace}/a/#",
                "company_id": self.company.id,
            }
        )
        with self.assertRaises(AccessError):
            rule_a.with_user(self.other_manager).write({"topic": "${namespace}/#"})
        # what B may do: allow within its namespace, deny anything
        rule = Rule.create(
            {
                "name": "B fleet",
                "topic": "${namespace}/fleet/#",
                "company_id": self.other_company.id,
            }
        )
        Rule.create(
            {
                "name": "B quiet",
                "sequence": 1,
                "permission": "deny",
                "topic": "${namespace}/quiet/#",
                "company_id": self.other_company.id,
            }
        )
        with self.assertRaises(ValidationError), self.env.cr.savepoint():
            Rule.create(
                {
                    "name": "B deny beyond",
                    "permission": "deny",
                    "topic": "#",
                    "company_id": self.other_company.id,
                }
            )
        for attack in (
            {"topic": "#"},
            {"topic": f"{self.ns_a}/#"},
            {"company_id": False},
            {"company_id": self.company.id},
        ):
            with (
                self.subTest(attack=attack),
                self.assertRaises(ValidationError),
                self.env.cr.savepoint(),
            ):
                rule.write(attack)
        rule.write({"topic": "${namespace}/fleet/+/cmd", "sequence": 2})
        # a manager's new rule is their company's without saying so
        self.assertEqual(
            Rule.create({"name": "B default", "topic": "${namespace}/d/#"}).company_id,
            self.other_company,
        )
        self.assertFalse(self.Rule.create({"name": "G", "topic": "g/#"}).company_id)
        # an administrator's rules for B beyond its namespace stay as the
        # administrator made them: an allow is not widened, a deny not dropped
        bridge = self.Rule.create(
            {
                "name": "B bridge",
                "sequence": 2,
                "topic": "bridge/#",
                "company_id": self.other_company.id,
                "credential_ids": [(4, self.device_b.id)],
            }
        )
        guard = self.Rule.create(
            {
                "name": "B bridge secrets",
                "sequence": 1,
                "permission": "deny",
                "topic": "bridge/secret/#",
                "company_id": self.other_company.id,
            }
        )
        for record, attack in (
            (bridge, {"credential_ids": [(5,)]}),
            (bridge, {"topic": "${namespace}/bridge/#"}),
            (guard, {"topic": "${namespace}/x", "sequence": 99}),
            (guard, {"active": False}),
        ):
            with (
                self.subTest(attack=attack),
                self.assertRaises(ValidationError),
                self.env.cr.savepoint(),
            ):
                record.with_user(self.other_manager).write(attack)
        for record in (bridge, guard):
            with self.assertRaises(ValidationError), self.env.cr.savepoint():
                record.with_user(self.other_manager).unlink()
        # and in effect: no device of A reaches B's namespace
        rules = self.Rule._rules_for(self.device_a, "c1")
        for topic in (f"{self.ns_b}/x", f"{self.ns_b}/fleet/1/cmd"):
            self.assertEqual(topic_acl.authorize(rules, "publish", topic), "deny")

    def test_company_records_out_of_reach(self):
        manager = self.other_manager
        device_a = self.env["iot.mqtt.device"].create(
            {"name": "A", "hardware_id": "sensor-a", "company_id": self.company.id}
        )
        fleet_a = self.env["iot.mqtt.fleet"].create(
            {"name": "A fleet", "company_id": self.company.id}
        )
        for records in (self.device_a, device_a, fleet_a, device_a.credential_id):
            with self.subTest(model=records._name):
                records = records.with_user(manager)
                for attack in (
                    lambda records=records: records.read(["display_name"]),
                    lambda records=records: (
                        records.write({"active": False})
                        if "active" in records._fields
                        else records.write({"name": "x"})
                    ),
                    records.unlink,
                ):
                    with self.assertRaises(AccessError), self.env.cr.savepoint():
                        attack()
        for model, vals in (
            ("iot.credentials", {"username": "device_intruder", "kind": "device"}),
            ("iot.mqtt.device", {"name": "intruder", "hardware_id": "intruder-1"}),
            ("iot.mqtt.fleet", {"name": "intruder"}),
        ):
            with (
                self.subTest(model=model),
                self.assertRaises(AccessError),
                self.env.cr.savepoint(),
            ):
                self.env[model].with_user(manager).create(
                    dict(vals, company_id=self.company.id)
                )
        # B's own records: B manages them, but cannot move them into A
        own = self.device_b.with_user(manager)
        own.write({"note": "mine"})
        with self.assertRaises(AccessError), self.env.cr.savepoint():
            own.write({"company_id": self.company.id})
        self.assertEqual(self.device_b.company_id, self.other_company)
        fleet_b = self.env["iot.mqtt.fleet"].create(
            {"name": "B fleet", "company_id": self.other_company.id}
        )
        with self.assertRaises(AccessError), self.env.cr.savepoint():
            fleet_b.with_user(manager).write({"company_id": self.company.id})
        self.assertEqual(fleet_b.company_id, self.other_company)

    def test_device_of_a_superuser_credential(self):
        """A device whose credential an admin made a broker superuser is the
        admin's to revoke: archiving or deleting the device would do it."""
        device = self.env["iot.mqtt.device"].create(
            {
                "name": "Bridge",
                "hardware_id": "bridge-a1",
                "company_id": self.company.id,
            }
        )
        device.credential_id.is_superuser = True
        for attack in ("action_revoke", "action_archive", "unlink"):
            with (
                self.subTest(attack=attack),
                self.assertRaises(AccessError),
                self.env.cr.savepoint(),
            ):
                getattr(device.with_user(self.iot_manager), attack)()
        self.assertTrue(device.credential_id.active)
        device.with_user(self.admin).action_revoke()
        self.assertFalse(device.credential_id.active)

    def test_audit_and_throttle_rows_of_managers(self):
        Log = self.env["iot.auth.log"]
        Log._record("auth", "allow", "ok", "device_a01", credential_id=self.device_a.id)
        Log._record("auth", "allow", "ok", "device_b01", credential_id=self.device_b.id)
        Log._record("auth", "deny", "invalid_credentials", "ghost", peer="10.0.0.7")
        self.env["iot.auth.throttle"]._register_failure("ghost", "10.0.0.7")
        seen = {
            user: Log.with_user(user).search([]).mapped("username")
            for user in (self.iot_manager, self.other_manager, self.admin)
        }
        self.assertIn("device_a01", seen[self.iot_manager])
        self.assertNotIn("device_b01", seen[self.iot_manager])
        self.assertEqual(seen[self.other_manager], ["device_b01"])
        self.assertNotIn("ghost", seen[self.iot_manager], "company-less: admins only")
        self.assertTrue({"device_a01", "device_b01", "ghost"} <= set(seen[self.admin]))
        self.assertEqual(
            Log.with_user(self.other_manager).read_group(
                [], ["username"], ["username"]
            )[0]["username"],
            "device_b01",
        )
        for manager in (self.iot_manager, self.other_manager):
            with self.assertRaises(AccessError):
                self.env["iot.auth.throttle"].with_user(manager).search_read([])
        self.assertTrue(
            self.env["iot.auth.throttle"].with_user(self.admin).search_count([])
        )
