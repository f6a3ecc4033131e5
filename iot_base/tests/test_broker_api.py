# License LGPL-3.0 or later (https://www.gnu.org/licenses/lgpl).
"""The one broker REST client (tools/broker_api.py): what it refuses before
any network call, the exact encoded paths a server receives, no redirect
followed, no secret in an error, a bounded time."""

import json
import threading
import time
from http.server import BaseHTTPRequestHandler
from unittest.mock import patch

from odoo.tests import BaseCase, TransactionCase, tagged

from odoo.addons.iot_base.models import iot_broker_api as apis
from odoo.addons.iot_base.tools import broker_api

from .common import LoopbackHttpServer

USER, PASSWORD = "odoo-api", "api-pa55word"
WEIRD = "a%b/c:d@e..f"  # every character a path could misread
WEIRD_ENCODED = "a%25b%2Fc%3Ad%40e..f"


class RecordingServer(LoopbackHttpServer):
    """Records every raw request path; answers ``status`` (a 301 points to
    ``/elsewhere``, which records itself when fetched)."""

    def __init__(self, status=204, body=None):
        self.paths = []
        self.status = status
        self.body = body
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *_args):
                pass

            def _handle(self):
                server.paths.append((self.command, self.path))
                data = json.dumps(server.body).encode() if server.body else b""
                self.send_response(server.status)
                if server.status in (301, 302, 307, 308):
                    self.send_header("Location", "/elsewhere")
                if data:
                    self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PUT = do_DELETE = _handle

        self._serve(Handler)


@tagged("post_install", "-at_install")
class TestBrokerApiPaths(BaseCase):
    def test_refused_segments_never_sent(self):
        """``..``, ``.`` and what no segment can carry: refused, no call."""

        def no_network(*_args, **_kwargs):
            raise AssertionError("a refused name reached the network")

        rabbitmq = broker_api.RabbitmqManagement("http://127.0.0.1:9", USER, PASSWORD)
        emqx = broker_api.EmqxRest("http://127.0.0.1:9", USER, PASSWORD)
        refused = ["", ".", "..", "...", "a\x00b", "a\nb", "\ud800", None, 7, b"x"]
        with patch.object(broker_api.requests, "request", no_network):
            for name in refused:
                for call in (
                    rabbitmq.delete_user,
                    rabbitmq.user,
                    emqx.delete_user,
                    emqx.delete_rules,
                    emqx.kick,
                ):
                    with (
                        self.subTest(name=name, call=call.__name__),
                        self.assertRaises(broker_api.UnaddressableError),
                    ):
                        call(name)
                with self.subTest(name=name):
                    self.assertFalse(broker_api.addressable(name))
        # a run reports it as any broker API error
        self.assertTrue(
            issubclass(broker_api.UnaddressableError, broker_api.BrokerApiError)
        )
        self.assertEqual(broker_api.segment(WEIRD), WEIRD_ENCODED)
        self.assertEqual(broker_api.segment("é~x_y-z.1"), "%C3%A9~x_y-z.1")
        self.assertTrue(broker_api.addressable("..a"))

    def test_exact_encoded_paths(self):
        server = RecordingServer(204).start()
        self.addCleanup(server.stop)
        rabbitmq = broker_api.RabbitmqManagement(server.url, USER, PASSWORD)
        emqx = broker_api.EmqxRest(server.url, USER, PASSWORD)
        rabbitmq.delete_user(WEIRD)
        rabbitmq.close_connections(WEIRD, "revoked")
        emqx.delete_user(WEIRD)
        emqx.delete_rules(WEIRD)
        emqx.put_rules(WEIRD, [])
        emqx.kick(WEIRD)
        self.assertEqual(
            server.paths,
            [
                ("DELETE", f"/api/users/{WEIRD_ENCODED}"),
                ("DELETE", f"/api/connections/username/{WEIRD_ENCODED}"),
                (
                    "DELETE",
                    "/api/v5/authentication/password_based%3Abuilt_in_database"
                    f"/users/{WEIRD_ENCODED}",
                ),
                (
                    "DELETE",
                    "/api/v5/authorization/sources/built_in_database/rules/users/"
                    + WEIRD_ENCODED,
                ),
                (
                    "PUT",
                    "/api/v5/authorization/sources/built_in_database/rules/users/"
                    + WEIRD_ENCODED,
                ),
                ("DELETE", f"/api/v5/clients/{WEIRD_ENCODED}"),
            ],
        )

    def test_a_delete_that_did_not_delete_fails(self):
        """404, a redirect (never followed), anything but 204: an error that
        names the route, not the login, and holds no secret."""
        for status in (404, 301, 302, 307, 200, 500):
            server = RecordingServer(status).start()
            self.addCleanup(server.stop)
            for client in (
                broker_api.RabbitmqManagement(server.url, USER, PASSWORD),
                broker_api.EmqxRest(server.url, USER, PASSWORD),
            ):
                with self.subTest(status=status, client=type(client).__name__):
                    with self.assertRaises(broker_api.BrokerApiError) as caught:
                        client.delete_user("device_secretname")
                    text = str(caught.exception)
                    self.assertEqual(caught.exception.status, status)
                    self.assertIn(f"HTTP {status} to DELETE", text)
                    for secret in ("device_secretname", PASSWORD, USER):
                        self.assertNotIn(secret, text)
            self.assertNotIn("/elsewhere", str(server.paths), "a redirect was followed")
            self.assertEqual(len(server.paths), 2)

    def test_bounded_time_and_url(self):
        with self.assertRaises(broker_api.BrokerApiError):
            broker_api.EmqxRest("http://u:p@127.0.0.1:9", USER, PASSWORD)
        with self.assertRaises(broker_api.BrokerApiError):
            broker_api.EmqxRest("file:///etc/passwd", USER, PASSWORD)
        # a budget used up: no call at all
        spent = broker_api.EmqxRest(
            "http://127.0.0.1:9", USER, PASSWORD, deadline=time.monotonic() - 1
        )
        with (
            patch.object(broker_api.requests, "request", side_effect=AssertionError),
            self.assertRaisesRegex(broker_api.BrokerApiError, "budget"),
        ):
            spent.kick("c1")
        # a server that never answers: the call ends at its timeout
        hang = threading.Event()

        class Hanging(LoopbackHttpServer):
            def __init__(self):
                class Handler(BaseHTTPRequestHandler):
                    def log_message(self, *_args):
                        pass

                    def do_DELETE(self):
                        hang.wait(30)

                self._serve(Handler)

        server = Hanging().start()
        self.addCleanup(server.stop)
        self.addCleanup(hang.set)  # (runs first)
        client = broker_api.EmqxRest(server.url, USER, PASSWORD, timeout=0.5)
        with self.assertRaisesRegex(broker_api.BrokerApiError, "unreachable"):
            client.kick("c1")


