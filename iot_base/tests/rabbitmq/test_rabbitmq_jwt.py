# License LGPL-3.0 or later (https://www.gnu.org/licenses/lgpl).
"""Console token mode on RabbitMQ 3.10 (rabbitmq_auth_backend_oauth2).

* the scope compiler (tools/rabbitmq/scopes.py) against the addon's RabbitMQ
  evaluator: a property test over generated rule sets and topics;
* a real RabbitMQ node with oauth2 + mqtt + web_mqtt whose OAuth 2 backend
  verifies Odoo's tokens with /iot/jwks.json, devices still going through
  Odoo's HTTP backend: the /iot/app tour with a token and no /iot/rabbitmq
  request, refused tokens, a topic refused by RabbitMQ itself, key rotation;
* the bad input of /iot/app/config.
"""

import base64
import contextlib
import json
import logging
import os
import queue
import secrets
import tempfile
import threading
import time
from datetime import timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from odoo import fields
from odoo.exceptions import AccessError, UserError
from odoo.modules.neutralize import get_neutralization_queries
from odoo.tests import BaseCase, HttpCase, tagged
from odoo.tools import mute_logger

from ...models import iot_broker_api as apis
from ...models.iot_app import AUTH_RABBITMQ_JWT
from ...models.iot_jwt_key import ALGORITHM_PARAM
from ...models.mosquitto import iot_mosquitto_sync as mosq
from ...tools import jwt_es256, jwt_hs256, topic_acl
from ...tools.rabbitmq import EXCHANGE, routing_key_rules, to_routing_key
from ...tools.rabbitmq import scopes as rabbitmq_scopes
from ...tools.rabbitmq.scopes import scope_allows, wildcard_match
from ..brokers.rabbitmq import (
    BrokerError,
    RabbitMQBroker,
    node_matches,
    rabbitmq_advanced_config,
    rabbitmq_config,
)
from ..common import rabbitmq_client
from ..emqx.test_emqx_jwt import set_key_columns
from ..test_broker_session import commit_hooks
from ..test_iot_app import BrokerCase, _user

TOKEN = "rabbit-jwt-broker-t0ken"
SERVER = "iot_base"
WAIT = 15
QUIET = 2


def _rule(permission, action, topic, qos=None, retain=None):
    return topic_acl.Rule(permission, action, topic, qos, retain)


def _stripped(scopes):
    return [scope.split(".", 1)[1] for scope in scopes]


# ---------------------------------------------------------------------------
# The compiler, without a broker
# ---------------------------------------------------------------------------

WORDS = ["a", "b", "x", "", "a.b", "+", "#"]
LITERALS = ["a", "b", "x", "", "a.b", "c*d", "%41"]


def _filters(allow_wild=True):
    words = WORDS if allow_wild else [w for w in WORDS if w not in ("+", "#")]
    return (
        st.lists(st.sampled_from(words), min_size=1, max_size=4)
        .map(
            lambda levels: "/".join(
                levels[: levels.index("#") + 1] if "#" in levels else levels
            )
        )
        .filter(bool)
    )


def _rules():
    rule = st.builds(
        _rule,
        st.sampled_from(["allow", "deny"]),
        st.sampled_from(["publish", "subscribe", "all"]),
        _filters(),
        st.sampled_from([None, frozenset({0}), frozenset({0, 1, 2})]),
        st.sampled_from([None, False]),
    )
    return st.lists(rule, min_size=0, max_size=5)


def _topic_names():
    """MQTT topic names as a client may send them to RabbitMQ: no ``+``,
    ``#`` or ``*`` (those have no valid MQTT reading once RabbitMQ made
    them a routing key; see tools/rabbitmq/scopes.py)."""
    return st.lists(
        st.sampled_from(["a", "b", "x", "", "a.b", "%41", "é"]), min_size=1, max_size=5
    ).map("/".join)


