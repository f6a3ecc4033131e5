# License LGPL-3.0 or later (https://www.gnu.org/licenses/lgpl).
import contextlib
import queue
import socket
import threading
import time
import uuid
from http.server import ThreadingHTTPServer

import paho.mqtt.client as mqtt

from odoo.tests import TransactionCase, new_test_user

from odoo.addons.iot_base.models.mosquitto import iot_mosquitto_sync as mosq

from .brokers.mosquitto import MosquittoBroker


def start_synced_mosquitto(cls):
    """Start a Mosquitto on loopback for test class ``cls`` (stopped by a
    class cleanup) and point Odoo's file sync at its files."""
    broker = MosquittoBroker()
    cls.addClassCleanup(broker.stop)
    broker.start()
    params = cls.env["ir.config_parameter"].sudo()
    params.set_param(mosq.ENABLED_PARAM, "True")
    params.set_param(mosq.PASSWORD_FILE_PARAM, broker.password_file)
    params.set_param(mosq.ACL_FILE_PARAM, broker.acl_file)
    params.set_param(mosq.PID_FILE_PARAM, broker.pid_file)
    return broker


def start_publisher_mosquitto(cls):
    """``start_synced_mosquitto``, with Odoo's own MQTT client pointed at it
    and its login already in the broker's files."""
    broker = start_synced_mosquitto(cls)
    params = cls.env["ir.config_parameter"].sudo()
    params.set_param("iot_base.mqtt_host", broker.host)
    params.set_param("iot_base.mqtt_port", str(broker.port))
    cls.env["iot.mqtt.client"]._publisher_login()
    result = cls.env["iot.mosquitto.sync"]._sync(force=True)
    assert result["ok"], result
    return broker


def rabbitmq_client(
    case,
    broker,
    username,
    password,
    transport="tcp",
    client_id=None,
    clean_session=True,
):
    """A paho client connecting to ``broker`` (tests/brokers/rabbitmq.py
    RabbitMQBroker) over TCP or WebSocket, stopped at ``case``'s cleanup,
    with queues of what it gets: ``connacks``, ``subacks`` (mid, reason
    codes), ``messages`` (topic, payload), ``disconnected`` (reason codes)
    and ``disconnected_at`` (monotonic times). Its client id is by default
    one of the credential's own (``<username>~<hex>``); it never reconnects
    by itself: a refused or cut connection stays so."""
    client = mqtt.Client(
        mqtt.CallbackAPIVersion.VERSION2,
        client_id=client_id or f"{username}~{uuid.uuid4().hex[:12]}",
        transport=transport,
        clean_session=clean_session,
        reconnect_on_failure=False,
    )
    client.connacks, client.subacks, client.messages = (queue.Queue() for _ in range(3))
    client.disconnected, client.disconnected_at = queue.Queue(), queue.Queue()
    client.on_connect = lambda _c, _u, _f, rc, _p: client.connacks.put(rc)
    client.on_subscribe = lambda _c, _u, mid, rcs, _p: client.subacks.put((mid, rcs))
    client.on_message = lambda _c, _u, msg: client.messages.put(
        (msg.topic, msg.payload)
    )

    def on_disconnect(_client, _userdata, _flags, reason_code, _properties):
        client.disconnected_at.put(time.monotonic())
        client.disconnected.put(reason_code)

    client.on_disconnect = on_disconnect
    if transport == "websockets":
        client.ws_set_options(path="/mqtt")
    client.username_pw_set(username, password)
    port = broker.ws_port if transport == "websockets" else broker.mqtt_port
    client.connect("127.0.0.1", port, keepalive=30)
    client.loop_start()
    case.addCleanup(client.loop_stop)
    case.addCleanup(client.disconnect)
    return client


