# License LGPL-3.0 or later (https://www.gnu.org/licenses/lgpl).
"""Presence over Odoo's bus, through a real websocket: a user who loses a
company or the IoT group stops hearing its devices' presence at once, on
the websocket already open (issue 16 point 14)."""

import json

from odoo.tests import new_test_user, tagged

from odoo.addons.bus.tests.common import WebsocketCase

from ..models.iot_mqtt_device_presence import FLEET_CHANNEL, PRESENCE_NOTIFICATION

MARKER = "iot_base/test_marker"


@tagged("post_install", "-at_install")
class TestPresenceWebsocket(WebsocketCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.company_a = cls.env.ref("base.main_company")
        cls.company_b = cls.env["res.company"].create({"name": "Presence B"})
        cls.user = new_test_user(
            cls.env,
            login="presence.user",
            groups="base.group_user,iot_base.iot_base_group_user",
            company_id=cls.company_a.id,
            company_ids=[(6, 0, (cls.company_a | cls.company_b).ids)],
        )

    def _open(self):
        session = self.authenticate(self.user.login, self.user.login)
        websocket = self.websocket_connect(cookie=f"session_id={session.sid}")
        self.subscribe(websocket, [], self.env["bus.bus"]._bus_last_id())
        return websocket

    def _heard(self, websocket, company):
        """Send a presence change of ``company``, then a marker to the user:
        whether the presence came before the marker."""
        bus = self.env["bus.bus"]
        channel = (company, FLEET_CHANNEL)
        bus._sendone(channel, PRESENCE_NOTIFICATION, {"devices": [{"id": company.id}]})
        bus._sendone(self.user.partner_id, MARKER, {})
        # one dispatch for both (the websocket's thread shares the test's
        # cursor: nothing else may run while it polls)
        self.trigger_notification_dispatching([channel, self.user.partner_id])
        types = [n["message"]["type"] for n in json.loads(websocket.recv())]
        self.assertIn(MARKER, types)
        return PRESENCE_NOTIFICATION in types

    def test_lost_company_stops_its_presence(self):
        websocket = self._open()
        self.assertTrue(self._heard(websocket, self.company_b))
        self.user.company_ids = [(3, self.company_b.id)]
        self.assertFalse(self._heard(websocket, self.company_b))
        self.assertTrue(self._heard(websocket, self.company_a))

    def test_lost_group_stops_all_presence(self):
        websocket = self._open()
        self.assertTrue(self._heard(websocket, self.company_a))
        self.user.groups_id = [(3, self.env.ref("iot_base.iot_base_group_user").id)]
        self.assertFalse(self.user.has_group("iot_base.iot_base_group_user"))
        self.assertFalse(self._heard(websocket, self.company_a))
        self.assertFalse(self._heard(websocket, self.company_b))
