# License LGPL-3.0 or later (https://www.gnu.org/licenses/lgpl).
"""Helpers of the listener tests: a Listener (cli/listener.py) in a thread of
the test process, on the test cursor (the registry in test mode), or on
committed transactions (CommittedListenerMixin), and paho devices with a
Last Will."""

import contextlib
import json
import socket
import threading
import time
from unittest.mock import patch

import paho.mqtt.client as mqtt
import psycopg2
from lxml import etree
from psycopg2 import sql

from odoo import SUPERUSER_ID, api
from odoo.tools import json_default

from odoo.addons.iot_base.cli.listener import Listener
from odoo.addons.iot_base.models import iot_listener
from odoo.addons.iot_base.models import iot_store_sync as engine
from odoo.addons.iot_base.models.mosquitto import iot_mosquitto_sync as mosq

from .brokers.mosquitto import MosquittoBroker

WAIT = 2.0  # the bound for presence and readings to show
SLOW_WAIT = 15.0  # reconnections, reloads
# rows the listener, the device and the store sync commit: deleted at cleanup
# when newer than the test (ids above the ones seen in setUp)
TABLES = (
    "iot_device_reading_history",
    "iot_device_reading",
    "iot_throughput",
    "iot_credentials_secret",
    "iot_store_sync_run",
    "iot_auth_log",
    "bus_bus",
)


class RegistryListener(Listener):
    """The Listener on the registry given: ``Registry(dbname)`` takes the
    registries' lock, which the test runner holds while it runs the tests
    (ThreadedServer.run), so the listener thread would wait forever. Same
    registry object, without the look-up."""

    def __init__(self, registry, **kwargs):
        super().__init__(registry.db_name, **kwargs)
        self.registry = registry

    def _registry(self):
        return self.registry


def _sync_now(self):
    """``iot.store.sync._schedule`` for tests: sync the files in this cursor now."""
    mosquitto = self.env["iot.mosquitto.sync"]
    if mosquitto._is_enabled():
        self.env.flush_all()
        result = mosquitto._sync(force=True)
        assert result["ok"], result


