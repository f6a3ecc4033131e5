# License LGPL-3.0 or later (https://www.gnu.org/licenses/lgpl).
"""The one broker REST client (tools/broker_api.py): what it refuses before
any network call, the exact encoded paths a server receives, no redirect
followed, no secret in an error, a bounded time."""

import json
import threading
import time
from http.server import BaseHTTPRequestHandler
from unittest.mock import patch

from odoo.tests import BaseCase, tagged

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
