# License LGPL-3.0 or later (https://www.gnu.org/licenses/lgpl).
"""Odoo's own MQTT client (paho-mqtt) against a real Mosquitto on loopback."""

import json
import socket
import time

from odoo.exceptions import UserError
from odoo.sql_db import db_connect
from odoo.tests import HttpCase, new_test_user, tagged

from odoo.addons.iot_base.models import iot_mqtt_client

from .brokers.rabbitmq import free_ports
from .common import IotCommonCase, start_publisher_mosquitto, start_synced_mosquitto


@tagged("post_install", "-at_install")
class TestMqttClient(IotCommonCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.broker = start_publisher_mosquitto(cls)
        cls.env["ir.config_parameter"].sudo().set_param("iot_base.mqtt_timeout", "3")
        cls.Device = cls.env["iot.mqtt.device"]
        cls.fleet = cls.env["iot.mqtt.fleet"].create({"name": "Pumps"})
        cls.pump1, cls.pump1_secret = cls.Device._register_device(
            "pump-1", fleet_id=cls.fleet.id
        )
        cls.pump2, cls.pump2_secret = cls.Device._register_device(
            "pump-2", fleet_id=cls.fleet.id
        )
        cls.other, cls.other_secret = cls.Device._register_device("valve-1")
        result = cls.env["iot.mosquitto.sync"]._sync(force=True)
        assert result["ok"], result

    def _subscribed(self, device, secret):
        client, reason = self.broker.client(device.username, secret)
        self.assertFalse(reason.is_failure, reason)
        self.addCleanup(self.broker.close_client, client)
        topic = f"{device._topics()['commands']}/#"
        subacks = []
        client.on_subscribe = lambda _c, _u, _mid, codes, _p: subacks.append(codes)
        info = client.subscribe(topic, qos=1)
        self.assertEqual(info[0], 0)
        deadline = time.monotonic() + 10
        while not subacks and time.monotonic() < deadline:
            time.sleep(0.02)
        self.assertTrue(subacks, f"no SUBACK for {topic}")
        self.assertFalse(any(code.is_failure for code in subacks[0]), subacks)
        return client

    def _wait_for(self, client, count, timeout=5.0):
        deadline = time.monotonic() + timeout
        while len(client.received) < count and time.monotonic() < deadline:
            time.sleep(0.02)
        return client.received

    def test_command_to_device(self):
        listener = self._subscribed(self.pump1, self.pump1_secret)
        wizard = (
            self.env["iot.mqtt.command"]
            .with_user(self.iot_manager)
            .create(
                {
                    "device_ids": [(6, 0, self.pump1.ids)],
                    "command": "reboot",
                    "payload": '{"delay": 5}',
                    "qos": "1",
                }
            )
        )
        action = wizard.action_send()
        self.assertEqual(action["params"]["type"], "success")
        received = self._wait_for(listener, 1)
        self.assertEqual(
            received, [(f"{self.pump1._topics()['commands']}/reboot", b'{"delay": 5}')]
        )

    def test_command_to_fleet(self):
        listeners = [
            self._subscribed(self.pump1, self.pump1_secret),
            self._subscribed(self.pump2, self.pump2_secret),
            self._subscribed(self.other, self.other_secret),
        ]
        wizard = self.env["iot.mqtt.command"].create(
            {
                "fleet_id": self.fleet.id,
                "command": "update",
                "payload": '{"v": "2.1"}',
            }
        )
        wizard.action_send()
        for listener, device in zip(
            listeners[:2], (self.pump1, self.pump2), strict=True
        ):
            received = self._wait_for(listener, 1)
            self.assertEqual(len(received), 1)
            self.assertEqual(received[0][0], f"{device._topics()['commands']}/update")
            self.assertEqual(json.loads(received[0][1]), {"v": "2.1"})
        time.sleep(0.3)
        self.assertEqual(listeners[2].received, [], "valve-1 is not in the fleet")

    def test_test_connection(self):
        self.assertIn(
            str(self.broker.port), self.env["iot.mqtt.client"]._test_connection()
        )

    def test_broker_down_is_a_clear_error(self):
        params = self.env["ir.config_parameter"].sudo()
        params.set_param("iot_base.mqtt_port", str(free_ports(1)[0]))
        with self.assertRaisesRegex(UserError, "Cannot reach the MQTT broker"):
            self.env["iot.mqtt.client"]._send_command(self.pump1, "ping", {})

    def test_silent_broker_gives_up_at_the_timeout(self):
        # accepts TCP connections and never answers: only the timeout ends it
        with socket.socket() as silent:
            silent.bind(("127.0.0.1", 0))
            silent.listen(1)
            params = self.env["ir.config_parameter"].sudo()
            params.set_param("iot_base.mqtt_port", str(silent.getsockname()[1]))
            params.set_param("iot_base.mqtt_timeout", "1")
            start = time.monotonic()
            with self.assertRaisesRegex(UserError, "did not answer within 1.0 seconds"):
                self.env["iot.mqtt.client"]._send_command(self.pump1, "ping", {})
            # a functional bound (the worker is released), not a speed target
            self.assertLess(time.monotonic() - start, 10)

    def test_refused_connection_reports_the_broker_reason(self):
        # a publisher whose hash is not in the broker's file: the broker's
        # own refusal reaches the user
        self.env["ir.config_parameter"].sudo().set_param(
            "iot_base.publisher_secret_version", "2"
        )
        with self.assertRaisesRegex(
            UserError, "refused Odoo's connection: Not authorized"
        ):
            self.env["iot.mqtt.client"]._test_connection()


@tagged("post_install", "-at_install")
class TestPublisherInstalled(IotCommonCase):
    def test_publisher_hash_stored_at_install(self):
        """The broker checks Odoo's first publish from another transaction:
        the hash must be there from the install, not from that publish."""
        self.assertEqual(
            self.Credentials._authenticate(
                "odoo_publisher", self.env["iot.mqtt.client"]._publisher_secret()
            ),
            self.env.ref("iot_base.iot_credentials_odoo_publisher"),
        )


@tagged("post_install", "-at_install")
class TestPublisherSlot(IotCommonCase):
    """Its own class: a transaction-level advisory lock lasts until the
    class's transaction ends, so no other test may have published before."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.broker = start_publisher_mosquitto(cls)

    def test_one_publisher_connection_at_a_time(self):
        """Mosquitto makes the publisher's login its client id: while another
        worker publishes, this one waits (bounded) instead of taking over its
        connection."""
        self.env["ir.config_parameter"].sudo().set_param("iot_base.mqtt_timeout", "0.5")
        other_worker = db_connect(self.env.cr.dbname).cursor()
        self.addCleanup(other_worker.close)
        other_worker.execute(
            "SELECT pg_advisory_xact_lock(%s)", [iot_mqtt_client.PUBLISHER_LOCK_KEY]
        )
        with self.assertRaisesRegex(UserError, "busy"):
            self.env["iot.mqtt.client"]._publish([])
        other_worker.rollback()  # the other worker's transaction ends
        self.env["iot.mqtt.client"]._publish([])


@tagged("post_install", "-at_install")
class TestProvisionedDeviceOnMosquitto(HttpCase):
    """Seed 002's flow end to end: a device provisioned through the API
    connects to Mosquitto after the sync, and is cut off once revoked."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.broker = start_synced_mosquitto(cls)
        manager = new_test_user(
            cls.env,
            login="mosq.prov",
            groups="base.group_user,iot_base.iot_base_group_manager",
        )
        cls.key = (
            cls.env["res.users.apikeys"]
            .with_user(manager)
            .sudo()
            ._generate(None, "prov", None)
        )

    def _call(self, method, path, body=None):
        return self.opener.request(
            method,
            self.base_url() + path,
            data=json.dumps(body) if body is not None else None,
            headers={
                "Authorization": f"Bearer {self.key}",
                "Content-Type": "application/json",
            },
            timeout=30,
        )

    def _sync(self):
        # what the after-commit hook does in production (tests never commit)
        result = self.env["iot.mosquitto.sync"]._sync(force=True)
        self.assertTrue(result["ok"], result)

    def test_provision_connect_revoke(self):
        reply = self._call(
            "POST", "/iot/provision/devices", {"hardware_id": "AA:00:00:00:00:01"}
        )
        self.assertEqual(reply.status_code, 201, reply.text)
        device = reply.json()
        username, secret, topics = (
            device["username"],
            device["password"],
            device["topics"],
        )
        self.assertFalse(
            self.broker.can_connect(username, secret), "not before the sync"
        )
        self._sync()
        for transport in ("tcp", "websockets"):
            self.assertTrue(
                self.broker.wait_connect(username, secret, transport), transport
            )
        self.assertFalse(self.broker.can_connect(username, secret[:-1] + "x"))
        # its telemetry reaches a subscriber (Odoo's own superuser login)
        observer_name, observer_secret = self.env["iot.mqtt.client"]._publisher_login()
        self._sync()
        observer, reason = self.broker.client(observer_name, observer_secret)
        self.addCleanup(self.broker.close_client, observer)
        self.assertFalse(reason.is_failure, reason)
        observer.subscribe(f"{topics['telemetry']}/#", qos=1)
        client, reason = self.broker.client(username, secret)
        self.addCleanup(self.broker.close_client, client)
        self.assertFalse(reason.is_failure, reason)
        deadline = time.monotonic() + 5
        while not observer.received and time.monotonic() < deadline:
            client.publish(f"{topics['telemetry']}/temp", b"21.5", qos=1)
            time.sleep(0.2)
        self.assertIn((f"{topics['telemetry']}/temp", b"21.5"), observer.received)
        # revoked through the API: disconnected at the next sync
        self.assertEqual(
            self._call(
                "DELETE", "/iot/provision/devices/AA:00:00:00:00:01"
            ).status_code,
            200,
        )
        self._sync()
        deadline = time.monotonic() + 5
        while not client.disconnects and time.monotonic() < deadline:
            time.sleep(0.05)
        self.assertEqual(client.disconnects, 1, "revoked device dropped by the reload")
        self.assertFalse(self.broker.can_connect(username, secret))
        self.assertTrue(self.broker.can_connect(observer_name, observer_secret))
