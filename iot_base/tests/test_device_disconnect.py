# License LGPL-3.0 or later (https://www.gnu.org/licenses/lgpl).
"""Disconnect (kick) a device without revoking it (issue 18 point 4): its
live connections are closed on the broker now and it may connect again at
once. RabbitMQ 3.10: a real node (tests/brokers/rabbitmq.py); EMQX 5.8: the
contract server of its REST API (test_broker_session.EmqxContractServer);
Mosquitto has no API for it, and the button says so."""

import paho.mqtt.client as mqtt

from odoo.exceptions import AccessError, UserError
from odoo.tests import HttpCase, new_test_user, tagged
from odoo.tools import mute_logger

from odoo.addons.iot_base.models import iot_broker_api as apis
from odoo.addons.iot_base.tools import settings as iot_settings

from .brokers.rabbitmq import RabbitMQBroker
from .common import IotCommonCase, rabbitmq_client
from .test_broker_session import EmqxContractServer

TOKEN = "disconnect-broker-t0ken"
WAIT = 15  # seconds, for anything the broker must do
LOGGER = "odoo.addons.iot_base.models.iot_mqtt_device"


def _manager(env, login, company):
    return new_test_user(
        env,
        login=login,
        groups="base.group_user,iot_base.iot_base_group_manager",
        company_id=company.id,
        company_ids=[(6, 0, company.ids)],
    )


