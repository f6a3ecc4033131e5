# License LGPL-3.0 or later (https://www.gnu.org/licenses/lgpl).
"""A presence badge changes live in the browser (Odoo's bus), then the Fleet
dashboard counts the device: a tour against the listener and a real
Mosquitto 2.0."""

import threading
from unittest.mock import patch

from odoo import api
from odoo.tests import HttpCase, new_test_user, tagged

from odoo.addons.bus.models.bus import channel_with_db, dispatch, hashable
from odoo.addons.bus.websocket import WebsocketConnectionHandler
from odoo.addons.iot_base.models.iot_mqtt_device_presence import FLEET_CHANNEL

from .common import start_synced_mosquitto
from .listener_common import ListenerMixin


@tagged("post_install", "-at_install")
class TestListenerTour(ListenerMixin, HttpCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        # Odoo refuses websockets during tests unless told (bus/tests/common.py)
        cls.startClassPatcher(
            patch.object(
                WebsocketConnectionHandler, "websocket_allowed", return_value=True
            )
        )
        cls._sync_stores_at_once()
        cls.broker = start_synced_mosquitto(cls)
        cls.mqtt_port = cls.broker.port
        params = cls.env["ir.config_parameter"].sudo()
        params.set_param("iot_base.mqtt_host", cls.broker.host)
        params.set_param("iot_base.mqtt_port", str(cls.broker.port))
        cls.company = cls.env.ref("base.main_company")
        cls.ns = cls.company.iot_mqtt_namespace
        cls.sensor, cls.sensor_secret = cls.env["iot.mqtt.device"]._register_device(
            "dd:00:00:00:00:01", name="Tour Sensor"
        )
        new_test_user(
            cls.env,
            login="tour.iot.manager",
            groups="base.group_user,iot_base.iot_base_group_manager",
        )

    def _dispatch(self, changes):
        """What NOTIFY imbus does after a real commit (tests never commit):
        wake the websockets of the companies' fleet channels."""
        channels = {
            hashable(channel_with_db(self.env.cr.dbname, (company, FLEET_CHANNEL)))
            for company in self.env["res.company"].browse({c[1] for c in changes})
        }
        for channel in channels:
            for websocket in list(dispatch._channels_to_ws.get(channel, ())):
                websocket.trigger_notification_dispatching()

    def test_badge_changes_live(self):
        self._start_listener(on_flush=self._dispatch)
        sensor = self._device_client(self.sensor.username, self.sensor_secret)
        page_ready = threading.Event()
        original = type(self.env["iot.mqtt.device"]).get_fleet_dashboard

        @api.model
        def dashboard(model):
            page_ready.set()
            return original(model)

        def go_online():
            if page_ready.wait(60):
                sensor.publish(sensor.status_topic, "online", qos=1, retain=True)

        publisher = threading.Thread(target=go_online, daemon=True)
        with patch.object(
            type(self.env["iot.mqtt.device"]), "get_fleet_dashboard", dashboard
        ):
            publisher.start()
            self.start_tour(
                "/odoo/action-iot_base.iot_mqtt_device_action?view_type=list",
                "iot_base_presence_tour",
                login="tour.iot.manager",
            )
        publisher.join(5)
        self.assertTrue(page_ready.is_set())
        self.assertEqual(self._presence(self.sensor), "online")
