# License LGPL-3.0 or later (https://www.gnu.org/licenses/lgpl).
"""The listener (odoo-bin iot-listen) against a real Mosquitto 2.0 reading
the files Odoo writes: simulated devices publish their status and
telemetry, Odoo shows presence and last readings.

The listener runs in a thread of the test process, on the test cursor (the
registry in test mode), as in production but without a commit.
"""

import json
import logging
import subprocess
import time
from unittest.mock import patch

from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.reasoncodes import ReasonCode
from psycopg2 import OperationalError

from odoo.exceptions import UserError
from odoo.tests import TransactionCase, tagged

from odoo.addons.iot_base.cli import listener as listener_module
from odoo.addons.iot_base.cli.listener import Listener, parse_status
from odoo.addons.iot_base.models import iot_listener

from .common import start_synced_mosquitto
from .listener_common import SLOW_WAIT, WAIT, ListenerMixin

HEARTBEAT_TIMEOUT = 5  # seconds, the setting's lowest value


@tagged("post_install", "-at_install")
class TestListenerMosquitto(ListenerMixin, TransactionCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.registry.enter_test_mode(cls.cr)
        cls.addClassCleanup(cls.registry.leave_test_mode)
        cls._sync_stores_at_once()
        cls.broker = start_synced_mosquitto(cls)
        cls.mqtt_port = cls.broker.port
        params = cls.env["ir.config_parameter"].sudo()
        params.set_param("iot_base.mqtt_host", cls.broker.host)
        params.set_param("iot_base.mqtt_port", str(cls.broker.port))
        params.set_param(iot_listener.HEARTBEAT_TIMEOUT_PARAM, str(HEARTBEAT_TIMEOUT))
        params.set_param(iot_listener.SHARED_GROUP_PARAM, "odoo")
        params.set_param(iot_listener.MAX_PAYLOAD_PARAM, "1024")
        cls.company = cls.env.ref("base.main_company")
        cls.ns = cls.company.iot_mqtt_namespace
        Device = cls.env["iot.mqtt.device"]
        cls.sensor, cls.sensor_secret = Device._register_device("aa:00:00:00:00:01")
        cls.quiet, cls.quiet_secret = Device._register_device("aa:00:00:00:00:02")
        cls.other_company = cls.env["res.company"].create({"name": "Listener Other Co"})
        cls.foreign, _secret = Device.with_company(cls.other_company)._register_device(
            "aa:00:00:00:00:03", company=cls.other_company
        )
        # a broker superuser forges what no device may publish
        cls.forger = cls.env["iot.credentials"].create(
            {"username": "svc_listener_forger", "kind": "service", "is_superuser": True}
        )
        cls.forger_secret = cls.forger.action_rotate_secret()["context"][
            "default_secret"
        ]

    def setUp(self):
        super().setUp()
        self._clear_retained()
        self.addCleanup(self._clear_retained)

    def _clear_retained(self):
        """Retained messages outlive a test in the class's broker."""
        client, reason = self.broker.client(
            self.forger.username, self.forger_secret, client_id=self.forger.username
        )
        self.assertFalse(reason.is_failure, reason)
        for device in (self.sensor, self.quiet, self.foreign):
            client.publish(self._topic(device, "status"), b"", qos=1, retain=True)
        client.publish(f"{self.ns}/x", b"", qos=1).wait_for_publish(5)
        self.broker.close_client(client)

    def _topic(self, device, kind, sub=""):
        return f"{self.ns}/devices/{device.username}/{kind}" + (
            f"/{sub}" if sub else ""
        )

    def test_presence_readings_will_and_stale(self):
        listener = self._start_listener(connections=2)
        sensor = self._device_client(self.sensor.username, self.sensor_secret)
        quiet = self._device_client(self.quiet.username, self.quiet_secret)
        self._publish(sensor, sensor.status_topic, "online", retain=True)
        self._publish(quiet, quiet.status_topic, '{"status": "online"}', retain=True)
        self._publish(quiet, quiet.status_topic, "heartbeat")
        self._publish(
            sensor,
            self._topic(self.sensor, "telemetry", "env"),
            '{"temperature": 21.5, "humidity": 40}',
        )
        self._publish(
            sensor, self._topic(self.sensor, "telemetry", "note"), "door open"
        )
        start = time.monotonic()
        self._wait(lambda: self._presence(self.sensor) == "online", "sensor online")
        self._wait(lambda: self._presence(self.quiet) == "online", "quiet online")
        self._wait(lambda: self._reading(self.sensor, "note"), "the text reading")
        self.assertLess(time.monotonic() - start, WAIT)
        payload, is_json = self._reading(self.sensor, "env")
        self.assertTrue(is_json)
        self.assertEqual(json.loads(payload), {"temperature": 21.5, "humidity": 40})
        self.assertEqual(self._reading(self.sensor, "note"), ("door open", False))
        # the form shows a JSON object as a table, text as text (escaped)
        self.env.invalidate_all()
        readings = {r.topic: r for r in self.sensor.reading_ids}
        self.assertIn("<th>temperature</th><td>21.5</td>", readings["env"].payload_html)
        self.assertEqual(readings["note"].payload_html, "<code>door open</code>")
        self.assertTrue(self.sensor.last_seen)

        # cut without DISCONNECT: the broker publishes the Last Will
        self._cut(sensor)
        self._wait(
            lambda: self._presence(self.sensor) == "offline",
            "sensor offline by its Last Will",
            SLOW_WAIT,
        )
        # the quiet one sends no heartbeat any more: stale after the timeout
        self._wait(
            lambda: self._presence(self.quiet) == "stale",
            "quiet device stale",
            HEARTBEAT_TIMEOUT + 3 * WAIT,
        )
        self._publish(quiet, quiet.status_topic, "heartbeat")
        self._wait(lambda: self._presence(self.quiet) == "online", "quiet back online")
        stats = listener.log_summary()
        self.assertGreaterEqual(stats["messages"], 7)
        self.assertGreaterEqual(stats["transactions"], 1)

    def test_bad_input_is_counted_and_dropped(self):
        self._start_listener(connections=2)
        forger = self._device_client(
            self.forger.username, self.forger_secret, will=False
        )
        env_topic = self._topic(self.sensor, "telemetry", "env")
        self._publish(forger, env_topic, '{"temperature": 20}')
        self._wait(lambda: self._reading(self.sensor, "env"), "the good reading")
        before = self._throughput(self.company)
        bad = [
            (env_topic, b"\xff\xfe not UTF-8"),
            (env_topic, b"x" * 2048),  # over the 1024-byte setting
            (env_topic, json.dumps({"temperature": 99, "device": self.quiet.username})),
            (env_topic, "bad\x00nul"),
            (self._topic(self.sensor, "status"), "maybe"),
            (self._topic(self.sensor, "status", "extra"), "online"),
            (f"{self.ns}/devices/nobody_here/telemetry/env", "1"),
            # another company's device under this namespace
            (self._topic(self.foreign, "telemetry", "env"), "1"),
            (self._topic(self.foreign, "status"), "online"),
        ]
        for topic, payload in bad:
            self._publish(forger, topic, payload)
        # a "device" key naming no other device is just data
        self._publish(forger, env_topic, '{"temperature": 22, "device": "Pump 1"}')
        self._wait(
            lambda: (
                json.loads(self._reading(self.sensor, "env")[0])["temperature"] == 22
            ),
            "the last good reading",
        )
        self._wait(
            lambda: self._throughput(self.company)[1] - before[1] == len(bad),
            "every bad message counted as dropped",
        )
        messages, _dropped = self._throughput(self.company)
        self.assertEqual(messages - before[0], len(bad) + 1)
        self.assertEqual(self._presence(self.foreign), "unknown")
        self.assertIsNone(self._reading(self.foreign, "env"))
        self.assertEqual(
            self._query(
                "SELECT count(*) FROM iot_device_reading WHERE device_id = %s",
                [self.sensor.id],
            )[0][0],
            1,
        )

    def test_hostile_history_keys(self):
        """With history on, keys PostgreSQL cannot store (NUL, lone
        surrogates, as JSON escapes), integers too large for a float and an
        endless supply of new keys never stop the listener: what can be
        stored is, at most MAX_HISTORY_KEYS keys per device and topic."""
        self._set_params(**{iot_listener.HISTORY_PARAM: "True"})
        listener = self._start_listener(connections=2)
        self._wait(lambda: listener.settings["history"], "history setting", SLOW_WAIT)
        sensor = self._device_client(self.sensor.username, self.sensor_secret)
        topic = self._topic(self.sensor, "telemetry", "h")
        before = self._throughput(self.company)[1]
        # keys no page can show: the payload is dropped
        self._publish(sensor, topic, '{"a\\u0000b": 1, "ok": 0}')
        self._publish(sensor, topic, '{"\\ud800": 2, "ok": 0}')
        self._publish(sensor, topic, '{"big": 1%s, "ok": 3}' % ("0" * 400))
        for batch in range(3):
            self._publish(
                sensor, topic, json.dumps({f"k{batch}_{i}": i for i in range(16)})
            )
        self._publish(sensor, topic, '{"last": 1}')
        self._wait(
            lambda: (self._reading(self.sensor, "h") or ("",))[0] == '{"last": 1}',
            "the last reading",
        )
        keys = self._wait(
            lambda: {
                key
                for (key,) in self._query(
                    "SELECT key FROM iot_device_reading_history"
                    " WHERE device_id = %s AND topic = 'h'",
                    [self.sensor.id],
                )
            },
            "history rows",
        )
        self.assertIn("ok", keys)
        self.assertNotIn("big", keys)
        self.assertEqual(self._throughput(self.company)[1] - before, 2)
        self.assertLessEqual(len(keys), listener_module.MAX_HISTORY_KEYS)
        self.assertTrue(all(c.connected for c in listener.connections.values()))

    def test_hostile_json_never_breaks_the_form(self):
        """A device publishing JSON nested 970 deep, a lone-surrogate key, a
        NUL string or a status nested 3,000 deep: dropped and counted, one
        parse each, no log line; the listener goes on and the device form
        (as the web client reads it) renders."""
        self._set_params(**{iot_listener.MAX_PAYLOAD_PARAM: "8192"})
        listener = self._start_listener(connections=2)
        self._wait(
            lambda: listener.settings["max_payload"] == 8192, "the limit", SLOW_WAIT
        )
        sensor = self._device_client(self.sensor.username, self.sensor_secret)
        deep = "[" * 970 + "]" * 970
        hostile = [
            ("deep", deep),
            ("nested", f'{{"a": {deep}}}'),
            ("surrogate", '{"\\ud800": 1}'),
            ("surrogate_value", '{"k": ["\\udfff"]}'),
            ("nul", '{"k": "a\\u0000b"}'),
        ]
        deep_status = '{"status": %s}' % ("[" * 3000 + "]" * 3000)
        before = self._throughput(self.company)[1]
        with self.assertNoLogs("odoo.addons.iot_base.cli.listener", "WARNING"):
            for sub, payload in hostile:
                self._publish(
                    sensor, self._topic(self.sensor, "telemetry", sub), payload
                )
            for _repeat in range(50):
                self._publish(sensor, sensor.status_topic, deep_status)
            # JSON that is fine: a surrogate pair, 32 levels
            self._publish(
                sensor,
                self._topic(self.sensor, "telemetry", "ok"),
                '{"emoji": "\\ud83d\\ude00", "deep": %s}' % ("[" * 31 + "]" * 31),
            )
            self._publish(sensor, sensor.status_topic, "online")
            self._wait(lambda: self._reading(self.sensor, "ok"), "the good reading")
            self._wait(
                lambda: self._throughput(self.company)[1] - before == len(hostile) + 50,
                "every hostile message counted as dropped",
            )
            self._wait(lambda: self._presence(self.sensor) == "online", "online")
        for sub, _payload in hostile:
            self.assertIsNone(self._reading(self.sensor, sub), sub)
        self.assertTrue(listener.thread.is_alive())
        self.assertTrue(all(c.connected for c in listener.connections.values()))
        admin = self.env.ref("base.user_admin")
        values = self._read_form(self.sensor, admin)
        (reading,) = values["reading_ids"]
        self.assertEqual(reading["topic"], "ok")
        self.assertIn("<th>emoji</th><td>\U0001f600</td>", reading["payload_html"])

    def test_unreadable_messages_logged_once_per_interval(self):
        """A message the listener cannot read (a bug) is dropped and counted;
        a burst of them is one log line with the count, not a traceback
        each."""
        listener = self._start_listener(connections=2)
        sensor = self._device_client(self.sensor.username, self.sensor_secret)
        fold = Listener._fold

        def broken_fold(this, connection, topic, payload, retained, now):
            if payload.startswith(b"boom"):
                raise KeyError(payload.decode())  # a bug quoting the payload
            return fold(this, connection, topic, payload, retained, now)

        before = self._throughput(self.company)[1]
        topic = self._topic(self.sensor, "telemetry", "b")
        with (
            patch.object(Listener, "_fold", broken_fold),
            self.assertLogs("odoo.addons.iot_base.cli.listener", "WARNING") as logs,
        ):
            for number in range(40):
                self._publish(sensor, topic, f"boom secret {number}")
            self._publish(sensor, topic, "fine")
            self._wait(lambda: self._reading(self.sensor, "b"), "the next reading")
            self._wait(
                lambda: self._throughput(self.company)[1] - before == 40,
                "the failed ones counted as dropped",
            )
        (line,) = logs.output
        self.assertRegex(line, "1 message.s. could not be read .*KeyError at test_")
        self.assertNotIn("secret", line)
        self.assertEqual(listener.failures, 39)
        # the next interval's line counts the ones it did not log
        listener.failure_logged_at -= listener.failure_log_interval
        with self.assertLogs("odoo.addons.iot_base.cli.listener", "WARNING") as logs:
            listener.message_failed(self.company.id, KeyError("x"))
        self.assertRegex(logs.output[0], "40 message.s. could not be read")

    def test_settings_followed_and_broker_restart(self):
        listener = self._start_listener(connections=2)
        sensor = self._device_client(self.sensor.username, self.sensor_secret)
        topic = self._topic(self.sensor, "telemetry", "t")
        self._publish(sensor, topic, "20.5")
        self._wait(lambda: self._reading(self.sensor, "t"), "reading")
        self.assertFalse(self._query("SELECT id FROM iot_device_reading_history"))
        # history on, without a restart
        self._set_params(**{iot_listener.HISTORY_PARAM: "True"})
        self._wait(lambda: listener.settings["history"], "history setting", SLOW_WAIT)
        self._publish(sensor, topic, "21.5")
        rows = self._wait(
            lambda: self._query(
                "SELECT key, value FROM iot_device_reading_history"
                " WHERE device_id = %s",
                [self.sensor.id],
            ),
            "a history row",
        )
        self.assertEqual(rows, [("", 21.5)])

        # the broker restarts (same port, same files): the listener reconnects
        self._restart_broker()
        self._wait(
            lambda: all(
                c.connected and c.subscribed for c in listener.connections.values()
            ),
            "the listener reconnected and subscribed",
            SLOW_WAIT + 60,
        )
        sensor = self._device_client(self.sensor.username, self.sensor_secret)
        self._publish(sensor, topic, "23.5")
        self._wait(
            lambda: self._reading(self.sensor, "t")[0] == "23.5",
            "reading after the restart",
        )

    def _restart_broker(self):
        broker = self.broker
        command = broker.process.args
        broker.process.terminate()
        broker.process.wait(10)
        broker.process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=broker._log_handle,
            stderr=subprocess.STDOUT,
        )
        broker._wait_ready()

    def test_database_outage_loses_nothing(self):
        listener = self._start_listener(connections=2)
        sensor = self._device_client(self.sensor.username, self.sensor_secret)
        write = type(self.env["iot.listener"])._listener_write
        failures = []

        def failing_write(model, batch, *args, **kwargs):
            if len(failures) < 3:
                failures.append(batch)
                raise OperationalError("server closed the connection unexpectedly")
            return write(model, batch, *args, **kwargs)

        with (
            patch.object(
                type(self.env["iot.listener"]), "_listener_write", failing_write
            ),
            self.assertLogs("odoo.addons.iot_base.cli.listener", "WARNING") as logs,
        ):
            for value in range(5):
                self._publish(
                    sensor,
                    self._topic(self.sensor, "telemetry", f"k{value}"),
                    str(value),
                )
            self._publish(sensor, sensor.status_topic, "online", retain=True)
            self._wait(lambda: len(failures) >= 3, "three failed flushes", SLOW_WAIT)
            self._wait(
                lambda: self._reading(self.sensor, "k4"), "written when back", SLOW_WAIT
            )
        self.assertIn("database unavailable", logs.output[0])
        for value in range(5):
            self.assertEqual(
                self._reading(self.sensor, f"k{value}"), (str(value), True)
            )
        self.assertEqual(self._presence(self.sensor), "online")
        self.assertIsNone(listener.failed)

    def test_shared_subscription_splits_the_load(self):
        first = self._start_listener(connections=2)
        second = self._start_listener(connections=2)
        logins = {c.login["username"] for c in first.connections.values()} | {
            c.login["username"] for c in second.connections.values()
        }
        self.assertEqual(len(logins), 4, "each listener has its own Mosquitto logins")
        sensor = self._device_client(self.sensor.username, self.sensor_secret)
        before = self._throughput(self.company)[0]
        for value in range(20):
            self._publish(
                sensor, self._topic(self.sensor, "telemetry", "n"), str(value)
            )
        self._wait(
            lambda: self._throughput(self.company)[0] - before == 20,
            "twenty messages counted once",
        )
        # a window for a second delivery of any of them (a share that did
        # not split would deliver each message to both listeners)
        time.sleep(1.2)
        self.assertEqual(self._throughput(self.company)[0] - before, 20)
        self.assertEqual(self._reading(self.sensor, "n"), ("19", True))

    def test_refused_subscription_is_reported(self):
        """A listener the broker lets in but does not let read (EMQX and
        RabbitMQ answer 0x80 in the SUBACK; Mosquitto 2.0.11 grants the
        filter and delivers nothing) is deaf: it says so, and is not counted
        as subscribed."""
        connection = listener_module.Connection(None, 7, "ns", {})
        connection.connected = True
        granted, refused = (
            ReasonCode(PacketTypes.SUBACK, identifier=1),
            ReasonCode(PacketTypes.SUBACK, identifier=0x80),
        )
        # logging.INFO: Odoo names level 25 "INFO" too
        with self.assertLogs("odoo.addons.iot_base.cli.listener", logging.INFO) as logs:
            connection._on_subscribe(None, None, 1, [granted, refused], None)
        self.assertFalse(connection.subscribed)
        self.assertIn("company 7: the broker refused the listener's", logs.output[0])
        # logging.INFO: Odoo names level 25 "INFO" too
        with self.assertLogs("odoo.addons.iot_base.cli.listener", logging.INFO) as logs:
            connection._on_subscribe(None, None, 2, [granted, granted], None)
        self.assertTrue(connection.subscribed)
        self.assertEqual(logs.records[0].levelname, "INFO")
        connection._on_disconnect(None, None, None, granted, None)
        self.assertFalse(connection.subscribed)

    def test_idle_listener_sleeps(self):
        """Nothing heard: one tick per second, not a busy loop."""
        listener = self._start_listener(connections=2)
        real, ticks = listener._stop, []

        class CountingEvent:
            def wait(self, timeout=None):
                ticks.append(timeout)
                return real.wait(timeout)

            def is_set(self):
                return real.is_set()

            def set(self):
                real.set()

        listener._stop = CountingEvent()
        time.sleep(3)
        self.assertLessEqual(len(ticks), 5, ticks[:10])
        self.assertGreaterEqual(len(ticks), 2)

    def test_neutralized_database_refused(self):
        self.env["ir.config_parameter"].set_param("database.is_neutralized", "True")
        self.env.flush_all()
        listener = Listener(self.env.cr.dbname)
        with self.assertRaisesRegex(UserError, "neutralized"):
            listener.start()
        self.assertFalse(listener.connections)

    def test_status_payloads(self):
        for payload, state in [
            ("online", "online"),
            (" OFFLINE\n", "offline"),
            ("heartbeat", "heartbeat"),
            ('"online"', "online"),
            ('{"status": "offline", "battery": 3}', "offline"),
            ("onl", None),
            ("{}", None),
            ('{"status": 1}', None),
            ("", None),
        ]:
            self.assertEqual(parse_status(payload), state, payload)
