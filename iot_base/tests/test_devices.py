# License LGPL-3.0 or later (https://www.gnu.org/licenses/lgpl).
import json
import logging
import re
from contextlib import contextmanager
from datetime import datetime, timedelta
from unittest.mock import patch

from psycopg2.errors import UniqueViolation

from odoo import fields
from odoo.exceptions import AccessError, UserError, ValidationError
from odoo.tests import HttpCase, new_test_user, tagged
from odoo.tools import mute_logger

from odoo.addons.bus.tests.common import WebsocketCase
from odoo.addons.iot_base.models.iot_mqtt_device import (
    ProvisioningConflict,
    normalize_hardware_id,
)
from odoo.addons.iot_base.models.iot_mqtt_device_presence import (
    FLEET_CHANNEL,
    PRESENCE_NOTIFICATION,
)
from odoo.addons.iot_base.tools.client_ids import issued_client_id

from .common import IotCommonCase

JSON_TYPE = "application/json; charset=utf-8"


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
        credential, username = device.credential_id, device.username
        device.unlink()
        self.assertFalse(credential.exists())
        self.assertFalse(self._authenticate(username, secret))

    def test_revoked_device_comes_back_only_by_restore(self):
        Device = self.env["iot.mqtt.device"].with_user(self.iot_manager)
        device, secret = Device._register_device("sensor-r")
        device.action_revoke()
        for rotate in (False, True):
            with self.assertRaises(ProvisioningConflict) as caught:
                Device._register_device("SENSOR-R", rotate=rotate)
            self.assertEqual(caught.exception.code, "revoked")
        with self.assertRaises(UserError):
            device.action_rotate_secret()
        self.assertEqual(device.state, "revoked")
        self.assertFalse(self._authenticate(device.username, secret))
        for intruder in (self.iot_user, self.other_manager):
            with self.subTest(intruder=intruder.login), self.assertRaises(AccessError):
                device.with_user(intruder).action_restore()
        action = device.action_restore()
        new_secret = action["context"]["default_secret"]
        self.assertEqual(device.state, "active")
        self.assertTrue(self._authenticate(device.username, new_secret))
        self.assertFalse(self._authenticate(device.username, secret))
        with self.assertRaises(UserError):
            device.action_restore()
        # a credential revoked on its own makes the device revoked as well
        device.credential_id.action_revoke()
        self.assertEqual(device.state, "revoked")
        with self.assertRaises(ProvisioningConflict):
            Device._register_device("sensor-r")
        newest = device.action_restore()["context"]["default_secret"]
        self.assertTrue(self._authenticate(device.username, newest))

    def test_names_are_validated(self):
        Device = self.env["iot.mqtt.device"].with_user(self.iot_manager)
        device, _secret = Device._register_device("sensor-n", name="Boiler")
        fleet = self.env["iot.mqtt.fleet"].with_user(self.iot_manager)
        tag = self.env["iot.mqtt.device.tag"].with_user(self.iot_manager)
        for bad in ("", "   ", "\t", "a\x00b", "a\nb", "a\u202eb", "\ud800", "x" * 129):
            for write in (
                lambda value: device.write({"name": value}),
                lambda value: device.write({"firmware_version": value or " "}),
                lambda value: fleet.create({"name": value or " "}),
                lambda value: tag.create({"name": value or " "}),
            ):
                with (
                    self.subTest(bad=bad),
                    self.assertRaises(ValidationError),
                    self.env.cr.savepoint(),
                ):
                    write(bad)
        device.write({"name": "Boiler ☕ 2", "firmware_version": "v2.0-rc1"})
        self.assertEqual(fleet.create({"name": "x" * 128}).name, "x" * 128)

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

    def test_pattern_never_gives_a_reserved_name(self):
        """``{hardware_id}`` and ``{name}`` must not let a registrar take
        ``odoo_listener_<next company id>``: refused whoever registers (the
        provisioning path runs as sudo), and nothing is created."""
        Device = self.env["iot.mqtt.device"]
        wizard = self.env["iot.mqtt.device.register"].with_user(self.iot_manager)
        for pattern, values in (
            ("{hardware_id}", {"hardware_id": "odoo_listener_99"}),
            ("{name}", {"hardware_id": "sensor-r1", "name": "Odoo Listener 99"}),
        ):
            self.company.iot_device_username_pattern = pattern
            with self.subTest(pattern=pattern):
                with (
                    self.assertRaisesRegex(ValidationError, "Odoo's own"),
                    self.env.cr.savepoint(),
                ):
                    Device.sudo()._provision(values)
                with (
                    self.assertRaisesRegex(ValidationError, "Odoo's own"),
                    self.env.cr.savepoint(),
                ):
                    Device.with_user(self.iot_manager)._register_device(**values)
                registration = wizard.create(
                    {
                        "name": values.get("name", "R"),
                        "hardware_id": values["hardware_id"],
                    }
                )
                with (
                    self.assertRaisesRegex(ValidationError, "Odoo's own"),
                    self.env.cr.savepoint(),
                ):
                    registration.action_register()
        self.assertFalse(
            self.Credentials.with_context(active_test=False).search(
                [("username", "=like", "odoo\\_listener\\_99%")]
            )
        )
        self.assertFalse(Device.search([("hardware_id", "=", "odoo_listener_99")]))

    def test_pattern_never_gives_only_dots(self):
        self.company.iot_device_username_pattern = ".{name}"
        for name in ("!", "..", "-"):
            with (
                self.subTest(name=name),
                self.assertRaisesRegex(ValidationError, "dots only"),
                self.env.cr.savepoint(),
            ):
                self.env["iot.mqtt.device"].sudo()._provision(
                    {"hardware_id": "sensor-d1", "name": name}
                )
        self.company.iot_device_username_pattern = "..{name}"
        with self.assertRaisesRegex(ValidationError, "dots only"):
            self.env["iot.mqtt.device"]._register_device("sensor-d2", name="?")

    def test_device_limit_per_company(self):
        """``iot_base.max_devices_per_company`` counts a company's devices
        (archived too) with one COUNT per batch; other companies are not
        affected."""
        Device = self.env["iot.mqtt.device"]
        existing = Device.with_context(active_test=False).search_count(
            [("company_id", "=", self.company.id)]
        )
        self.env["ir.config_parameter"].sudo().set_param(
            "iot_base.max_devices_per_company", existing + 3
        )
        Device._register_device("limit-1")
        archived, _secret = Device._register_device("limit-2")
        archived.action_revoke()
        with self.assertRaisesRegex(UserError, "at most %s devices" % (existing + 3)):
            Device.create(
                [{"name": f"L{i}", "hardware_id": f"limit-b{i}"} for i in range(2)]
            )
        Device.create([{"name": "L3", "hardware_id": "limit-3"}])
        with self.assertRaisesRegex(UserError, "at most"), self.env.cr.savepoint():
            Device.with_user(self.iot_manager)._register_device("limit-4")
        with self.assertRaisesRegex(UserError, "at most"), self.env.cr.savepoint():
            Device.sudo()._provision({"hardware_id": "limit-5"})
        # another company is not counted against this one
        other = Device.create(
            {
                "name": "O1",
                "hardware_id": "limit-o1",
                "company_id": self.other_company.id,
            }
        )
        # moving a device into the full company is refused too
        with self.assertRaisesRegex(UserError, "at most"), self.env.cr.savepoint():
            other.write({"company_id": self.company.id})

    def test_limits_one_count_per_batch(self):
        """A batch of 20 devices (and their 20 credentials) costs one COUNT
        of devices and one of credentials, not one per record."""
        self.env["ir.config_parameter"].sudo().set_param(
            "iot_base.max_devices_per_company", 100000
        )
        queries = []
        with contextmanager(self._patchExecute)(queries):
            self.env["iot.mqtt.device"].create(
                [{"name": f"C{i}", "hardware_id": f"count-{i}"} for i in range(20)]
            )
        for table in ("iot_mqtt_device", "iot_credentials"):
            counts = [
                q
                for q in queries
                if "GROUP BY company_id" in q and f'FROM "{table}"' in q
            ]
            self.assertEqual(len(counts), 1, (table, counts))

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
        # nor does the wizard bring a revoked device back
        self.env["iot.mqtt.device"].search(
            [("hardware_id", "=", "gate-1")]
        ).action_revoke()
        with self.assertRaises(ProvisioningConflict):
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

    def test_empty_state_points_at_revoked_devices(self):
        """After revoking the only device the list is empty: its help says
        where revoked devices went, by the filter the search view has."""
        action = self.env.ref("iot_base.iot_mqtt_device_action")
        self.assertIn("Revoked", action.help)
        self.assertNotIn("No device yet", action.help)
        search = self.env["iot.mqtt.device"].get_views([(False, "search")])
        arch = search["views"]["search"]["arch"]
        self.assertIn('string="Revoked"', arch)
        self.assertIn("('active', '=', False)", arch)


