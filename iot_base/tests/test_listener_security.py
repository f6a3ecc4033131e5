# License LGPL-3.0 or later (https://www.gnu.org/licenses/lgpl).
"""What the listener's credential may do, and who sees what it writes."""

import logging
from datetime import timedelta
from unittest.mock import MagicMock, patch

from odoo import fields
from odoo.exceptions import UserError, ValidationError
from odoo.tests import tagged

from odoo.addons.iot_base.models.iot_device_reading_history import HISTORY_CAP_PARAM
from odoo.addons.iot_base.models.iot_listener import LISTENER_RULE_XMLIDS
from odoo.addons.iot_base.models.iot_mqtt_device_presence import FLEET_CHANNEL
from odoo.addons.iot_base.tools import topic_acl

from .common import IotCommonCase
from .listener_common import ListenerMixin


@tagged("post_install", "-at_install")
class TestListenerSecurity(ListenerMixin, IotCommonCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.Listener = cls.env["iot.listener"]
        Device = cls.env["iot.mqtt.device"]
        cls.device, _secret = Device._register_device("bb:00:00:00:00:01")
        cls.other_device, _secret = Device.with_company(
            cls.other_company
        )._register_device("bb:00:00:00:00:02", company=cls.other_company)
        now = fields.Datetime.now()
        cls.Listener._listener_write(
            {
                "presence": [(cls.device.id, "online", now, now, now)],
                "readings": [
                    (cls.device.id, cls.company.id, "t", "21", True, now),
                    (cls.other_device.id, cls.other_company.id, "t", "9", True, now),
                ],
                "history": [
                    (cls.device.id, cls.company.id, "t", "", 21.0, now),
                ],
                "throughput": [
                    (cls.company.id, now.replace(second=0, microsecond=0), 5, 1),
                ],
            },
            heartbeat_timeout=60,
        )
        cls.env.invalidate_all()

    def _rules(self, company):
        credential = self.Listener._listener_credential(company)
        return credential, self.env["iot.acl.rule"]._rules_for(credential)

    def test_listener_credential_rules(self):
        for company in (self.company, self.other_company):
            credential, rules = self._rules(company)
            self.assertEqual(credential.kind, "service")
            self.assertFalse(credential.is_superuser)
            ns = company.iot_mqtt_namespace
            other = (self.company | self.other_company) - company
            other_ns = other.iot_mqtt_namespace
            for topic in (f"{ns}/devices/+/status/#", f"{ns}/devices/+/telemetry/#"):
                self.assertEqual(
                    topic_acl.authorize(rules, "subscribe", topic, 1), "allow"
                )
            for topic in (
                f"{ns}/#",
                f"{ns}/devices/+/commands/#",
                f"{ns}/devices/#",
                f"{ns}/users/+/#",
                f"{other_ns}/devices/+/status/#",
                "#",
            ):
                self.assertEqual(
                    topic_acl.authorize(rules, "subscribe", topic, 1), "deny", topic
                )
            for topic in (f"{ns}/devices/x/status", f"{ns}/devices/x/commands/reboot"):
                self.assertEqual(
                    topic_acl.authorize(rules, "publish", topic, 1), "deny"
                )

    def test_listener_name_cannot_be_squatted(self):
        """A manager cannot take the name of a company's listener credential
        (which would lend it that company's listener rules, or block the
        listener); one taken before the name was reserved is never used."""
        third = self.env["res.company"].create({"name": "Third IoT Co"})
        name = f"odoo_listener_{third.id}"
        manager = self.Credentials.with_user(self.iot_manager)
        for username in (name, "odoo_anything"):
            with self.assertRaises(ValidationError), self.env.cr.savepoint():
                manager.create({"username": username, "kind": "device"})
        device = manager.create({"username": "device_squat01", "kind": "device"})
        with self.assertRaises(ValidationError), self.env.cr.savepoint():
            device.write({"username": name})
        # taken anyway (as it could be before this check): not the listener's
        squatted = self.Credentials._create_odoo_credentials(
            {"username": name, "kind": "device", "company_id": self.company.id}
        )
        self._assert_listener_beside(third, squatted)

    def test_listener_next_company_name_taken(self):
        """``odoo_listener_<next company id>`` taken before the company exists
        (the hole of a username pattern, as superuser here) neither blocks
        nor becomes the new company's listener: the company links a
        credential of its own, under a free name."""
        self.env.cr.execute("SELECT last_value, is_called FROM res_company_id_seq")
        last, called = self.env.cr.fetchone()
        next_id = last + 1 if called else last
        # (made as the hole let anyone before the reservation was checked
        # where usernames are made)
        squatters = self.Credentials.sudo()._create_odoo_credentials(
            [
                {
                    "username": f"odoo_listener_{next_id}",
                    "kind": "service",
                    "company_id": self.company.id,
                },
                {
                    "username": f"odoo_listener_{next_id}_2",
                    "kind": "device",
                    "company_id": self.company.id,
                },
            ]
        )
        self.assertEqual(len(squatters), 2)
        company = self.env["res.company"].create({"name": "Next IoT Co"})
        self.assertEqual(company.id, next_id)
        credential = self._assert_listener_beside(company, squatters)
        self.assertEqual(credential.username, f"odoo_listener_{next_id}_3")
        # linked: found again without any name, even renamed by an admin
        credential.username = "svc_listener_renamed"
        self.assertEqual(self.Listener._listener_credential(company), credential)
        self.assertTrue(self.Listener._listener_login(company))

    def _assert_listener_beside(self, company, squatters):
        """``company``'s listener is a credential of its own, linked from the
        company, with the listener rules; ``squatters`` are left as they
        were, out of the rules."""
        before = [
            (c.username, c.kind, c.company_id, c.write_date, c.secret_count)
            for c in squatters
        ]
        credential = self.Listener._listener_credential(company)
        self.assertTrue(credential)
        self.assertNotIn(credential, squatters)
        self.assertEqual(company.sudo().iot_listener_credential_id, credential)
        self.assertEqual((credential.kind, credential.company_id), ("service", company))
        login = self.Listener._listener_login(company)
        self.assertEqual(login["credential_id"], credential.id)
        self.assertEqual(login["username"], credential.username)
        self.env.invalidate_all()
        self.assertEqual(
            [
                (c.username, c.kind, c.company_id, c.write_date, c.secret_count)
                for c in squatters
            ],
            before,
        )
        for xmlid in LISTENER_RULE_XMLIDS:
            rule_credentials = self.env.ref(xmlid).credential_ids
            self.assertIn(credential, rule_credentials)
            self.assertFalse(squatters & rule_credentials)
        ns = company.iot_mqtt_namespace
        rules = self.env["iot.acl.rule"]._rules_for(credential)
        self.assertEqual(
            topic_acl.authorize(rules, "subscribe", f"{ns}/devices/+/status/#", 1),
            "allow",
        )
        for squatter in squatters:
            rules = self.env["iot.acl.rule"]._rules_for(squatter)
            self.assertEqual(
                topic_acl.authorize(rules, "subscribe", f"{ns}/devices/+/status/#", 1),
                "deny",
            )
        return credential

    def test_listener_rules_apply_to_listeners_only(self):
        service = self.Credentials.create(
            {"username": "svc_other_service", "kind": "service"}
        )
        rules = self.env["iot.acl.rule"]._rules_for(service)
        ns = self.company.iot_mqtt_namespace
        self.assertEqual(
            topic_acl.authorize(rules, "subscribe", f"{ns}/devices/+/status/#", 1),
            "deny",
        )
        credential, _rules = self._rules(self.company)
        with self.assertRaisesRegex(UserError, "revoke it instead"):
            credential.unlink()

    def test_secret_issued_not_logged(self):
        with self.assertLogs("odoo.addons.iot_base", "DEBUG") as logs:
            login = self.Listener._listener_login(self.company)
            # still valid: the same login, no new secret
            self.assertIs(self.Listener._listener_login(self.company, login), login)
        self.assertTrue(login["password"])
        self.assertTrue(login["client_id"].startswith(f"{login['username']}~"))
        for line in logs.output:
            self.assertNotIn(login["password"], line)
        credential = self.Credentials.browse(login["credential_id"])
        self.assertEqual(
            credential._authenticate(credential.username, login["password"]),
            credential,
        )
        # close to its expiry: renewed
        soon = dict(login, expires_at=fields.Datetime.now() + timedelta(hours=1))
        renewed = self.Listener._listener_login(self.company, soon)
        self.assertNotEqual(renewed["password"], login["password"])
        # revoked: no login, the listener skips the company
        credential.action_archive()
        self.assertIsNone(self.Listener._listener_login(self.company))

    def test_managers_see_their_companies_only(self):
        for model in (
            "iot.device.reading",
            "iot.device.reading.history",
            "iot.throughput",
        ):
            other = self.env[model].with_user(self.other_manager)
            mine = self.env[model].with_user(self.iot_manager)
            self.assertFalse(
                other.search([("company_id", "=", self.company.id)]), model
            )
            self.assertTrue(mine.search([("company_id", "=", self.company.id)]), model)
        self.assertEqual(
            self.env["iot.device.reading"]
            .with_user(self.other_manager)
            .search([])
            .device_id,
            self.other_device,
        )
        mine = (
            self.env["iot.mqtt.device"]
            .with_user(self.iot_manager)
            .get_fleet_dashboard()
        )
        other = (
            self.env["iot.mqtt.device"]
            .with_user(self.other_manager)
            .get_fleet_dashboard()
        )
        self.assertGreaterEqual(mine["presence"]["online"], 1)
        self.assertEqual(other["presence"]["online"], 0)
        self.assertEqual(other["presence"]["unknown"], 1)
        self.assertEqual(sum(p["messages"] for p in other["series"]), 0)
        self.assertEqual(mine["dropped_last_hour"], 1)

    def test_dashboard_refused_logins(self):
        log = self.env["iot.auth.log"]
        log._record("auth", "deny", "invalid_credentials", username="device_nobody")
        credential = self._device("device_sec_other", company=self.other_company)
        log._record(
            "auth",
            "deny",
            "invalid_credentials",
            username=credential.username,
            credential_id=credential.id,
        )
        admin = self.env["iot.mqtt.device"].get_fleet_dashboard()
        self.assertIn("device_nobody", [e["username"] for e in admin["refused_logins"]])
        mine = (
            self.env["iot.mqtt.device"]
            .with_user(self.iot_manager)
            .get_fleet_dashboard()
        )
        self.assertNotIn(
            "device_sec_other", [e["username"] for e in mine["refused_logins"]]
        )
        other = (
            self.env["iot.mqtt.device"]
            .with_user(self.other_manager)
            .get_fleet_dashboard()
        )
        self.assertEqual(
            [e["username"] for e in other["refused_logins"]], ["device_sec_other"]
        )
        user = (
            self.env["iot.mqtt.device"].with_user(self.iot_user).get_fleet_dashboard()
        )
        self.assertFalse(user["can_see_logins"])
        self.assertFalse(user["refused_logins"])

    def test_bus_channels_of_allowed_companies(self):
        request = MagicMock()
        request.session.uid = self.other_manager.id
        with patch("odoo.addons.bus.models.ir_websocket.request", request):
            channels = (
                self.env["ir.websocket"]
                .with_user(self.other_manager)
                ._build_bus_channel_list([])
            )
            plain = (
                self.env["ir.websocket"]
                .with_user(self.internal_user)
                ._build_bus_channel_list([])
            )
        fleet = [c for c in channels if isinstance(c, tuple) and c[1] == FLEET_CHANNEL]
        self.assertEqual([c[0] for c in fleet], [self.other_company])
        self.assertFalse(
            [c for c in plain if isinstance(c, tuple) and c[1] == FLEET_CHANNEL]
        )

    def test_stale_sweep_and_notifications(self):
        sent = []
        bus = type(self.env["bus.bus"])
        with patch.object(bus, "_sendone", lambda _s, *args: sent.append(args)):
            later = fields.Datetime.now() + timedelta(seconds=120)
            changes = self.Listener._listener_write({}, 60, now=later)
        self.assertEqual([c[0] for c in changes], [self.device.id])
        self.assertEqual(self.device.presence_state, "stale")
        ((target, kind, payload),) = sent
        self.assertEqual(target, (self.company, FLEET_CHANNEL))
        self.assertEqual(kind, "iot_base.presence")
        self.assertEqual(payload["devices"][0]["presence_state"], "stale")

    def test_history_cap_per_device_and_day(self):
        """Past the daily cap of history rows, a device gets no more that
        day (whatever its topics and keys); another device is unaffected;
        the next day it starts again."""
        self.env["ir.config_parameter"].set_param(HISTORY_CAP_PARAM, "100")
        Device = self.env["iot.mqtt.device"]
        noisy, _secret = Device._register_device("bb:00:00:00:00:0a")
        quiet, _secret = Device.with_company(self.other_company)._register_device(
            "bb:00:00:00:00:0b", company=self.other_company
        )
        day = fields.Datetime.now().replace(hour=1, minute=0, second=0, microsecond=0)

        def write(device, start, count, now, topic="t"):
            self.Listener._listener_write(
                {
                    "history": [
                        (
                            device.id,
                            device.company_id.id,
                            topic,
                            f"k{i % 16}",
                            float(i),
                            now + timedelta(seconds=start + i),
                        )
                        for i in range(count)
                    ]
                },
                heartbeat_timeout=86400,
                now=now,
            )

        def rows(device, since=day):
            return self.env["iot.device.reading.history"].search_count(
                [("device_id", "=", device.id), ("sampled_at", ">=", since)]
            )

        write(noisy, 0, 60, day)
        write(quiet, 0, 30, day)
        self.assertEqual(rows(noisy), 60)
        # (logging.INFO: Odoo names its level 25 "INFO")
        listener_logger = "odoo.addons.iot_base.models.iot_listener"
        with self.assertLogs(listener_logger, logging.INFO) as logs:
            write(noisy, 60, 60, day, topic="u")
        self.assertEqual(rows(noisy), 100)
        self.assertEqual(len(logs.output), 1)
        self.assertIn(f"device {noisy.id} reached its 100 history rows", logs.output[0])
        # full: nothing more today, on any topic, not even a line
        with self.assertNoLogs(listener_logger, logging.INFO):
            write(noisy, 200, 50, day, topic="v")
        self.assertEqual(rows(noisy), 100)
        # an interval already stored takes its later value: no new row
        write(quiet, 0, 30, day)
        write(quiet, 30, 70, day)
        self.assertEqual(rows(quiet), 100)
        # the next UTC day
        tomorrow = day + timedelta(days=1)
        write(noisy, 0, 10, tomorrow)
        self.assertEqual(rows(noisy, tomorrow), 10)
        noisy.invalidate_recordset()
        self.assertEqual(
            (noisy.history_day, noisy.history_day_rows), (tomorrow.date(), 10)
        )

    def test_form_renders_rows_stored_before_the_checks(self):
        """Readings stored before the listener bounded JSON (nested 970 deep,
        a lone-surrogate key, a NUL string) render as text on the device
        form, as the web client reads it: no RecursionError, no 500."""
        now = fields.Datetime.now()
        deep = "[" * 970 + "]" * 970
        payloads = {
            "deep": deep,
            "nested": f'{{"a": {deep}}}',
            "surrogate": '{"\\ud800": 1}',
            "nul": '{"k": "a\\u0000b"}',
            "fine": '{"t": 1}',
        }
        self.Listener._listener_write(
            {
                "readings": [
                    (self.device.id, self.company.id, topic, payload, True, now)
                    for topic, payload in payloads.items()
                ]
            },
            heartbeat_timeout=60,
        )
        values = self._read_form(self.device, self.iot_manager)
        html = {r["topic"]: r["payload_html"] for r in values["reading_ids"]}
        for topic in ("deep", "nested", "surrogate", "nul"):
            self.assertTrue(html[topic].startswith("<code>"), topic)
        self.assertIn("<th>t</th><td>1</td>", html["fine"])

    def test_rows_of_deleted_devices_skipped(self):
        gone, _secret = self.env["iot.mqtt.device"]._register_device(
            "bb:00:00:00:00:09"
        )
        gone_id = gone.id
        gone.unlink()
        now = fields.Datetime.now()
        self.Listener._listener_write(
            {
                "presence": [(gone_id, "online", now, now, now)],
                "readings": [
                    (gone_id, self.company.id, "t", "1", True, now),
                    (self.device.id, self.company.id, "u", "2", True, now),
                ],
                "history": [(gone_id, self.company.id, "t", "", 1.0, now)],
            },
            heartbeat_timeout=60,
        )
        self.env.invalidate_all()
        self.assertFalse(
            self.env["iot.device.reading"].search([("device_id", "=", gone_id)])
        )
        self.assertIn("u", self.device.reading_ids.mapped("topic"))