class ListenerMixin:
    """Needs ``self.registry`` in test mode and ``self.mqtt_port``."""

    @classmethod
    def _sync_stores_at_once(cls):
        """Make ``iot.store.sync._schedule`` sync Mosquitto's files at once,
        in the test cursor (nothing is committed, so no after-commit sync
        would ever run)."""
        cls.startClassPatcher(
            patch.object(type(cls.env["iot.store.sync"]), "_schedule", _sync_now)
        )

    def authenticate(self, user, password, browser=None):
        """HttpCase.authenticate reads the user on the test cursor from this
        thread: hold the test lock, as every other user of that cursor does,
        so that the listener thread never runs a statement in between."""
        with self.registry.test_lock:
            return super().authenticate(user, password, browser=browser)

    def _set_params(self, **values):
        with self.registry.cursor() as cr:
            params = api.Environment(cr, SUPERUSER_ID, {})["ir.config_parameter"]
            for key, value in values.items():
                params.set_param(key, value)

    def _query(self, query, params=()):
        """Read through the registry (the listener thread's lock), never
        through the test cursor directly while the listener runs."""
        with self.registry.cursor() as cr:
            cr.execute(query, params)
            return cr.fetchall()

    def _presence(self, device):
        return self._query(
            "SELECT presence_state FROM iot_mqtt_device WHERE id = %s", [device.id]
        )[0][0]

    def _reading(self, device, topic):
        rows = self._query(
            "SELECT payload, is_json FROM iot_device_reading"
            " WHERE device_id = %s AND topic = %s",
            [device.id, topic],
        )
        return rows[0] if rows else None

    def _throughput(self, company):
        return self._query(
            "SELECT COALESCE(sum(messages), 0), COALESCE(sum(dropped), 0)"
            " FROM iot_throughput WHERE company_id = %s",
            [company.id],
        )[0]

    def _wait(self, predicate, what, timeout=WAIT):
        deadline = time.monotonic() + timeout
        while True:
            value = predicate()
            if value:
                return value
            if time.monotonic() > deadline:
                self.fail(f"not within {timeout} s: {what}")
            time.sleep(0.05)

    def _start_listener(self, on_flush=None, connections=1, listener=None):
        """Run ``listener`` (by default a Listener of this database) in a
        thread until cleanup; wait until ``connections`` of its connections
        are up (None: every one)."""
        listener = listener or Listener(self.env.cr.dbname, on_flush=on_flush)
        listener.reload_interval = 1.0
        listener.reload_min_gap = 0.5
        listener.idle_flush_interval = 1.0
        listener.start()
        thread = listener.thread = threading.Thread(target=listener.run, daemon=True)
        thread.start()
        self.addCleanup(thread.join, 15)
        self.addCleanup(listener.stop)

        def subscribed():
            # SUBACKs: what is published from now on is heard
            up = [c.connected and c.subscribed for c in listener.connections.values()]
            return all(up) and up if connections is None else sum(up) >= connections

        self._wait(
            subscribed,
            "the listener connected and subscribed",
            SLOW_WAIT,
        )
        return listener

    def _device_client(self, username, secret, will=True, port=None):
        """A connected paho device with a retained Last Will ``offline`` on
        its status topic; stopped at cleanup."""
        client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=username,
            clean_session=True,
            reconnect_on_failure=False,
        )
        client.username_pw_set(username, secret)
        status = f"{self.ns}/devices/{username}/status"
        if will:
            client.will_set(status, "offline", qos=1, retain=True)
        connacks = []
        client.on_connect = lambda _c, _u, _f, rc, _p: connacks.append(rc)
        deadline = time.monotonic() + SLOW_WAIT
        while True:
            connacks.clear()
            client.connect("127.0.0.1", port or self.mqtt_port, keepalive=5)
            client.loop_start()
            self._wait(lambda: connacks, f"CONNACK of {username}", SLOW_WAIT)
            if not connacks[0].is_failure:
                break
            client.loop_stop()
            if time.monotonic() > deadline:
                self.fail(f"{username} refused: {connacks[0]}")
            time.sleep(0.2)  # the broker reloads its files
        client.status_topic = status
        self.addCleanup(client.loop_stop)
        self.addCleanup(client.disconnect)
        return client

    def _publish(self, client, topic, payload, retain=False):
        info = client.publish(topic, payload, qos=1, retain=retain)
        info.wait_for_publish(5)
        self.assertTrue(info.is_published(), f"not acknowledged: {topic}")

    def _read_form(self, record, user):
        """``record``'s form as the web client reads it: ``web_read`` with the
        specification of the form view's fields (x2many lists with their
        columns), as ``user``, then serialised as Odoo's JSON-RPC answer is
        (a lone surrogate fails there: an HTTP 500). Returns the values."""
        record = record.with_user(user)
        # the listener thread's lock, in test mode (none otherwise)
        with getattr(self.registry, "test_lock", None) or contextlib.nullcontext():
            record.env.invalidate_all()
            arch = record.get_views([(False, "form")])["views"]["form"]["arch"]
            spec = {}
            for node in etree.fromstring(arch).xpath(".//field[not(ancestor::field)]"):
                spec[node.get("name")] = self._field_spec(record, node)
            (values,) = record.web_read(spec)
        json.dumps(values, ensure_ascii=False, default=json_default).encode()
        return values

    @staticmethod
    def _field_spec(record, node):
        field = record._fields[node.get("name")]
        if field.type == "many2one":
            return {"fields": {"display_name": {}}}
        if field.type not in ("one2many", "many2many"):
            return {}
        comodel = record.env[field.comodel_name]
        columns = node.xpath("./list//field") or node.xpath("./*//field")
        return {
            "fields": {
                column.get("name"): (
                    {"fields": {"display_name": {}}}
                    if comodel._fields[column.get("name")].type == "many2one"
                    else {}
                )
                for column in columns
            }
        }

    @staticmethod
    def _cut(client):
        """Drop the TCP connection without DISCONNECT (the broker then
        publishes the Last Will)."""
        client.socket().shutdown(socket.SHUT_RDWR)
        client.loop_stop()