@tagged("post_install", "-at_install", "iot_rabbitmq")
class TestDisconnectRabbitmq(HttpCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        params = cls.env["ir.config_parameter"].sudo()
        params.set_param("iot_base.auth_token", TOKEN)
        cls.company = cls.env.ref("base.main_company")
        cls.broker = RabbitMQBroker(cls.base_url(), TOKEN)
        cls.addClassCleanup(cls.broker.stop)
        cls.broker.start()
        params.set_param(apis.RABBITMQ_URL_PARAM, cls.broker.management_url)
        params.set_param(apis.RABBITMQ_USER_PARAM, cls.broker.management_user)
        params.set_param(apis.RABBITMQ_PASSWORD_PARAM, cls.broker.management_password)
        cls.manager = _manager(cls.env, "disconnect.manager", cls.company)

    def _connect(self, device, secret, expect_rc=0):
        client = rabbitmq_client(self, self.broker, device.username, secret)
        rc = client.connacks.get(timeout=WAIT)
        self.assertEqual(rc.value, expect_rc, f"CONNACK: {rc}")
        return client

    def _published(self, client, device):
        info = client.publish(f"{device.topic_prefix}/status", b"online", qos=1)
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            return False
        try:
            info.wait_for_publish(timeout=3)
        except RuntimeError:  # paho: the connection is gone
            return False
        return info.is_published()

    def test_disconnect_closes_without_revoking(self):
        Device = self.env["iot.mqtt.device"]
        device, secret = Device._register_device("ee:00:00:00:00:01", name="Kicked")
        other, other_secret = Device._register_device("ee:00:00:00:00:02")
        tcp = self._connect(device, secret)
        ws = rabbitmq_client(
            self, self.broker, device.username, secret, transport="websockets"
        )
        self.assertEqual(ws.connacks.get(timeout=WAIT).value, 0)
        bystander = self._connect(other, other_secret)
        self.assertTrue(self._published(tcp, device))
        action = device.with_user(self.manager).action_disconnect()
        self.assertEqual(action["params"]["type"], "success", action)
        self.assertIn("RabbitMQ closed its connections", action["params"]["message"])
        for client in (tcp, ws):
            client.disconnected_at.get(timeout=WAIT)
        self.assertFalse(self._published(tcp, device), "publish after the cut")
        # not revoked: the same secret connects again at once
        self.assertEqual(device.state, "active")
        again = self._connect(device, secret)
        self.assertTrue(self._published(again, device))
        self.assertTrue(self._published(bystander, other))
        self.assertTrue(bystander.disconnected_at.empty())

    def test_only_managers_of_its_company(self):
        Device = self.env["iot.mqtt.device"]
        device, secret = Device._register_device("ee:00:00:00:00:03")
        client = self._connect(device, secret)
        other_company = self.env["res.company"].create({"name": "Disconnect B"})
        outsiders = [
            _manager(self.env, "disconnect.other", other_company),
            new_test_user(
                self.env,
                login="disconnect.user",
                groups="base.group_user,iot_base.iot_base_group_user",
            ),
        ]
        for user in outsiders:
            with self.subTest(user=user.login), self.assertRaises(AccessError):
                device.with_user(user).action_disconnect()
        self.assertTrue(self._published(client, device))
        self.assertTrue(client.disconnected_at.empty())
        # the button is a manager's
        for user, shown in ((outsiders[1], False), (self.manager, True)):
            arch = (
                self.env["iot.mqtt.device"]
                .with_user(user)
                .get_views([(False, "form")])["views"]["form"]["arch"]
            )
            self.assertEqual('name="action_disconnect"' in arch, shown, user.login)


@tagged("post_install", "-at_install", "iot_emqx")
class TestDisconnectEmqxContract(IotCommonCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.emqx = EmqxContractServer("odoo-key", "s3cret-api").start()
        cls.addClassCleanup(cls.emqx.stop)
        cls.params = cls.env["ir.config_parameter"].sudo()
        cls.params.set_param(apis.EMQX_URL_PARAM, cls.emqx.url + "/")
        cls.params.set_param(apis.EMQX_KEY_PARAM, "odoo-key")
        cls.params.set_param(apis.EMQX_SECRET_PARAM, "s3cret-api")

    def setUp(self):
        super().setUp()
        self.emqx.clients.clear()
        self.emqx.requests.clear()
        self.device, _secret = self.env["iot.mqtt.device"]._register_device(
            "ef:00:00:00:00:01", name="Kicked"
        )

    def test_every_client_of_the_device_is_kicked(self):
        username = self.device.username
        self.emqx.clients.update(
            {"dev/1 a": username, "dev-2": username, "other": "device_other"}
        )
        action = self.device.action_disconnect()
        self.assertEqual(action["params"]["type"], "success", action)
        self.assertIn("EMQX disconnected 2 clients", action["params"]["message"])
        self.assertEqual(self.emqx.clients, {"other": "device_other"})
        # the client id is one encoded path segment (tools/broker_api.py)
        self.assertIn(("DELETE", "/api/v5/clients/dev%2F1%20a"), self.emqx.requests)
        self.assertEqual(self.device.state, "active")
        self.assertTrue(self.device.credential_id.secret_ids)

    @mute_logger(LOGGER)
    def test_a_failure_is_said_without_secrets(self):
        self.params.set_param(apis.EMQX_SECRET_PARAM, "wrong-s3cret")
        self.emqx.clients["dev-1"] = self.device.username
        action = self.device.action_disconnect()
        self.assertEqual(action["params"]["type"], "warning")
        message = action["params"]["message"]
        self.assertIn("EMQX failed", message)
        self.assertIn("HTTP 401", message)
        for secret in ("wrong-s3cret", "odoo-key", self.device.username):
            self.assertNotIn(secret, message)
        self.assertEqual(self.emqx.clients, {"dev-1": self.device.username})

    def test_mosquitto_cannot(self):
        """Without a broker API (Mosquitto's case) the button says it cannot,
        and nothing is called."""
        self.params.set_param(apis.EMQX_URL_PARAM, "")
        action = self.device.action_disconnect()
        self.assertEqual(action["params"]["type"], "warning")
        self.assertIn("Mosquitto has no API", action["params"]["message"])
        self.assertEqual(self.emqx.requests, [])

    def test_neutralized_copy_calls_no_broker(self):
        self.params.set_param(iot_settings.NEUTRALIZED_PARAM, "True")
        self.emqx.clients["dev-1"] = self.device.username
        action = self.device.action_disconnect()
        self.assertIn("neutralized", action["params"]["message"])
        self.assertEqual(self.emqx.requests, [])

    def test_revoked_device_is_refused(self):
        self.device.action_revoke()
        with self.assertRaises(UserError):
            self.device.action_disconnect()