class ConnectionsServer(LoopbackHttpServer):
    """RabbitMQ's connections and EMQX's clients, as far as disconnecting
    users goes: records (method, path, X-Reason) of every request."""

    def __init__(self, connected):
        self.requests = []
        self.connected = connected  # {username: [client ids]}
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *_args):
                pass

            def _answer(self, status, body=None):
                data = json.dumps(body).encode() if body is not None else b""
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                server.requests.append((self.command, self.path, None))
                if self.path.startswith("/api/connections"):
                    users = [{"user": u} for u in server.connected]
                    return self._answer(200, users)
                user = self.path.split("username=", 1)[1].split("&", 1)[0]
                data = [
                    {"clientid": cid, "username": user}
                    for cid in server.connected.get(user, ())
                ]
                return self._answer(200, {"data": data, "meta": {"hasnext": False}})

            def do_DELETE(self):
                reason = self.headers.get("X-Reason")
                server.requests.append((self.command, self.path, reason))
                return self._answer(204)

        self._serve(Handler)


@tagged("post_install", "-at_install")
class TestDisconnectUsers(BaseCase):
    """ "Close every session of these users": one client method per broker,
    which the stores and the session cut-off both call."""

    def test_rabbitmq_few_and_many(self):
        server = ConnectionsServer({"dev_a": ["x"], WEIRD: ["y"]}).start()
        self.addCleanup(server.stop)
        client = broker_api.RabbitmqManagement(server.url, USER, PASSWORD)
        self.assertEqual(client.disconnect_users(["dev_a", "dev_b"]), 2)
        self.assertEqual(
            server.requests,
            [
                ("DELETE", "/api/connections/username/dev_a", broker_api.CLOSE_REASON),
                ("DELETE", "/api/connections/username/dev_b", broker_api.CLOSE_REASON),
            ],
            "a few: one call each, no listing",
        )
        server.requests.clear()
        many = [f"dev_{i:03d}" for i in range(broker_api.BULK_CLOSE)] + [WEIRD]
        self.assertEqual(client.disconnect_users(many, "changed"), 1)
        self.assertEqual(
            server.requests,
            [
                ("GET", "/api/connections?columns=user", None),
                ("DELETE", f"/api/connections/username/{WEIRD_ENCODED}", "changed"),
            ],
            "many: only the connected ones",
        )

    def test_emqx_kicks_every_client(self):
        server = ConnectionsServer({"dev_a": ["c1", "c2"], "dev_b": []}).start()
        self.addCleanup(server.stop)
        client = broker_api.EmqxRest(server.url, USER, PASSWORD)
        self.assertEqual(client.disconnect_users(["dev_a", "dev_b"]), 2)
        self.assertEqual(
            [(m, p) for m, p, _r in server.requests if m == "DELETE"],
            [("DELETE", "/api/v5/clients/c1"), ("DELETE", "/api/v5/clients/c2")],
        )


