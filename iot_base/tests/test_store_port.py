# License LGPL-3.0 or later (https://www.gnu.org/licenses/lgpl).
"""The store port (``iot.store.adapter``): every adapter the engine runs sits
on it and provides what it declares; the port's own methods work the same
for every store."""

import inspect
from datetime import timedelta

from odoo import fields
from odoo.tests import TransactionCase, new_test_user, tagged
from odoo.tools import SQL

from ..models import iot_store_sync as engine
from ..tools.settings import NEUTRALIZED_PARAM
from ..tools.store_sync import LiveLogin, RuleKey
from .common import IotCommonCase

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


@tagged("post_install", "-at_install")
class TestStoreRows(IotCommonCase):
    """The one query of live secrets (``iot.store.adapter._live_secrets``),
    ``iot.acl.rule`` as the one owner of "which rules a credential gets",
    and the one decision of a secret's login on Mosquitto."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.Rule = cls.env["iot.acl.rule"]
        cls.ops_group = cls.env["res.groups"].create({"name": "IoT ops (port test)"})
        cls.ops_user = new_test_user(
            cls.env,
            login="ops.port@example.com",
            groups="base.group_user,iot_base.iot_base_group_user",
        )
        cls.ops_user.groups_id = [(4, cls.ops_group.id)]
        cls.Rule.create(
            [
                {
                    "name": "port: ops read alarms",
                    "permission": "allow",
                    "action": "subscribe",
                    "topic": "${namespace}/alarms/#",
                    "group_ids": [(6, 0, cls.ops_group.ids)],
                    "company_id": cls.company.id,
                },
                {
                    "name": "port: other company's ops",
                    "permission": "allow",
                    "action": "all",
                    "topic": "${namespace}/other/#",
                    "group_ids": [(6, 0, cls.ops_group.ids)],
                    "company_id": cls.other_company.id,
                },
                {
                    "name": "port: services deny secrets",
                    "permission": "deny",
                    "action": "all",
                    "topic": "secret/#",
                    "credential_kind": "service",
                },
            ]
        )

    def _secret(self, credential, secret_type="long_lived", lifetime=None):
        return credential._issue_secret(secret_type, lifetime).secret_id

    def _rows(self, newest_only=False):
        adapter = self.env["iot.mosquitto.sync"]
        self.env.flush_all()
        self.env.cr.execute(
            SQL(
                "SELECT q.credential_id, q.secret_id, q.newest, %s "
                "FROM (%s) q ORDER BY q.secret_id",
                adapter._login_sql("q"),
                adapter._live_secrets(fields.Datetime.now(), newest_only),
            )
        )
        return self.env.cr.fetchall()

    def test_live_secrets_one_query(self):
        device = self._device("device_port01")
        old = self._secret(device)
        newest = self._secret(device)
        session = self._secret(device, "session", timedelta(hours=1))
        expired = self._secret(device, "long_lived", timedelta(seconds=-1))
        gone = self._device("device_port02")
        self._secret(gone)
        gone.active = False
        rows = [row for row in self._rows() if row[0] == device.id]
        self.assertEqual(
            [(row[1], row[2]) for row in rows],
            [(old, False), (newest, True), (session, False)],
            "every live secret, the newest long-lived one marked",
        )
        self.assertNotIn(expired, [row[1] for row in rows])
        self.assertFalse([row for row in self._rows() if row[0] == gone.id])
        self.assertEqual(
            [row[1] for row in self._rows(newest_only=True) if row[0] == device.id],
            [newest],
        )
        # and the API stores read just that one, with its own hash form
        logins = {
            login.username: login
            for login in self.env["iot.rabbitmq.store"]._live_logins()
        }
        self.assertIsInstance(logins["device_port01"], LiveLogin)
        self.assertEqual(logins["device_port01"].credential_id, device.id)
        self.assertNotIn("device_port02", logins)

    def test_one_login_per_secret(self):
        """Python and SQL say the same login for every secret, whatever the
        Mosquitto switch; only with it on does a secret other than the newest
        long-lived one get ``<username>~<id>``."""
        device = self._device("device_port03")
        older = self._secret(device)
        newest = self._secret(device)
        session = self._secret(device, "session", timedelta(hours=1))
        mosquitto = self.env["iot.mosquitto.sync"]
        params = self.env["ir.config_parameter"].sudo()
        params.set_param(mosquitto._enabled_param, "True")
        sql = {row[1]: row[3] for row in self._rows() if row[0] == device.id}
        self.assertEqual(
            sql,
            {
                older: f"device_port03~{older}",
                newest: "device_port03",
                session: f"device_port03~{session}",
            },
        )
        for secret_id in (older, session):
            self.assertEqual(
                mosquitto._broker_login(device.username, secret_id), sql[secret_id]
            )
        self.assertEqual(mosquitto._broker_login(device.username), sql[newest])
        params.set_param(mosquitto._enabled_param, "False")
        self.assertEqual(
            mosquitto._broker_login(device.username, session), device.username
        )
        # the console's login follows the same decision
        user_credentials = self.iot_user.get_or_create_iot_credentials()
        self.assertEqual(
            self.iot_user._iot_broker_username(user_credentials),
            user_credentials["username"],
        )
        params.set_param(mosquitto._enabled_param, "True")
        self.assertEqual(
            self.iot_user._iot_broker_username(user_credentials),
            f"{user_credentials['username']}~{user_credentials['secret_id']}",
        )

    def test_rules_for_logins_is_rules_for(self):
        """One owner of "which rules a credential gets": the stores' bulk
        reading gives every credential exactly what the broker's hot path
        (``_rules_for``) gives it."""
        credentials = self.Credentials
        for index, (kind, company, user) in enumerate(
            [
                ("device", self.company, None),
                ("device", self.other_company, None),
                ("service", self.company, None),
                ("service", self.other_company, None),
                ("user", self.company, self.ops_user),
                ("user", self.company, self.iot_user),
            ]
        ):
            vals = {
                "username": f"port_{kind}_{index}",
                "kind": kind,
                "company_id": company.id,
            }
            if user:
                vals["user_id"] = user.id
            credential = self.Credentials.create(vals)
            self._secret(credential)
            credentials |= credential
        named = credentials[0]
        self.Rule.create(
            {
                "name": "port: one device",
                "permission": "allow",
                "action": "publish",
                "topic": "named/${username}",
                "credential_ids": [(6, 0, named.ids)],
                "company_id": self.company.id,
            }
        )
        logins = [
            login
            for login in self.env["iot.emqx.store"]._live_logins()
            if login.credential_id in credentials.ids
        ]
        self.assertEqual(len(logins), len(credentials))
        bulk = self.Rule._rules_for_logins(logins)
        checked = 0
        for credential in credentials:
            with self.subTest(credential=credential.username):
                self.assertEqual(bulk[credential.id], self.Rule._rules_for(credential))
                checked += 1
        self.assertEqual(checked, 6)
        topics = {rule.topic for rule in bulk[named.id]}
        self.assertIn(f"named/{named.username}", topics)
        self.assertNotIn(
            f"named/{credentials[1].username}",
            {rule.topic for rule in bulk[credentials[1].id]},
        )
        ops = credentials[4]
        ns = self.company.iot_mqtt_namespace
        self.assertIn(f"{ns}/alarms/#", {rule.topic for rule in bulk[ops.id]})
        self.assertNotIn(
            f"{ns}/alarms/#", {rule.topic for rule in bulk[credentials[5].id]}
        )

    def test_rule_keys_per_company(self):
        """A group or credential named by another company's rule does not
        split a company's credentials (Mosquitto sections, API bulk reads)."""
        groups, _credentials = self.Rule._rule_index()
        self.assertIn(self.ops_group.id, groups[self.other_company.id])
        ops = self.Credentials.create(
            {
                "username": "port_ops",
                "kind": "user",
                "user_id": self.ops_user.id,
                "company_id": self.company.id,
            }
        )
        plain = self.Credentials.create(
            {
                "username": "port_plain",
                "kind": "user",
                "user_id": self.iot_user.id,
                "company_id": self.company.id,
            }
        )
        self._secret(ops)
        self._secret(plain)
        logins = {
            login.username: login
            for login in self.env["iot.emqx.store"]._live_logins()
            if login.username in ("port_ops", "port_plain")
        }
        keys = self.Rule._rule_keys([logins["port_ops"], logins["port_plain"]])
        self.assertIsInstance(keys[0], RuleKey)
        self.assertIn(self.ops_group.id, keys[0].group_ids)
        self.assertNotIn(self.ops_group.id, keys[1].group_ids)
        self.assertNotEqual(keys[0], keys[1])
        # the other company's group rule was the only one naming it there:
        # once company A's rule goes, A's ops user shares the plain user's key
        self.Rule.search([("name", "=", "port: ops read alarms")]).unlink()
        keys = self.Rule._rule_keys([logins["port_ops"], logins["port_plain"]])
        self.assertNotIn(self.ops_group.id, keys[0].group_ids)
        self.assertEqual(keys[0], keys[1])
