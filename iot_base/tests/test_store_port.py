# License LGPL-3.0 or later (https://www.gnu.org/licenses/lgpl).
"""The store port (``iot.store.adapter``): every adapter the engine runs sits
on it and provides what it declares; the port's own methods work the same
for every store."""

import inspect

from odoo.tests import TransactionCase, tagged

from ..models import iot_store_sync as engine
from ..tools.settings import NEUTRALIZED_PARAM

PORT = "iot.store.adapter"


def _declared(model_class, name):
    """The class of the MRO of ``model_class`` that defines ``name``."""
    for klass in model_class.__mro__:
        if name in vars(klass):
            return klass
    return None


def _abstract(model_class):
    """Methods of ``model_class`` whose body only raises NotImplementedError."""
    names = []
    for name, member in inspect.getmembers(model_class, inspect.isfunction):
        source = inspect.getsource(member)
        if source.rstrip().endswith("raise NotImplementedError"):
            names.append(name)
    return names


@tagged("post_install", "-at_install")
class TestStorePort(TransactionCase):
    def test_every_adapter_sits_on_the_port(self):
        self.assertEqual(
            set(self.env["iot.store.sync"]._store_models().values()),
            set(engine.ADAPTERS.values()),
        )
        port_methods = _abstract(type(self.env[PORT]))
        self.assertIn("_store_sync", port_methods)
        self.assertIn("_summary_parts", port_methods)
        for key, model in engine.ADAPTERS.items():
            with self.subTest(model=model):
                adapter = self.env[model]
                bases = {getattr(c, "_name", None) for c in type(adapter).__mro__}
                self.assertIn(PORT, bases)
                self.assertEqual(adapter._store_key, key)
                self.assertTrue(adapter._enabled_param)
                # nothing the port (or an intermediate base) leaves to the
                # broker stays unimplemented
                self.assertEqual(_abstract(type(adapter)), [], model)

    def test_port_methods_are_declared_once(self):
        """What the engine calls is defined on the port (adapters may
        override it, not invent it) and no adapter redefines the port's
        generic methods."""
        port_class = type(self.env[PORT])
        for name in ("_store_enabled", "_store_sync", "_last_result", "_summary"):
            self.assertTrue(hasattr(port_class, name), name)
        for model in engine.ADAPTERS.values():
            model_class = type(self.env[model])
            for name in (
                "_store_enabled",
                "_is_enabled",
                "_last_result",
                "_log_result",
                "_summary",
                "_sync",
            ):
                with self.subTest(model=model, method=name):
                    owner = _declared(model_class, name)
                    self.assertEqual(owner._name, PORT)

    def test_enabled_and_neutralized(self):
        params = self.env["ir.config_parameter"].sudo()
        for model in engine.ADAPTERS.values():
            with self.subTest(model=model):
                adapter = self.env[model]
                params.set_param(adapter._enabled_param, "False")
                self.assertFalse(adapter._store_enabled())
                self.assertFalse(adapter._is_enabled())
                self.assertNotIn(model, self.env["iot.store.sync"]._enabled_adapters())
                params.set_param(adapter._enabled_param, "True")
                self.assertTrue(adapter._store_enabled())
                self.assertTrue(adapter._is_enabled())
                self.assertIn(model, self.env["iot.store.sync"]._enabled_adapters())
                params.set_param(NEUTRALIZED_PARAM, "True")
                self.assertTrue(adapter._store_enabled(), "still switched on")
                self.assertFalse(adapter._is_enabled(), "but not on a copy")
                params.set_param(NEUTRALIZED_PARAM, "False")
                params.set_param(adapter._enabled_param, "False")

    def test_run_through_the_port(self):
        """``_sync`` runs one store through the engine: a neutralized
        database records the refusal as the store's last result, and the
        port's summary shows it."""
        params = self.env["ir.config_parameter"].sudo()
        params.set_param(NEUTRALIZED_PARAM, "True")
        for model in engine.ADAPTERS.values():
            with self.subTest(model=model):
                adapter = self.env[model]
                with self.assertLogs(
                    "odoo.addons.iot_base.models.iot_store_adapter", "WARNING"
                ) as logs:
                    result = adapter._sync(force=True)
                self.assertFalse(result["ok"])
                self.assertIn("neutralized", result["error"])
                self.assertIn(f"{adapter._store_key} store sync failed", logs.output[0])
                self.assertEqual(adapter._last_result()["error"], result["error"])
                self.assertEqual(adapter._summary(result), f"Error: {result['error']}")
                run = self.env["iot.store.sync.run"].sudo()._last(adapter._store_key)
                self.assertFalse(run.ok)