@tagged("post_install", "-at_install")
class TestBrokerApiModel(TransactionCase):
    """``iot.broker.api``: the one reader of the broker API settings, and the
    clients the stores and the cut-off share."""

    def test_settings_and_clients(self):
        api_model = self.env["iot.broker.api"]
        params = self.env["ir.config_parameter"].sudo()
        for key in [key for keys in apis.PARAMS.values() for key in keys]:
            params.set_param(key, False)
        self.assertFalse(api_model._configured())
        params.set_param(apis.RABBITMQ_URL_PARAM, " http://127.0.0.1:15672/ ")
        params.set_param(apis.RABBITMQ_USER_PARAM, USER)
        params.set_param(apis.RABBITMQ_PASSWORD_PARAM, PASSWORD)
        self.assertTrue(api_model._configured())
        config = api_model._get_config()
        self.assertEqual(
            config["rabbitmq"],
            {"url": "http://127.0.0.1:15672", "user": USER, "password": PASSWORD},
        )
        self.assertEqual(config["emqx"]["url"], "")
        client = api_model._client("rabbitmq", 2.5, deadline=7.0)
        self.assertIsInstance(client, broker_api.RabbitmqManagement)
        self.assertEqual(
            (client.url, client.timeout, client.deadline),
            ("http://127.0.0.1:15672", 2.5, 7.0),
        )
        params.set_param(apis.EMQX_URL_PARAM, "http://127.0.0.1:18083")
        self.assertIsInstance(api_model._client("emqx", 1.0), broker_api.EmqxRest)
        # what the stores read
        self.assertEqual(
            self.env["iot.rabbitmq.store"]._get_config()["url"],
            "http://127.0.0.1:15672",
        )
        self.assertEqual(
            self.env["iot.emqx.store"]._get_config()["url"], "http://127.0.0.1:18083"
        )

    def test_store_and_cutoff_call_the_same_method(self):
        calls = []

        def record(client, names, *args):
            calls.append((type(client).__name__, list(names)))
            return len(names)

        params = self.env["ir.config_parameter"].sudo()
        params.set_param(apis.RABBITMQ_URL_PARAM, "http://127.0.0.1:9")
        params.set_param(apis.EMQX_URL_PARAM, "http://127.0.0.1:9")
        device = self.env["iot.credentials"].create(
            {"username": "device_api_cut", "kind": "device"}
        )
        with (
            patch.object(broker_api.RabbitmqManagement, "disconnect_users", record),
            patch.object(broker_api.EmqxRest, "disconnect_users", record),
        ):
            for store in ("iot.rabbitmq.store", "iot.emqx.store"):
                adapter = self.env[store]
                adapter._close(adapter._client(adapter._get_config()), ["b", "a"])
            device.active = False
            self.env.flush_all()
            result = self.env["iot.broker.session"]._cutoff(
                {"check": {device.id: {"device_api_cut"}}}
            )
        self.assertTrue(result["ok"], result)
        self.assertEqual(
            calls,
            [
                ("RabbitmqManagement", ["a", "b"]),
                ("EmqxRest", ["a", "b"]),
                ("RabbitmqManagement", ["device_api_cut"]),
                ("EmqxRest", ["device_api_cut"]),
            ],
        )