@tagged("post_install", "-at_install")
class TestPresenceTruth(IotCommonCase):
    """What the user sees must be true (issue 18 point 3): a change in Odoo
    that ends a device's connection shows it offline at once, with the
    reason, on the bus; never "Online" beside "Revoked", never "Stale"."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.Device = cls.env["iot.mqtt.device"]
        cls.Listener = cls.env["iot.listener"]

    def _online_device(self, hardware_id):
        device, _secret = self.Device._register_device(hardware_id)
        now = fields.Datetime.now()
        self.Listener._listener_write(
            {"presence": [(device.id, "online", now, now, now)]}, 120
        )
        self.env.invalidate_all()
        self.assertEqual(device.presence_state, "online")
        return device

    @contextmanager
    def _bus(self):
        sent = []
        bus = type(self.env["bus.bus"])
        with patch.object(bus, "_sendone", lambda _s, *args: sent.append(args)):
            yield sent

    def _assert_offline(self, sent, device, reason):
        self.env.invalidate_all()
        self.assertEqual(device.presence_state, "offline")
        self.assertEqual(device.presence_reason, reason)
        heard = [
            entry
            for target, kind, payload in sent
            if target == (device.company_id, FLEET_CHANNEL)
            and kind == PRESENCE_NOTIFICATION
            for entry in payload["devices"]
            if entry["id"] == device.id
        ]
        self.assertTrue(heard, sent)
        self.assertEqual(heard[-1]["presence_state"], "offline")
        self.assertEqual(heard[-1]["presence_reason"], reason)

    def test_revoking_a_device_shows_it_offline_at_once(self):
        device = self._online_device("cc:00:00:00:00:01")
        with self._bus() as sent:
            device.action_revoke()
        self.assertEqual(device.state, "revoked")
        self._assert_offline(sent, device, "revoked")

    def test_revoking_its_credential_shows_it_offline(self):
        device = self._online_device("cc:00:00:00:00:02")
        with self._bus() as sent:
            device.credential_id.action_revoke()
        self._assert_offline(sent, device, "revoked")
        # restored: the reason no longer holds (offline until it is heard)
        device.action_restore()
        self.env.invalidate_all()
        self.assertEqual(device.presence_state, "offline")
        self.assertFalse(device.presence_reason)

    def test_archiving_the_owner_shows_it_offline(self):
        device = self._online_device("cc:00:00:00:00:03")
        owner = new_test_user(
            self.env, login="presence.owner", groups="base.group_user"
        )
        device.credential_id.sudo().user_id = owner
        with self._bus() as sent:
            owner.active = False
        self._assert_offline(sent, device, "owner_archived")

    def test_deleting_a_device_is_announced(self):
        device = self._online_device("cc:00:00:00:00:04")
        device_id, company = device.id, device.company_id
        with self._bus() as sent:
            device.unlink()
        self.assertIn(
            ((company, FLEET_CHANNEL), PRESENCE_NOTIFICATION),
            [
                (target, kind)
                for target, kind, payload in sent
                if any(d["id"] == device_id for d in payload["devices"])
            ],
        )

    def test_revoked_device_never_turns_online_or_stale(self):
        """What the listener still hears of a revoked device (it read the
        devices before the revocation) does not bring it back online, and
        the stale sweep never makes it stale."""
        device = self._online_device("cc:00:00:00:00:05")
        device.action_revoke()
        now = fields.Datetime.now()
        self.Listener._listener_write(
            {"presence": [(device.id, "online", now, now, now)]}, 120
        )
        later = now + timedelta(seconds=600)
        self.Listener._listener_write({}, 120, now=later)
        self.env.invalidate_all()
        self.assertEqual(device.presence_state, "offline")
        self.assertEqual(device.presence_reason, "revoked")

    def test_revoked_device_left_online_turns_offline_not_stale(self):
        """A device revoked under a version that left it online: the stale
        sweep makes it offline, revoked, never stale."""
        device = self._online_device("cc:00:00:00:00:09")
        device.action_revoke()
        self.env.flush_all()
        self.env.cr.execute(
            "UPDATE iot_mqtt_device SET presence_state = 'online',"
            " presence_reason = NULL WHERE id = %s",
            [device.id],
        )
        later = fields.Datetime.now() + timedelta(seconds=600)
        with self._bus() as sent:
            self.Listener._listener_write({}, 120, now=later)
        self._assert_offline(sent, device, "revoked")

    def test_listener_clears_the_reason_on_the_next_change(self):
        device = self._online_device("cc:00:00:00:00:06")
        settings = self.env["res.config.settings"].create({})
        settings.action_iot_generate_auth_token()
        self.env.invalidate_all()
        self.assertEqual(device.presence_reason, "token_regenerated")
        # the broker was reconfigured: the device is heard again
        now = fields.Datetime.now()
        self.Listener._listener_write(
            {"presence": [(device.id, "online", now, now, now)]}, 120
        )
        self.env.invalidate_all()
        self.assertEqual(device.presence_state, "online")
        self.assertFalse(device.presence_reason)

    def test_new_broker_token_shows_devices_offline(self):
        device = self._online_device("cc:00:00:00:00:07")
        params = self.env["ir.config_parameter"].sudo()
        # devices a broker checks against its own store do not depend on
        # the token: their presence stays as it was
        params.set_param("iot_base.rabbitmq_store_enabled", "True")
        self.env["res.config.settings"].create({}).action_iot_generate_auth_token()
        self.env.invalidate_all()
        self.assertEqual(device.presence_state, "online")
        params.set_param("iot_base.rabbitmq_store_enabled", "False")
        old = params.get_param("iot_base.auth_token")
        settings = self.env["res.config.settings"].create({})
        with self._bus() as sent:
            action = settings.action_iot_generate_auth_token()
        token = params.get_param("iot_base.auth_token")
        self.assertNotEqual(token, old)
        self._assert_offline(sent, device, "token_regenerated")
        # the token is shown once, in a dialog with a copy button
        self.assertEqual(action["target"], "new")
        self.assertEqual(action["context"], {"default_secret": token})
        view = self.env["ir.ui.view"].browse(action["views"][0][0])
        self.assertIn('widget="CopyClipboardChar"', view.arch_db)
        self.assertIn("make run", view.arch_db)
        # the page shows only its end; saving a page opened before the
        # regeneration does not write the old token back
        settings = self.env["res.config.settings"].create({})
        self.assertEqual(settings.iot_auth_token_hint, f"set, ends in …{token[-4:]}")
        page = self.env["res.config.settings"].onchange(
            {}, [], {"company_id": {}, "iot_auth_token_hint": {}}
        )["value"]
        self.assertEqual(page["iot_auth_token_hint"], f"set, ends in …{token[-4:]}")
        stale = self.env["res.config.settings"].create({"iot_auth_token": old})
        stale.execute()
        self.assertEqual(params.get_param("iot_base.auth_token"), token)

    def test_token_dialog_says_what_breaks(self):
        """The confirmation of Generate a New Token says what breaks and how
        make run's broker gets the new one."""
        arch = self.env.ref("iot_base.res_config_settings_view_form").arch_db
        confirm = re.search(
            r'name="action_iot_generate_auth_token"[^>]*confirm="([^"]*)"', arch
        ).group(1)
        for words in (
            "old token refuses logins",
            "connected devices are cut off",
            "run make run again",
        ):
            self.assertIn(words, confirm)
        # the token itself is not on the page
        self.assertNotIn('name="iot_auth_token"', arch)


