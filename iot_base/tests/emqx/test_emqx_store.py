# License LGPL-3.0 or later (https://www.gnu.org/licenses/lgpl).
"""The EMQX built-in database adapter against a CONTRACT TEST server
(tests/fakes/emqx_store_contract.py: the REST formats, strictly, and EMQX's hash
check), and the store sync engine: a broker that is down, a neutralized
database, two syncs at once."""

import socket
import threading
import time
from unittest.mock import patch

import requests

import odoo
from odoo import SUPERUSER_ID, api, fields
from odoo.exceptions import AccessError
from odoo.modules.registry import Registry
from odoo.tests import BaseCase, get_db_name, tagged
from odoo.tools import mute_logger

from ...models import iot_store_adapter as adapter_module
from ...models import iot_store_sync as engine
from ...models.emqx import iot_emqx_store as estore
from ...models.iot_broker_api import (
    EMQX_KEY_PARAM,
    EMQX_SECRET_PARAM,
    EMQX_URL_PARAM,
)
from ...tools import broker_api
from ..common import IotCommonCase
from ..fakes.emqx_store_contract import AUTHN, RULES, EmqxStoreContractServer

KEY, SECRET = "store-key", "store-secret"
ADAPTER = "iot.emqx.store"
# the store port logs each run; the API stores' base, the refused logins
ADAPTER_LOGGER = "odoo.addons.iot_base.models.iot_store_adapter"
API_LOGGER = "odoo.addons.iot_base.models.iot_store_api"


def configure(env, url):
    params = env["ir.config_parameter"].sudo()
    params.set_param(EMQX_URL_PARAM, url)
    params.set_param(EMQX_KEY_PARAM, KEY)
    params.set_param(EMQX_SECRET_PARAM, SECRET)
    params.set_param(estore.ENABLED_PARAM, "True")


def closed_port_url():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}"


