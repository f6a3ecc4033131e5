# License LGPL-3.0 or later (https://www.gnu.org/licenses/lgpl).
"""The listener when its database connections REALLY die: a Listener in a
thread of the test process on the real registry (committed transactions,
not test mode) and a real Mosquitto; PostgreSQL terminates every backend
of the test database and refuses new connections to it for a while (what
a database restart looks like from Odoo), while a device keeps publishing
at QoS 1. The shared PostgreSQL server is never restarted: only this
throwaway database is touched (from a connection to the maintenance
database)."""

import threading
import time

import psycopg2
from psycopg2 import sql

import odoo
from odoo import SUPERUSER_ID, api
from odoo.modules.registry import Registry
from odoo.tests import BaseCase, get_db_name, tagged

from odoo.addons.iot_base.cli.listener import Listener
from odoo.addons.iot_base.models import iot_mosquitto_sync as mosq

from .listener_common import SLOW_WAIT, ListenerMixin
from .mosquitto_broker import MosquittoBroker

LISTENER_LOGGER = "odoo.addons.iot_base.cli.listener"
OUTAGE = 3.0  # seconds without a database, a few failed flushes
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


@tagged("post_install", "-at_install")
class TestListenerDatabaseLoss(ListenerMixin, BaseCase):
    def setUp(self):
        super().setUp()
        self.registry = Registry(get_db_name())
        # on the maintenance database: PostgreSQL cannot close the door of the
        # database the connection itself is on
        _db, info = odoo.sql_db.connection_info_for("postgres")
        self.admin = psycopg2.connect(**info)
        self.admin.autocommit = True
        self.addCleanup(self.admin.close)
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
        }
        with self.registry.cursor() as cr:
            env = api.Environment(cr, SUPERUSER_ID, {})
            self.max_ids = {}
            for table in (*TABLES, "iot_credentials", "iot_mqtt_device"):
                cr.execute(f"SELECT COALESCE(max(id), 0) FROM {table}")  # noqa: S608
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

    def _cleanup_database(self):
        self._allow_connections(True)
        with self.registry.cursor() as cr:
            env = api.Environment(cr, SUPERUSER_ID, {})
            for model, table in (
                ("iot.mqtt.device", "iot_mqtt_device"),
                ("iot.credentials", "iot_credentials"),
            ):
                env[model].with_context(active_test=False).search(
                    [("id", ">", self.max_ids[table])]
                ).unlink()
            for table in TABLES:
                cr.execute(
                    f"DELETE FROM {table} WHERE id > %s",  # noqa: S608
                    [self.max_ids[table]],
                )
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

    # -- PostgreSQL, on self.admin: a connection of its own (outside Odoo's
    # pool, to the maintenance database) ------------------------------------

    def _allow_connections(self, allow):
        """New connections to the test database (only) accepted or refused,
        as while PostgreSQL restarts."""
        with self.admin.cursor() as cr:
            cr.execute(
                sql.SQL("ALTER DATABASE {} WITH ALLOW_CONNECTIONS {}").format(
                    sql.Identifier(get_db_name()),
                    sql.SQL("true" if allow else "false"),
                )
            )

    def _terminate_backends(self):
        """Every backend of the test database: the listener's and the
        pool's idle ones (this process runs nothing else against it now; the
        admin connection is on another database). Returns how many."""
        with self.admin.cursor() as cr:
            cr.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = %s",
                [get_db_name()],
            )
            killed = sum(1 for (done,) in cr.fetchall() if done)
            # pg_terminate_backend only signals: wait until they are gone
            deadline = time.monotonic() + SLOW_WAIT
            while time.monotonic() < deadline:
                cr.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = %s",
                    [get_db_name()],
                )
                if not cr.fetchone()[0]:
                    return killed
                time.sleep(0.05)
        return -1  # still there

    # -- the test ------------------------------------------------------------

    def _topic(self, kind, sub=""):
        return f"{self.ns}/devices/{self.username}/{kind}" + (f"/{sub}" if sub else "")

    def _count(self):
        return self._query(
            "SELECT COALESCE(sum(messages), 0) FROM iot_throughput"
            " WHERE company_id = %s AND id > %s",
            [self.company_id, self.max_ids["iot_throughput"]],
        )[0][0]

    def _row(self, query, params):
        rows = self._query(query, params)
        return rows[0] if rows else None

    def test_backends_killed_and_database_refusing(self):
        kill = threading.Event()
        killed = []

        def on_flush(_changes):
            # in the listener thread, between two of its transactions: the
            # kill never lands in the middle of one (a statement cut there
            # is an ERROR "bad query" of odoo.sql_db, which fails the run)
            if kill.is_set() and not killed:
                try:
                    self._allow_connections(False)
                    killed.append(self._terminate_backends())
                except Exception as exc:  # reported by the test thread
                    killed.append(exc)

        listener = self._start_listener(
            connections=None,
            listener=RegistryListener(self.registry, on_flush=on_flush),
        )
        connects = {c.company_id: c.connects for c in listener.connections.values()}
        sensor = self._device_client(self.username, self.secret, will=False)
        published = 0

        def publish(topic, payload, retain=False):
            nonlocal published
            self._publish(sensor, topic, payload, retain=retain)  # PUBACK'ed
            published += 1

        publish(self._topic("status"), "online", retain=True)
        for value in range(3):
            publish(self._topic("telemetry", "before"), str(value))
        self._wait(lambda: self._count() == published, "the first batch", SLOW_WAIT)

        # the listener's one WARNING of the outage is expected (asserted below,
        # muted for the run's log check); Odoo's pool drops the dead
        # connections without a word (its reset() on borrow fails first)
        with (
            self.assertLogs(LISTENER_LOGGER, "WARNING") as logs,
            self.assertNoLogs("odoo.sql_db", "WARNING"),
        ):
            # (a failure below must not leave the database closed)
            self.addCleanup(self._allow_connections, True)
            kill.set()
            # during: the next flush kills every backend and closes the door
            for value in range(10):
                publish(self._topic("telemetry", "during"), str(value))
            self._wait(lambda: killed, "a flush after the kill was armed", SLOW_WAIT)
            for value in range(10, 20):
                publish(self._topic("telemetry", "during"), str(value))
            self.assertIsInstance(killed[0], int, killed)
            self.assertGreaterEqual(killed[0], 1, "no backend terminated")
            self.assertNotEqual(killed[0], -1, "backends outlived the kill")
            publish(self._topic("status"), "offline")
            time.sleep(OUTAGE)
            self.assertIsNotNone(listener.failed, "nothing kept in memory")
            self.assertIsNotNone(listener.db_down_since)
            self.assertTrue(listener.thread.is_alive())
            # the database is back
            self._allow_connections(True)
            for value in range(5):
                publish(self._topic("telemetry", "after"), str(value))
            self._wait(
                lambda: self._count() == published,
                "every acknowledged message counted",
                SLOW_WAIT,
            )
        # one WARNING per outage, not one per failed flush
        self.assertEqual(len(logs.output), 1, logs.output)
        self.assertRegex(
            logs.output[0],
            "database unavailable, keeping [0-9]+ message.s. in memory: "
            "OperationalError",
        )
        self.assertEqual(
            self._row(
                "SELECT payload FROM iot_device_reading"
                " WHERE device_id = %s AND topic = %s",
                [self.device_id, "during"],
            ),
            ("19",),
        )
        for topic, last in (("before", "2"), ("after", "4")):
            self.assertEqual(
                self._row(
                    "SELECT payload FROM iot_device_reading"
                    " WHERE device_id = %s AND topic = %s",
                    [self.device_id, topic],
                ),
                (last,),
            )
        # the last status, heard while the database was away
        self.assertEqual(
            self._row(
                "SELECT presence_state FROM iot_mqtt_device WHERE id = %s",
                [self.device_id],
            ),
            ("offline",),
        )
        time.sleep(1.2)  # one more flush: nothing counted twice
        self.assertEqual(self._count(), published)
        self.assertIsNone(listener.failed)
        self.assertIsNone(listener.db_down_since)
        self.assertTrue(listener.thread.is_alive(), "the listener loop died")
        # the MQTT side never noticed: no reconnection
        self.assertEqual(
            {c.company_id: c.connects for c in listener.connections.values()},
            connects,
        )
        self.assertTrue(all(c.connected for c in listener.connections.values()))
