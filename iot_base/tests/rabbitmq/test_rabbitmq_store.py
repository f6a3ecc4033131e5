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
from unittest.mock import patch

import paho.mqtt.client as mqtt
import requests

from odoo.tests import HttpCase, new_test_user, tagged

from ...models import iot_store_sync as engine
from ...models.iot_broker_api import (
    RABBITMQ_PASSWORD_PARAM,
    RABBITMQ_URL_PARAM,
    RABBITMQ_USER_PARAM,
)
from ...models.rabbitmq import iot_rabbitmq_store as rstore
from ...tools import broker_api
from ...tools.rabbitmq import store as rabbitmq_store
from ...tools.secret_hash import new_secret
from ..brokers.rabbitmq import MANAGEMENT_USER, RabbitMQBroker

_logger = logging.getLogger(__name__)

TOKEN = "rabbit-store-t0ken"
# the store port logs each run; the API stores' base, the refused logins
ADAPTER_LOGGER = "odoo.addons.iot_base.models.iot_store_adapter"
API_LOGGER = "odoo.addons.iot_base.models.iot_store_api"
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


def enable_store(env, broker, token):
    """Odoo keeps ``broker``'s internal users (its management API), and
    answers its HTTP backend with ``token``."""
    params = env["ir.config_parameter"].sudo()
    for key, value in {
        "iot_base.auth_token": token,
        RABBITMQ_URL_PARAM: broker.management_url,
        RABBITMQ_USER_PARAM: broker.management_user,
        RABBITMQ_PASSWORD_PARAM: broker.management_password,
        rstore.ENABLED_PARAM: "True",
    }.items():
        params.set_param(key, value)


