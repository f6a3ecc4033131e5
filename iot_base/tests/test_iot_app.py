# License LGPL-3.0 or later (https://www.gnu.org/licenses/lgpl).
"""The MQTT console (/iot/app): the page, its config route, its JavaScript
unit tests, and tours in Chromium against a real RabbitMQ broker."""

import json
import logging
import random
import re
import threading

from odoo import http
from odoo.tests import HttpCase, new_test_user, tagged
from odoo.tools import mute_logger
from odoo.tools.misc import file_path

from ..tools import topic_acl
from ..tools.client_ids import owns_client_id
from .brokers.rabbitmq import RabbitMQBroker
from .common import rabbitmq_client

TOKEN = "iot-app-broker-t0ken"
WAIT = 15  # seconds, for anything the broker must do
# the console's client ids: <username>~<8 hex digits> (the client id policy)
CLIENT_ID_RE = r"^%s~[0-9a-f]{8}$"


def _user(env, login, groups):
    return new_test_user(env, login=login, groups=groups)


@tagged("post_install", "-at_install")
class TestIotAppPage(HttpCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.iot_user = _user(
            cls.env,
            "console.user@example.com",
            "base.group_user,iot_base.iot_base_group_user",
        )
        cls.plain_user = _user(cls.env, "console.plain@example.com", "base.group_user")
        cls.portal_user = _user(
            cls.env, "console.portal@example.com", "base.group_portal"
        )
        cls.ns = cls.env.ref("base.main_company").iot_mqtt_namespace

    def _secrets(self, user):
        return (
            self.env["iot.credentials.secret"]
            .sudo()
            .search_count([("credential_id.user_id", "=", user.id)])
        )

    def _config(self, **params):
        response = self.url_open(
            "/iot/app/config",
            data=json.dumps({"jsonrpc": "2.0", "method": "call", "params": params}),
            headers={"Content-Type": "application/json"},
        )
        reply = response.json()
        if "result" in reply:
            self.assertEqual(response.headers.get("Cache-Control"), "no-store")
        return reply

    def _page_config(self):
        response = self.url_open("/iot/app")
        self.assertEqual(response.status_code, 200)
        match = re.search(r"odoo\.mqtt_config = (\{.*?\});\n", response.text)
        self.assertTrue(match, "the page sets window.odoo.mqtt_config")
        return response, json.loads(match.group(1))

    def test_page(self):
        self.authenticate(self.iot_user.login, self.iot_user.login)
        response, config = self._page_config()
        self.assertEqual(response.headers.get("Cache-Control"), "no-store")
        self.assertEqual(response.headers.get("X-Frame-Options"), "SAMEORIGIN")
        self.assertEqual(self._secrets(self.iot_user), 0, "the page issues nothing")
        username = "user_console_user_example_com"
        self.assertEqual(config["broker_url"], "ws://localhost:8083/mqtt")
        self.assertEqual(
            set(config["credentials"]), {"username", "password", "is_superuser"}
        )
        self.assertEqual(config["credentials"]["username"], username)
        self.assertIsNone(config["credentials"]["password"])
        self.assertIsNone(config["expires_in"])
        self.assertIs(config["credentials"]["is_superuser"], False)
        self.assertRegex(config["client_id"], CLIENT_ID_RE % username)
        self.assertTrue(owns_client_id(username, config["client_id"]))
        # the page's POST issues its secret, for the page's client id
        issued = self._config(client_id=config["client_id"])["result"]
        self.assertEqual(self._secrets(self.iot_user), 1, "one session secret per page")
        self.assertEqual(issued["client_id"], config["client_id"])
        self.assertEqual(issued["credentials"]["username"], username)
        self.assertTrue(0 < issued["expires_in"] <= 12 * 3600)
        for key in ("acl", "default_subscriptions", "default_publish_topic"):
            self.assertEqual(issued[key], config[key], key)
        self.assertEqual(
            config["default_subscriptions"],
            [
                f"{self.ns}/devices/+/telemetry/#",
                f"{self.ns}/devices/+/status/#",
                f"{self.ns}/users/{username}/#",
            ],
        )
        self.assertEqual(
            config["default_publish_topic"], f"{self.ns}/users/{username}/console"
        )
        self.assertIn(
            {
                "permission": "allow",
                "action": "all",
                "topic": f"{self.ns}/users/{username}/#",
                "qos": None,
                "retain": None,
            },
            config["acl"],
        )
        # the secret works, and only until it expires
        credential, expires_at = self.env["iot.credentials"]._authenticate_secret(
            username, issued["credentials"]["password"]
        )
        self.assertEqual(credential.user_id, self.iot_user)
        self.assertEqual(expires_at.strftime("%Y-%m-%d %H:%M:%S"), issued["expires_at"])
        self.assertIn("iot_base.assets_iot_app", response.text)
        # a second page (tab) gets its own client id, and its own secret
        second = self._page_config()[1]
        self.assertNotEqual(second["client_id"], config["client_id"])
        again = self._config(client_id=second["client_id"])["result"]
        self.assertNotEqual(
            again["credentials"]["password"], issued["credentials"]["password"]
        )

    def test_every_suggestion_is_allowed(self):
        """Issue 18: every filter the console suggests (its first one is also
        the input's example) and its pre-filled publish topic pass the
        broker's own check for that user and client id: a user of another
        namespace, a manager, a user with a deny before the allows, and a
        user whose rules allow nothing to subscribe."""
        other_company = self.env["res.company"].create({"name": "Console Other Co"})
        users = {
            "user": self.iot_user,
            "manager": _user(
                self.env,
                "console.manager@example.com",
                "base.group_user,iot_base.iot_base_group_manager",
            ),
            "other namespace": new_test_user(
                self.env,
                login="console.other@example.com",
                groups="base.group_user,iot_base.iot_base_group_user",
                company_id=other_company.id,
                company_ids=[(6, 0, other_company.ids)],
            ),
            "denied": _user(
                self.env,
                "console.denied@example.com",
                "base.group_user,iot_base.iot_base_group_user",
            ),
        }
        denied = users["denied"]
        credential = denied._iot_user_credential()
        self.env["iot.acl.rule"].create(
            {
                "name": "no telemetry for this user",
                "sequence": 0,
                "permission": "deny",
                "action": "subscribe",
                "topic": "${namespace}/devices/+/telemetry/#",
                "credential_ids": [(6, 0, credential.ids)],
            }
        )
        Broker = self.env["iot.broker"].sudo()
        seen = {}
        for role, user in users.items():
            with self.subTest(role=role):
                config = self.env["iot.app"].with_user(user)._page_config(issue=False)
                credential = user._iot_user_credential()
                suggestions = config["default_subscriptions"]
                self.assertTrue(suggestions, role)
                seen[role] = suggestions
                for topic_filter in suggestions:
                    self.assertTrue(
                        Broker._topic_allowed(
                            credential,
                            config["client_id"],
                            topic_acl.SUBSCRIBE,
                            topic_filter,
                            (0, 1),
                            (False,),
                        ),
                        f"{role}: {topic_filter}",
                    )
                    # namespaced, never a bare devices/+/...
                    self.assertTrue(
                        topic_filter.startswith(
                            f"{user.company_id.iot_mqtt_namespace}/"
                        ),
                        topic_filter,
                    )
                if config["default_publish_topic"]:
                    self.assertTrue(
                        Broker._topic_allowed(
                            credential,
                            config["client_id"],
                            topic_acl.PUBLISH,
                            config["default_publish_topic"],
                            (0, 1),
                            (False,),
                        ),
                        role,
                    )
        self.assertNotIn(f"{self.ns}/devices/+/telemetry/#", seen["denied"])
        self.assertIn(f"{self.ns}/devices/+/telemetry/#", seen["user"])
        # the page itself no longer carries a made-up example
        with open(
            file_path(
                "iot_base/static/src/components/subscriptions_panel/"
                "subscriptions_panel.xml"
            )
        ) as template:
            self.assertNotIn("devices/+/telemetry", template.read())

    def test_page_get_writes_nothing(self):
        """Issue 16 point 13: navigation-like GETs (a cross-site link is one,
        with the user's cookie) issue no secret, make no credential and
        schedule no store sync, so they cannot evict an open tab's secret."""
        user = _user(
            self.env,
            "console.fresh@example.com",
            "base.group_user,iot_base.iot_base_group_user",
        )
        scheduled = []
        self.patch(
            type(self.env["iot.store.sync"]),
            "_schedule",
            lambda model: scheduled.append(model),
        )
        self.authenticate(user.login, user.login)
        # an open tab and its secret
        self.env["ir.config_parameter"].sudo().set_param(
            "iot_base.max_session_secrets", 3
        )
        _response, config = self._page_config()
        self.assertFalse(user.sudo().iot_credential_ids, "no credential made by GET")
        self.assertEqual(
            config["credentials"]["username"], "user_console_fresh_example_com"
        )
        self.assertTrue(config["default_subscriptions"])
        tab = self._config(client_id=config["client_id"])["result"]
        scheduled.clear()
        Secret = self.env["iot.credentials.secret"].sudo()
        rows = Secret.search([]).ids
        self.env.cr.execute("SELECT count(*) FROM ir_cron_trigger")
        triggers = self.env.cr.fetchone()[0]
        for _i in range(25):
            response = self.url_open(
                "/iot/app",
                headers={"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "navigate"},
            )
            self.assertEqual(response.status_code, 200)
            self.assertNotIn(tab["credentials"]["password"], response.text)
        self.assertEqual(Secret.search([]).ids, rows, "no secret issued or evicted")
        self.assertEqual(scheduled, [], "no store sync scheduled")
        self.env.cr.execute("SELECT count(*) FROM ir_cron_trigger")
        self.assertEqual(self.env.cr.fetchone()[0], triggers)
        # the open tab's secret still works
        self.assertTrue(
            self.env["iot.credentials"]._authenticate_secret(
                tab["credentials"]["username"], tab["credentials"]["password"]
            )[0]
        )

    def test_config_post_refused_from_another_site(self):
        """The POST that issues a secret cannot be made by another site's page."""
        self.authenticate(self.iot_user.login, self.iot_user.login)
        body = json.dumps({"jsonrpc": "2.0", "method": "call", "params": {}})
        for headers in (
            {"Sec-Fetch-Site": "cross-site"},
            {"Sec-Fetch-Site": "same-site"},
            {"Origin": "http://evil.example"},
            {"Origin": "null"},
            {"Sec-Fetch-Site": "same-origin", "Origin": "http://evil.example"},
        ):
            with self.subTest(headers=headers):
                with mute_logger("odoo.http"):  # Odoo logs the AccessError
                    reply = self.url_open(
                        "/iot/app/config",
                        data=body,
                        headers={"Content-Type": "application/json", **headers},
                    ).json()
                self.assertEqual(
                    reply["error"]["data"]["name"], "odoo.exceptions.AccessError"
                )
        # a form post (what a cross-site page can send without CORS) is no
        # JSON-RPC call: Odoo refuses it before the route
        with mute_logger("odoo.http"):
            response = self.url_open(
                "/iot/app/config",
                data=body,
                headers={"Content-Type": "text/plain"},
            )
        self.assertEqual(response.status_code, 400)
        self.assertEqual(self._secrets(self.iot_user), 0)
        # the page's own request passes
        same = {
            "Sec-Fetch-Site": "same-origin",
            "Origin": self.base_url(),
            "Content-Type": "application/json",
        }
        reply = self.url_open("/iot/app/config", data=body, headers=same).json()
        self.assertTrue(reply["result"]["credentials"]["password"])
        self.assertEqual(self._secrets(self.iot_user), 1)

    def test_no_access(self):
        for user in (self.plain_user, self.portal_user):
            with self.subTest(user=user.login):
                self.authenticate(user.login, user.login)
                response = self.url_open("/iot/app")
                self.assertEqual(response.status_code, 403)
                self.assertIn("No access to the MQTT console", response.text)
                self.assertNotIn("mqtt_config", response.text)
                self.assertFalse(user.sudo().iot_credential_ids, "no credential made")
                with mute_logger("odoo.http"):  # Odoo logs the AccessError
                    reply = self._config()
                self.assertEqual(
                    reply["error"]["data"]["name"], "odoo.exceptions.AccessError"
                )
        self.authenticate(None, None)
        response = self.url_open("/iot/app", allow_redirects=False)
        self.assertEqual(response.status_code, 303)
        self.assertIn("/web/login", response.headers["Location"])

    def test_config_route(self):
        self.authenticate(self.iot_user.login, self.iot_user.login)
        first = self._config()["result"]
        username = first["credentials"]["username"]
        # the page asks with its client id: kept, with a new secret
        second = self._config(client_id=first["client_id"])["result"]
        self.assertEqual(second["client_id"], first["client_id"])
        self.assertNotEqual(
            second["credentials"]["password"], first["credentials"]["password"]
        )
        self.assertEqual(self._secrets(self.iot_user), 2)
        # someone else's (or a made-up) client id is not taken over
        for forged in (
            "user_admin~0a1b2c3d",
            f"{username}~x",
            f"{username}x~0a1b2c3d",
            f"odoo_user_{username}_0a1b2c3d",
            "#",
            42,
        ):
            with self.subTest(client_id=forged):
                self.assertRegex(
                    self._config(client_id=forged)["result"]["client_id"],
                    CLIENT_ID_RE % username,
                )

    def test_superuser_config(self):
        self.iot_user.with_user(self.iot_user).get_or_create_iot_credentials()
        self.iot_user.iot_credential_ids.is_superuser = True
        config = self.env["iot.app"].with_user(self.iot_user)._page_config()
        self.assertIs(config["credentials"]["is_superuser"], True)
        self.assertEqual(config["default_subscriptions"], ["#"])

    def test_menu(self):
        menu = self.env.ref("iot_base.iot_app_menu")
        self.assertEqual(menu.parent_id, self.env.ref("iot_base.iot_base_menu_root"))
        self.assertEqual(menu.action.url, "/iot/app")


def _hoot_hash(text):
    """HOOT's id of a suite or test (web/tests/test_js.py, HOOTCommon)."""
    value = 0
    for char in text:
        value = ((value << 5) - value + ord(char)) & 0xFFFFFFFF
    return f"{value:08x}"


@tagged("post_install", "-at_install")
class TestIotAppJsUnit(HttpCase):
    """The HOOT unit tests of static/tests (the "mqtt" service, topic rules)."""

    def test_hoot(self):
        expected = 0
        for name in (
            "mqtt_service.test.js",
            "mqtt_console.test.js",
            "topic_acl.test.js",
        ):
            with open(file_path(f"iot_base/static/tests/{name}")) as source:
                expected += len(re.findall(r"^\s*test\(", source.read(), re.MULTILINE))
        url = (
            "/web/tests?headless&loglevel=2&preset=desktop&timeout=15000"
            f"&suite={_hoot_hash('@iot_base')}"
        )
        with self.assertLogs("odoo.addons.iot_base", logging.RUNBOT) as logs:
            self.browser_js(
                url,
                "",
                "",
                login="admin",
                timeout=300,
                success_signal="[HOOT] test suite succeeded",
                error_checker=lambda message: "[HOOT]" not in message,
            )
        output = "\n".join(logs.output)
        self.assertRegex(output, rf"passed {expected} tests", output)


class BrokerCase(HttpCase):
    """A real RabbitMQ node for the class, authenticating against this Odoo."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.env["ir.config_parameter"].sudo().set_param("iot_base.auth_token", TOKEN)
        cls.broker = RabbitMQBroker(cls.base_url(), TOKEN)
        cls.addClassCleanup(cls.broker.stop)
        cls.broker.start()
        cls.env["ir.config_parameter"].sudo().set_param(
            "iot_base.mqtt_broker_url", cls.broker.ws_url
        )

    # what the broker calls in Odoo, without the browser's test cookie (it
    # cannot send one): those calls are part of the test
    BROKER_PATHS = ("/iot/rabbitmq/",)

    def check_test_cursor(self, operation):
        request = http.request
        if request and request.httprequest.path.startswith(self.BROKER_PATHS):
            strict, self.http_request_strict_check = (
                self.http_request_strict_check,
                False,
            )
            try:
                return super().check_test_cursor(operation)
            finally:
                self.http_request_strict_check = strict
        return super().check_test_cursor(operation)

    def authenticate(self, login, password, browser=None):
        # The broker's HTTP calls are served in server threads on the shared
        # test cursor while this thread uses it too: take the test lock that
        # serializes them (a publishing device may be calling right now).
        with self.registry.test_lock:
            return super().authenticate(login, password, browser=browser)

    def _paho(self, username, password):
        """A connected paho-mqtt client (TCP) with queues of what it gets."""
        client = rabbitmq_client(self, self.broker, username, password)
        rc = client.connacks.get(timeout=WAIT)
        self.assertFalse(rc.is_failure, f"CONNACK {rc}")
        return client

    def _publish_every(self, client, topic, payload, interval=0.5):
        """Publish ``payload`` to ``topic`` until the test ends (a device)."""
        stop = threading.Event()

        def run():
            while not stop.wait(interval):
                client.publish(topic, payload, qos=0)

        thread = threading.Thread(
            target=run, name="iot_app_test_publisher", daemon=True
        )
        thread.start()
        self.addCleanup(thread.join, 5)
        self.addCleanup(stop.set)


@tagged("post_install", "-at_install")
class TestIotAppBroker(BrokerCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.ns = cls.env.ref("base.main_company").iot_mqtt_namespace
        cls.iot_user = _user(
            cls.env,
            "console.tour@example.com",
            "base.group_user,iot_base.iot_base_group_user",
        )
        cls.manager = _user(
            cls.env,
            "console.manager@example.com",
            "base.group_user,iot_base.iot_base_group_manager",
        )
        cls.device = cls.env["iot.credentials"].create(
            {"username": "device_console01", "kind": "device"}
        )
        cls.device_secret = cls.device.action_rotate_secret()["context"][
            "default_secret"
        ]

    def _device_publishing(self):
        device = self._paho("device_console01", self.device_secret)
        self._publish_every(
            device,
            f"{self.ns}/devices/device_console01/telemetry/temp",
            json.dumps({"temperature": 21.5, "unit": "C"}),
        )

    def test_console(self):
        """Connect, refuse a filter, receive from paho, publish to paho, two tabs."""
        # the same user on another client, listening to its own topics
        creds = self.iot_user.with_user(self.iot_user).get_or_create_iot_credentials()
        self._device_publishing()
        listener = self._paho(creds["username"], creds["password"])
        listener.subscribe(f"{self.ns}/users/{creds['username']}/#", qos=1)
        self.start_tour(
            "/iot/app", "iot_app_console", login=self.iot_user.login, timeout=180
        )
        topic, payload = listener.messages.get(timeout=WAIT)
        self.assertEqual(
            (topic, payload),
            (f"{self.ns}/users/{creds['username']}/chat", b"hello from the page"),
        )
        # the refused filter never reached the broker (the test lock: the
        # publishing device's broker calls use the same cursor)
        with self.registry.test_lock:
            denied = self.env["iot.auth.log"].search(
                [
                    ("username", "=", creds["username"]),
                    ("action", "=", "subscribe"),
                    ("result", "=", "deny"),
                ]
            )
        self.assertFalse(denied)

    def test_refused_secret(self):
        """A revoked secret is replaced by a fresh one; wrong credentials are a
        clear error without a reconnection loop."""
        self.start_tour(
            "/iot/app", "iot_app_refused_secret", login=self.manager.login, timeout=180
        )
        username = self.manager.iot_credential_ids.username
        refusals = self.env["iot.auth.log"].search(
            [
                ("username", "=", username),
                ("endpoint", "=", "rabbitmq"),
                ("reason", "=", "invalid_credentials"),
            ]
        )
        # once for the revoked secret, once for the wrong password: no loop
        self.assertEqual(len(refusals), 2, refusals.mapped("reason"))

    def test_broker_refusal(self):
        """A subscription the page allows (stale rules) but the broker refuses
        is dropped and reported, without a disconnect/resubscribe loop."""
        self.start_tour(
            "/iot/app", "iot_app_broker_refusal", login=self.manager.login, timeout=180
        )
        refused = self.env["iot.auth.log"].search(
            [
                ("username", "=", self.manager.iot_credential_ids.username),
                ("action", "=", "subscribe"),
                ("result", "=", "deny"),
            ]
        )
        self.assertEqual(
            refused.mapped("topic"), [f"{self.ns}/lab/#"], "asked once, not again"
        )

    def test_secret_renewal(self):
        """A short-lived secret is renewed before it expires, the connection
        handed over and the subscriptions kept."""
        self.env["ir.config_parameter"].sudo().set_param(
            "iot_base.session_lifetime_hours",
            "0.005",  # 18 s: renewed after 9 s
        )
        self._device_publishing()
        self.start_tour(
            "/iot/app", "iot_app_secret_renewal", login=self.iot_user.login, timeout=180
        )

    def test_rules_in_the_browser_decide_like_the_server(self):
        """The page's topic_acl.esm.js against tools/topic_acl.py on random cases."""
        rng = random.Random(4711)
        words = ["a", "b", "$SYS", "", "+", "#"]

        def topic_filter(allow_wild=True):
            levels = []
            for i in range(rng.randint(1, 4)):
                word = rng.choice(words if allow_wild else words[:4])
                if word == "#":
                    levels.append(word)
                    break
                if word == "$SYS" and i:
                    word = "c"
                levels.append(word)
            return "/".join(levels) or "a"

        cases = []
        for _ in range(400):
            rules = [
                topic_acl.Rule(
                    rng.choice(["allow", "deny"]),
                    rng.choice(["publish", "subscribe", "all"]),
                    topic_filter(),
                    qos=rng.choice([None, {0}, {0, 1}]),
                    retain=rng.choice([None, True, False]),
                )
                for _ in range(rng.randint(0, 4))
            ]
            action = rng.choice(["publish", "subscribe"])
            topic = topic_filter(allow_wild=action == "subscribe")
            qos, retain = rng.choice([0, 1, 2]), rng.choice([True, False])
            cases.append(
                {
                    "rules": [
                        {
                            "permission": r.permission,
                            "action": r.action,
                            "topic": r.topic,
                            "qos": sorted(r.qos) if r.qos is not None else None,
                            "retain": r.retain,
                        }
                        for r in rules
                    ],
                    "args": [action, topic, qos, retain],
                    "expected": topic_acl.authorize(
                        rules, action, topic, qos=qos, retain=retain
                    ),
                }
            )
        module = "@iot_base/utils/topic_acl.esm"
        code = f"""
            const {{ authorize }} = odoo.loader.modules.get("{module}");
            const cases = {json.dumps(cases)};
            const wrong = cases.filter(
                (c) => authorize(c.rules, ...c.args) !== c.expected
            );
            if (wrong.length) {{
                console.error("JS and Python disagree: " + JSON.stringify(wrong[0]));
            }} else {{
                console.log("test successful");
            }}
        """
        self.browser_js(
            "/iot/app",
            code,
            f"!!odoo.loader.modules.get('{module}')",
            login=self.iot_user.login,
        )
