"""`make run`'s broker follows Odoo: a node configured for another broker
token, Odoo URL or port is told apart (scripts/local_broker.sh restarts it)."""

import os
import tempfile

from odoo.tests import BaseCase, tagged

from ..brokers.rabbitmq import node_matches, rabbitmq_config

URL = "http://127.0.0.1:8069"
PORTS = {"mqtt_port": 1884, "ws_port": 8083, "management_port": 15673}


@tagged("post_install", "-at_install", "iot_rabbitmq")
class TestLocalBroker(BaseCase):
    def setUp(self):
        super().setUp()
        tmp = tempfile.TemporaryDirectory(prefix="iot_local_broker_")
        self.addCleanup(tmp.cleanup)
        self.dir = tmp.name
        with open(os.path.join(self.dir, "rabbitmq.conf"), "w") as conf:
            conf.write(
                rabbitmq_config(
                    URL,
                    "old-token",
                    PORTS["mqtt_port"],
                    PORTS["ws_port"],
                    5999,
                    management_port=PORTS["management_port"],
                    management_password="x",
                )
            )

    def test_same_settings_match(self):
        self.assertTrue(node_matches(self.dir, URL, "old-token", **PORTS))
        self.assertTrue(node_matches(self.dir, URL + "/", "old-token", **PORTS))

    def test_new_token_url_or_port_does_not_match(self):
        self.assertFalse(node_matches(self.dir, URL, "new-token", **PORTS))
        self.assertFalse(node_matches(self.dir, URL, "old-toke", **PORTS))
        other_odoo = "http://127.0.0.1:8070"
        self.assertFalse(node_matches(self.dir, other_odoo, "old-token", **PORTS))
        self.assertFalse(
            node_matches(self.dir, URL, "old-token", **dict(PORTS, mqtt_port=1885))
        )

    def test_no_config_does_not_match(self):
        os.unlink(os.path.join(self.dir, "rabbitmq.conf"))
        self.assertFalse(node_matches(self.dir, URL, "old-token", **PORTS))