@tagged("post_install", "-at_install", "iot_rabbitmq")
class TestRabbitmqStore(HttpCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.proxy = RecordingPassThrough(cls.base_url()).start()
        cls.addClassCleanup(cls.proxy.stop)
        cls.broker = RabbitMQBroker(cls.proxy.url, TOKEN)
        cls.addClassCleanup(cls.broker.stop)
        cls.broker.start()
        enable_store(cls.env, cls.broker, TOKEN)
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

    def _delete_users(self, names):
        """Remove users this test left on the node (the database rolls
        back, the node does not)."""
        for start in range(0, len(names), 250):
            self.broker.management_request(
                "POST", "/api/users/bulk-delete", {"users": names[start : start + 250]}
            )

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
        self.addCleanup(self._delete_users, [username for _cid, username in rows])
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

    # ownership ------------------------------------------------------------

    def refused_sync(self, logins, force=False):
        with self.assertLogs(API_LOGGER, "WARNING") as logs:
            result = self.sync(force=force)
        self.assertIn(f"{len(logins)} logins refused", "\n".join(logs.output))
        self.assertEqual(result["conflicts"], sorted(logins))
        return result

    def foreign_user(self, name, password):
        """An operator account of the node that Odoo did not create: the
        administrator tag, every permission on another vhost, some on "/"."""
        hash_ = rabbitmq_store.rabbitmq_hash(password)[0]
        quoted = broker_api.segment(name)
        for method, path, body in (
            ("PUT", "/api/vhosts/ops", {}),
            (
                "PUT",
                f"/api/users/{quoted}",
                {
                    "password_hash": hash_,
                    "hashing_algorithm": rabbitmq_store.HASHING_ALGORITHM,
                    "tags": "administrator",
                },
            ),
            (
                "PUT",
                f"/api/permissions/ops/{quoted}",
                {"configure": ".*", "write": ".*", "read": ".*"},
            ),
            (
                "PUT",
                f"/api/permissions/%2F/{quoted}",
                {"configure": "^ops-q$", "write": "^ops-q$", "read": "^ops-q$"},
            ),
            (
                "PUT",
                f"/api/topic-permissions/%2F/{quoted}",
                {"exchange": "amq.topic", "write": "^ops$", "read": "^ops$"},
            ),
        ):
            status, _body = self.broker.management_request(method, path, body)
            self.assertIn(status, (201, 204), path)
        self.addCleanup(
            self.broker.management_request, "DELETE", f"/api/users/{quoted}"
        )

    def broker_view(self, name):
        """What the node holds of the user ``name``: the user (hash, tags),
        its permissions and topic permissions on every vhost."""
        quoted = broker_api.segment(name)
        return [
            self.broker.management_request("GET", path)
            for path in (
                f"/api/users/{quoted}",
                f"/api/users/{quoted}/permissions",
                f"/api/users/{quoted}/topic-permissions",
            )
        ]

    def test_foreign_user_never_touched(self):
        """A manager names a device like an operator account of the node,
        rotates, fully syncs, revokes and deletes it: the account keeps its
        hash, tags and permissions, each run says so, the rest proceeds."""
        self.foreign_user("ops_admin", "ops-pa55word")
        before = self.broker_view("ops_admin")
        self.assertEqual(before[0][0], 200)
        self.assertEqual(before[0][1]["tags"], ["administrator"])
        self.assertEqual(len(before[1][1]), 2)
        credential = self.env["iot.credentials"].create(
            {"username": "ops_admin", "kind": "device"}
        )
        credential.action_rotate_secret()
        bystander = self.provision("store-dev-foreign")
        self.refused_sync(["ops_admin"])
        # the rest of the run went through
        self.connected(bystander["username"], bystander["password"])
        run = self.env["iot.store.sync.run"].search(
            [("store", "=", "rabbitmq")], limit=1
        )
        self.assertEqual(run.conflicts, 1)
        self.assertIn("ops_admin", run.summary)
        shown = (
            self.env["res.config.settings"]
            .with_user(self.env.ref("base.user_admin"))
            .create({})
            .iot_store_sync_last_result
        )
        self.assertIn("rabbitmq: ", shown)
        self.assertIn("ops_admin", shown)
        credential.action_rotate_secret()
        self.refused_sync(["ops_admin"])
        self.refused_sync(["ops_admin"], force=True)
        credential.action_revoke()
        self.assertEqual(self.sync()["deleted"], 0)
        credential.unlink()
        self.assertEqual(self.sync(force=True)["deleted"], 0)
        self.assertEqual(self.broker_view("ops_admin"), before)

    def test_management_user_and_dot_names_never_sent(self):
        """Live credentials of an older database named like Odoo's own
        management user or all dots (no path can carry them): never written
        nor deleted; the run goes on and reports them."""
        names = [MANAGEMENT_USER, "..", "."]
        cr = self.env.cr
        cr.execute(
            """
            INSERT INTO iot_credentials (username, kind, company_id, active,
                                         is_superuser, create_date, write_date)
            SELECT unnest(%s::varchar[]), 'device', %s, true, true, now(), now()
            RETURNING id
            """,
            [names, self.env.company.id],
        )
        ids = [cid for (cid,) in cr.fetchall()]
        secret, index, stored = new_secret()
        cr.execute(
            """
            INSERT INTO iot_credentials_secret (credential_id, secret_type, index, hash)
            SELECT unnest(%s::int[]), 'long_lived', %s, %s RETURNING id
            """,
            [ids, index, stored],
        )
        for (secret_id,) in cr.fetchall():
            cr.execute(
                "INSERT INTO iot_store_hash (secret_id, store, hash) "
                "VALUES (%s, 'rabbitmq', %s)",
                [secret_id, rabbitmq_store.rabbitmq_hash(secret)[0]],
            )
        self.env.invalidate_all()
        before = self.broker_view(MANAGEMENT_USER)
        bystander = self.provision("store-dev-dots")
        self.refused_sync(names)
        self.connected(bystander["username"], bystander["password"])
        self.refused_sync(names, force=True)
        self.assertEqual(self.broker_view(MANAGEMENT_USER), before)
        status, users = self.broker.management_request("GET", "/api/users")
        self.assertEqual(status, 200)
        self.assertFalse({".", ".."} & {user["name"] for user in users})
        # revoked: nothing to delete, nothing sent
        cr.execute(
            "UPDATE iot_credentials SET active = false WHERE id = ANY(%s)", [ids]
        )
        self.env.invalidate_all()
        self.assertEqual(self.sync(force=True)["conflicts"], [])
        self.assertEqual(self.broker_view(MANAGEMENT_USER), before)

    def test_delete_not_done_keeps_login(self):
        """Revoking where the node answers the DELETE with 404 (the user
        still there) or a redirect: the run fails, Odoo keeps the login and
        the next run deletes it."""
        reply = self.provision("store-dev-keep")
        username = reply["username"]
        self.sync()
        self.env["iot.credentials"].search(
            [("username", "=", username)]
        ).action_revoke()
        real = requests.request
        for status in (404, 301):

            def answer(method, url, status=status, **kwargs):
                if method == "DELETE" and url.endswith(f"/api/users/{username}"):
                    response = requests.Response()
                    response.status_code = status
                    response.headers["Location"] = "/api/users/"
                    return response
                return real(method, url, **kwargs)

            with (
                self.subTest(status=status),
                patch.object(broker_api.requests, "request", answer),
                self.assertLogs(ADAPTER_LOGGER, "WARNING"),
            ):
                self.env.flush_all()
                result = engine.run_sync(
                    self.env.cr.dbname, adapters=["iot.rabbitmq.store"]
                )
            self.assertFalse(result["ok"])
            self.assertIn(f"HTTP {status} to DELETE /api/users/…", result["error"])
            self.assertEqual(self.broker_view(username)[0][0], 200)
            self.env.cr.execute(
                "SELECT 1 FROM iot_store_pushed WHERE store = 'rabbitmq' "
                "AND login = %s",
                [username],
            )
            self.assertTrue(self.env.cr.fetchall(), "the login was forgotten")
        self.assertEqual(self.sync()["deleted"], 1)
        self.assertEqual(self.broker_view(username)[0][0], 404)

    def test_any_name_reaches_its_own_user(self):
        """The client addresses a user whose name holds %, /, :, @ and ..
        on the real node, and refuses an all-dot name before any call."""
        client = broker_api.RabbitmqManagement(
            self.broker.management_url,
            self.broker.management_user,
            self.broker.management_password,
        )
        name = "we%ird/na:me@x..y"
        state = rabbitmq_store.login_state(
            rabbitmq_store.rabbitmq_hash(new_secret()[0])[0],
            rabbitmq_store.resource_permissions(name),
            {"write": rabbitmq_store.NOTHING, "read": rabbitmq_store.NOTHING},
        )
        client.import_definitions(rabbitmq_store.definitions({name: state}, "/"))
        self.assertEqual(client.user(name)["name"], name)
        client.close_connections(name, "test")
        client.delete_user(name)
        self.assertIsNone(client.user(name))
        with self.assertRaisesRegex(broker_api.BrokerApiError, "HTTP 404"):
            client.delete_user(name)  # nothing deleted: an error, not "done"
        users = {user["name"] for user in client.users()}
        for dots in ("..", "."):
            with self.assertRaises(broker_api.UnaddressableError):
                client.delete_user(dots)
        self.assertEqual({user["name"] for user in client.users()}, users)
