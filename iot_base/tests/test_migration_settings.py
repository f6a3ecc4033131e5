# License LGPL-3.0 or later (https://www.gnu.org/licenses/lgpl).
"""The 18.0.2.0.0 upgrade of the settings (migrations/18.0.2.0.0/pre-20-settings.py):
console login values named after their broker, one RabbitMQ vhost."""

import importlib.util
import os

from odoo.tests import TransactionCase, tagged
from odoo.tools import mute_logger

MIGRATION = os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
    "migrations",
    "18.0.2.0.0",
    "pre-20-settings.py",
)
LOGGER = "iot_base_migration_settings"


def _load():
    spec = importlib.util.spec_from_file_location(LOGGER, MIGRATION)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@tagged("post_install", "-at_install")
class TestSettingsMigration(TransactionCase):
    def setUp(self):
        super().setUp()
        self.migration = _load()
        self.keys = (
            "iot_base.console_auth",
            "iot_base.rabbitmq_vhost",
            "iot_base.rabbitmq_store_vhost",
            "iot_base.rabbitmq_store_enabled",
        )

    def _state(self, **values):
        """Write the parameters as an 18.0.1 database has them (None: absent)."""
        self.env.cr.execute(
            "DELETE FROM ir_config_parameter WHERE key IN %s", [self.keys]
        )
        for key, value in values.items():
            if value is not None:
                self.env.cr.execute(
                    "INSERT INTO ir_config_parameter (key, value) VALUES (%s, %s)",
                    [f"iot_base.{key}", value],
                )

    def _params(self):
        self.env.cr.execute(
            "SELECT key, value FROM ir_config_parameter WHERE key IN %s", [self.keys]
        )
        return {
            key.removeprefix("iot_base."): value
            for key, value in self.env.cr.fetchall()
        }

    def _migrate(self):
        with mute_logger(LOGGER):
            self.migration.migrate(self.env.cr, "18.0.1.0.0")
        self.env.registry.clear_cache()
        return self._params()

    def test_console_login_named_after_its_broker(self):
        for old, new in (
            ("jwt", "emqx_jwt"),
            ("rabbitmq_jwt", "rabbitmq_jwt"),
            ("secret", "secret"),
            ("emqx_jwt", "emqx_jwt"),
        ):
            with self.subTest(old=old):
                self._state(console_auth=old)
                self.assertEqual(self._migrate(), {"console_auth": new})
        # and the console reads the new value as EMQX tokens
        self._state(console_auth="jwt")
        self._migrate()
        self.assertEqual(self.env["iot.app"]._console_auth(), "emqx_jwt")

    def test_one_vhost(self):
        cases = [
            # (rabbitmq_vhost, rabbitmq_store_vhost, store on) -> rabbitmq_vhost
            ((None, None, None), None),
            (("iot", None, None), "iot"),
            ((None, "devices", "False"), "devices"),
            (("devices", "devices", "True"), "devices"),
            (("iot", "devices", "True"), "devices"),  # the store's users live there
            (("iot", "devices", "False"), "iot"),  # the store was off
            (("iot", "", "True"), "iot"),
        ]
        for (vhost, store_vhost, store_on), expected in cases:
            with self.subTest(vhost=vhost, store_vhost=store_vhost, store_on=store_on):
                self._state(
                    rabbitmq_vhost=vhost,
                    rabbitmq_store_vhost=store_vhost,
                    rabbitmq_store_enabled=store_on,
                )
                params = self._migrate()
                self.assertNotIn("rabbitmq_store_vhost", params)
                self.assertEqual(params.get("rabbitmq_vhost"), expected)
                if store_on is not None:
                    self.assertEqual(params["rabbitmq_store_enabled"], store_on)

    def test_one_vhost_for_every_reader(self):
        """After the upgrade the HTTP backend, the console tokens and the store
        read the same value, and the settings page shows and writes it."""
        self._state(rabbitmq_store_vhost="devices", rabbitmq_store_enabled="True")
        self._migrate()
        self.assertEqual(
            self.env["iot.broker.rabbitmq"]._rabbitmq_vhost_name(), "devices"
        )
        store = self.env["iot.rabbitmq.store"]
        self.assertEqual(store._get_config()["vhost"], "devices")
        settings = self.env["res.config.settings"].create({})
        self.assertEqual(settings.iot_rabbitmq_vhost, "devices")
        settings.iot_rabbitmq_vhost = "other"
        settings.execute()
        self.assertEqual(self._params()["rabbitmq_vhost"], "other")
        self.assertEqual(
            self.env["iot.broker.rabbitmq"]._rabbitmq_vhost_name(), "other"
        )

    def test_new_install_runs_nothing(self):
        self._state(console_auth="jwt")
        self.migration.migrate(self.env.cr, None)
        self.assertEqual(self._params(), {"console_auth": "jwt"})