@tagged("post_install", "-at_install", "iot_rabbitmq")
class TestRabbitmqScopes(BaseCase):
    def test_wildcard_port(self):
        """The port of wildcard:match/2 (3.10.8) on cases whose answers
        were read from the node's own module (erl -eval)."""
        for subject, pattern, expected in [
            ("a.b.c", "a.*", True),
            ("a", "a.*", False),
            ("a.", "a.*", True),
            ("a.b", "a.b", True),
            ("a.bc", "a.b", False),
            ("abab", "a*b", False),  # leftmost piece: stricter than a glob
            ("ab", "a*b", True),
            ("a*b", "a%2Ab", True),
            ("axb", "a%2Ab", False),
            ("a b", "a+b", True),  # cow_qs: + is a space
            ("a%b", "a%25b", True),
            ("a.b", "a%2", False),  # undecodable: no match
            ("x", "*", True),
            ("", "*", True),
        ]:
            with self.subTest(subject=subject, pattern=pattern):
                self.assertIs(wildcard_match(subject, pattern), expected)

    def test_default_rules(self):
        """A user's default rules: own queues, the own subtree (prefix),
        the telemetry/status rule filters as they are (exact)."""
        ns, me, cid = "acme", "user_7", "user_7~0123abcd"
        rules = [
            _rule("allow", "subscribe", f"{ns}/devices/+/telemetry/#"),
            _rule("allow", "subscribe", f"{ns}/devices/+/status/#"),
            _rule("allow", "all", f"{ns}/users/{me}/#"),
        ]
        scopes = rabbitmq_scopes.compile_scopes(rules, cid)
        self.assertEqual(
            scopes,
            [
                f"{perm}:%2F/mqtt-subscription-{cid}{qos}"
                for qos in ("qos0", "qos1")
                for perm in ("configure", "write", "read")
            ]
            + [
                f"read:%2F/amq.topic/{ns}.users.{me}.*",
                f"read:%2F/amq.topic/{ns}.devices.%2A.telemetry.%23",
                f"read:%2F/amq.topic/{ns}.devices.%2A.status.%23",
                f"write:%2F/amq.topic/{ns}.users.{me}.*",
            ],
        )

        def topic(permission, key):
            return scope_allows(scopes, permission, "/", EXCHANGE, key)

        self.assertTrue(topic("read", f"{ns}.devices.*.telemetry.#"))
        self.assertTrue(topic("write", f"{ns}.users.{me}.chat"))
        self.assertTrue(topic("read", f"{ns}.users.{me}.#"))
        # someone else's, the parent, a narrower + filter: refused
        self.assertFalse(topic("write", f"{ns}.users.user_8.chat"))
        self.assertFalse(topic("write", f"{ns}.users.{me}"))
        self.assertFalse(topic("read", f"{ns}.devices.d1.telemetry.#"))
        self.assertFalse(topic("write", f"{ns}.devices.d1.telemetry.t"))
        self.assertFalse(topic("read", "#"))
        # the queues of this client id only, and never any other exchange
        for perm in ("configure", "write", "read"):
            self.assertTrue(
                scope_allows(scopes, perm, "/", f"mqtt-subscription-{cid}qos1")
            )
            self.assertFalse(
                scope_allows(scopes, perm, "/", "mqtt-subscription-user_7~0qos1")
            )
            self.assertFalse(scope_allows(scopes, perm, "/", "amq.direct", "x"))
            self.assertFalse(scope_allows(scopes, perm, "/other", EXCHANGE, "x"))
        self.assertFalse(any(":" not in s or s.startswith("tag:") for s in scopes))

    def test_deny_narrows_the_allow(self):
        rules = [
            _rule("deny", "all", "a/b/secret/#"),
            _rule("allow", "all", "a/#"),
        ]
        scopes = rabbitmq_scopes.compile_scopes(rules, "u~1")
        # neither a.* nor a.b.* may be granted; a.x.* (no deny under it) is
        # not derivable from these rules' literal prefixes either
        self.assertFalse(scope_allows(scopes, "write", "/", EXCHANGE, "a.b.secret.k"))
        self.assertFalse(scope_allows(scopes, "read", "/", EXCHANGE, "a.#"))
        self.assertFalse(scope_allows(scopes, "write", "/", EXCHANGE, "a.b.c"))

    def test_literals_are_escaped(self):
        """A ``*`` or ``%`` of a topic is a plain byte of the scope, a vhost
        ``/`` is %2F, a client id's odd characters stay inside their part."""
        rules = [_rule("allow", "publish", "x*y/%41"), _rule("allow", "all", "a b/#")]
        scopes = rabbitmq_scopes.compile_scopes(rules, "u~a:b@c", vhost="/v h")
        self.assertTrue(all(" " not in s for s in scopes))
        # the literal * reads as + for the evaluator: not a topic name
        self.assertFalse(scope_allows(scopes, "write", "/v h", EXCHANGE, "x*y.%41"))
        self.assertFalse(scope_allows(scopes, "write", "/v h", EXCHANGE, "xzy.%41"))
        self.assertTrue(scope_allows(scopes, "write", "/v h", EXCHANGE, "a b.c"))
        self.assertFalse(scope_allows(scopes, "write", "/", EXCHANGE, "a b.c"))
        self.assertTrue(
            scope_allows(scopes, "configure", "/v h", "mqtt-subscription-u~a:b@cqos0")
        )

    @settings(max_examples=400, deadline=None, derandomize=True, database=None)
    @given(_rules(), st.lists(_topic_names(), max_size=4), st.lists(_filters()))
    def test_never_more_permissive_than_the_evaluator(self, rules, names, filters):
        """Whatever the rules, a routing key the scopes allow is allowed by
        the addon's RabbitMQ evaluator (every QoS and retain flag), for
        publishes and subscriptions; and the rules' own literal topics and
        filters the evaluator allows are granted (the scopes are useful),
        those RabbitMQ can apply (``routing_key_rules``: no dotted allow)."""
        scopes = rabbitmq_scopes.compile_scopes(rules, "u~1")
        for action, permission, candidates in (
            ("publish", "write", names),
            ("subscribe", "read", filters),
        ):
            literal_rules = [
                r.topic
                for r in routing_key_rules(rules)
                if r.permission == "allow"
                and r.action in (action, "all")
                and (action == "subscribe" or "+" not in r.topic)
            ]
            for topic in candidates + literal_rules:
                if action == "publish" and not topic_acl.is_valid_topic_name(topic):
                    continue
                key = to_routing_key(topic)
                granted = scope_allows(scopes, permission, "/", EXCHANGE, key)
                allowed = rabbitmq_scopes.evaluator_allows(rules, action, key)
                if granted:
                    self.assertTrue(allowed, f"{action} {topic!r} with {rules}")
                elif allowed and topic in literal_rules:
                    self.fail(f"{action} {topic!r} not granted with {rules}")


