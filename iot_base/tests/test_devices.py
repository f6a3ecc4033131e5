# License LGPL-3.0 or later (https://www.gnu.org/licenses/lgpl).
import json

from odoo.exceptions import AccessError, ValidationError
from odoo.tests import HttpCase, new_test_user, tagged

from odoo.addons.iot_base.models.iot_mqtt_device import normalize_hardware_id

from .common import IotCommonCase


@tagged("post_install", "-at_install")
class TestDevices(IotCommonCase):
    def test_normalize_hardware_id(self):
        for raw in (
            "AA:BB:CC:DD:EE:FF",
            "aa-bb-cc-dd-ee-ff",
            "aabb.ccdd.eeff",
            " AABBCCDDEEFF ",
        ):
            self.assertEqual(normalize_hardware_id(raw), "aa:bb:cc:dd:ee:ff")
        self.assertEqual(normalize_hardware_id("Sensor-42"), "sensor-42")
        for bad in ("", "a b", "x/y", "#", None, 42, "é"):
            self.assertIsNone(normalize_hardware_id(bad))

    def test_register_is_idempotent(self):
        Device = self.env["iot.mqtt.device"].with_user(self.iot_manager)
        device, secret = Device._register_device("AA:BB:CC:DD:EE:01", name="Boiler")
        self.assertTrue(secret)
        self.assertRegex(device.username, r"^device_[a-z0-9]{8}$")
        self.assertEqual(
            self._authenticate(device.username, secret), device.credential_id
        )
        again, no_secret = Device._register_device(
            "aa-bb-cc-dd-ee-01", firmware_version="1.2"
        )
        self.assertEqual(again, device)
        self.assertIsNone(no_secret, "an existing device keeps its secret, unseen")
        self.assertEqual(device.firmware_version, "1.2")
        self.assertEqual(
            self._authenticate(device.username, secret), device.credential_id
        )
        _same, rotated = Device._register_device("AABBCCDDEE01", rotate=True)
        self.assertTrue(rotated)
        self.assertFalse(self._authenticate(device.username, secret))
        self.assertTrue(self._authenticate(device.username, rotated))
        # the same hardware id in another company is another device
        other, _secret = self.env["iot.mqtt.device"]._register_device(
            "AA:BB:CC:DD:EE:01", company=self.other_company
        )
        self.assertNotEqual(other, device)
        with self.assertRaises(ValidationError):
            Device._register_device("not a mac/or id")

    def test_revoke_archive_delete(self):
        Device = self.env["iot.mqtt.device"].with_user(self.iot_manager)
        device, secret = Device._register_device("sensor-1")
        device.action_revoke()
        self.assertEqual(device.state, "revoked")
        self.assertFalse(self._authenticate(device.username, secret))
        # registering a revoked device again brings it back with a new secret
        back, new_secret = Device._register_device("sensor-1")
        self.assertEqual(back, device)
        self.assertTrue(device.active and device.credential_id.active)
        self.assertTrue(self._authenticate(device.username, new_secret))
        credential, username = device.credential_id, device.username
        device.unlink()
        self.assertFalse(credential.exists())
        self.assertFalse(self._authenticate(username, new_secret))

    def test_username_patterns(self):
        self.company.iot_device_username_pattern = "device:{tenant}:{hardware_id}"
        device, secret = self.env["iot.mqtt.device"]._register_device(
            "AA:BB:CC:00:00:01"
        )
        ns = self.company.iot_mqtt_namespace
        self.assertEqual(device.username, f"device:{ns}:aabbcc000001")
        self.assertTrue(self._authenticate(device.username, secret))
        self.assertEqual(
            device._topics()["commands"],
            f"{ns}/devices/device:{ns}:aabbcc000001/commands",
        )
        self.company.iot_device_username_pattern = "dev/{name}"
        with self.assertRaises(ValidationError):
            self.env["iot.mqtt.device"]._register_device("sensor-2")
        self.company.iot_device_username_pattern = "dev_{nope}"
        with self.assertRaises(ValidationError):
            self.env["iot.mqtt.device"]._register_device("sensor-3")

    def test_device_access(self):
        device, _secret = self.env["iot.mqtt.device"]._register_device("sensor-9")
        with self.assertRaises(AccessError):
            device.with_user(self.iot_user).action_rotate_secret()
        with self.assertRaises(AccessError):
            device.with_user(self.other_manager).read(["name"])
        with self.assertRaises(AccessError):
            self.env["iot.mqtt.device"].with_user(self.internal_user).search([])
        action = device.with_user(self.iot_manager).action_rotate_secret()
        self.assertTrue(
            self._authenticate(device.username, action["context"]["default_secret"])
        )

    def test_register_wizard_shows_secret_once(self):
        wizard = (
            self.env["iot.mqtt.device.register"]
            .with_user(self.iot_manager)
            .create({"name": "Gate", "hardware_id": "gate-1"})
        )
        action = wizard.action_register()
        self.assertEqual(action["res_model"], "iot.credentials.secret.show")
        again = (
            self.env["iot.mqtt.device.register"]
            .with_user(self.iot_manager)
            .create({"name": "Gate", "hardware_id": "GATE-1"})
        )
        with self.assertRaises(ValidationError):
            again.action_register()

    def test_command_wizard_validation(self):
        device, _secret = self.env["iot.mqtt.device"]._register_device("sensor-c")
        Command = self.env["iot.mqtt.command"].with_user(self.iot_manager)
        for vals in ({"command": "a/b"}, {"command": "#"}, {"payload": "{nope"}):
            with (
                self.subTest(vals=vals),
                self.assertRaises(ValidationError),
                self.env.cr.savepoint(),
            ):
                Command.create(dict({"device_ids": [(6, 0, device.ids)]}, **vals))


