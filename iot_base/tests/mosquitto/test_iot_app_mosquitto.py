# License LGPL-3.0 or later (https://www.gnu.org/licenses/lgpl).
"""The MQTT console (/iot/app) against a real Mosquitto 2.0 that reads the
password and ACL files Odoo writes (tests/brokers/mosquitto.py).

In production the sync runs after commit (``_schedule`` adds a postcommit
hook). An HttpCase never commits, so here ``_schedule`` syncs at once in
the test cursor: the files are written and Mosquitto is SIGHUPed before the
page's response is sent, as after the commit in production.
"""

import threading
from unittest.mock import patch

from odoo.tests import HttpCase, new_test_user, tagged

from ..common import MosquittoClientMixin, start_synced_mosquitto


def _sync_now(self):
    """``iot.store.sync._schedule`` for tests: sync the files in this cursor now."""
    mosquitto = self.env["iot.mosquitto.sync"]
    if mosquitto._is_enabled():
        self.env.flush_all()  # what the commit would have written
        TestIotAppMosquitto.sync_results.append(mosquitto._sync(force=True))


@tagged("post_install", "-at_install", "iot_mosquitto")
class TestIotAppMosquitto(MosquittoClientMixin, HttpCase):
    sync_results = []

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.broker = start_synced_mosquitto(cls)
        params = cls.env["ir.config_parameter"].sudo()
        # Mosquitto 2.0's websockets listener serves MQTT on any path
        params.set_param(
            "iot_base.mqtt_broker_url", f"ws://127.0.0.1:{cls.broker.ws_port}"
        )
        cls.startClassPatcher(
            patch.object(type(cls.env["iot.store.sync"]), "_schedule", _sync_now)
        )
        cls.ns = cls.env.ref("base.main_company").iot_mqtt_namespace
        cls.iot_user = new_test_user(
            cls.env,
            login="console.mosquitto@example.com",
            groups="base.group_user,iot_base.iot_base_group_user",
        )
        cls.device = cls.env["iot.credentials"].create(
            {"username": "device_mosq01", "kind": "device"}
        )
        cls.device_secret = cls.device.action_rotate_secret()["context"][
            "default_secret"
        ]

    def setUp(self):
        super().setUp()
        self.sync_results.clear()
        self.addCleanup(self._check_syncs)

    def _check_syncs(self):
        failed = [r for r in self.sync_results if not r["ok"]]
        self.assertFalse(failed, f"failed syncs: {failed}")

    def _page_config(self):
        """What one more /iot/app tab of the user gets."""
        return self.env["iot.app"].with_user(self.iot_user)._page_config()

    def test_console(self):
        """The page connects (with a per-secret login), gets the message of a
        device that exists only in this broker's files, and its own message
        reaches another client of the user."""
        device = self.connect("device_mosq01", self.device_secret)
        stop = threading.Event()

        def publish():  # a device sending telemetry until the test ends
            while not stop.wait(0.5):
                device.publish(
                    f"{self.ns}/devices/device_mosq01/telemetry/temp",
                    '{"temperature": 21.5}',
                )

        thread = threading.Thread(target=publish, name="iot_mosquitto_device")
        thread.start()
        self.addCleanup(thread.join, 5)
        self.addCleanup(stop.set)
        config = self._page_config()  # the user's other client: a paho one
        listener = self.connect(
            config["credentials"]["username"],
            config["credentials"]["password"],
            client_id=config["client_id"],
        )
        own = config["default_publish_topic"].rsplit("/", 1)[0]
        self.subscribe(listener, f"{own}/#")
        self.start_tour(
            "/iot/app", "iot_app_mosquitto", login=self.iot_user.login, timeout=180
        )
        self.wait_for(lambda: listener.received, "the page's message")
        self.assertEqual(listener.received, [(f"{own}/chat", b"hello mosquitto")])

    def test_two_tabs(self):
        """Two pages: two secrets with two logins, connected at the same time."""
        first, second = self._page_config(), self._page_config()
        logins = [c["credentials"]["username"] for c in (first, second)]
        self.iot_user.invalidate_recordset(["iot_credential_ids"])  # just made
        username = self.iot_user.iot_credential_ids.username
        self.assertNotEqual(logins[0], logins[1])
        for login in logins:
            self.assertRegex(login, rf"^{username}~\d+$")
        # the broker makes the login the client id: the page shows that one
        self.assertEqual([c["client_id"] for c in (first, second)], logins)
        clients = [
            self.connect(
                c["credentials"]["username"],
                c["credentials"]["password"],
                client_id=c["client_id"],
            )
            for c in (first, second)
        ]
        own = first["default_publish_topic"].rsplit("/", 1)[0]
        self.subscribe(clients[1], f"{own}/#")
        clients[0].publish(f"{own}/chat", b"from tab 1", qos=1)
        self.wait_for(lambda: clients[1].received, "tab 1's message in tab 2")
        self.assertEqual(clients[1].received, [(f"{own}/chat", b"from tab 1")])
        self.assertEqual([c.disconnects for c in clients], [0, 0], "no takeover")
