# License LGPL-3.0 or later (https://www.gnu.org/licenses/lgpl).
"""IoT > Fleet: iot.fleet.dashboard.get_dashboard_data, read as the user."""

from datetime import timedelta

from odoo import fields
from odoo.tests import HttpCase, tagged

from .common import IotCommonCase


@tagged("post_install", "-at_install")
class TestFleetDashboard(IotCommonCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        Device = cls.env["iot.mqtt.device"]
        cls.a_online, _secret = Device._register_device("fa:00:01", name="A online")
        cls.a_stale, _secret = Device._register_device("fa:00:02", name="A stale")
        cls.b_online, _secret = Device._register_device(
            "fb:00:01", name="B online", company=cls.other_company
        )
        cls.b_offline, _secret = Device._register_device(
            "fb:00:02", name="B offline", company=cls.other_company
        )
        cls._set_presence(cls.a_online | cls.b_online, "online")
        cls._set_presence(cls.a_stale, "stale")
        cls._set_presence(cls.b_offline, "offline")
        cls.env["iot.mqtt.fleet"].create(
            [
                {"name": "A fleet", "company_id": cls.company.id},
                {"name": "B fleet", "company_id": cls.other_company.id},
            ]
        )
        now = fields.Datetime.now()
        cls.current = now.replace(second=0, microsecond=0)
        Throughput = cls.env["iot.throughput"].sudo()
        for company, current, previous, old in (
            (cls.company, 7, 11, 13),
            (cls.other_company, 1000, 2000, 3000),
        ):
            Throughput.create(
                [
                    # the minute being counted: a burst right now
                    {
                        "company_id": company.id,
                        "minute": cls.current,
                        "messages": current,
                    },
                    {
                        "company_id": company.id,
                        "minute": cls.current - timedelta(minutes=1),
                        "messages": previous,
                        "dropped": 2,
                    },
                    # older than the hour shown
                    {
                        "company_id": company.id,
                        "minute": cls.current - timedelta(minutes=61),
                        "messages": old,
                    },
                ]
            )
        Log = cls.env["iot.auth.log"].sudo()
        Log._record(
            "auth",
            "deny",
            "invalid_credentials",
            username=cls.a_online.username,
            clientid="a-client",
            credential_id=cls.a_online.credential_id.id,
        )
        Log._record(
            "auth",
            "deny",
            "invalid_credentials",
            username=cls.b_online.username,
            clientid="b-client",
            credential_id=cls.b_online.credential_id.id,
        )
        # refused before the broker sent a username or a client id
        Log._record("rabbitmq", "deny", "bad_request", username=None, clientid=None)
        # a topic check, not a login
        Log._record(
            "acl",
            "deny",
            "topic_denied",
            username=cls.a_online.username,
            action="publish",
            topic="x",
            credential_id=cls.a_online.credential_id.id,
        )

    @classmethod
    def _set_presence(cls, devices, state):
        cls.env.cr.execute(
            "UPDATE iot_mqtt_device SET presence_state = %s, last_message_at = %s"
            " WHERE id IN %s",
            [state, fields.Datetime.now() - timedelta(minutes=2), tuple(devices.ids)],
        )
        devices.invalidate_recordset()

    def _data(self, user):
        Dashboard = self.env["iot.fleet.dashboard"].with_user(user)
        return Dashboard.with_company(user.company_id).get_dashboard_data()

    def test_manager_sees_only_their_company(self):
        data = self._data(self.iot_manager)
        self.assertEqual(
            data["presence"], {"online": 1, "offline": 0, "stale": 1, "unknown": 0}
        )
        self.assertEqual(sum(p["messages"] for p in data["series"]), 7 + 11)
        self.assertEqual(data["dropped_last_hour"], 2)
        self.assertEqual([name for _id, name in data["filters"]["fleets"]], ["A fleet"])
        self.assertEqual(
            data["filters"]["companies"], [[self.company.id, self.company.name]]
        )
        self.assertEqual(
            [
                (login["username"], login["clientid"])
                for login in data["refused_logins"]
            ],
            [(self.a_online.username, "a-client")],
        )
        self.assertEqual(sum(h["count"] for h in data["logins_per_hour"]), 1)

        other = self._data(self.other_manager)
        self.assertEqual(
            other["presence"], {"online": 1, "offline": 1, "stale": 0, "unknown": 0}
        )
        self.assertEqual(sum(p["messages"] for p in other["series"]), 3000)
        self.assertEqual(
            [name for _id, name in other["filters"]["fleets"]], ["B fleet"]
        )
        self.assertEqual(
            [login["clientid"] for login in other["refused_logins"]], ["b-client"]
        )

    def test_manager_of_both_companies_sees_both_when_both_are_selected(self):
        self.iot_manager.company_ids |= self.other_company
        Dashboard = self.env["iot.fleet.dashboard"].with_user(self.iot_manager)
        only_a = Dashboard.with_company(self.company).get_dashboard_data()
        self.assertEqual(sum(only_a["presence"].values()), 2)
        both = Dashboard.with_context(
            allowed_company_ids=[self.company.id, self.other_company.id]
        ).get_dashboard_data()
        self.assertEqual(sum(both["presence"].values()), 4)
        self.assertEqual(sum(p["messages"] for p in both["series"]), 3018)

    def test_current_minute_is_counted_and_marked_partial(self):
        data = self._data(self.iot_manager)
        series = data["series"]
        self.assertEqual(len(series), 60)
        self.assertEqual(series[-1]["minute"], fields.Datetime.to_string(self.current))
        self.assertTrue(series[-1]["partial"])
        self.assertEqual(series[-1]["messages"], 7)
        self.assertEqual(data["messages_this_minute"], 7)
        self.assertEqual(data["messages_last_minute"], 11)
        self.assertEqual(series[-2]["messages"], 11)
        self.assertFalse(any(point["partial"] for point in series[:-1]))
        self.assertEqual(
            series[0]["minute"],
            fields.Datetime.to_string(self.current - timedelta(minutes=59)),
        )

    def test_refused_logins_per_hour_over_a_day(self):
        Log = self.env["iot.auth.log"].sudo()
        Log._record(
            "auth",
            "deny",
            "invalid_credentials",
            username="late",
            credential_id=self.a_stale.credential_id.id,
        )
        # three hours ago, and two days ago (outside the chart)
        self.env.cr.execute(
            "UPDATE iot_auth_log SET create_date = %s WHERE username = 'late'",
            [fields.Datetime.now() - timedelta(hours=3)],
        )
        Log._record(
            "auth",
            "deny",
            "invalid_credentials",
            username="ancient",
            credential_id=self.a_stale.credential_id.id,
        )
        self.env.cr.execute(
            "UPDATE iot_auth_log SET create_date = %s WHERE username = 'ancient'",
            [fields.Datetime.now() - timedelta(days=2)],
        )
        Log.invalidate_model()
        hours = self._data(self.iot_manager)["logins_per_hour"]
        self.assertEqual(len(hours), 24)
        hour_now = fields.Datetime.now().replace(minute=0, second=0, microsecond=0)
        self.assertEqual(hours[-1]["hour"], fields.Datetime.to_string(hour_now))
        by_hour = {h["hour"]: h["count"] for h in hours}
        three_ago = (fields.Datetime.now() - timedelta(hours=3)).replace(
            minute=0, second=0, microsecond=0
        )
        self.assertEqual(by_hour[fields.Datetime.to_string(three_ago)], 1)
        self.assertEqual(sum(by_hour.values()), 2)

    def test_refused_login_without_username_shows_unknown(self):
        """Not "false false": what the broker sent, or "unknown"."""
        admin = self.env.ref("base.user_admin")
        logins = self._data(admin)["refused_logins"]
        anonymous = [
            login for login in logins if login["reason"] == "Malformed request"
        ]
        self.assertEqual(len(anonymous), 1)
        self.assertEqual(anonymous[0]["username"], "unknown")
        self.assertEqual(anonymous[0]["clientid"], "unknown")
        for login in logins:
            self.assertNotIn(False, (login["username"], login["clientid"]))
        # the admin works in the main company: not another company's logins
        self.assertNotIn(
            (self.b_online.username, "b-client"),
            [(login["username"], login["clientid"]) for login in logins],
        )

    def test_device_peers_of_the_users_companies(self):
        Log = self.env["iot.auth.log"].sudo()
        for device, peer in ((self.a_online, "10.0.0.1"), (self.b_online, "10.9.9.9")):
            Log._record(
                "auth",
                "allow",
                "ok",
                username=device.username,
                peer="192.0.2.1",
                credential_id=device.credential_id.id,
            )
            Log._record(
                "auth",
                "allow",
                "ok",
                username=device.username,
                peer=peer,
                credential_id=device.credential_id.id,
            )
        ids = (self.a_online | self.a_stale | self.b_online).ids
        Dashboard = self.env["iot.fleet.dashboard"]
        self.assertEqual(
            Dashboard.with_user(self.iot_manager).get_device_peers(ids),
            {self.a_online.id: "10.0.0.1"},
        )
        self.assertEqual(
            Dashboard.with_user(self.other_manager)
            .with_company(self.other_company)
            .get_device_peers(ids),
            {self.b_online.id: "10.9.9.9"},
        )
        self.assertEqual(Dashboard.with_user(self.iot_user).get_device_peers(ids), {})

    def test_iot_user_gets_no_logins(self):
        data = self._data(self.iot_user)
        self.assertFalse(data["can_see_logins"])
        self.assertEqual(data["refused_logins"], [])
        self.assertEqual(data["presence"]["online"], 1)


@tagged("post_install", "-at_install")
class TestFleetPage(HttpCase):
    """The Fleet page in the browser (static/tests/backend_tours/iot_fleet_tours.js)."""

    def test_fleet_page(self):
        company = self.env.ref("base.main_company")
        Device = self.env["iot.mqtt.device"]
        devices = {}
        for name, hardware_id in (
            ("Alpha Sensor", "fp:00:01"),
            ("Beta Sensor", "fp:00:02"),
            ("Gamma Sensor", "fp:00:03"),
            ("Delta Sensor", "fp:00:04"),
        ):
            devices[name], _secret = Device._register_device(hardware_id, name=name)
        two_minutes_ago = fields.Datetime.now() - timedelta(minutes=2)
        for name, state in (
            ("Alpha Sensor", "online"),
            ("Beta Sensor", "online"),
            ("Gamma Sensor", "offline"),
            ("Delta Sensor", "stale"),
        ):
            self.env.cr.execute(
                "UPDATE iot_mqtt_device SET presence_state = %s, last_message_at = %s"
                " WHERE id = %s",
                [state, two_minutes_ago, devices[name].id],
            )
        now = fields.Datetime.now().replace(second=0, microsecond=0)
        self.env["iot.throughput"].sudo().create(
            [
                {"company_id": company.id, "minute": now, "messages": 7},
                {
                    "company_id": company.id,
                    "minute": now - timedelta(minutes=1),
                    "messages": 11,
                },
            ]
        )
        Log = self.env["iot.auth.log"].sudo()
        Log._record(
            "auth",
            "deny",
            "invalid_credentials",
            username=devices["Alpha Sensor"].username,
            credential_id=devices["Alpha Sensor"].credential_id.id,
        )
        Log._record("rabbitmq", "deny", "bad_request", username=None, clientid=None)
        Log._record(
            "auth",
            "allow",
            "ok",
            username=devices["Alpha Sensor"].username,
            peer="10.1.2.3",
            credential_id=devices["Alpha Sensor"].credential_id.id,
        )
        self.start_tour(
            "/odoo/action-iot_base.iot_fleet_dashboard_action",
            "iot_base_fleet_tour",
            login="admin",
        )