@tagged("post_install", "-at_install")
class TestPresenceTruthWebsocket(WebsocketCase):
    """The revocation reaches an open page through Odoo's bus, on the
    websocket a manager's Fleet page or device list holds."""

    def test_revoke_is_heard_on_the_open_websocket(self):
        manager = new_test_user(
            self.env,
            login="presence.truth.manager",
            groups="base.group_user,iot_base.iot_base_group_manager",
        )
        device, _secret = self.env["iot.mqtt.device"]._register_device(
            "cc:00:00:00:00:10"
        )
        now = fields.Datetime.now()
        self.env["iot.listener"]._listener_write(
            {"presence": [(device.id, "online", now, now, now)]}, 120
        )
        session = self.authenticate(manager.login, manager.login)
        websocket = self.websocket_connect(cookie=f"session_id={session.sid}")
        self.subscribe(websocket, [], self.env["bus.bus"]._bus_last_id())
        device.with_user(manager).action_revoke()
        channel = (device.company_id, FLEET_CHANNEL)
        self.trigger_notification_dispatching([channel])
        heard = [
            entry
            for notification in json.loads(websocket.recv())
            if notification["message"]["type"] == PRESENCE_NOTIFICATION
            for entry in notification["message"]["payload"]["devices"]
        ]
        self.assertIn(
            {
                "id": device.id,
                "presence_state": "offline",
                "presence_reason": "revoked",
            },
            [
                {k: entry[k] for k in ("id", "presence_state", "presence_reason")}
                for entry in heard
            ],
        )