class MosquittoClientMixin:
    """paho clients against ``self.broker`` (a MosquittoBroker), for tests."""

    broker_wait = 10  # seconds, for anything the broker must do

    def connect(self, username, password, transport="tcp", client_id=None):
        """A connected client, closed at cleanup (fails the test otherwise);
        retried while Mosquitto reloads (it handles SIGHUP asynchronously)."""
        deadline = time.monotonic() + self.broker_wait
        while True:
            client, reason = self.broker.client(
                username, password, transport, client_id=client_id
            )
            if reason is not None and not reason.is_failure:
                self.addCleanup(self.broker.close_client, client)
                return client
            if time.monotonic() > deadline:
                log = self.broker.log()[-1500:]
                self.fail(f"{username} refused ({reason}):\n{log}")
            time.sleep(0.05)

    def wait_for(self, predicate, what):
        deadline = time.monotonic() + self.broker_wait
        while not predicate():
            if time.monotonic() > deadline:
                self.fail(f"timed out waiting for {what}")
            time.sleep(0.02)

    def subscribe(self, client, topic_filter):
        subacks = []
        client.on_subscribe = lambda *args: subacks.append(args)
        client.subscribe(topic_filter, qos=1)
        self.wait_for(lambda: subacks, f"SUBACK of {topic_filter}")


class IotCommonCase(TransactionCase):
    """Users of every kind the access matrix speaks of."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.company = cls.env.ref("base.main_company")
        cls.other_company = cls.env["res.company"].create({"name": "Other IoT Co"})
        cls.iot_user = new_test_user(
            cls.env,
            login="iot.user@example.com",
            groups="base.group_user,iot_base.iot_base_group_user",
        )
        cls.iot_user2 = new_test_user(
            cls.env,
            login="iot.user2@example.com",
            groups="base.group_user,iot_base.iot_base_group_user",
        )
        cls.iot_manager = new_test_user(
            cls.env,
            login="iot.manager@example.com",
            groups="base.group_user,iot_base.iot_base_group_manager",
        )
        cls.other_manager = new_test_user(
            cls.env,
            login="other.manager@example.com",
            groups="base.group_user,iot_base.iot_base_group_manager",
            company_id=cls.other_company.id,
            company_ids=[cls.other_company.id],
        )
        cls.internal_user = new_test_user(
            cls.env, login="plain.user@example.com", groups="base.group_user"
        )
        cls.portal_user = new_test_user(
            cls.env, login="portal.user@example.com", groups="base.group_portal"
        )
        cls.public_user = cls.env.ref("base.public_user")
        cls.Credentials = cls.env["iot.credentials"]

    def _device(self, username="device_test01", company=None, **vals):
        return self.Credentials.create(
            dict(
                {
                    "username": username,
                    "kind": "device",
                    "company_id": (company or self.company).id,
                },
                **vals,
            )
        )

    def _device_with_secret(self, username="device_test01", **vals):
        device = self._device(username, **vals)
        action = device.action_rotate_secret()
        return device, action["context"]["default_secret"]

    def _authenticate(self, username, secret):
        return self.Credentials._authenticate(username, secret)


def raw_http_exchange(address, raw, timeout=30):
    """Send the bytes ``raw`` to ``address`` on a new connection, half-close
    it (a body shorter than its Content-Length ends there) and return all
    that comes back. A server that answered and closed before reading
    everything (a refusal on the headers alone) is not an error: what it
    sent is returned."""
    chunks = []
    with socket.create_connection(address, timeout=timeout) as sock:
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(raw)
        with contextlib.suppress(OSError):  # ENOTCONN: already closed
            sock.shutdown(socket.SHUT_WR)
        with contextlib.suppress(ConnectionResetError):
            while chunk := sock.recv(65536):
                chunks.append(chunk)
    return b"".join(chunks)


class LoopbackHttpServer:
    """A threaded HTTP server on a free loopback port, for the fake broker
    APIs of the tests: ``_serve(handler_class)`` in ``__init__``, then
    ``start()`` / ``stop()``; ``url`` is its base URL."""

    def _serve(self, handler_class):
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler_class)
        self.url = f"http://127.0.0.1:{self.httpd.server_port}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def start(self):
        self.thread.start()
        return self

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()
