# License LGPL-3.0 or later (https://www.gnu.org/licenses/lgpl).
"""A neutralized copy (``odoo-bin neutralize``) drives no production broker."""

import os
import tempfile

from odoo.modules.neutralize import get_neutralization_queries
from odoo.tests import tagged
from odoo.tools import mute_logger

from odoo.addons.iot_base.models import iot_broker_api as apis
from odoo.addons.iot_base.models.mosquitto import iot_mosquitto_sync as mosq

from .common import IotCommonCase
from .test_broker_session import EmqxContractServer


@tagged("post_install", "-at_install")
class TestNeutralize(IotCommonCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.registry.enter_test_mode(cls.cr)
        cls.addClassCleanup(cls.registry.leave_test_mode)
        cls.emqx = EmqxContractServer("key", "secret").start()
        cls.addClassCleanup(cls.emqx.stop)

    def _configure(self, directory):
        params = self.env["ir.config_parameter"].sudo()
        values = {
            mosq.ENABLED_PARAM: "True",
            mosq.PASSWORD_FILE_PARAM: os.path.join(directory, "passwd"),
            mosq.ACL_FILE_PARAM: os.path.join(directory, "acl"),
            mosq.PID_FILE_PARAM: os.path.join(directory, "mosquitto.pid"),
            "iot_base.auth_token": "production-token",
            apis.RABBITMQ_URL_PARAM: "http://rabbit.example.com:15672",
            apis.RABBITMQ_USER_PARAM: "iot_base/odoo",
            apis.RABBITMQ_PASSWORD_PARAM: "rabbit-pw",
            apis.EMQX_URL_PARAM: self.emqx.url,
            apis.EMQX_KEY_PARAM: "key",
            apis.EMQX_SECRET_PARAM: "secret",
            "iot_base.publisher_secret_version": "1",
            # secrets a later version may add: cleared by their key's pattern
            "iot_base.jwt_signing_key": "k",
            "iot_base.mqtt_password": "p",
            "iot_base.some_private_key": "k",
        }
        for key, value in values.items():
            params.set_param(key, value)
        return values

    def _neutralize(self):
        self.env.flush_all()
        queries = list(get_neutralization_queries(["iot_base"]))
        self.assertEqual(len(queries), 1)
        self.env.cr.execute(queries[0])
        self.env.invalidate_all()
        self.env.registry.clear_cache()  # get_param's ormcache

    def test_settings_cleared(self):
        with tempfile.TemporaryDirectory() as directory:
            values = self._configure(directory)
            self._neutralize()
        params = self.env["ir.config_parameter"].sudo()
        for key in set(values) - {
            mosq.ENABLED_PARAM,
            mosq.PASSWORD_FILE_PARAM,
            mosq.ACL_FILE_PARAM,
            apis.RABBITMQ_USER_PARAM,
            "iot_base.publisher_secret_version",
        }:
            self.assertFalse(params.get_param(key), key)
        self.assertEqual(params.get_param(mosq.ENABLED_PARAM), "False")
        self.assertEqual(params.get_param("database.is_neutralized"), "true")
        # Odoo's own MQTT client gets a secret production never accepts
        version = params.get_param("iot_base.publisher_secret_version")
        self.assertTrue(version.startswith("neutralized-"), version)
        # settings that are not secrets stay
        self.assertEqual(
            params.get_param("iot_base.mqtt_broker_url"), "ws://localhost:8083/mqtt"
        )

    def test_claims_revoked(self):
        claim = (
            self.env["iot.provisioning.claim"]
            .sudo()
            .create({"name": "factory line 1", "company_id": self.company.id})
        )
        claim.action_new_secret()
        self.assertEqual(claim.state, "active")
        self._neutralize()
        self.assertEqual(claim.state, "revoked")
        self.assertTrue(claim.revoked_at)

    def test_sync_and_cutoff_do_nothing(self):
        with tempfile.TemporaryDirectory() as directory:
            values = self._configure(directory)
            self._neutralize()
            # even switched on again, the engines refuse
            params = self.env["ir.config_parameter"].sudo()
            for key in (
                mosq.ENABLED_PARAM,
                mosq.PID_FILE_PARAM,
                apis.EMQX_URL_PARAM,
                apis.EMQX_KEY_PARAM,
                apis.EMQX_SECRET_PARAM,
            ):
                params.set_param(key, values[key])
            postcommit = self.env.cr.postcommit
            postcommit.clear()
            device, _secret = self._device_with_secret("device_neutral01")
            self.emqx.clients["c1"] = "device_neutral01"
            device.action_revoke()
            self.assertFalse(postcommit._funcs, "no sync, no cut-off queued")
            with mute_logger("odoo.addons.iot_base.models.iot_store_adapter"):
                result = mosq.run_sync(self.env.cr.dbname, force=True)
            self.assertFalse(result["ok"])
            self.assertIn("neutralized", result["error"])
            self.assertEqual(os.listdir(directory), [], "no file written")
            cut = self.env["iot.broker.session"]._cutoff(
                {"check": {device.id: {"device_neutral01"}}}
            )
            self.assertEqual(cut, {"ok": True, "skipped": "neutralized"})
            self.assertEqual(self.emqx.requests, [])
            self.assertEqual(self.emqx.clients, {"c1": "device_neutral01"})
