# License LGPL-3.0 or later (https://www.gnu.org/licenses/lgpl).
"""RabbitMQ internal-store mode against a real RabbitMQ 3.10 node: Odoo
keeps the devices as internal users (management API); the node decides
their CONNECTs and topics alone.

The node's HTTP backend (for the logins it does not hold) reaches Odoo
through :class:`RecordingPassThrough`, which forwards every request to this
test's Odoo server and keeps its path: Odoo's access log for the node.
"""

import http.server
import logging
import queue
import threading
import time
import uuid

import paho.mqtt.client as mqtt
import requests

from odoo.tests import HttpCase, new_test_user, tagged

from odoo.addons.iot_base.models import iot_rabbitmq_store as rstore
from odoo.addons.iot_base.models import iot_store_sync as engine
from odoo.addons.iot_base.models.iot_broker_session import (
    RABBITMQ_PASSWORD_PARAM,
    RABBITMQ_URL_PARAM,
    RABBITMQ_USER_PARAM,
)
from odoo.addons.iot_base.tools import rabbitmq_store
from odoo.addons.iot_base.tools.secret_hash import new_secret

from .brokers import RabbitMQBroker

_logger = logging.getLogger(__name__)

TOKEN = "rabbit-store-t0ken"
WAIT = 15
BULK = 10_000


