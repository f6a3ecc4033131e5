# License LGPL-3.0 or later (https://www.gnu.org/licenses/lgpl).
from odoo.exceptions import AccessError
from odoo.tests import tagged

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
        device.write({"is_superuser": True, "note": "rack 4"})
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