@tagged("post_install", "-at_install", "iot_emqx")
class TestEmqxStoreContract(IotCommonCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.registry.enter_test_mode(cls.cr)
        cls.addClassCleanup(cls.registry.leave_test_mode)

    def setUp(self):
        super().setUp()
        self.emqx = EmqxStoreContractServer(KEY, SECRET).start()
        self.addCleanup(self.emqx.stop)
        configure(self.env, self.emqx.url)

    def sync(self, force=False, expect_ok=True):
        self.env.flush_all()
        result = engine.run_sync(self.env.cr.dbname, force=force, adapters=[ADAPTER])
        if expect_ok:
            self.assertTrue(result["ok"], result.get("error"))
            self.assertEqual(self.emqx.violations, [])
        return result

    def device(self, username):
        device, secret = self._device_with_secret(username)
        self.emqx.secrets[username] = secret
        return device, secret

    def test_push_verifies_by_emqx_rules(self):
        _device, secret = self.device("device_emqx01")
        superuser = self._device("svc_emqx_su", kind="service", is_superuser=True)
        self.emqx.secrets["svc_emqx_su"] = superuser.action_rotate_secret()["context"][
            "default_secret"
        ]
        result = self.sync()
        self.assertGreaterEqual(result["pushed"], 2)
        self.assertTrue(self.emqx.authenticate("device_emqx01", secret))
        wrong = secret[:-1] + ("1" if secret[-1] == "0" else "0")
        self.assertFalse(self.emqx.authenticate("device_emqx01", wrong))
        user = self.emqx.users["device_emqx01"]
        self.assertTrue(user["salt"].isascii())
        self.assertFalse(user["is_superuser"])
        self.assertTrue(self.emqx.users["svc_emqx_su"]["is_superuser"])
        rules = self.emqx.rules["device_emqx01"]
        self.assertEqual(
            rules[-1], {"permission": "deny", "action": "all", "topic": "#"}
        )
        ns = self.company.iot_mqtt_namespace
        self.assertIn(f"{ns}/devices/device_emqx01/telemetry/#", str(rules))
        # no clear secret anywhere: requests, run record, stored hash forms
        run = self.env["iot.store.sync.run"].search([("store", "=", "emqx")], limit=1)
        self.assertNotIn(secret, run.result + run.summary + str(self.emqx.requests))
        self.env.cr.execute("SELECT hash, salt FROM iot_store_hash")
        self.assertNotIn(secret, str(self.env.cr.fetchall()))
        self.assertFalse(
            [p for m, p in self.emqx.requests if m == "POST" and p.endswith("/users")]
        )
        # idempotent: nothing changed, nothing sent
        self.emqx.requests.clear()
        again = self.sync()
        self.assertEqual((again["pushed"], again["deleted"]), (0, 0))
        self.assertEqual(self.emqx.requests, [])

    def test_revoke_deletes_then_kicks(self):
        device, secret = self.device("device_emqx02")
        self.sync()
        self.emqx.clients["device_emqx02~a1"] = "device_emqx02"
        self.emqx.requests.clear()
        device.action_revoke()
        result = self.sync()
        self.assertEqual(result["deleted"], 1)
        self.assertNotIn("device_emqx02", self.emqx.users)
        self.assertNotIn("device_emqx02", self.emqx.rules)
        self.assertEqual(self.emqx.clients, {})
        paths = [f"{m} {p.split('?')[0]}" for m, p in self.emqx.requests]
        self.assertLess(
            paths.index(f"DELETE {AUTHN}/users/device_emqx02"),
            paths.index("DELETE /api/v5/clients/device_emqx02~a1"),
        )
        self.assertFalse(self.emqx.authenticate("device_emqx02", secret))

    def test_refused_delete_names_no_login(self):
        """A refused per-login call fails the run with an error every IoT
        manager may read: it names the route, never the login."""
        device, _secret = self.device("device_emqx_secretname")
        self.sync()
        device.action_revoke()
        real = requests.request

        def refuse_deletes(method, url, **kwargs):
            if method == "DELETE":
                response = requests.Response()
                response.status_code = 500
                return response
            return real(method, url, **kwargs)

        with (
            patch.object(broker_api.requests, "request", refuse_deletes),
            self.assertLogs(adapter_module.__name__, "WARNING") as logs,
        ):
            result = self.sync(expect_ok=False)
        self.assertNotIn("device_emqx_secretname", str(logs.output))
        self.assertFalse(result["ok"])
        self.assertIn("HTTP 500 to DELETE", result["error"])
        run = self.env["iot.store.sync.run"].search([("store", "=", "emqx")], limit=1)
        for text in (result["error"], run.error):
            self.assertNotIn("device_emqx_secretname", text)

    def test_rotate(self):
        device, old = self.device("device_emqx03")
        self.sync()
        self.emqx.clients["device_emqx03"] = "device_emqx03"
        new = device.action_rotate_secret()["context"]["default_secret"]
        self.emqx.secrets["device_emqx03"] = new
        result = self.sync()
        self.assertEqual(result["pushed"], 1)
        self.assertFalse(self.emqx.authenticate("device_emqx03", old))
        self.assertTrue(self.emqx.authenticate("device_emqx03", new))
        self.assertEqual(self.emqx.clients, {}, "the old session is kicked")

    def test_broker_down_then_catch_up(self):
        self.device("device_emqx04")
        self.env["ir.config_parameter"].sudo().set_param(
            EMQX_URL_PARAM, closed_port_url()
        )
        with self.assertLogs(ADAPTER_LOGGER, "WARNING"):
            down = self.sync(expect_ok=False)
        self.assertFalse(down["ok"])
        self.assertIn("unreachable", down["error"])
        run = self.env["iot.store.sync.run"].search([("store", "=", "emqx")], limit=1)
        self.assertFalse(run.ok)
        self.assertIn("unreachable", run.error)
        self.env["ir.config_parameter"].sudo().set_param(EMQX_URL_PARAM, self.emqx.url)
        up = self.sync()
        self.assertTrue(up["full"], "a run after a failed one is a full run")
        self.assertIn("device_emqx04", self.emqx.users)

    def test_neutralized_no_call_at_all(self):
        self.device("device_emqx05")
        params = self.env["ir.config_parameter"].sudo()
        params.set_param("database.is_neutralized", "true")
        postcommit = self.env.cr.postcommit
        postcommit.clear()
        self.device("device_emqx06")
        self.assertFalse(postcommit._funcs, "no sync queued")
        with mute_logger(ADAPTER_LOGGER):
            result = self.sync(force=True, expect_ok=False)
        self.assertIn("neutralized", result["error"])
        self.assertEqual(self.emqx.requests, [])

    def test_secret_without_hash_needs_rotation(self):
        self.env["ir.config_parameter"].sudo().set_param(estore.ENABLED_PARAM, "False")
        self.device("device_emqx07")
        self.env["ir.config_parameter"].sudo().set_param(estore.ENABLED_PARAM, "True")
        result = self.sync()
        self.assertIn("device_emqx07", result["needs_rotation"])
        self.assertNotIn("device_emqx07", self.emqx.users)

    def test_rule_and_namespace_changes_are_pushed(self):
        self.device("device_emqx09")
        self.sync()
        rule = self.env["iot.acl.rule"].create(
            {
                "name": "Deny the device's status",
                "sequence": 1,
                "permission": "deny",
                "action": "all",
                "topic": "${namespace}/devices/${username}/status/#",
            }
        )
        changed = self.sync()
        self.assertGreaterEqual(changed["pushed"], 1)
        rules = self.emqx.rules["device_emqx09"]
        ns = self.company.iot_mqtt_namespace
        self.assertEqual(
            rules[0]["topic"], f"{ns}/devices/device_emqx09/status/#", rules[:2]
        )
        self.assertEqual(rules[0]["permission"], "deny")
        rule.unlink()
        self.company.iot_mqtt_namespace = "renamed_ns"
        self.sync()
        self.assertIn("renamed_ns/devices/device_emqx09/", str(self.emqx.rules))
        self.assertNotIn(f"{ns}/devices/device_emqx09/", str(self.emqx.rules))

    def test_cron_and_sync_now(self):
        self.device("device_emqx10")
        self.env.flush_all()
        self.env.ref(engine.CRON_XMLID).method_direct_trigger()
        self.assertIn("device_emqx10", self.emqx.users)
        self.device("device_emqx11")
        self.env.flush_all()
        settings = self.env["res.config.settings"].with_user(
            self.env.ref("base.user_admin")
        )
        record = settings.create({})
        action = record.action_iot_store_sync_now()
        self.assertEqual(action["params"]["type"], "success", action["params"])
        self.assertIn("device_emqx11", self.emqx.users)
        # the settings page shows every field, the stores' last runs included
        record.invalidate_recordset()
        shown = record.read()[0]
        self.assertIn("emqx: ", shown["iot_store_sync_last_result"])
        run = self.env["iot.store.sync.run"].search([("store", "=", "emqx")], limit=1)
        self.assertTrue(run.full)
        # a full sync of every store is for system administrators only,
        # whoever calls it (not only through the settings page)
        for user in (self.iot_user, self.iot_manager):
            with self.subTest(user=user.login), self.assertRaises(AccessError):
                self.env["iot.store.sync"].with_user(user).action_sync_now()
        admin = self.env.ref("base.user_admin")
        action = self.env["iot.store.sync"].with_user(admin).action_sync_now()
        self.assertEqual(action["params"]["type"], "success", action["params"])

    def _emqx_writes(self, login):
        """The calls that wrote or deleted anything of ``login``."""
        name = broker_api.segment(login)
        return [
            (m, p)
            for m, p in self.emqx.requests
            if m in ("PUT", "DELETE") and p.rsplit("/", 1)[-1] == name
        ]

    def test_foreign_user_never_touched(self):
        """A bridge account an operator made on EMQX (a superuser, with its
        rules and a live client), then a credential of that name in Odoo:
        rotated, fully synced, revoked, deleted. EMQX keeps the bridge as it
        was, every run says why, and the rest of each run proceeds."""
        bridge = {"password_hash": "ab" * 32, "salt": "opsalt", "is_superuser": True}
        bridge_rules = [{"permission": "allow", "action": "all", "topic": "#"}]
        self.emqx.users["ops_bridge"] = dict(bridge)
        self.emqx.rules["ops_bridge"] = list(bridge_rules)
        # rules an operator set for a login without a built-in user
        self.emqx.rules["ops_rules_only"] = list(bridge_rules)
        self.emqx.clients["ops_bridge-1"] = "ops_bridge"
        credential, _secret = self._device_with_secret("ops_bridge")
        rules_only, _secret = self._device_with_secret("ops_rules_only")
        # the API key Odoo calls EMQX with is never a login either
        api_key, _secret = self._device_with_secret(KEY)
        _ok, ok_secret = self.device("device_emqx_bystander")

        def sync_refused(force=False):
            with self.assertLogs(API_LOGGER, "WARNING") as logs:
                result = self.sync(force=force)
            self.assertIn("3 logins refused", "\n".join(logs.output))
            self.assertNotIn("ops_bridge", "\n".join(logs.output))
            self.assertEqual(
                result["conflicts"], sorted(["ops_bridge", "ops_rules_only", KEY])
            )
            return result

        sync_refused()
        self.assertTrue(self.emqx.authenticate("device_emqx_bystander", ok_secret))
        # the run record and the settings page show the refusal
        run = self.env["iot.store.sync.run"].search([("store", "=", "emqx")], limit=1)
        self.assertEqual(run.conflicts, 3)
        self.assertIn("ops_bridge", run.summary)
        admin = self.env.ref("base.user_admin")
        shown = (
            self.env["res.config.settings"]
            .with_user(admin)
            .create({})
            .iot_store_sync_last_result
        )
        self.assertIn("3 logins refused", shown)
        self.assertIn("ops_bridge", shown)
        credential.action_rotate_secret()
        sync_refused()
        sync_refused(force=True)
        credential.action_revoke()
        rules_only.action_revoke()
        api_key.unlink()
        result = self.sync()
        self.assertEqual(result["deleted"], 0)
        credential.unlink()
        self.sync(force=True)
        self.assertEqual(self.emqx.users["ops_bridge"], bridge)
        self.assertEqual(self.emqx.rules["ops_bridge"], bridge_rules)
        self.assertEqual(self.emqx.rules["ops_rules_only"], bridge_rules)
        self.assertEqual(self.emqx.clients, {"ops_bridge-1": "ops_bridge"})
        for login in ("ops_bridge", "ops_rules_only", KEY):
            self.assertEqual(self._emqx_writes(login), [], login)
        self.env.cr.execute(
            "SELECT login FROM iot_store_pushed "
            "WHERE store = 'emqx' AND login = ANY(%s)",
            [["ops_bridge", "ops_rules_only", KEY]],
        )
        self.assertEqual(self.env.cr.fetchall(), [], "Odoo never claimed them")
        runs = self.env["iot.store.sync.run"].search([("store", "=", "emqx")])
        self.assertEqual(runs.filtered("conflicts").mapped("conflicts"), [3, 3, 3])

    def test_delete_not_done_keeps_login(self):
        """A DELETE answered with anything but 204 (404 while the user
        exists, a redirect) fails the run: Odoo keeps the login, retries,
        and the next run deletes it."""
        device, _secret = self.device("device_emqx_keep")
        self.sync()
        device.action_revoke()
        real = requests.request

        for status in (404, 301):

            def answer(method, url, status=status, **kwargs):
                if method == "DELETE" and "/users/device_emqx_keep" in url:
                    response = requests.Response()
                    response.status_code = status
                    response.headers["Location"] = "/api/v5/authentication"
                    return response
                return real(method, url, **kwargs)

            with (
                self.subTest(status=status),
                patch.object(broker_api.requests, "request", answer),
                self.assertLogs(ADAPTER_LOGGER, "WARNING"),
            ):
                result = self.sync(expect_ok=False)
            self.assertFalse(result["ok"])
            self.assertIn(f"HTTP {status} to DELETE", result["error"])
            self.assertIn("device_emqx_keep", self.emqx.users)
            self.env.cr.execute(
                "SELECT 1 FROM iot_store_pushed WHERE store = 'emqx' AND login = %s",
                ["device_emqx_keep"],
            )
            self.assertTrue(self.env.cr.fetchall(), "the login was forgotten")
        result = self.sync()
        self.assertEqual(result["deleted"], 1)
        self.assertNotIn("device_emqx_keep", self.emqx.users)
        self.assertNotIn("device_emqx_keep", self.emqx.rules)

    def test_save_does_not_wait_for_the_sync(self):
        """A manager's change returns at its commit; the engine's cron runs
        the (slow) store sync afterwards."""
        events = []
        real = type(self.env[ADAPTER])._store_sync

        def slow_sync(adapter, result, force):
            events.append("sync started")
            time.sleep(0.2)  # a fleet-sized build
            return real(adapter, result, force)

        self.device("device_emqx_slow")
        postcommit = self.env.cr.postcommit
        postcommit.clear()
        rule = (
            self.env["iot.acl.rule"]
            .with_user(self.iot_manager)
            .create(
                {
                    "name": "Deny the status",
                    "permission": "deny",
                    "action": "all",
                    "topic": "${namespace}/devices/${username}/status/#",
                }
            )
        )
        with patch.object(type(self.env[ADAPTER]), "_store_sync", slow_sync):
            rule.write({"sequence": 3})
            # the request's commit: what Odoo runs after it, in the request
            self.env.flush_all()
            self.assertTrue(
                [f for f in postcommit._funcs if f.func is engine.trigger_sync]
            )
            postcommit.run()
            events.append("request answered")
            # the engine's cron, woken by the trigger the change left
            cron = self.env.ref(engine.CRON_XMLID)
            triggers = self.env["ir.cron.trigger"].search([("cron_id", "=", cron.id)])
            self.assertLessEqual(min(triggers.mapped("call_at")), fields.Datetime.now())
            cron.method_direct_trigger()
            events.append("sync done")
        self.assertEqual(events, ["request answered", "sync started", "sync done"])
        self.assertIn("status/#", str(self.emqx.rules["device_emqx_slow"]))

    def test_settings_are_for_system_admins(self):
        fields = self.env["res.config.settings"]._fields
        for name in ("iot_emqx_store_enabled", "iot_rabbitmq_store_enabled"):
            self.assertEqual(fields[name].groups, "base.group_system")
        runs = self.env["iot.store.sync.run"]
        self.device("device_emqx08")
        self.sync()
        run = runs.with_user(self.iot_manager).search([], limit=1)
        self.assertEqual(run.store, "emqx")
        self.assertGreaterEqual(run.pushed, 1)
        # usernames of every company: not for a company manager
        with self.assertRaises(AccessError):
            run.read(["summary"])
        with self.assertRaises(AccessError):
            run.read(["result"])
        self.assertFalse(runs.with_user(self.iot_user).has_access("read"))


@tagged("post_install", "-at_install", "iot_emqx")
class TestStoreSyncConcurrency(BaseCase):
    """Two syncs at once, in real committed transactions: the advisory lock
    makes the second wait, and it then finds nothing left to push."""

    def setUp(self):
        super().setUp()
        self.registry = Registry(get_db_name())
        self.emqx = EmqxStoreContractServer(KEY, SECRET, delay=0.5).start()
        self.addCleanup(self.emqx.stop)
        with self.registry.cursor() as cr:
            env = api.Environment(cr, SUPERUSER_ID, {})
            configure(env, self.emqx.url)
            credential = env["iot.credentials"].create(
                {"username": "device_emqx_race", "kind": "device"}
            )
            self.emqx.secrets["device_emqx_race"] = credential.action_rotate_secret()[
                "context"
            ]["default_secret"]
        self.addCleanup(self._cleanup)
        # that commit's own after-commit sync pushed it: start from nothing
        self._forget()

    def _forget(self):
        with self.registry.cursor() as cr:
            cr.execute("DELETE FROM iot_store_sync_run WHERE store = 'emqx'")
            cr.execute("DELETE FROM iot_store_pushed WHERE store = 'emqx'")
        self.emqx.users.clear()
        self.emqx.rules.clear()
        self.emqx.requests.clear()

    def _cleanup(self):
        with self.registry.cursor() as cr:
            env = api.Environment(cr, SUPERUSER_ID, {})
            env["iot.credentials"].with_context(active_test=False).search(
                [("username", "=", "device_emqx_race")]
            ).unlink()
            params = env["ir.config_parameter"].sudo()
            for key in (estore.ENABLED_PARAM, EMQX_URL_PARAM, EMQX_KEY_PARAM):
                params.search([("key", "=", key)]).unlink()
            params.search([("key", "=", EMQX_SECRET_PARAM)]).unlink()
        self._forget()

    def test_two_syncs_at_once(self):
        barrier = threading.Barrier(2, timeout=20)
        results = []

        def run():
            # run_sync minus its registry look-up, which would wait for the
            # registry lock the test runner holds
            with odoo.sql_db.db_connect(get_db_name()).cursor() as lock_cr:
                barrier.wait()
                results.append(
                    engine._run_locked(self.registry, lock_cr, ADAPTER, False, None)
                )

        threads = [threading.Thread(target=run) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        self.assertEqual(len(results), 2)
        self.assertTrue(all(r["ok"] for r in results), results)
        self.assertEqual(self.emqx.max_in_flight, 1, "the syncs overlapped")
        self.assertEqual(sorted(r["pushed"] for r in results), [0, 1])
        imports = [p for m, p in self.emqx.requests if "import_users" in p]
        self.assertEqual(len(imports), 1)
        self.assertIn(
            f"PUT {RULES}device_emqx_race", [f"{m} {p}" for m, p in self.emqx.requests]
        )
        self.assertEqual(self.emqx.violations, [])
