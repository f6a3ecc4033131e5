# License LGPL-3.0 or later (https://www.gnu.org/licenses/lgpl).
"""The 18.0.2.0.0 rename of the store engine's cron
(migrations/18.0.2.0.0/pre-10-store-cron.py): an upgraded database keeps its
one cron, with its settings, under the engine's name."""

import importlib.util
import os
from datetime import datetime

from odoo.tests import TransactionCase, tagged

from ..models import iot_store_sync as engine

MIGRATION = os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
    "migrations",
    "18.0.2.0.0",
    "pre-10-store-cron.py",
)
OLD = "ir_cron_mosquitto_sync"
NEW = "ir_cron_store_sync"
SERVER_ACTION = "_ir_actions_server"


def _load():
    spec = importlib.util.spec_from_file_location("iot_base_store_cron", MIGRATION)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@tagged("post_install", "-at_install")
class TestStoreCronMigration(TransactionCase):
    def setUp(self):
        super().setUp()
        self.migration = _load()
        self.cron = self.env.ref(engine.CRON_XMLID)

    def _xmlids(self):
        self.env.cr.execute(
            "SELECT name, model, res_id FROM ir_model_data "
            "WHERE module = 'iot_base' AND name IN %s ORDER BY name",
            [(OLD, OLD + SERVER_ACTION, NEW, NEW + SERVER_ACTION)],
        )
        return self.env.cr.fetchall()

    def _as_in_18_0_1(self):
        """The XML ids as 18.0.1.0.0 made them, and settings an administrator
        changed."""
        self.env.cr.execute(
            "UPDATE ir_model_data SET name = replace(name, %s, %s) "
            "WHERE module = 'iot_base' AND name IN %s",
            [NEW, OLD, (NEW, NEW + SERVER_ACTION)],
        )
        self.env["ir.model.data"].invalidate_model()
        self.env.registry.clear_cache()
        self.cron.write(
            {
                "interval_number": 7,
                "interval_type": "hours",
                "active": False,
                "nextcall": datetime(2031, 5, 4, 3, 2, 1),
            }
        )

    def _migrate(self, version="18.0.1.0.0"):
        self.migration.migrate(self.env.cr, version)
        self.env["ir.model.data"].invalidate_model()
        self.env.registry.clear_cache()

    def test_cron_renamed_with_its_settings(self):
        self._as_in_18_0_1()
        action = self.cron.ir_actions_server_id
        self.assertIsNone(self.env.ref(engine.CRON_XMLID, raise_if_not_found=False))
        self._migrate()
        self.assertEqual(
            self._xmlids(),
            [
                (NEW, "ir.cron", self.cron.id),
                (NEW + SERVER_ACTION, "ir.actions.server", action.id),
            ],
        )
        cron = self.env.ref(engine.CRON_XMLID).with_context(active_test=False)
        self.assertEqual(cron, self.cron)
        self.assertEqual(
            (cron.interval_number, cron.interval_type, cron.active, cron.nextcall),
            (7, "hours", False, datetime(2031, 5, 4, 3, 2, 1)),
        )
        self.assertEqual(
            self.env["ir.cron"]
            .with_context(active_test=False)
            .search_count([("model_id.model", "=", "iot.store.sync")]),
            1,
            "one cron runs the engine",
        )
        # and the engine wakes that cron
        cron.active = True
        self.env["iot.store.sync"]._schedule_expiry(datetime(2031, 1, 1), False)
        self.assertTrue(
            self.env["ir.cron.trigger"].search(
                [("cron_id", "=", cron.id), ("call_at", "=", "2031-01-01 00:00:01")]
            )
        )

    def test_twice_and_new_install(self):
        before = self._xmlids()
        self._migrate(None)  # a new install: nothing to rename
        self._migrate()  # an 18.0.2 database: already renamed
        self.assertEqual(self._xmlids(), before)
        self._as_in_18_0_1()
        self._migrate(None)
        self.assertEqual([row[0] for row in self._xmlids()], [OLD, OLD + SERVER_ACTION])