# ---------------------------------------------------------------------------
# A real RabbitMQ node with the OAuth 2 backend
# ---------------------------------------------------------------------------


class OAuth2BrokerCase(BrokerCase):
    """A RabbitMQ node whose OAuth 2 backend verifies this Odoo's console
    tokens (and whose HTTP backend still asks Odoo for everything else)."""

    # the node also fetches the keys, without the test cookie
    BROKER_PATHS = (*BrokerCase.BROKER_PATHS, "/iot/jwks.json")

    @classmethod
    def setUpClass(cls):
        # BrokerCase's node has no OAuth 2: start ours instead
        super(BrokerCase, cls).setUpClass()
        params = cls.env["ir.config_parameter"].sudo()
        params.set_param("iot_base.auth_token", TOKEN)
        params.set_param("iot_base.console_auth", AUTH_RABBITMQ_JWT)
        cls.broker = RabbitMQBroker(cls.base_url(), TOKEN, oauth2=cls._oauth2())
        cls.addClassCleanup(cls.broker.stop)
        cls.broker.start()
        params.set_param("iot_base.mqtt_broker_url", cls.broker.ws_url)
        cls.ns = cls.env.ref("base.main_company").iot_mqtt_namespace
        cls.Key = cls.env["iot.jwt.key"].sudo()

    @classmethod
    def _oauth2(cls):
        return {"resource_server_id": SERVER}

    def _console_config(self, user, client_id=None):
        with self.registry.test_lock:
            return self.env["iot.app"].with_user(user)._page_config(client_id=client_id)

    def _mqtt(self, username, password, client_id, transport="websockets"):
        """A paho client (loop running) and its queues; not awaited."""
        return rabbitmq_client(
            self, self.broker, username, password, transport, client_id=client_id
        )

    def _connected(self, *args, **kw):
        client = self._mqtt(*args, **kw)
        rc = client.connacks.get(timeout=WAIT)
        self.assertFalse(rc.is_failure, f"CONNACK {rc}")
        return client

    def _refused(self, *args, **kw):
        """Refused at CONNECT: a CONNACK failure (TCP) or, over WebSocket
        (web_mqtt 3.10 closes the socket of a refused login), a close."""
        client = self._mqtt(*args, **kw)
        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline:
            with contextlib.suppress(queue.Empty):
                rc = client.connacks.get(timeout=0.05)
                self.assertTrue(rc.is_failure, f"CONNACK {rc}")
                return
            if not client.disconnected.empty():
                return
        self.fail("a refused token was accepted")

    def _subscribed(self, client, topic_filter, qos=1):
        client.subscribe(topic_filter, qos=qos)
        _mid, codes = client.subacks.get(timeout=WAIT)
        self.assertFalse(codes[0].is_failure, codes)

    def _dropped(self, client):
        """RabbitMQ 3.10 answers a refused SUBSCRIBE or PUBLISH by closing
        the connection."""
        client.disconnected.get(timeout=WAIT)
        self.assertTrue(client.subacks.empty(), "nothing may be granted")

    def _sign(self, claims, key_pem=None, kid=None):
        if key_pem:
            return jwt_es256.sign(key_pem, kid or secrets.token_hex(8), claims)
        with self.registry.test_lock:
            return self.Key._sign(claims)

    def _claims(self, token):
        return json.loads(jwt_es256_b64d(token.split(".")[1]))

    @contextlib.contextmanager
    def _no_odoo_broker_calls(self):
        """Odoo's access log (werkzeug's request lines, as they reach the
        log file through the root logger) over the block: requests were
        logged, none of them from RabbitMQ's HTTP backend."""
        handler = _Collector()
        root = logging.getLogger()
        root.addHandler(handler)
        try:
            yield handler.records
        finally:
            root.removeHandler(handler)
        lines = [record.getMessage() for record in handler.records]
        self.assertTrue(lines, "no access log line at all")
        self.assertFalse(
            [line for line in lines if "/iot/rabbitmq/" in line],
            "Odoo was asked by RabbitMQ",
        )

    def _fresh_kid_requests(self, user):
        """(JWKS fetches, HTTP-backend requests) Odoo serves for one
        anonymous-looking CONNECT whose password is a JWT with a fresh kid
        (counted in Odoo's access log, once the node has refused it)."""
        config = self._console_config(user)
        username, client_id = config["credentials"]["username"], config["client_id"]
        claims = self._claims(config["credentials"]["password"])
        forged = jwt_es256.sign(
            jwt_es256.new_private_pem(), f"fresh-{secrets.token_hex(6)}", claims
        )
        handler = _Collector()
        root = logging.getLogger()
        root.addHandler(handler)
        try:
            self._refused(username, forged, client_id, transport="tcp")

            def counts():
                lines = [record.getMessage() for record in handler.records]
                return (
                    sum("/iot/jwks.json" in line for line in lines),
                    sum("/iot/rabbitmq/" in line for line in lines),
                )

            # the HTTP backend is the chain's last step: its access line is
            # the last one the refusal causes
            deadline = time.monotonic() + WAIT
            while counts()[1] < 1 and time.monotonic() < deadline:
                time.sleep(0.02)
            return counts()
        finally:
            root.removeHandler(handler)