class RecordingPassThrough:
    """Forwards each request to ``target`` and records its method and path
    (no body: it holds passwords). Not a broker, not a mock of Odoo."""

    def __init__(self, target):
        self.target = target.rstrip("/")
        self.requests = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def _forward(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                outer.requests.append((self.command, self.path.split("?", 1)[0]))
                response = requests.request(
                    self.command,
                    outer.target + self.path,
                    data=body,
                    headers={
                        "Content-Type": self.headers.get("Content-Type", ""),
                    },
                    timeout=30,
                )
                self.send_response(response.status_code)
                self.send_header("Content-Type", response.headers.get("Content-Type"))
                self.send_header("Content-Length", str(len(response.content)))
                self.end_headers()
                self.wfile.write(response.content)

            do_GET = do_POST = _forward

            def log_message(self, *_args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def start(self):
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self):
        self.server.shutdown()
        self.server.server_close()

    def odoo_checks(self):
        return [path for _method, path in self.requests if "/iot/rabbitmq/" in path]


@tagged("post_install", "-at_install")
class TestRabbitmqStore(HttpCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.proxy = RecordingPassThrough(cls.base_url()).start()
        cls.addClassCleanup(cls.proxy.stop)
        cls.broker = RabbitMQBroker(cls.proxy.url, TOKEN)
        cls.addClassCleanup(cls.broker.stop)
        cls.broker.start()
        params = cls.env["ir.config_parameter"].sudo()
        for key, value in {
            "iot_base.auth_token": TOKEN,
            RABBITMQ_URL_PARAM: cls.broker.management_url,
            RABBITMQ_USER_PARAM: cls.broker.management_user,
            RABBITMQ_PASSWORD_PARAM: cls.broker.management_password,
            rstore.ENABLED_PARAM: "True",
        }.items():
            params.set_param(key, value)
        cls.manager = new_test_user(
            cls.env,
            login="store.manager@example.com",
            groups="base.group_user,iot_base.iot_base_group_manager",
        )
        cls.api_key = (
            cls.env["res.users.apikeys"]
            .with_user(cls.manager)
            .sudo()
            ._generate("rpc", "provisioning", None)
        )

    # helpers ------------------------------------------------------------

    def sync(self, force=False):
        self.env.flush_all()
        result = engine.run_sync(
            self.env.cr.dbname, force=force, adapters=["iot.rabbitmq.store"]
        )
        self.assertTrue(result["ok"], result.get("error"))
        return result

    def provision(self, hardware_id):
        response = requests.post(
            self.base_url() + "/iot/provision/devices",
            json={"hardware_id": hardware_id, "name": hardware_id},
            headers={"Authorization": f"Bearer {self.api_key}"},
            timeout=30,
        )
        self.assertEqual(response.status_code, 201, response.text)
        return response.json()

    def client(self, username, password):
        """A paho client (loop running, stopped at cleanup) and its event
        queues; the CONNACK code comes in ``connacks``."""
        client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=f"{username}~{uuid.uuid4().hex[:8]}",
            reconnect_on_failure=False,
        )
        client.connacks, client.disconnects, client.pubacks = (
            queue.Queue() for _ in range(3)
        )
        client.on_connect = lambda _c, _u, _f, rc, _p: client.connacks.put(rc)
        client.on_disconnect = lambda *_args: client.disconnects.put(True)
        client.on_publish = lambda _c, _u, mid, _rc, _p: client.pubacks.put(mid)
        client.username_pw_set(username, password)
        client.connect("127.0.0.1", self.broker.mqtt_port, keepalive=30)
        client.loop_start()
        self.addCleanup(client.loop_stop)
        self.addCleanup(client.disconnect)
        return client

    def connected(self, username, password):
        client = self.client(username, password)
        rc = client.connacks.get(timeout=WAIT)
        self.assertFalse(rc.is_failure, f"CONNACK: {rc}")
        return client

    def refused(self, username, password):
        client = self.client(username, password)
        rc = client.connacks.get(timeout=WAIT)
        self.assertTrue(rc.is_failure, f"CONNACK: {rc}")

    def assert_closed(self, client):
        self.assertTrue(client.disconnects.get(timeout=WAIT))

    def publish_acked(self, client, topic):
        info = client.publish(topic, b"x", qos=1)
        self.assertEqual(client.pubacks.get(timeout=WAIT), info.mid)

    # tests --------------------------------------------------------------

    def test_password_hash_is_rabbitmq_format(self):
        """What the node accepts: a hash made here, checked by RabbitMQ."""
        secret = new_secret()[0]
        hash_, _salt = rabbitmq_store.rabbitmq_hash(secret)
        state = rabbitmq_store.login_state(
            hash_,
            rabbitmq_store.resource_permissions("svc_hashcheck"),
            {"write": "^x$", "read": "^x$"},
        )
        status, _body = self.broker.management_request(
            "POST",
            "/api/definitions",
            rabbitmq_store.definitions({"svc_hashcheck": state}, "/"),
        )
        self.assertEqual(status, 204)
        self.connected("svc_hashcheck", secret)
        self.refused("svc_hashcheck", new_secret()[0])

    def test_device_connects_without_odoo(self):
        reply = self.provision("store-dev-01")
        result = self.sync()
        self.assertGreaterEqual(result["pushed"], 1)
        self.proxy.requests.clear()
        client = self.connected(reply["username"], reply["password"])
        self.publish_acked(client, reply["topics"]["telemetry"])
        self.assertEqual(self.proxy.odoo_checks(), [], "Odoo was asked")
        # a topic outside its rules: RabbitMQ's own topic permission refuses
        # it (3.10 closes the connection), still without asking Odoo
        client.publish(reply["topics"]["telemetry"].replace("store-dev-01", "x"), b"x")
        other = reply["topics"]["telemetry"].rsplit("/", 3)[0] + "/other/telemetry"
        client.publish(other, b"x", qos=1)
        self.assert_closed(client)
        subscriber = self.connected(reply["username"], reply["password"])
        subscriber.subscribe(other, qos=1)
        self.assert_closed(subscriber)
        self.assertEqual(self.proxy.odoo_checks(), [], "Odoo was asked")

    def test_revoke_closes_and_refuses(self):
        reply = self.provision("store-dev-02")
        self.sync()
        client = self.connected(reply["username"], reply["password"])
        response = requests.delete(
            self.base_url() + "/iot/provision/devices/store-dev-02",
            headers={"Authorization": f"Bearer {self.api_key}"},
            timeout=30,
        )
        self.assertEqual(response.status_code, 200, response.text)
        started = time.monotonic()
        result = self.sync()
        self.assertEqual(result["deleted"], 1)
        self.assert_closed(client)
        latency = time.monotonic() - started
        self.assertLess(latency, WAIT)
        # the README's revoke -> cut-off time comes from this line
        _logger.info("revocation latency, RabbitMQ store: %.1f ms", latency * 1000)
        status, _body = self.broker.management_request(
            "GET", f"/api/users/{reply['username']}"
        )
        self.assertEqual(status, 404)
        # the node now asks Odoo (HTTP backend), which refuses too
        self.refused(reply["username"], reply["password"])

    def test_rotate(self):
        reply = self.provision("store-dev-03")
        self.sync()
        old = self.connected(reply["username"], reply["password"])
        credential = self.env["iot.credentials"].search(
            [("username", "=", reply["username"])]
        )
        new_secret_value = credential.action_rotate_secret()["context"][
            "default_secret"
        ]
        result = self.sync()
        self.assertEqual(result["pushed"], 1)
        self.assert_closed(old)
        self.refused(reply["username"], reply["password"])
        self.proxy.requests.clear()
        self.connected(reply["username"], new_secret_value)
        self.assertEqual(self.proxy.odoo_checks(), [])

    def test_secret_before_store_needs_rotation(self):
        self.env["ir.config_parameter"].sudo().set_param(rstore.ENABLED_PARAM, "False")
        credential = self.env["iot.credentials"].create(
            {"username": "device_old_secret", "kind": "device"}
        )
        secret = credential.action_rotate_secret()["context"]["default_secret"]
        self.env["ir.config_parameter"].sudo().set_param(rstore.ENABLED_PARAM, "True")
        result = self.sync()
        self.assertIn("device_old_secret", result["needs_rotation"])
        run = self.env["iot.store.sync.run"].search(
            [("store", "=", "rabbitmq")], limit=1
        )
        self.assertGreaterEqual(run.needs_rotation, 1)
        self.assertIn("need rotation", run.summary)
        self.assertNotIn(secret, run.result)
        status, _body = self.broker.management_request(
            "GET", "/api/users/device_old_secret"
        )
        self.assertEqual(status, 404)
        credential.action_rotate_secret()
        self.assertNotIn("device_old_secret", self.sync()["needs_rotation"])

    def test_full_sync_10000_idempotent(self):
        """10,000 credentials (made in bulk SQL, like a migration would) in
        one full run; the second full run finds nothing to change."""
        cr = self.env.cr
        company = self.env.company.id
        cr.execute(
            """
            INSERT INTO iot_credentials (username, kind, company_id, active,
                                         is_superuser, create_date, write_date)
            SELECT 'device_bulk' || lpad(n::text, 5, '0'), 'device', %s, true,
                   false, now(), now()
              FROM generate_series(1, %s) n
            RETURNING id, username
            """,
            [company, BULK],
        )
        rows = cr.fetchall()
        secret, index, stored = new_secret()
        cr.execute(
            """
            INSERT INTO iot_credentials_secret (credential_id, secret_type, index, hash)
            SELECT unnest(%s::int[]), 'long_lived', %s, %s
            RETURNING id
            """,
            [[cid for cid, _u in rows], index, stored],
        )
        secret_ids = [sid for (sid,) in cr.fetchall()]
        hashes = [rabbitmq_store.rabbitmq_hash(secret)[0] for _sid in secret_ids]
        cr.execute(
            """
            INSERT INTO iot_store_hash (secret_id, store, hash)
            SELECT unnest(%s::int[]), 'rabbitmq', unnest(%s::varchar[])
            """,
            [secret_ids, hashes],
        )
        self.env.invalidate_all()
        started = time.monotonic()
        first = self.sync(force=True)
        seconds = time.monotonic() - started
        self.assertGreaterEqual(first["pushed"], BULK)
        self.assertLess(seconds, 120)
        status, users = self.broker.management_request("GET", "/api/users")
        self.assertEqual(status, 200)
        names = {user["name"] for user in users}
        self.assertTrue({username for _cid, username in rows} <= names)
        second = self.sync(force=True)
        self.assertEqual((second["pushed"], second["deleted"]), (0, 0))
        self.assertGreaterEqual(second["unchanged"], BULK)
        incremental = self.sync()
        self.assertEqual((incremental["pushed"], incremental["deleted"]), (0, 0))
        self.connected(rows[-1][1], secret)
