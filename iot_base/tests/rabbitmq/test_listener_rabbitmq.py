# License LGPL-3.0 or later (https://www.gnu.org/licenses/lgpl).
"""The listener against a real RabbitMQ 3.10 node whose logins Odoo checks
(tests/brokers/rabbitmq.py): presence, readings and the Last Will, without shared
subscriptions (RabbitMQ 3.x has none)."""

import json
import time

from odoo.tests import HttpCase, tagged

from ...models import iot_listener
from ..brokers.rabbitmq import RabbitMQBroker
from ..listener_common import SLOW_WAIT, WAIT, ListenerMixin

TOKEN = "listener-rabbit-t0ken"


@tagged("post_install", "-at_install", "iot_rabbitmq")
class TestListenerRabbitmq(ListenerMixin, HttpCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        params = cls.env["ir.config_parameter"].sudo()
        params.set_param("iot_base.auth_token", TOKEN)
        params.set_param(iot_listener.SHARED_GROUP_PARAM, "")
        cls.ns = cls.env.ref("base.main_company").iot_mqtt_namespace
        Device = cls.env["iot.mqtt.device"]
        cls.sensor, cls.sensor_secret = Device._register_device("cc:00:00:00:00:01")
        cls.broker = RabbitMQBroker(cls.base_url(), TOKEN)
        cls.addClassCleanup(cls.broker.stop)
        cls.broker.start()
        cls.mqtt_port = cls.broker.mqtt_port
        params.set_param("iot_base.mqtt_host", "127.0.0.1")
        params.set_param("iot_base.mqtt_port", str(cls.broker.mqtt_port))

    def test_presence_readings_and_will(self):
        listener = self._start_listener()
        connection = listener.connections[self.env.ref("base.main_company").id]
        self.assertEqual(connection.login["username"], "odoo_listener_1")
        self.assertTrue(connection.login["client_id"].startswith("odoo_listener_1~"))
        self.assertEqual(
            [topic for topic, _qos in connection.filters()],
            [f"{self.ns}/devices/+/status/#", f"{self.ns}/devices/+/telemetry/#"],
        )
        sensor = self._device_client(self.sensor.username, self.sensor_secret)
        self._publish(sensor, sensor.status_topic, "online", retain=True)
        self._publish(
            sensor,
            f"{self.ns}/devices/{self.sensor.username}/telemetry/env",
            '{"co2": 450}',
        )
        start = time.monotonic()
        self._wait(lambda: self._presence(self.sensor) == "online", "online")
        self._wait(lambda: self._reading(self.sensor, "env"), "reading")
        self.assertLess(time.monotonic() - start, WAIT)
        self.assertEqual(json.loads(self._reading(self.sensor, "env")[0]), {"co2": 450})
        self._cut(sensor)
        self._wait(
            lambda: self._presence(self.sensor) == "offline",
            "offline by the Last Will",
            SLOW_WAIT,
        )