class _Collector(logging.Handler):
    def __init__(self):
        super().__init__(logging.INFO)
        self.records = []

    def emit(self, record):
        if record.name == "werkzeug":
            self.records.append(record)


def jwt_es256_b64d(text):
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@tagged("post_install", "-at_install", "iot_rabbitmq")
class TestRabbitmqTokens(OAuth2BrokerCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        groups = "base.group_user,iot_base.iot_base_group_user"
        cls.alice = _user(cls.env, "rmq.jwt.alice@example.com", groups)
        cls.bob = _user(cls.env, "rmq.jwt.bob@example.com", groups)
        cls.device = cls.env["iot.credentials"].create(
            {"username": "device_rjwt01", "kind": "device"}
        )
        cls.device_secret = cls.device.action_rotate_secret()["context"][
            "default_secret"
        ]

    def _login(self, config, transport="websockets", **kw):
        return self._connected(
            config["credentials"]["username"],
            config["credentials"]["password"],
            config["client_id"],
            transport=transport,
            **kw,
        )

    def test_token_config(self):
        config = self._console_config(self.alice)
        self.assertEqual((config["auth"], config["broker_kind"]), ("jwt", "rabbitmq"))
        token = config["credentials"]["password"]
        claims = self._claims(token)
        header = json.loads(jwt_es256_b64d(token.split(".")[0]))
        self.assertEqual(header["alg"], "ES256")
        self.assertTrue(header["kid"])
        self.assertEqual(claims["sub"], config["credentials"]["username"])
        self.assertEqual(claims["aud"], [SERVER])
        self.assertNotIn("client_id", claims)
        self.assertIsInstance(claims["exp"], int)
        scopes = claims["scope"].split(" ")
        self.assertTrue(all(s.startswith(SERVER + ".") for s in scopes))
        self.assertFalse([s for s in _stripped(scopes) if s.startswith("tag:")])
        queues = {s for s in _stripped(scopes) if "mqtt-subscription-" in s}
        self.assertEqual(len(queues), 6)
        self.assertTrue(all(config["client_id"] in s for s in queues))
        self.assertEqual(
            self.env["iot.credentials.secret"]
            .sudo()
            .search_count([("credential_id.user_id", "=", self.alice.id)]),
            0,
            "no session secret in token mode",
        )

    def test_console_tour_without_odoo(self):
        """The /iot/app tour connects with a token over WebSocket, subscribes
        and publishes: Odoo's access log shows no /iot/rabbitmq request."""
        listener_config = self._console_config(self.alice)
        me = listener_config["credentials"]["username"]
        listener = self._login(listener_config, transport="tcp")
        self._subscribed(listener, f"{self.ns}/users/{me}/#")
        self._subscribed(listener, f"{self.ns}/devices/+/telemetry/#")
        # a device through Odoo's HTTP backend: its checks are asked (and
        # cached by its connection) before the tour
        device = self._paho("device_rjwt01", self.device_secret)
        telemetry = f"{self.ns}/devices/device_rjwt01/telemetry/temp"
        device.publish(telemetry, json.dumps({"t": 1}), qos=1).wait_for_publish(WAIT)
        self.assertEqual(listener.messages.get(timeout=WAIT)[0], telemetry)
        stop = threading.Event()

        def publish():
            while not stop.wait(0.5):
                device.publish(
                    f"{self.ns}/devices/device_console01/telemetry/temp",
                    json.dumps({"temperature": 21.5, "unit": "C"}),
                    qos=0,
                )

        # the tour waits for device_console01's telemetry: the same device
        # connection publishes it (a topic checked once, then cached)
        self.env["iot.acl.rule"].sudo().create(
            {
                "name": "test: this device may speak for device_console01",
                "sequence": 1,
                "credential_kind": "device",
                "action": "publish",
                "topic": "${namespace}/devices/device_console01/telemetry/#",
            }
        )
        thread = threading.Thread(target=publish, daemon=True)
        thread.start()
        self.addCleanup(thread.join, 5)
        self.addCleanup(stop.set)
        for _i in range(2):
            topic, _payload = listener.messages.get(timeout=WAIT)
            self.assertIn("device_console01", topic)
        time.sleep(1)  # the broker's last answers are logged
        with self._no_odoo_broker_calls() as logs:
            self.start_tour(
                "/iot/app", "iot_app_console", login=self.alice.login, timeout=180
            )
        self.assertTrue(
            [r for r in logs if "/iot/app" in r.getMessage()],
            "the access log was read",
        )
        # the page's publish reached the listener (among the telemetry)
        chat = f"{self.ns}/users/{me}/chat"
        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline:
            if listener.messages.get(timeout=WAIT)[0] == chat:
                break
        else:
            self.fail("the page's message never reached the listener")

    def test_refused_tokens(self):
        config = self._console_config(self.alice)
        username, client_id = config["credentials"]["username"], config["client_id"]
        claims = self._claims(config["credentials"]["password"])
        now = int(time.time())
        # expired
        self._refused(username, self._sign({**claims, "exp": now - 5}), client_id)
        # a float exp (not an integer: never expires for 3.10) is not ours
        # to test; a token without aud or scope
        for missing in ("aud", "scope"):
            token = self._sign({k: v for k, v in claims.items() if k != missing})
            self._refused(username, token, client_id)
        # another audience
        self._refused(username, self._sign({**claims, "aud": ["other"]}), client_id)
        # signed by a key Odoo never published (the node fetches the JWKS
        # for the unknown kid, and still does not find it)
        stranger = jwt_es256.new_private_pem()
        self._refused(
            username, jwt_es256.sign(stranger, "unknown01", claims), client_id
        )
        # a published kid, another key's signature
        kid = json.loads(
            jwt_es256_b64d(config["credentials"]["password"].split(".")[0])
        )["kid"]
        self._refused(username, jwt_es256.sign(stranger, kid, claims), client_id)
        # a tampered payload
        head, _body, sig = config["credentials"]["password"].split(".")
        forged = {**claims, "sub": "admin"}
        body = jwt_es256.b64url(json.dumps(forged).encode())
        self._refused(username, f"{head}.{body}.{sig}", client_id, transport="tcp")
        # and the genuine one works
        self._login(config).disconnect()

    def test_fresh_kid_cost(self):
        """Issue 16/8: with keys from the JWKS URL, each CONNECT whose
        password is a JWT with a kid the node does not know costs Odoo
        exactly 2 requests: the node refetches /iot/jwks.json, then the HTTP
        backend's user check (see README, RabbitMQ token mode)."""
        self.assertEqual(self._fresh_kid_requests(self.alice), (1, 1))
        self.assertEqual(self._fresh_kid_requests(self.alice), (1, 1))

    def test_token_of_another_user(self):
        """RabbitMQ takes the identity from the token (``sub``), never from
        the MQTT username: Alice's username with Bob's token is Bob, bound
        to Bob's client id, so she gets nothing of her own and nothing of
        his under her client id."""
        alice = self._console_config(self.alice)
        bob = self._console_config(self.bob)
        me = alice["credentials"]["username"]
        client = self._connected(me, bob["credentials"]["password"], alice["client_id"])
        client.subscribe(f"{self.ns}/users/{me}/#", qos=1)
        self._dropped(client)
        client = self._connected(me, bob["credentials"]["password"], alice["client_id"])
        client.subscribe(f"{self.ns}/users/{bob['credentials']['username']}/#", qos=1)
        self._dropped(client)
        client = self._connected(me, bob["credentials"]["password"], alice["client_id"])
        client.publish(f"{self.ns}/users/{me}/chat", b"as bob", qos=1)
        self._dropped(client)
        # Bob's own token with his own client id works
        bob_client = self._login(bob)
        self._subscribed(
            bob_client, f"{self.ns}/users/{bob['credentials']['username']}/#"
        )

    def test_revoked_console_cut(self):
        """Revoking a console user's credential closes its token connections
        (the session cut-off closes RabbitMQ connections by user name, the
        token's ``sub``); the page then gets a new credential."""
        params = self.env["ir.config_parameter"].sudo()
        with self.registry.test_lock:
            params.set_param(apis.RABBITMQ_URL_PARAM, self.broker.management_url)
            params.set_param(apis.RABBITMQ_USER_PARAM, self.broker.management_user)
            params.set_param(
                apis.RABBITMQ_PASSWORD_PARAM, self.broker.management_password
            )
        alice = self._console_config(self.alice)
        client = self._login(alice)
        self._subscribed(
            client, f"{self.ns}/users/{alice['credentials']['username']}/#"
        )
        with self.registry.test_lock:
            credential = self.env["iot.credentials"].search(
                [("username", "=", alice["credentials"]["username"])]
            )
            credential.action_revoke()
            _committed, results = commit_hooks(self.env)
        self.assertEqual(results[0]["brokers"]["rabbitmq"]["closed"], 1, results)
        client.disconnected.get(timeout=WAIT)
        # the page gets a new credential (a revoked one is never reused)
        again = self._console_config(self.alice)
        self.assertNotEqual(
            again["credentials"]["username"], alice["credentials"]["username"]
        )

    def test_topic_outside_the_rules_refused_by_rabbitmq(self):
        config = self._console_config(self.alice)
        me = config["credentials"]["username"]
        with self._no_odoo_broker_calls():
            self.url_open("/web/webclient/version_info", data="{}")
            for action, topic in [
                ("publish", f"{self.ns}/users/someone_else/chat"),
                ("publish", f"{self.ns}/devices/device_rjwt01/telemetry/t"),
                ("subscribe", f"{self.ns}/#"),
                ("subscribe", "#"),
                # narrower than a rule with +: the page would allow it, the
                # scopes cannot say it (see tools/rabbitmq/scopes.py)
                ("subscribe", f"{self.ns}/devices/device_rjwt01/telemetry/#"),
            ]:
                with self.subTest(action=action, topic=topic):
                    client = self._login(config)
                    if action == "publish":
                        client.publish(topic, b"x", qos=1)
                    else:
                        client.subscribe(topic, qos=1)
                    self._dropped(client)
            client = self._login(config)
            self._subscribed(client, f"{self.ns}/users/{me}/#")
            client.publish(f"{self.ns}/users/{me}/a", b"mine", qos=1)
            self.assertEqual(
                client.messages.get(timeout=WAIT), (f"{self.ns}/users/{me}/a", b"mine")
            )

    def test_expiry_is_checked_again(self):
        """A token that expires while connected: the next publish and the
        next subscription are refused (3.10 leaves the connection and its
        existing subscriptions alone until then: rabbitmq-server#11852)."""
        config = self._console_config(self.alice)
        me = config["credentials"]["username"]
        claims = self._claims(config["credentials"]["password"])
        short = self._sign({**claims, "exp": int(time.time()) + 3})
        client = self._connected(me, short, config["client_id"])
        self._subscribed(client, f"{self.ns}/users/{me}/#")
        time.sleep(4)
        client.publish(f"{self.ns}/users/{me}/late", b"late", qos=1)
        self._dropped(client)

    def test_rotation(self):
        """Tokens of the old key keep working until they expire; new ones
        are signed by the new key, which the node fetches when it first sees
        its kid."""
        old_config = self._console_config(self.alice)
        old_kid = json.loads(
            jwt_es256_b64d(old_config["credentials"]["password"].split(".")[0])
        )["kid"]
        self._login(old_config).disconnect()
        with self.registry.test_lock:
            old = self.Key.search([("kid", "=", old_kid)])
            set_key_columns(
                old, sign_from=fields.Datetime.now() - timedelta(minutes=10)
            )
            new = self.Key._rotate()
            # the refresh delay has passed
            set_key_columns(new, sign_from=fields.Datetime.now() - timedelta(seconds=1))
        config = self._console_config(self.alice)
        new_kid = json.loads(
            jwt_es256_b64d(config["credentials"]["password"].split(".")[0])
        )["kid"]
        self.assertEqual(new_kid, new.kid)
        self.assertNotEqual(new_kid, old_kid)
        me = config["credentials"]["username"]
        client = self._login(config)
        self._subscribed(client, f"{self.ns}/users/{me}/#")
        # the old key's token still works (its key is still published)
        old_client = self._login(old_config, transport="tcp")
        self._subscribed(old_client, f"{self.ns}/users/{me}/#")
        # ... until it expires
        old_claims = self._claims(old_config["credentials"]["password"])
        with self.registry.test_lock:
            self.env.cr.execute(
                "SELECT private_pem FROM iot_jwt_key WHERE id = %s", [old.id]
            )
            old_pem = self.env.cr.fetchone()[0]
        expired = jwt_es256.sign(
            old_pem, old_kid, {**old_claims, "exp": int(time.time()) - 1}
        )
        self._refused(me, expired, old_config["client_id"])
        # once retired (unpublished), the next key set the node fetches no
        # longer has it: its tokens are refused
        with self.registry.test_lock:
            set_key_columns(old, retire_at=fields.Datetime.now() - timedelta(seconds=1))
        stranger = jwt_es256.new_private_pem()
        self._refused(me, jwt_es256.sign(stranger, "refetch01", old_claims), "x~1")
        self._refused(
            me, old_config["credentials"]["password"], old_config["client_id"]
        )
        self._login(self._console_config(self.alice)).disconnect()


@tagged("post_install", "-at_install", "iot_rabbitmq")
class TestRabbitmqTokenConfigRoute(HttpCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.env["ir.config_parameter"].sudo().set_param(
            "iot_base.console_auth", AUTH_RABBITMQ_JWT
        )
        cls.user = _user(
            cls.env,
            "rmq.jwt.route@example.com",
            "base.group_user,iot_base.iot_base_group_user",
        )

    def _post(self, body, content_type="application/json"):
        return self.url_open(
            "/iot/app/config", data=body, headers={"Content-Type": content_type}
        )

    def test_bad_input(self):
        self.authenticate(self.user.login, self.user.login)
        good = self._post(
            json.dumps({"jsonrpc": "2.0", "method": "call", "params": {}})
        )
        self.assertEqual(good.status_code, 200)
        config = good.json()["result"]
        self.assertEqual(good.headers["Cache-Control"], "no-store")
        self.assertEqual(config["auth"], "jwt")
        username = config["credentials"]["username"]
        for client_id in (
            None,
            "",
            7,
            ["x"],
            {"a": 1},
            "admin~00000000",
            f"{username}~zzzzzzzz",
            f"{username}~0000000",
            f"{username}~00000000\n",
            f"{username}~00000000/#",
            "x" * 10000,
        ):
            with self.subTest(client_id=str(client_id)[:20]):
                response = self._post(
                    json.dumps(
                        {
                            "jsonrpc": "2.0",
                            "method": "call",
                            "params": {"client_id": client_id},
                        }
                    )
                )
                self.assertEqual(response.status_code, 200)
                result = response.json()["result"]
                # a client id of someone else, or malformed: a new one of ours
                self.assertRegex(result["client_id"], rf"^{username}~[0-9a-f]{{8}}$")
                self.assertNotEqual(result["client_id"], client_id)
        kept = self._post(
            json.dumps(
                {
                    "jsonrpc": "2.0",
                    "method": "call",
                    "params": {"client_id": config["client_id"]},
                }
            )
        ).json()["result"]
        self.assertEqual(kept["client_id"], config["client_id"])
        # unknown parameters: a JSON error that names them
        with mute_logger("odoo.http"):
            unknown = self._post(
                json.dumps({"jsonrpc": "2.0", "method": "call", "params": {"nope": 1}})
            ).json()
        self.assertNotIn("result", unknown)
        self.assertIn("nope", unknown["error"]["data"]["message"])
        # a GET, a body that is not JSON: refused, without a config
        self.assertEqual(self.url_open("/iot/app/config").status_code, 405)
        with mute_logger("odoo.http"):
            broken = self._post("{not json")
        self.assertEqual(broken.status_code, 400)
        self.assertNotIn("password", broken.text)
        # logged out: a JSON error too, never a token
        self.authenticate(None, None)
        anonymous = self._post(
            json.dumps({"jsonrpc": "2.0", "method": "call", "params": {}})
        ).json()
        self.assertIn("error", anonymous)
        self.assertNotIn("result", anonymous)

    def test_mosquitto_keeps_secrets(self):
        """Mosquitto cannot verify a token: whatever the setting, secrets."""
        params = self.env["ir.config_parameter"].sudo()
        params.set_param(mosq.ENABLED_PARAM, "True")
        config = self.env["iot.app"].with_user(self.user)._page_config()
        self.assertEqual((config["auth"], config["broker_kind"]), ("secret", ""))
        self.assertRegex(config["credentials"]["password"], r"^[0-9a-f]{40}$")
        # an unknown value is secrets too
        params.set_param(mosq.ENABLED_PARAM, "False")
        params.set_param("iot_base.console_auth", "rabbitmq")
        config = self.env["iot.app"].with_user(self.user)._page_config()
        self.assertEqual(config["auth"], "secret")


@tagged("post_install", "-at_install", "iot_rabbitmq")
class TestRabbitmqOAuth2Config(BaseCase):
    def test_config(self):
        kwargs = {"management_port": 15673, "management_password": "pw"}
        conf = rabbitmq_config(
            "http://127.0.0.1:8069/",
            "tok",
            1884,
            8083,
            5673,
            oauth2={"resource_server_id": SERVER},
            **kwargs,
        )
        for line in (
            "auth_backends.1 = internal",
            "auth_backends.2 = rabbit_auth_backend_oauth2",
            "auth_backends.3 = http",
            f"auth_oauth2.resource_server_id = {SERVER}",
        ):
            self.assertIn(line + "\n", conf)
        plain = rabbitmq_config(
            "http://127.0.0.1:8069/", "tok", 1884, 8083, 5673, **kwargs
        )
        self.assertNotIn("oauth2", plain)
        advanced = rabbitmq_advanced_config(
            "http://127.0.0.1:8069/", {"resource_server_id": SERVER}
        )
        self.assertIn('{jwks_url, "http://127.0.0.1:8069/iot/jwks.json"}', advanced)
        self.assertIn('{algorithms, [<<"ES256">>]}', advanced)
        self.assertEqual(rabbitmq_advanced_config("http://x", None), "[].\n")
        hs256 = rabbitmq_advanced_config(
            "http://x", {"hs256": {"kid": "hs256-1", "secret": HS256_SECRET}}
        )
        self.assertIn('{algorithms, [<<"HS256">>]}', hs256)
        self.assertNotIn("jwks_url", hs256)
        with self.assertRaises(BrokerError):
            rabbitmq_advanced_config(
                "http://x", {"hs256": {"kid": '"}', "secret": "s"}}
            )
        with self.assertRaises(BrokerError):
            rabbitmq_advanced_config("http://x", {"jwks_url": 'http://x"}]}, evil'})


HS256_SECRET = "a shared secret of 32 bytes or more, for HS256 tests"


@tagged("post_install", "-at_install", "iot_rabbitmq")
class TestRabbitmqStaticKeys(OAuth2BrokerCase):
    """ES256 with Odoo's public keys written into the node's key_config
    instead of a jwks_url (tests/brokers/rabbitmq.py): an unknown kid costs Odoo no
    JWKS fetch; Odoo's own tokens still work."""

    @classmethod
    def _oauth2(cls):
        keys = cls.env["iot.jwt.key"].sudo()
        keys._sign({"sub": "warm-up"})  # makes the first key when none exists
        return {
            "resource_server_id": SERVER,
            "signing_keys": {jwk["kid"]: jwk for jwk in keys._published_jwks()["keys"]},
        }

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.alice = _user(
            cls.env,
            "rmq.static@example.com",
            "base.group_user,iot_base.iot_base_group_user",
        )

    def test_fresh_kid_cost(self):
        config = self._console_config(self.alice)
        handler = _Collector()
        logging.getLogger().addHandler(handler)
        try:
            self._connected(
                config["credentials"]["username"],
                config["credentials"]["password"],
                config["client_id"],
            ).disconnect()
        finally:
            logging.getLogger().removeHandler(handler)
        # Odoo's genuine token: verified by the node alone, no request at all
        self.assertFalse(
            [r.getMessage() for r in handler.records if "/iot/" in r.getMessage()]
        )
        self.assertEqual(self._fresh_kid_requests(self.alice), (0, 1))


@tagged("post_install", "-at_install", "iot_rabbitmq")
class TestRabbitmqHs256(OAuth2BrokerCase):
    """The HS256 alternative: a secret shared with a node that has no JWKS
    (3.10 takes it from advanced.config), set write-only by an admin."""

    @classmethod
    def _oauth2(cls):
        admin = cls.env.ref("base.user_admin")
        kid = cls.env["iot.jwt.key"].with_user(admin)._set_hs256_secret(HS256_SECRET)
        cls.env["ir.config_parameter"].sudo().set_param(ALGORITHM_PARAM, "HS256")
        return {
            "resource_server_id": SERVER,
            "hs256": {"kid": kid, "secret": HS256_SECRET},
        }

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.alice = _user(
            cls.env,
            "rmq.hs256@example.com",
            "base.group_user,iot_base.iot_base_group_user",
        )

    def test_hs256_token(self):
        config = self._console_config(self.alice)
        token = config["credentials"]["password"]
        header = json.loads(jwt_es256_b64d(token.split(".")[0]))
        self.assertEqual(header["alg"], "HS256")
        me = config["credentials"]["username"]
        client = self._connected(me, token, config["client_id"])
        self._subscribed(client, f"{self.ns}/users/{me}/#")
        client.publish(f"{self.ns}/users/{me}/x", b"hs", qos=1)
        self.assertEqual(client.messages.get(timeout=WAIT)[1], b"hs")
        # another secret, or the ES256 key pair: refused
        claims = self._claims(token)
        forged = jwt_hs256.sign(
            "another secret of at least 32 bytes!", header["kid"], claims
        )
        self._refused(me, forged, config["client_id"])
        es256 = jwt_es256.sign(jwt_es256.new_private_pem(), header["kid"], claims)
        self._refused(me, es256, config["client_id"])

    def test_fresh_kid_cost(self):
        """No JWKS URL: a kid the node does not know costs no key fetch,
        only the HTTP backend's user check."""
        self.assertEqual(self._fresh_kid_requests(self.alice), (0, 1))

    def test_secret_stays_secret(self):
        # never published
        jwks = self.url_open("/iot/jwks.json")
        self.assertNotIn("oct", jwks.text)
        self.assertNotIn(HS256_SECRET, jwks.text)
        self.assertNotIn(jwt_es256.b64url(HS256_SECRET.encode()), jwks.text)
        admin = self.env.ref("base.user_admin")
        with self.registry.test_lock:
            # never read back, by the key list or the settings
            values = self.env["iot.jwt.key"].with_user(admin).search_read([], [])
            self.assertIn("shared", [v["state"] for v in values])
            self.assertNotIn(HS256_SECRET, repr(values))
            settings = self.env["res.config.settings"].with_user(admin).create({})
            self.assertFalse(settings.iot_jwt_hs256_secret)
            self.assertTrue(settings.iot_jwt_hs256_secret_set)
            self.assertNotIn(HS256_SECRET, repr(settings.read()))
            # system administrators only, and long enough
            manager = _user(
                self.env,
                "rmq.hs256.manager@example.com",
                "base.group_user,iot_base.iot_base_group_manager",
            )
            with self.assertRaises(AccessError):
                self.env["iot.jwt.key"].with_user(manager)._set_hs256_secret("x" * 40)
            with self.assertRaises(UserError):
                self.env["iot.jwt.key"].with_user(admin)._set_hs256_secret("short")
            # a neutralized copy keeps no secret
            self.env.flush_all()
            for query in get_neutralization_queries(["iot_base"]):
                self.env.cr.execute(query)
            self.assertIsNone(self.env["iot.jwt.key"].sudo()._hs256_row())
            with self.assertRaises(UserError):
                self.env["iot.app"].with_user(self.alice)._page_config()

    def test_local_node_follows_token_mode(self):
        """make run's node is restarted when token mode is switched."""
        ports = {"mqtt_port": 1884, "ws_port": 8083, "management_port": 15673}
        with tempfile.TemporaryDirectory(prefix="iot_oauth2_conf_") as directory:
            with open(os.path.join(directory, "rabbitmq.conf"), "w") as conf:
                conf.write(
                    rabbitmq_config(
                        "http://127.0.0.1:8069",
                        "tok",
                        1884,
                        8083,
                        5999,
                        management_port=15673,
                        management_password="x",
                        oauth2={"resource_server_id": SERVER},
                    )
                )
            url = "http://127.0.0.1:8069"
            self.assertTrue(node_matches(directory, url, "tok", **ports))
            self.assertTrue(node_matches(directory, url, "tok", oauth2=SERVER, **ports))
            self.assertFalse(node_matches(directory, url, "tok", oauth2="", **ports))
            self.assertFalse(node_matches(directory, url, "tok", oauth2="x", **ports))
