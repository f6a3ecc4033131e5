# License LGPL-3.0 or later (https://www.gnu.org/licenses/lgpl).
"""Helpers of the listener tests: a Listener (cli/listener.py) in a thread of
the test process, on the test cursor (the registry in test mode), and paho
devices with a Last Will."""

import json
import socket
import threading
import time

import paho.mqtt.client as mqtt
from lxml import etree

from odoo import SUPERUSER_ID, api
from odoo.tools import json_default

from odoo.addons.iot_base.cli.listener import Listener
from odoo.addons.iot_base.models import iot_listener

WAIT = 2.0  # the bound for presence and readings to show
SLOW_WAIT = 15.0  # reconnections, reloads


class ListenerMixin:
    """Needs ``self.registry`` in test mode and ``self.mqtt_port``."""

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

        def connected():
            up = [c.connected for c in listener.connections.values()]
            return all(up) and up if connections is None else sum(up) >= connections

        self._wait(
            connected,
            "the listener connected",
            SLOW_WAIT,
        )
        # SUBACKs: what is published from now on is heard
        time.sleep(0.3)
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
        with self.registry.test_lock:
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


__all__ = ["WAIT", "SLOW_WAIT", "ListenerMixin", "iot_listener"]
