# License LGPL-3.0 or later (https://www.gnu.org/licenses/lgpl).
"""Revoking cuts live sessions (iot.broker.session).

* RabbitMQ 3.10: a real node (tests/brokers/rabbitmq.py) whose MQTT users are this
  test's Odoo, and whose management API Odoo calls after the commit.
* EMQX 5.8 cannot run here: a CONTRACT TEST against a small HTTP server that
  implements, strictly, the two calls of EMQX v5.8.9's REST API Odoo makes
  (emqx_mgmt_api_clients.erl: ``GET /api/v5/clients``, ``DELETE
  /api/v5/clients/:clientid``). It is not a broker.
* Mosquitto: the file sync's reload, for the triggers
  test_mosquitto_sync.py does not cover.

The commit is simulated the way Odoo runs it: flush, then the functions the
transaction put in ``cr.postcommit``; the registry is in test mode, so the
new cursor they open works inside the test transaction. Each real test
prints the time from that "commit" to the client's disconnection.
"""

import base64
import json
import logging
import re
import threading
import time
from http.server import BaseHTTPRequestHandler
from unittest.mock import patch
from urllib.parse import parse_qs, unquote, urlsplit

import paho.mqtt.client as mqtt

from odoo.tests import HttpCase, new_test_user, tagged
from odoo.tools import mute_logger

from odoo.addons.iot_base.models import iot_broker_api as apis
from odoo.addons.iot_base.models import iot_broker_session as session
from odoo.addons.iot_base.models import iot_store_sync as engine
from odoo.addons.iot_base.tools import broker_api

from .brokers.rabbitmq import MANAGEMENT_USER, RabbitMQBroker
from .common import (
    IotCommonCase,
    LoopbackHttpServer,
    MosquittoClientMixin,
    rabbitmq_client,
    start_synced_mosquitto,
)

TOKEN = "session-broker-t0ken"
WAIT = 15  # seconds, generous: for anything a broker must do
LOGGER = "odoo.addons.iot_base.models.iot_broker_session"
_logger = logging.getLogger(__name__)


def commit_hooks(env, func=session.run_cutoff, key=session.POSTCOMMIT_KEY):
    """Run what the commit of the current transaction would run after it:
    the post-commit functions ``func`` (queued under ``key``; others stay
    queued); return the time the commit happened and their results."""
    env.flush_all()
    funcs = env.cr.postcommit._funcs
    ours = [f for f in funcs if getattr(f, "func", None) is func]
    for f in ours:
        funcs.remove(f)
    env.cr.postcommit.data.pop(key, None)
    committed = time.monotonic()
    return committed, [f() for f in ours]


def report(what, seconds):
    # the README's revocation latencies come from these lines
    _logger.info("revocation latency, %s: %.1f ms", what, seconds * 1000)