@tagged("post_install", "-at_install")
class TestProvisioningApi(HttpCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.other_company = cls.env["res.company"].create({"name": "Prov Other Co"})
        cls.manager = new_test_user(
            cls.env,
            login="prov.manager",
            groups="base.group_user,iot_base.iot_base_group_manager",
        )
        cls.other_manager = new_test_user(
            cls.env,
            login="prov.other.manager",
            groups="base.group_user,iot_base.iot_base_group_manager",
            company_id=cls.other_company.id,
            company_ids=[cls.other_company.id],
        )
        cls.user = new_test_user(
            cls.env,
            login="prov.user",
            groups="base.group_user,iot_base.iot_base_group_user",
        )
        cls.manager_key = cls._api_key(cls.manager)
        cls.other_manager_key = cls._api_key(cls.other_manager)
        cls.user_key = cls._api_key(cls.user)

    @classmethod
    def _api_key(cls, user, expiration_date=None):
        return (
            cls.env["res.users.apikeys"]
            .with_user(user)
            .sudo()
            ._generate("rpc", "provisioning", expiration_date)
        )

    def _call(self, method, path, body=None, key=None, content_type=None):
        headers = {"Content-Type": content_type or "application/json"}
        if key is not False:
            headers["Authorization"] = f"Bearer {key or self.manager_key}"
        data = (
            body if isinstance(body, bytes | str) or body is None else json.dumps(body)
        )
        return self.opener.request(
            method, self.base_url() + path, data=data, headers=headers, timeout=30
        )

    def _assert_error(self, response, status, code=None):
        self.assertEqual(response.status_code, status, response.text)
        self.assertEqual(response.headers["Content-Type"], JSON_TYPE)
        reply = response.json()
        self.assertTrue(reply["error"])
        if code:
            self.assertEqual(reply["code"], code)
        return reply

    def _devices(self, hardware_id):
        return (
            self.env["iot.mqtt.device"]
            .with_context(active_test=False)
            .search([("hardware_id", "=", hardware_id)])
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
        # the client id comes with the secret, derived from it
        self.assertEqual(
            reply["client_id"], issued_client_id(reply["username"], reply["password"])
        )
        self.assertTrue(reply["client_id"].startswith(reply["username"] + "~"))
        self.assertEqual(set(reply["topics"]), {"telemetry", "status", "commands"})
        self.assertEqual(set(reply["broker"]), {"host", "port", "tls", "websocket_url"})
        self.assertEqual(response.headers["Cache-Control"], "no-store")
        device = self.env["iot.mqtt.device"].browse(reply["device_id"])
        self.assertEqual(device.company_id, self.manager.company_id)
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
        self._assert_error(
            self._call("DELETE", "/iot/provision/devices/unknown-hw"), 404, "not_found"
        )

    def test_reserved_username_is_refused(self):
        """Provisioning ``odoo_listener_99`` under a ``{hardware_id}``
        pattern would take the listener name of company 99: a JSON 400, and
        nothing is made."""
        self.manager.company_id.iot_device_username_pattern = "{hardware_id}"
        for body in (
            {"hardware_id": "odoo_listener_99"},
            {"hardware_id": "ODOO_LISTENER_99", "name": "x"},
        ):
            reply = self._assert_error(
                self._call("POST", "/iot/provision/devices", body), 400, "invalid"
            )
            self.assertIn("Odoo's own", reply["error"])
        self.assertFalse(self._devices("odoo_listener_99"))
        self.assertFalse(
            self.env["iot.credentials"]
            .with_context(active_test=False)
            .search([("username", "=like", "odoo%listener%99%")])
        )
        self.manager.company_id.iot_device_username_pattern = ".{name}"
        reply = self._assert_error(
            self._call(
                "POST", "/iot/provision/devices", {"hardware_id": "dots-1", "name": "!"}
            ),
            400,
            "invalid",
        )
        self.assertIn("dots only", reply["error"])

    def test_device_limit_is_json(self):
        company = self.manager.company_id
        count = (
            self.env["iot.mqtt.device"]
            .with_context(active_test=False)
            .search_count([("company_id", "=", company.id)])
        )
        self.env["ir.config_parameter"].sudo().set_param(
            "iot_base.max_devices_per_company", count + 1
        )
        first = self._call("POST", "/iot/provision/devices", {"hardware_id": "lim-1"})
        self.assertEqual(first.status_code, 201, first.text)
        reply = self._assert_error(
            self._call("POST", "/iot/provision/devices", {"hardware_id": "lim-2"}),
            422,
            "refused",
        )
        self.assertIn(f"at most {count + 1} devices", reply["error"])
        self.assertFalse(self._devices("lim-2"))
        # idempotent registration of an existing device still answers
        again = self._call("POST", "/iot/provision/devices", {"hardware_id": "lim-1"})
        self.assertEqual(again.status_code, 200, again.text)
        # the credential limit too
        self.env["ir.config_parameter"].sudo().set_param(
            "iot_base.max_devices_per_company", 0
        )
        credentials = (
            self.env["iot.credentials"]
            .with_context(active_test=False)
            .search_count([("company_id", "=", company.id)])
        )
        self.env["ir.config_parameter"].sudo().set_param(
            "iot_base.max_credentials_per_company", credentials
        )
        reply = self._assert_error(
            self._call("POST", "/iot/provision/devices", {"hardware_id": "lim-3"}),
            422,
            "refused",
        )
        self.assertIn(f"at most {credentials} MQTT credentials", reply["error"])
        self.assertFalse(self._devices("lim-3"))

    def test_revoked_device_is_not_brought_back(self):
        body = {"hardware_id": "rev-1", "name": "Gate"}
        first = self._call("POST", "/iot/provision/devices", body).json()
        self._call("DELETE", "/iot/provision/devices/rev-1")
        device = self._devices("rev-1")
        Secrets = self.env["iot.credentials.secret"].sudo()
        issued = Secrets.search_count([("credential_id", "=", device.credential_id.id)])
        for again in (body, dict(body, rotate=True)):
            with self.subTest(body=again):
                reply = self._assert_error(
                    self._call("POST", "/iot/provision/devices", again), 409, "revoked"
                )
                self.assertNotIn("password", reply)
                self.assertEqual(device.state, "revoked")
                self.assertFalse(device.credential_id.active)
        self.assertEqual(
            Secrets.search_count([("credential_id", "=", device.credential_id.id)]),
            issued,
            "no secret issued for a revoked device",
        )
        self.assertFalse(
            self.env["iot.credentials"]._authenticate(
                first["username"], first["password"]
            )
        )
        # the manager's explicit action brings it back, with a new secret
        action = device.with_user(self.manager).action_restore()
        self.assertTrue(
            self.env["iot.credentials"]._authenticate(
                first["username"], action["context"]["default_secret"]
            )
        )
        again = self._call("POST", "/iot/provision/devices", body)
        self.assertEqual(again.status_code, 200, again.text)
        self.assertIsNone(again.json()["password"])

    def test_names_are_validated(self):
        fleets = self.env["iot.mqtt.fleet"].search_count([])
        tags = self.env["iot.mqtt.device.tag"].search_count([])
        for field in ("name", "fleet", "firmware_version", "tags"):
            for bad in ("", "  ", "\t", "a\u0000b", "a\nb", "\u202e", "x" * 129):
                value = [bad] if field == "tags" else bad
                with self.subTest(field=field, bad=bad[:8]):
                    self._assert_error(
                        self._call(
                            "POST",
                            "/iot/provision/devices",
                            {"hardware_id": "name-1", "fleet": "Fine", field: value},
                        ),
                        400,
                        "invalid",
                    )
        # a lone surrogate cannot even be stored: refused before the database
        self._assert_error(
            self._call(
                "POST",
                "/iot/provision/devices",
                b'{"hardware_id": "name-1", "name": "\\ud800"}',
            ),
            400,
        )
        self._assert_error(
            self._call(
                "POST",
                "/iot/provision/devices",
                {"hardware_id": "name-1", "tags": ["t"] * 33},
            ),
            400,
        )
        self.assertFalse(self._devices("name-1"))
        self.assertEqual(self.env["iot.mqtt.fleet"].search_count([]), fleets)
        self.assertEqual(self.env["iot.mqtt.device.tag"].search_count([]), tags)
        # names are stored as sent, less surrounding blanks; never truncated
        reply = self._call(
            "POST",
            "/iot/provision/devices",
            {"hardware_id": "name-2", "name": " Pump ☕ ", "fleet": "y" * 128},
        ).json()
        device = self.env["iot.mqtt.device"].browse(reply["device_id"])
        self.assertEqual(device.name, "Pump ☕")
        self.assertEqual(device.fleet_id.name, "y" * 128)

    def test_provision_bad_input(self):
        for body in (
            b"{",
            b"[]",
            b"42",
            b"",
            b"[" * 50000,
            b'{"a":' * 10000,
            {},
            {"hardware_id": 5},
            {"hardware_id": "a b"},
            {"hardware_id": "a\x00b"},
            {"hardware_id": "x1", "tags": "t"},
            {"hardware_id": "x1", "tags": [1]},
            {"hardware_id": "x1", "rotate": "yes"},
            {"hardware_id": "x1", "name": []},
            {"hardware_id": "x1", "colour": "red"},
            b"\xff\xfe",
            b'{"hardware_id": "x1\x00"}',
        ):
            with self.subTest(body=repr(body)[:40]):
                self._assert_error(
                    self._call("POST", "/iot/provision/devices", body), 400
                )
        big = json.dumps({"hardware_id": "x1", "name": "x" * 100000})
        self._assert_error(self._call("POST", "/iot/provision/devices", big), 413)
        self.assertFalse(self._devices("x1"))

    def test_content_type_is_checked(self):
        body = json.dumps({"hardware_id": "ct-1"})
        for content_type in (
            "text/plain",
            "application/x-www-form-urlencoded",
            "multipart/form-data; boundary=x",
            "application/jsonp",
            "text/json",
        ):
            with self.subTest(content_type=content_type):
                self._assert_error(
                    self._call(
                        "POST",
                        "/iot/provision/devices",
                        body,
                        content_type=content_type,
                    ),
                    415,
                    "unsupported_media_type",
                )
        ok = self._call(
            "POST",
            "/iot/provision/devices",
            body,
            content_type="application/json; charset=utf-8",
        )
        self.assertEqual(ok.status_code, 201, ok.text)

    def test_chunked_body_needs_a_length(self):
        def chunks():
            yield b'{"hardware_id":'
            yield b' "chunk-1"}'

        response = self.opener.post(
            self.base_url() + "/iot/provision/devices",
            data=chunks(),
            headers={
                "Authorization": f"Bearer {self.manager_key}",
                "Content-Type": "application/json",
            },
            timeout=30,
        )
        self._assert_error(response, 411, "length_required")
        self.assertFalse(self._devices("chunk-1"))

    def test_every_error_is_json(self):
        expired = self._api_key(self.manager, datetime.now() - timedelta(minutes=1))
        archived = new_test_user(
            self.env,
            login="prov.archived",
            groups="base.group_user,iot_base.iot_base_group_manager",
        )
        archived_key = self._api_key(archived)
        archived.active = False
        body = {"hardware_id": "auth-1"}
        path = "/iot/provision/devices"
        for key in (
            False,
            "nope",
            self.manager_key[:-1] + ("0" if self.manager_key[-1] != "0" else "1"),
            self.manager_key + "\x01",
            expired,
            archived_key,
        ):
            with self.subTest(key=bool(key)):
                response = self._call("POST", path, body, key=key)
                self._assert_error(response, 401, "unauthorized")
                self.assertEqual(response.headers["WWW-Authenticate"], "Bearer")
                self._assert_error(
                    self._call("DELETE", path + "/auth-1", key=key), 401, "unauthorized"
                )
        self._assert_error(
            self._call("POST", path, body, key=self.user_key), 403, "forbidden"
        )
        self.assertFalse(self._devices("auth-1"))
        for method, url in (
            ("GET", path),
            ("PUT", path),
            ("POST", path + "/auth-1"),
            ("GET", path + "/auth-1"),
        ):
            with self.subTest(method=method, url=url):
                response = self._call(method, url, body)
                self._assert_error(response, 405, "method_not_allowed")
                self.assertIn(response.headers["Allow"], ("POST", "DELETE"))
        for url in (
            "/iot/provision",
            "/iot/provision/x",
            path + "/a/b",
            # paths werkzeug's router cannot match, or would redirect
            "/iot/provision/a%0Ab/c",
            path + "/a%0A/b",
            "/iot/provision//devices",
            "/iot/provision//x",
        ):
            with self.subTest(url=url):
                self._assert_error(self._call("POST", url, body), 404, "not_found")

    def test_companies_stay_apart(self):
        reply = self._call(
            "POST", "/iot/provision/devices", {"hardware_id": "co-1", "fleet": "F"}
        ).json()
        device = self.env["iot.mqtt.device"].browse(reply["device_id"])
        self.assertEqual(device.company_id, self.manager.company_id)
        # a manager of another company neither sees nor revokes it ...
        self._assert_error(
            self._call(
                "DELETE", "/iot/provision/devices/co-1", key=self.other_manager_key
            ),
            404,
            "not_found",
        )
        self.assertTrue(device.active)
        # ... and registering the same hardware there makes a device of its own
        other = self._call(
            "POST",
            "/iot/provision/devices",
            {"hardware_id": "co-1", "fleet": "F"},
            key=self.other_manager_key,
        )
        self.assertEqual(other.status_code, 201, other.text)
        other_device = self.env["iot.mqtt.device"].browse(other.json()["device_id"])
        self.assertNotEqual(other_device, device)
        self.assertEqual(other_device.company_id, self.other_company)
        self.assertEqual(other_device.fleet_id.company_id, self.other_company)
        self.assertNotEqual(other_device.fleet_id, device.fleet_id)
        self.assertTrue(
            self.env["iot.credentials"]._authenticate(
                reply["username"], reply["password"]
            )
        )

    @mute_logger("odoo.sql_db")
    def test_concurrent_registration_is_a_conflict(self):
        # as if another request created the fleet between our search and insert
        Fleet = self.registry["iot.mqtt.fleet"]
        with patch.object(Fleet, "create", side_effect=UniqueViolation()):
            response = self._call(
                "POST",
                "/iot/provision/devices",
                {"hardware_id": "race-1", "fleet": "Race"},
            )
        self._assert_error(response, 409, "concurrent")
        self.assertFalse(self._devices("race-1"))
        again = self._call(
            "POST", "/iot/provision/devices", {"hardware_id": "race-1", "fleet": "Race"}
        )
        self.assertEqual(again.status_code, 201, again.text)

    @mute_logger("odoo.http")
    def test_unexpected_failure_is_json(self):
        # a simulated bug: the answer is still JSON, and says nothing of it
        Device = self.registry["iot.mqtt.device"]
        with patch.object(Device, "_provision", side_effect=RuntimeError("boom")):
            response = self._call(
                "POST", "/iot/provision/devices", {"hardware_id": "bug-1"}
            )
        reply = self._assert_error(response, 500, "internal_error")
        self.assertNotIn("boom", response.text)
        self.assertEqual(set(reply), {"error", "code"})

    def test_secret_is_not_logged(self):
        with self.assertLogs(level="DEBUG") as logs:
            reply = self._call(
                "POST", "/iot/provision/devices", {"hardware_id": "log-1"}
            ).json()
            rotated = self._call(
                "POST",
                "/iot/provision/devices",
                {"hardware_id": "log-1", "rotate": True},
            ).json()
            logging.getLogger(__name__).info("provisioned")
        text = "\n".join(logs.output)
        for secret in (reply["password"], rotated["password"], self.manager_key):
            self.assertTrue(secret)
            self.assertNotIn(secret, text)