@tagged("post_install", "-at_install")
class TestProvisioningApi(HttpCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.manager = new_test_user(
            cls.env,
            login="prov.manager",
            groups="base.group_user,iot_base.iot_base_group_manager",
        )
        cls.user = new_test_user(
            cls.env,
            login="prov.user",
            groups="base.group_user,iot_base.iot_base_group_user",
        )
        cls.manager_key = (
            cls.env["res.users.apikeys"]
            .with_user(cls.manager)
            .sudo()
            ._generate(None, "provisioning", None)
        )
        cls.user_key = (
            cls.env["res.users.apikeys"]
            .with_user(cls.user)
            .sudo()
            ._generate(None, "provisioning", None)
        )

    def _call(self, method, path, body=None, key=None):
        headers = {
            "Authorization": f"Bearer {key or self.manager_key}",
            "Content-Type": "application/json",
        }
        data = (
            body if isinstance(body, bytes | str) or body is None else json.dumps(body)
        )
        return self.opener.request(
            method, self.base_url() + path, data=data, headers=headers, timeout=30
        )

    def test_provision_and_revoke(self):
        response = self._call(
            "POST",
            "/iot/provision/devices",
            {
                "hardware_id": "AA:BB:CC:DD:EE:AA",
                "name": "Pump 1",
                "firmware_version": "2.0",
                "fleet": "Pumps",
                "tags": ["basement", "water"],
            },
        )
        self.assertEqual(response.status_code, 201, response.text)
        reply = response.json()
        self.assertEqual(reply["hardware_id"], "aa:bb:cc:dd:ee:aa")
        self.assertTrue(reply["password"])
        self.assertEqual(set(reply["topics"]), {"telemetry", "status", "commands"})
        self.assertEqual(set(reply["broker"]), {"host", "port", "tls", "websocket_url"})
        self.assertEqual(response.headers["Cache-Control"], "no-store")
        device = self.env["iot.mqtt.device"].browse(reply["device_id"])
        self.assertEqual(device.fleet_id.name, "Pumps")
        self.assertEqual(sorted(device.tag_ids.mapped("name")), ["basement", "water"])
        credential = self.env["iot.credentials"]._authenticate(
            reply["username"], reply["password"]
        )
        self.assertEqual(credential, device.credential_id)
        # idempotent: same device, secret not shown again
        again = self._call(
            "POST", "/iot/provision/devices", {"hardware_id": "aabbccddeeaa"}
        )
        self.assertEqual(again.status_code, 200)
        self.assertEqual(again.json()["device_id"], device.id)
        self.assertIsNone(again.json()["password"])
        # revoke
        response = self._call("DELETE", "/iot/provision/devices/AA-BB-CC-DD-EE-AA")
        self.assertEqual(response.status_code, 200, response.text)
        self.assertFalse(device.active)
        self.assertFalse(
            self.env["iot.credentials"]._authenticate(
                reply["username"], reply["password"]
            )
        )
        self.assertEqual(
            self._call("DELETE", "/iot/provision/devices/unknown-hw").status_code, 404
        )

    def test_provision_bad_input(self):
        for body in (
            b"{",
            b"[]",
            b"42",
            {},
            {"hardware_id": 5},
            {"hardware_id": "a b"},
            {"hardware_id": "x1", "tags": "t"},
            {"hardware_id": "x1", "tags": [1]},
            {"hardware_id": "x1", "rotate": "yes"},
            {"hardware_id": "x1", "name": []},
            b"\xff\xfe",
        ):
            with self.subTest(body=repr(body)[:40]):
                response = self._call("POST", "/iot/provision/devices", body)
                self.assertEqual(response.status_code, 400, response.text)
                self.assertIn("error", response.json())
        big = json.dumps({"hardware_id": "x1", "name": "x" * 100000})
        self.assertEqual(
            self._call("POST", "/iot/provision/devices", big).status_code, 413
        )

    def test_provision_auth(self):
        body = {"hardware_id": "x2"}
        self.assertEqual(
            self._call(
                "POST", "/iot/provision/devices", body, key=self.user_key
            ).status_code,
            403,
        )
        self.assertEqual(
            self._call("POST", "/iot/provision/devices", body, key="nope").status_code,
            401,
        )
        self.assertFalse(
            self.env["iot.mqtt.device"].search([("hardware_id", "=", "x2")])
        )