@tagged("post_install", "-at_install")
class TestBrokerSessionRabbitmq(HttpCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        params = cls.env["ir.config_parameter"].sudo()
        params.set_param("iot_base.auth_token", TOKEN)
        cls.ns = cls.env.ref("base.main_company").iot_mqtt_namespace
        cls.broker = RabbitMQBroker(cls.base_url(), TOKEN)
        cls.addClassCleanup(cls.broker.stop)
        cls.broker.start()
        params.set_param(apis.RABBITMQ_URL_PARAM, cls.broker.management_url)
        params.set_param(apis.RABBITMQ_USER_PARAM, cls.broker.management_user)
        params.set_param(apis.RABBITMQ_PASSWORD_PARAM, cls.broker.management_password)

    def _client(self, username, password, transport="tcp", expect_rc=0):
        client = rabbitmq_client(self, self.broker, username, password, transport)
        rc = client.connacks.get(timeout=WAIT)
        self.assertEqual(rc.value, expect_rc, f"CONNACK: {rc}")
        return client

    def _published(self, client, topic):
        """Whether a QoS 1 publish is acknowledged by the broker."""
        info = client.publish(topic, b"x", qos=1)
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            return False
        try:
            info.wait_for_publish(timeout=3)
        except RuntimeError:  # paho: the connection is gone
            return False
        return info.is_published()

    def _device(self, username):
        device = self.env["iot.credentials"].create(
            {"username": username, "kind": "device"}
        )
        secret = device.action_rotate_secret()["context"]["default_secret"]
        return device, secret

    def _topic(self, username):
        return f"{self.ns}/devices/{username}/telemetry/t"

    def _assert_cut(self, clients, committed, what, topic, login):
        for client in clients:
            disconnected = client.disconnected_at.get(timeout=WAIT)
            report(f"RabbitMQ, {what}", disconnected - committed)
            self.assertFalse(self._published(client, topic), "publish after the cut")
        # and the login itself is refused from then on
        self._client(*login, expect_rc=134).loop_stop()

    def test_revoked_device_cut(self):
        device, secret = self._device("device_cut01")
        _other, other_secret = self._device("device_cut02")
        tcp = self._client("device_cut01", secret)
        ws = self._client("device_cut01", secret, "websockets")
        bystander = self._client("device_cut02", other_secret)
        topic = self._topic("device_cut01")
        for _ in range(5):
            self.assertTrue(self._published(tcp, topic))
        self.assertTrue(self._published(ws, topic))
        device.action_revoke()
        committed, results = commit_hooks(self.env)
        self.assertEqual(
            results[0]["brokers"], {"rabbitmq": {"closed": 1, "unit": "usernames"}}
        )
        self._assert_cut(
            [tcp, ws], committed, "device revoked", topic, ("device_cut01", secret)
        )
        self.assertTrue(self._published(bystander, self._topic("device_cut02")))
        # what the settings page shows the administrator
        self.assertIn(
            "rabbitmq: closed (1 usernames)",
            self.env["res.config.settings"].create({}).iot_broker_session_last_result,
        )

    def test_rotated_secret_cut(self):
        # the broker cannot tell which session used the old secret: every
        # session of the username goes, the new secret connects again
        device, secret = self._device("device_cut04")
        client = self._client("device_cut04", secret)
        topic = self._topic("device_cut04")
        self.assertTrue(self._published(client, topic))
        new_secret = device.action_rotate_secret()["context"]["default_secret"]
        committed, _results = commit_hooks(self.env)
        self._assert_cut(
            [client], committed, "secret rotated", topic, ("device_cut04", secret)
        )
        self.assertTrue(
            self._published(self._client("device_cut04", new_secret), topic)
        )

    def test_deleted_and_archived_device_cut(self):
        Device = self.env["iot.mqtt.device"]
        for action in ("unlink", "action_archive"):
            with self.subTest(action=action):
                device = Device.create(
                    {"name": f"Cut {action}", "hardware_id": f"cut-{action[-6:]}"}
                )
                secret = device._issue_device_secret()
                username = device.credential_id.username
                topic = f"{device.topic_prefix}/status"
                client = self._client(username, secret)
                self.assertTrue(self._published(client, topic))
                getattr(device, action)()
                committed, _results = commit_hooks(self.env)
                self._assert_cut(
                    [client], committed, f"device {action}", topic, (username, secret)
                )

    def _console_user(self, login):
        user = new_test_user(
            self.env,
            login=login,
            groups="base.group_user,iot_base.iot_base_group_user",
        )
        creds = user.with_user(user).get_or_create_iot_credentials()
        login = (creds["username"], creds["password"])
        topic = f"{self.ns}/users/{creds['username']}/x"
        client = self._client(*login)
        self.assertTrue(self._published(client, topic))
        return user, client, topic, login

    def test_archived_owner_cut(self):
        user, client, topic, login = self._console_user("cut.owner@example.com")
        user.action_archive()
        committed, _results = commit_hooks(self.env)
        self._assert_cut([client], committed, "owner archived", topic, login)

    def test_iot_group_removed_cut(self):
        group = self.env.ref("iot_base.iot_base_group_user")
        # from the user's side (user form) ...
        user, client, topic, login = self._console_user("cut.group1@example.com")
        user.write({"groups_id": [(3, group.id)]})
        committed, _results = commit_hooks(self.env)
        self._assert_cut([client], committed, "IoT group removed", topic, login)
        # ... and from the group's side
        user, client, topic, login = self._console_user("cut.group2@example.com")
        group.write({"users": [(3, user.id)]})
        committed, _results = commit_hooks(self.env)
        self._assert_cut([client], committed, "user removed from group", topic, login)

    def test_rolled_back_revoke_cuts_nothing(self):
        device, secret = self._device("device_cut03")
        client = self._client("device_cut03", secret)
        topic = self._topic("device_cut03")
        with self.assertRaises(RuntimeError), self.env.cr.savepoint():
            device.action_revoke()
            raise RuntimeError("abort")
        self.assertTrue(device.active)
        _committed, results = commit_hooks(self.env)
        self.assertEqual(results, [{"ok": True, "usernames": 0}])
        self.assertTrue(self._published(client, topic))
        self.assertTrue(client.disconnected_at.empty())

    def test_management_user_no_mqtt(self):
        # Odoo's management user is internal: it may not open an MQTT session,
        # and the default guest user is gone
        self._client(
            MANAGEMENT_USER, self.broker.management_password, expect_rc=135
        ).loop_stop()
        self._client("guest", "guest", expect_rc=134).loop_stop()
        status, _body = self.broker.management_request(
            "GET", "/api/whoami", auth=("guest", "guest")
        )
        self.assertEqual(status, 401)


class EmqxContractServer(LoopbackHttpServer):
    """CONTRACT TEST double of EMQX v5.8.9's REST API, the two calls Odoo
    makes, answered as emqx_mgmt_api_clients.erl does; not a broker.

    * Basic auth ``api_key:api_secret``, else 401 ``BAD_API_KEY_OR_SECRET``.
    * ``GET /api/v5/clients``: ``page`` (>= 1), ``limit`` (1..10000, else 400
      ``INVALID_PARAMETER``), ``username`` exact and repeatable; 200
      ``{"data": [client...], "meta": {count, limit, page, hasnext}}``.
    * ``DELETE /api/v5/clients/:clientid`` (percent-encoded): 204, or 404
      ``CLIENTID_NOT_FOUND``.
    """

    def __init__(self, key, secret):
        self.auth = "Basic " + base64.b64encode(f"{key}:{secret}".encode()).decode()
        self.clients = {}  # clientid -> username
        self.requests = []
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *_args):
                pass

            def _reply(self, status, body=None):
                data = json.dumps(body).encode() if body is not None else b""
                self.send_response(status)
                if body is not None:
                    self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _handle(self, method):
                url = urlsplit(self.path)
                with server.lock:
                    server.requests.append((method, self.path))
                if self.headers.get("Authorization") != server.auth:
                    return self._reply(
                        401,
                        {
                            "code": "BAD_API_KEY_OR_SECRET",
                            "message": "Check api_key/api_secret",
                        },
                    )
                if method == "GET" and url.path == "/api/v5/clients":
                    return self._list(parse_qs(url.query))
                match = re.fullmatch(r"/api/v5/clients/([^/]+)", url.path)
                if method == "DELETE" and match:
                    clientid = unquote(match.group(1))
                    with server.lock:
                        found = server.clients.pop(clientid, None)
                    if found is None:
                        return self._reply(
                            404,
                            {
                                "code": "CLIENTID_NOT_FOUND",
                                "message": "Client ID not found",
                            },
                        )
                    return self._reply(204)
                return self._reply(404, {"code": "NOT_FOUND", "message": "no route"})

            def _list(self, query):
                try:
                    page = int(query.get("page", ["1"])[0])
                    limit = int(query.get("limit", ["100"])[0])
                except ValueError:
                    page = limit = 0
                if page < 1 or not 1 <= limit <= 10000:
                    return self._reply(
                        400,
                        {"code": "INVALID_PARAMETER", "message": "page_limit_invalid"},
                    )
                usernames = query.get("username")
                with server.lock:
                    rows = [
                        {"clientid": cid, "username": user, "connected": True}
                        for cid, user in sorted(server.clients.items())
                        if usernames is None or user in usernames
                    ]
                chunk = rows[(page - 1) * limit : page * limit]
                return self._reply(
                    200,
                    {
                        "data": chunk,
                        "meta": {
                            "count": len(rows),
                            "limit": limit,
                            "page": page,
                            "hasnext": page * limit < len(rows),
                        },
                    },
                )

            def do_GET(self):
                self._handle("GET")

            def do_DELETE(self):
                self._handle("DELETE")

        self._serve(Handler)