class CommittedListenerMixin(ListenerMixin):
    """For a BaseCase on committed transactions (the real registry, not test
    mode, in ``self.registry``): a Mosquitto of its own, Odoo's settings
    pointing at it, a device; every row committed meanwhile is deleted at
    cleanup, and iot_base's tables come back to their counts."""

    def _wait(self, predicate, what, timeout=WAIT):
        def check():
            self._run_due_store_sync()
            return predicate()

        return super()._wait(check, what, timeout)

    def _run_due_store_sync(self):
        """Stand in for Odoo's cron worker, which make test does not run
        (--max-cron-threads=0): a committed change (the listener's new
        secret, in this process or in ``odoo-bin iot-listen``) triggers the
        store sync's cron (``iot_store_sync.trigger_sync``); run it once its
        trigger is due, as the worker would."""
        module, name = engine.CRON_XMLID.split(".")
        try:
            with self.registry.cursor() as cr:
                cr.execute(
                    "DELETE FROM ir_cron_trigger t USING ir_model_data d"
                    " WHERE d.model = 'ir.cron' AND d.module = %s AND d.name = %s"
                    "   AND t.cron_id = d.res_id"
                    "   AND t.call_at <= now() AT TIME ZONE 'UTC' RETURNING t.id",
                    [module, name],
                )
                due = cr.fetchall()
        except (psycopg2.OperationalError, psycopg2.InterfaceError):
            return  # the database-loss test: the worker would fail alike
        if due:
            engine.run_sync(self.registry.db_name, after_commit=True)

    def _setup_committed(self, params=None):
        self.broker = MosquittoBroker()
        self.broker.start()
        self.mqtt_port = self.broker.port
        self.params = {
            mosq.ENABLED_PARAM: "True",
            mosq.PASSWORD_FILE_PARAM: self.broker.password_file,
            mosq.ACL_FILE_PARAM: self.broker.acl_file,
            mosq.PID_FILE_PARAM: self.broker.pid_file,
            "iot_base.mqtt_host": self.broker.host,
            "iot_base.mqtt_port": str(self.broker.port),
            **(params or {}),
        }
        with self.registry.cursor() as cr:
            env = api.Environment(cr, SUPERUSER_ID, {})
            self.max_ids = {}
            for table in (
                *TABLES,
                "iot_credentials",
                "iot_mqtt_device",
                "res_company",
            ):
                cr.execute(
                    sql.SQL("SELECT COALESCE(max(id), 0) FROM {}").format(
                        sql.Identifier(table)
                    )
                )
                self.max_ids[table] = cr.fetchone()[0]
            cr.execute("SELECT login FROM iot_store_pushed WHERE store = 'mosquitto'")
            self.pushed_before = {login for (login,) in cr.fetchall()}
            self.counts_before = self._table_counts(cr)
            params = env["ir.config_parameter"].sudo()
            self.params_before = {key: params.get_param(key) for key in self.params}
        # LIFO: the listener stops first, then the broker, then the rows go
        self.addCleanup(self._cleanup_database)
        self.addCleanup(self.broker.stop)
        with self.registry.cursor() as cr:
            env = api.Environment(cr, SUPERUSER_ID, {})
            params = env["ir.config_parameter"].sudo()
            for key, value in self.params.items():
                params.set_param(key, value)
            company = env.ref("base.main_company")
            self.company_id, self.ns = company.id, company.iot_mqtt_namespace
            device, self.secret = env["iot.mqtt.device"]._register_device(
                "aa:00:00:00:db:01"
            )
            self.device_id, self.username = device.id, device.username
        # that commit's after-commit sync wrote the device to Mosquitto's files

    def _before_cleanup(self):
        """Runs first at cleanup."""

    def _cleanup_database(self):
        self._before_cleanup()
        with self.registry.cursor() as cr:
            env = api.Environment(cr, SUPERUSER_ID, {})
            credentials = (
                env["iot.credentials"]
                .with_context(active_test=False)
                .search([("id", ">", self.max_ids["iot_credentials"])])
            )
            for xmlid in iot_listener.LISTENER_RULE_XMLIDS:
                # a new company's listener credential: off the rules first
                rule = env.ref(xmlid).with_context(active_test=False)
                rule.credential_ids -= credentials
            env["iot.mqtt.device"].with_context(active_test=False).search(
                [("id", ">", self.max_ids["iot_mqtt_device"])]
            ).unlink()
            credentials.unlink()
            # what the commit would add goes too (the bus notifications of
            # the deleted devices are written before the commit)
            env.flush_all()
            cr.precommit.run()
            for table in TABLES:
                cr.execute(
                    sql.SQL("DELETE FROM {} WHERE id > %s").format(
                        sql.Identifier(table)
                    ),
                    [self.max_ids[table]],
                )
            env["res.company"].search(
                [("id", ">", self.max_ids["res_company"])]
            ).unlink()
            cr.execute("SELECT login FROM iot_store_pushed WHERE store = 'mosquitto'")
            new = {login for (login,) in cr.fetchall()} - self.pushed_before
            if new:
                cr.execute(
                    "DELETE FROM iot_store_pushed"
                    " WHERE store = 'mosquitto' AND login IN %s",
                    [tuple(new)],
                )
            params = env["ir.config_parameter"].sudo()
            for key, value in self.params_before.items():
                if value is False:
                    params.search([("key", "=", key)]).unlink()
                else:
                    params.set_param(key, value)
        with self.registry.cursor() as cr:
            self.assertEqual(self._table_counts(cr), self.counts_before)

    @staticmethod
    def _table_counts(cr):
        """{table: rows} of iot_base's tables, the bus and the parameters:
        what the cleanup must bring back."""
        cr.execute(
            "SELECT table_name FROM information_schema.tables"
            " WHERE table_schema = current_schema() AND table_type = 'BASE TABLE'"
            " AND (table_name LIKE 'iot%%' OR table_name IN %s)",
            [("bus_bus", "ir_config_parameter")],
        )
        counts = {}
        for (table,) in cr.fetchall():
            cr.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(table)))
            counts[table] = cr.fetchone()[0]
        return counts


__all__ = [
    "WAIT",
    "SLOW_WAIT",
    "CommittedListenerMixin",
    "ListenerMixin",
    "RegistryListener",
    "iot_listener",
]
