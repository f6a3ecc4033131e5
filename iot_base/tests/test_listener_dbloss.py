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
from odoo.modules.registry import Registry
from odoo.tests import BaseCase, get_db_name, tagged

from .listener_common import SLOW_WAIT, CommittedListenerMixin, RegistryListener

LISTENER_LOGGER = "odoo.addons.iot_base.cli.listener"
OUTAGE = 3.0  # seconds without a database, a few failed flushes


@tagged("post_install", "-at_install")
class TestListenerDatabaseLoss(CommittedListenerMixin, BaseCase):
    def setUp(self):
        super().setUp()
        self.registry = Registry(get_db_name())
        # on the maintenance database: PostgreSQL cannot close the door of the
        # database the connection itself is on
        _db, info = odoo.sql_db.connection_info_for("postgres")
        self.admin = psycopg2.connect(**info)
        self.admin.autocommit = True
        self.addCleanup(self.admin.close)
        self._setup_committed()

    def _before_cleanup(self):
        self._allow_connections(True)

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