@tagged("post_install", "-at_install")
class TestBrokerSessionEmqxContract(IotCommonCase):
    """Contract test of the EMQX 5.8 REST calls (see EmqxContractServer)."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.registry.enter_test_mode(cls.cr)
        cls.addClassCleanup(cls.registry.leave_test_mode)
        cls.emqx = EmqxContractServer("odoo-key", "s3cret-api").start()
        cls.addClassCleanup(cls.emqx.stop)
        params = cls.env["ir.config_parameter"].sudo()
        params.set_param(apis.EMQX_URL_PARAM, cls.emqx.url + "/")
        params.set_param(apis.EMQX_KEY_PARAM, "odoo-key")
        params.set_param(apis.EMQX_SECRET_PARAM, "s3cret-api")

    def setUp(self):
        super().setUp()
        self.emqx.clients.clear()
        self.emqx.requests.clear()

    def test_revoke_kicks_every_client_of_the_username(self):
        device, _secret = self._device_with_secret("device_emqx01")
        self.emqx.clients.update(
            {
                "dev/1 a b": "device_emqx01",  # any client id, quoted in the path
                "dev-2": "device_emqx01",
                "dev-3": "device_emqx01",
                "other": "device_emqx02",
            }
        )
        device.action_revoke()
        with patch.object(broker_api.EmqxRest, "page_limit", 2):  # several pages
            _committed, results = commit_hooks(self.env)
        self.assertEqual(
            results[0]["brokers"], {"emqx": {"closed": 3, "unit": "clients"}}
        )
        self.assertEqual(self.emqx.clients, {"other": "device_emqx02"})
        self.assertIn(("DELETE", "/api/v5/clients/dev%2F1%20a%20b"), self.emqx.requests)

    def test_owner_archived_and_group_removed(self):
        group = self.env.ref("iot_base.iot_base_group_user")
        for change in ("archive", "group"):
            user = new_test_user(
                self.env,
                login=f"emqx.{change}@example.com",
                groups="base.group_user,iot_base.iot_base_group_user",
            )
            username = user.with_user(user).get_or_create_iot_credentials()["username"]
            self.emqx.clients[f"tab-{change}"] = username
            if change == "archive":
                user.action_archive()
            else:
                user.write({"groups_id": [(3, group.id)]})
            commit_hooks(self.env)
            self.assertNotIn(f"tab-{change}", self.emqx.clients)

    def test_rotation_kicks(self):
        device, _secret = self._device_with_secret("device_emqx07")
        commit_hooks(self.env)  # the device's creation, committed
        self.emqx.clients.update({"old": "device_emqx07", "other": "device_emqx08"})
        device.action_rotate_secret()
        commit_hooks(self.env)
        self.assertEqual(self.emqx.clients, {"other": "device_emqx08"})

    def test_live_credentials_untouched(self):
        device, _secret = self._device_with_secret("device_emqx03")
        self.emqx.clients["keep"] = "device_emqx03"
        device.write({"note": "not a right"})
        with self.assertRaises(RuntimeError), self.env.cr.savepoint():
            device.action_revoke()
            raise RuntimeError("rolled back")
        _committed, results = commit_hooks(self.env)
        self.assertEqual(results, [{"ok": True, "usernames": 0}])
        self.assertEqual(self.emqx.requests, [], "no call for a live credential")
        self.assertEqual(self.emqx.clients, {"keep": "device_emqx03"})

    def test_failures_reported_without_secrets(self):
        params = self.env["ir.config_parameter"].sudo()
        device, _secret = self._device_with_secret("device_emqx04")
        self.emqx.clients["c4"] = "device_emqx04"
        params.set_param(apis.EMQX_SECRET_PARAM, "wrong-s3cret")
        device.action_revoke()
        with self.assertLogs(LOGGER, "WARNING") as logs:
            _committed, results = commit_hooks(self.env)
        self.assertFalse(results[0]["ok"])
        self.assertIn("HTTP 401", results[0]["brokers"]["emqx"]["error"])
        self.assertEqual(self.emqx.clients, {"c4": "device_emqx04"})
        text = "\n".join(logs.output) + json.dumps(results)
        shown = (
            self.env["res.config.settings"].create({}).iot_broker_session_last_result
        )
        self.assertIn("emqx: error", shown)
        for secret in ("wrong-s3cret", "s3cret-api", "odoo-key"):
            self.assertNotIn(secret, text + shown)
        # unreachable: a quick, reported failure, not a hung request
        params.set_param(apis.EMQX_URL_PARAM, "http://127.0.0.1:1")
        other, _secret = self._device_with_secret("device_emqx05")
        other.action_revoke()
        with mute_logger(LOGGER):
            started = time.monotonic()
            _committed, results = commit_hooks(self.env)
        self.assertLess(time.monotonic() - started, session.BUDGET + 1)
        self.assertIn("unreachable", results[0]["brokers"]["emqx"]["error"])

    def test_unaddressable_username_never_sent(self):
        """An all-dot username (an older database's) is never put in a
        path: the cut-off of the others goes on and the result says so."""
        self.emqx.clients.update({"c9": "device_emqx09", "c..": ".."})
        with self.assertLogs(LOGGER, "WARNING"):
            result = self.env["iot.broker.session"]._cutoff(
                {"check": {0: {"..", "device_emqx09"}}}
            )
        self.assertFalse(result["ok"])
        self.assertIn("cannot be addressed", result["brokers"]["emqx"]["error"])
        self.assertEqual(self.emqx.clients, {"c..": ".."})
        self.assertEqual(
            [p.split("?")[0] for _m, p in self.emqx.requests],
            ["/api/v5/clients", "/api/v5/clients/c9"],
        )

    def test_nothing_queued_without_broker_api(self):
        params = self.env["ir.config_parameter"].sudo()
        params.set_param(apis.EMQX_URL_PARAM, "")
        device, _secret = self._device_with_secret("device_emqx06")
        device.action_revoke()
        self.assertNotIn(session.POSTCOMMIT_KEY, self.env.cr.postcommit.data)

    def test_settings_are_admin_only(self):
        fields_ = self.env["res.config.settings"]._fields
        for name in (
            "iot_rabbitmq_management_url",
            "iot_rabbitmq_management_user",
            "iot_rabbitmq_management_password",
            "iot_emqx_api_url",
            "iot_emqx_api_key",
            "iot_emqx_api_secret",
            "iot_broker_session_last_result",
        ):
            self.assertEqual(fields_[name].groups, "base.group_system", name)


@tagged("post_install", "-at_install")
class TestBrokerSessionMosquitto(MosquittoClientMixin, IotCommonCase):
    """The triggers test_mosquitto_sync.py does not cover (revoke and owner
    archived are there), through the real after-commit hook."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.registry.enter_test_mode(cls.cr)
        cls.addClassCleanup(cls.registry.leave_test_mode)
        cls.broker = start_synced_mosquitto(cls)

    def _sync_after_commit(self):
        """The commit: its hook wakes the engine's cron, which syncs."""
        committed, results = commit_hooks(
            self.env, engine.trigger_sync, engine.POSTCOMMIT_KEY
        )
        self.assertEqual(results, [{"ok": True, "triggered": True}])
        self.env.ref(engine.CRON_XMLID).method_direct_trigger()
        run = self.env["iot.store.sync.run"].search(
            [("store", "=", "mosquitto")], limit=1
        )
        self.assertTrue(run.ok, run.error)
        return committed

    def _assert_cut(self, client, committed, what, login):
        self.wait_for(lambda: client.disconnects, f"disconnection ({what})")
        report(f"Mosquitto, {what}", client.disconnected_at - committed)
        self.assertFalse(self.broker.can_connect(*login))

    def _watch(self, client):
        client.disconnected_at = None

        def on_disconnect(*_args):
            client.disconnected_at = client.disconnected_at or time.monotonic()
            client.disconnects += 1

        client.on_disconnect = on_disconnect
        return client

    def test_revoke_cuts(self):
        device, secret = self._device_with_secret("device_mcut00")
        self._sync_after_commit()
        client = self._watch(self.connect("device_mcut00", secret))
        device.action_revoke()
        self._assert_cut(
            client,
            self._sync_after_commit(),
            "device revoked",
            ("device_mcut00", secret),
        )

    def test_device_deleted_or_archived(self):
        Device = self.env["iot.mqtt.device"]
        for action in ("unlink", "action_archive"):
            device = Device.create(
                {"name": f"Mosq {action}", "hardware_id": f"mosq-{action[-6:]}"}
            )
            secret = device._issue_device_secret()
            username = device.credential_id.username
            self._sync_after_commit()
            client = self._watch(self.connect(username, secret))
            getattr(device, action)()
            self._assert_cut(
                client,
                self._sync_after_commit(),
                f"device {action}",
                (username, secret),
            )

    def test_iot_group_removed(self):
        group = self.env.ref("iot_base.iot_base_group_user")
        for side in ("user", "group"):
            user = new_test_user(
                self.env,
                login=f"mosq.cut.{side}@example.com",
                groups="base.group_user,iot_base.iot_base_group_user",
            )
            creds = user.with_user(user).get_or_create_iot_credentials()
            login = (user._iot_broker_username(creds), creds["password"])
            self._sync_after_commit()
            client = self._watch(self.connect(*login))
            if side == "user":
                user.write({"groups_id": [(3, group.id)]})
            else:
                group.write({"users": [(3, user.id)]})
            self._assert_cut(
                client, self._sync_after_commit(), f"IoT group removed ({side})", login
            )

    def test_archived_owner(self):
        user = new_test_user(
            self.env,
            login="mosq.cut.owner@example.com",
            groups="base.group_user,iot_base.iot_base_group_user",
        )
        creds = user.with_user(user).get_or_create_iot_credentials()
        login = (user._iot_broker_username(creds), creds["password"])
        self._sync_after_commit()
        client = self._watch(self.connect(*login))
        user.action_archive()
        self._assert_cut(client, self._sync_after_commit(), "owner archived", login)
