# License LGPL-3.0 or later (https://www.gnu.org/licenses/lgpl).
"""Token mode of the console: keys, /iot/jwks.json, and tokens from
/iot/app/config read the way EMQX 5.8.9 reads them (tests/fakes/emqx_jwt_reader.py)."""

import calendar
import json
import time
from datetime import timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from odoo import fields
from odoo.exceptions import AccessError
from odoo.modules.neutralize import get_neutralization_queries
from odoo.tests import HttpCase, new_test_user, tagged
from odoo.tools import SQL, mute_logger

from ...models.mosquitto import iot_mosquitto_sync as mosq
from ...tools import jwt_es256
from ..fakes import emqx_jwt_reader as emqx

TOKEN = "jwt-broker-t0ken"
DENY_ALL = {"permission": "deny", "action": "all", "topic": "#"}


@tagged("post_install", "-at_install", "iot_emqx")
class TestJwt(HttpCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        params = cls.env["ir.config_parameter"].sudo()
        params.set_param("iot_base.auth_token", TOKEN)
        params.set_param("iot_base.console_auth", "emqx_jwt")
        cls.ns = cls.env.ref("base.main_company").iot_mqtt_namespace
        cls.other_company = cls.env["res.company"].create(
            {"name": "JWT Other Co", "iot_mqtt_namespace": "jwt_other"}
        )
        groups = "base.group_user,iot_base.iot_base_group_user"
        cls.user = new_test_user(cls.env, login="jwt.user@example.com", groups=groups)
        cls.manager = new_test_user(
            cls.env,
            login="jwt.manager@example.com",
            groups="base.group_user,iot_base.iot_base_group_manager",
        )
        cls.other_user = new_test_user(
            cls.env,
            login="jwt.other@example.com",
            groups=groups,
            company_id=cls.other_company.id,
            company_ids=[cls.other_company.id],
        )
        cls.super_user = new_test_user(
            cls.env, login="jwt.super@example.com", groups=groups
        )
        cls.plain = new_test_user(
            cls.env, login="jwt.plain@example.com", groups="base.group_user"
        )
        cls.Key = cls.env["iot.jwt.key"].sudo()

    # helpers ---------------------------------------------------------

    def _config(self, user, **params):
        self.authenticate(user.login, user.login)
        response = self.url_open(
            "/iot/app/config",
            data=json.dumps({"jsonrpc": "2.0", "method": "call", "params": params}),
            headers={"Content-Type": "application/json"},
        )
        return response.json()

    def _jwks(self):
        response = self.url_open("/iot/jwks.json")
        self.assertEqual(response.status_code, 200, response.text)
        return emqx.read_jwks(response.content)

    def _read(self, config, keys=None, **kw):
        """The token of ``config`` as EMQX's JWT authenticator takes it."""
        return emqx.authenticate(
            config["credentials"]["password"],
            self._jwks() if keys is None else keys,
            kw.pop("username", config["credentials"]["username"]),
            kw.pop("clientid", config["client_id"]),
            **kw,
        )

    def _claims(self, token):
        return json.loads(emqx._b64d(token.split(".")[1]))

    def _header(self, token):
        return json.loads(emqx._b64d(token.split(".")[0]))

    def _http_acl(self, config, action, topic, qos, retain):
        body = {
            "username": config["credentials"]["username"],
            "clientid": config["client_id"],
            "action": action,
            "topic": topic,
            "qos": str(qos),
            "retain": "true" if retain else "false",
            "peerhost": "10.1.2.3",
        }
        response = self.url_open(
            f"/iot/acl/{TOKEN}",
            data=json.dumps(body),
            headers={"Content-Type": "application/json"},
        )
        return response.json()["result"]

    def _secrets(self, user):
        return (
            self.env["iot.credentials.secret"]
            .sudo()
            .search_count([("credential_id.user_id", "=", user.id)])
        )

    # tokens ------------------------------------------------------------

    def test_tokens_for_every_kind_of_user(self):
        self.super_user.with_user(self.super_user).get_or_create_iot_credentials()
        self.super_user.iot_credential_ids.is_superuser = True
        secrets_before = self._secrets(self.super_user)
        for user in (self.user, self.manager, self.other_user, self.super_user):
            with self.subTest(user=user.login):
                before = self._secrets(user)
                config = self._config(user)["result"]
                self.assertEqual(config["auth"], "jwt")
                token = config["credentials"]["password"]
                data = self._read(config)
                claims = self._claims(token)
                # exp an integer, the lifetime of the setting; no superuser
                self.assertIsInstance(claims["exp"], int)
                self.assertLessEqual(claims["exp"] - int(time.time()), 600)
                self.assertGreater(claims["exp"] - int(time.time()), 590)
                self.assertEqual(data["expire_at"], claims["exp"] * 1000)
                self.assertNotIn("is_superuser", claims)
                self.assertIs(data["is_superuser"], False)
                self.assertLessEqual(config["expires_in"], 600)
                self.assertEqual(
                    config["expires_at"],
                    time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(claims["exp"])),
                )
                # client_attrs kept whole by EMQX: strings only
                self.assertEqual(
                    data["client_attrs"], claims["client_attrs"], "no attr dropped"
                )
                self.assertTrue(
                    all(isinstance(v, str) for v in claims["client_attrs"].values())
                )
                self.assertEqual(claims["acl"][-1], DENY_ALL)
                self.assertEqual(len(data["acl"]["rules"]), len(claims["acl"]))
                # no session secret is issued in token mode
                self.assertEqual(self._secrets(user), before)
                self.assertEqual(self._header(token)["alg"], "ES256")
        self.assertEqual(self._secrets(self.super_user), secrets_before)

    def test_token_decisions(self):
        config = self._config(self.user)["result"]
        data = self._read(config)
        info = {"username": config["credentials"]["username"]}
        user = info["username"]
        ns = self.ns
        table = [
            ("subscribe", f"{ns}/devices/+/telemetry/#", "allow"),
            ("subscribe", f"{ns}/devices/#", "deny"),
            ("subscribe", "#", "deny"),
            ("publish", f"{ns}/users/{user}/notes", "allow"),
            ("publish", f"{ns}/users/someone_else/notes", "deny"),
            ("publish", "jwt_other/users/x", "deny"),
            # EMQX's "#" never matches a "$" topic: the token's ACL has no
            # opinion there, and the next source or no_match (deny) decides
            ("subscribe", "$SYS/#", "nomatch"),
            ("publish", "$SYS/x", "nomatch"),
        ]
        for action, topic, expected in table:
            with self.subTest(action=action, topic=topic):
                self.assertEqual(emqx.authorize(data, info, action, topic), expected)
        for topic in config["default_subscriptions"]:
            self.assertEqual(emqx.authorize(data, info, "subscribe", topic), "allow")
        manager = self._read(self._config(self.manager)["result"])
        self.assertEqual(emqx.authorize(manager, {}, "subscribe", f"{ns}/#"), "allow")
        self.assertEqual(
            emqx.authorize(manager, {}, "subscribe", "jwt_other/#"), "deny"
        )
        # after exp, EMQX's client_info source denies everything
        later = data["acl"]["expire"] + 1
        self.assertEqual(
            emqx.authorize(data, info, "publish", f"{ns}/users/{user}/x", now=later),
            "deny",
        )

    def test_refusals(self):
        config = self._config(self.user)["result"]
        # another username or client id than the token's (verify_claims)
        with self.assertRaises(emqx.Refused):
            self._read(config, username="user_admin")
        with self.assertRaises(emqx.Refused):
            self._read(config, clientid=config["client_id"] + "x")
        # expired
        with self.assertRaises(emqx.Refused):
            self._read(
                config, now=self._claims(config["credentials"]["password"])["exp"]
            )
        # a key Odoo does not publish, a tampered payload
        stranger_pem = jwt_es256.new_private_pem()
        claims = self._claims(config["credentials"]["password"])
        forged = jwt_es256.sign(stranger_pem, "stranger", claims)
        with self.assertRaises(emqx.Ignored):
            emqx.authenticate(
                forged, self._jwks(), claims["username"], claims["clientid"]
            )
        head, _payload, signature = config["credentials"]["password"].split(".")
        widened = dict(
            claims, acl=[{"permission": "allow", "action": "all", "topic": "#"}]
        )
        payload = jwt_es256.b64url(json.dumps(widened).encode())
        with self.assertRaises(emqx.Ignored):
            emqx.authenticate(
                f"{head}.{payload}.{signature}",
                self._jwks(),
                claims["username"],
                claims["clientid"],
            )
        # what the reader refuses that Odoo must never send: float exp,
        # number attrs, a string username compared with a number
        for bad, error in (
            (dict(claims, exp=claims["exp"] + 0.5), emqx.Crashed),
            (dict(claims, client_attrs={"company_id": 1}), emqx.Crashed),
            (
                dict(
                    claims, acl=[{"permission": "allow", "action": "x", "topic": "#"}]
                ),
                emqx.Refused,
            ),
        ):
            token = self.Key._sign(bad)
            with self.subTest(claims=bad), self.assertRaises(error):
                emqx.authenticate(
                    token, self._jwks(), claims["username"], claims["clientid"]
                )

    def test_renewal_keeps_client_id(self):
        first = self._config(self.user)["result"]
        second = self._config(self.user, client_id=first["client_id"])["result"]
        self.assertEqual(second["client_id"], first["client_id"])
        self._read(second)
        self.assertEqual(
            self._claims(second["credentials"]["password"])["clientid"],
            first["client_id"],
        )

    def test_lifetime_setting_and_credential_expiry(self):
        params = self.env["ir.config_parameter"].sudo()
        params.set_param("iot_base.jwt_lifetime_seconds", "120")
        claims = self._claims(
            self._config(self.user)["result"]["credentials"]["password"]
        )
        self.assertLessEqual(claims["exp"] - int(time.time()), 120)
        # out of range: clamped to 1 h at most
        params.set_param("iot_base.jwt_lifetime_seconds", "999999")
        claims = self._claims(
            self._config(self.user)["result"]["credentials"]["password"]
        )
        self.assertLessEqual(claims["exp"] - int(time.time()), 3600)
        # a credential that expires sooner caps the token
        soon = fields.Datetime.now() + timedelta(seconds=90)
        self.user.iot_credential_ids.expires_at = soon
        claims = self._claims(
            self._config(self.user)["result"]["credentials"]["password"]
        )
        self.assertLessEqual(claims["exp"], calendar.timegm(soon.timetuple()))

    def test_not_an_iot_user(self):
        with mute_logger("odoo.http"):  # Odoo logs the AccessError
            reply = self._config(self.plain)
        self.assertIn("error", reply)
        self.assertEqual(reply["error"]["data"]["name"], "odoo.exceptions.AccessError")

    def test_secret_and_mosquitto_modes_keep_secrets(self):
        params = self.env["ir.config_parameter"].sudo()
        params.set_param("iot_base.console_auth", "secret")
        config = self._config(self.user)["result"]
        self.assertEqual(config["auth"], "secret")
        self.assertRegex(config["credentials"]["password"], r"^[0-9a-f]{40}$")
        params.set_param("iot_base.console_auth", "emqx_jwt")
        params.set_param(mosq.ENABLED_PARAM, "True")
        config = self.env["iot.app"].with_user(self.user)._page_config()
        self.assertEqual(config["auth"], "secret")
        self.assertRegex(config["credentials"]["password"], r"^[0-9a-f]{40}$")

    # ACL: the token decides like /iot/acl ------------------------------

    @settings(max_examples=60, deadline=None, derandomize=True, database=None)
    @given(
        st.lists(
            st.sampled_from(["a", "b", "+", "#", "", "x"]), min_size=1, max_size=4
        ),
        st.sampled_from(["publish", "subscribe"]),
        st.sampled_from([0, 1, 2]),
        st.booleans(),
    )
    def test_token_acl_decides_like_http(self, words, action, qos, retain):
        if not hasattr(self, "_property_config"):
            self._rule_set()
            self._property_config = self._config(self.user)["result"]
            self._property_data = self._read(self._property_config)
        config, data = self._property_config, self._property_data
        if action == "publish":
            words = [w for w in words if w not in ("+", "#")] or ["a"]
        elif "#" in words[:-1]:
            words = words[: words.index("#") + 1]
        topic = "/".join([self.ns, "p", *words])
        token = emqx.authorize(
            data,
            {"username": config["credentials"]["username"]},
            action,
            topic,
            qos,
            retain,
        )
        self.assertNotEqual(
            token, "nomatch", "the ACL ends with the deny of everything"
        )
        http = self._http_acl(config, action, topic, qos, retain)
        if action == "publish":
            self.assertEqual(token, http, topic)
        elif token == "allow":
            self.assertEqual(http, "allow", f"token more permissive on {topic}")

    def test_rule_set_decisions(self):
        """The property test's rule set does reach allows and denies of
        every kind (qos, retain, deny before allow), token and HTTP alike."""
        self._rule_set()
        config = self._config(self.user)["result"]
        data = self._read(config)
        info = {"username": config["credentials"]["username"]}
        p = f"{self.ns}/p"
        table = [
            ("publish", f"{p}/a/y", 0, False, "allow"),
            ("publish", f"{p}/a/y", 2, False, "deny"),
            ("publish", f"{p}/a/y", 1, True, "deny"),
            ("publish", f"{p}/a/x/z", 0, False, "deny"),
            ("publish", f"{p}/x", 2, True, "allow"),
            ("publish", f"{p}/x", 2, False, "deny"),
            ("subscribe", f"{p}/a/b", 0, False, "allow"),
            ("subscribe", f"{p}/+/b", 1, False, "allow"),
            ("subscribe", f"{p}/b/#", 2, False, "allow"),
            ("subscribe", f"{p}/a/#", 0, False, "deny"),
            ("subscribe", f"{p}/#", 0, False, "deny"),
        ]
        for action, topic, qos, retain, expected in table:
            with self.subTest(action=action, topic=topic, qos=qos, retain=retain):
                self.assertEqual(
                    emqx.authorize(data, info, action, topic, qos, retain), expected
                )
                self.assertEqual(
                    self._http_acl(config, action, topic, qos, retain), expected
                )

    def _rule_set(self):
        Rule = self.env["iot.acl.rule"]
        company = self.env.ref("base.main_company")
        for sequence, (permission, action, topic, qos, retain) in enumerate(
            [
                ("deny", "all", "${namespace}/p/a/x/#", "", "any"),
                ("allow", "publish", "${namespace}/p/a/#", "0,1", "no"),
                ("allow", "subscribe", "${namespace}/p/+/b", "", "any"),
                ("allow", "all", "${namespace}/p/b/#", "", "any"),
                ("allow", "publish", "${namespace}/p/x", "2", "yes"),
            ]
        ):
            Rule.create(
                {
                    "name": f"jwt property {sequence}",
                    "sequence": sequence,
                    "permission": permission,
                    "action": action,
                    "topic": topic,
                    "qos": qos,
                    "retain": retain,
                    "company_id": company.id,
                }
            )
        self.env.flush_all()

    # keys and /iot/jwks.json -------------------------------------------

    def test_rotation(self):
        old_config = self._config(self.user)["result"]
        old_kid = self._header(old_config["credentials"]["password"])["kid"]
        old = self.Key.search([("kid", "=", old_kid)])
        self.assertEqual(old.state, "signing")
        # made ten minutes ago (Datetime has whole seconds)
        set_key_columns(old, sign_from=fields.Datetime.now() - timedelta(minutes=10))
        admin = self.env.ref("base.user_admin")
        with self.assertRaises(AccessError):
            self.env["iot.jwt.key"].with_user(self.manager).action_rotate()
        self.env["iot.jwt.key"].with_user(admin).action_rotate()
        new = self.Key.search([("kid", "!=", old_kid)])
        self.assertEqual(len(new), 1)
        self.assertEqual(new.state, "published")
        # published at once, signing only after the refresh interval (+ cache)
        delay = (new.sign_from - fields.Datetime.now()).total_seconds()
        self.assertGreaterEqual(delay, 300 + 60 - 5)
        kids = {
            k["kid"] for k in json.loads(self.url_open("/iot/jwks.json").text)["keys"]
        }
        self.assertEqual(kids, {old_kid, new.kid})
        config = self._config(self.user)["result"]
        self.assertEqual(
            self._header(config["credentials"]["password"])["kid"], old_kid
        )
        # the delay has passed: the new key signs, the old one verifies
        set_key_columns(new, sign_from=fields.Datetime.now() - timedelta(seconds=1))
        self.assertEqual((new.state, old.state), ("signing", "retiring"))
        config = self._config(self.user)["result"]
        self.assertEqual(
            self._header(config["credentials"]["password"])["kid"], new.kid
        )
        self._read(old_config)
        self._read(config)
        # kept until every token it signed has expired (max lifetime 1 h)
        self.assertGreaterEqual(old.retire_at, new.sign_from + timedelta(seconds=3600))
        set_key_columns(old, retire_at=fields.Datetime.now() - timedelta(seconds=1))
        self.assertEqual(old.state, "retired")
        with self.assertRaises(emqx.Ignored):
            self._read(old_config)
        self._read(config)
        set_key_columns(old, retire_at=fields.Datetime.now() - timedelta(days=2))
        self.Key._gc_retired_keys()
        self.assertFalse(old.exists())

    def test_jwks_bad_input(self):
        self._config(self.user)  # a key exists
        good = self.url_open("/iot/jwks.json")
        self.assertEqual(good.status_code, 200)
        self.assertRegex(good.headers["Cache-Control"], r"^public, max-age=\d+$")
        self.assertEqual(
            good.headers["Content-Type"], "application/json; charset=utf-8"
        )
        body = good.json()
        self.assertEqual(list(body), ["keys"])
        for jwk in body["keys"]:
            self.assertEqual(set(jwk), {"kty", "crv", "x", "y", "use", "alg", "kid"})
        for method in ("POST", "PUT", "DELETE", "PATCH"):
            with self.subTest(method=method):
                response = self.opener.request(
                    method, self.base_url() + "/iot/jwks.json", data="{}", timeout=10
                )
                self.assertEqual(response.status_code, 405)
                self.assertEqual(response.json()["code"], "method_not_allowed")
                self.assertEqual(response.headers["Allow"], "GET, HEAD")
        head = self.opener.head(self.base_url() + "/iot/jwks.json", timeout=10)
        self.assertEqual(head.status_code, 200)
        self.assertEqual(head.content, b"")
        for query in ("?x=1", "?keys=", "?%00", "?" + "a" * 4000):
            with self.subTest(query=query[:10]):
                response = self.url_open("/iot/jwks.json" + query)
                self.assertEqual(response.status_code, 200)
                self.assertEqual(response.json(), body)

    def test_jwks_writes_nothing(self):
        self.env.cr.execute("DELETE FROM iot_jwt_key")
        response = self.url_open("/iot/jwks.json")
        self.assertEqual(response.json(), {"keys": []})
        self.assertEqual(self.Key.search_count([]), 0, "no key made by a GET")

    # the private key ----------------------------------------------------

    def test_private_key_unreadable(self):
        self._config(self.user)
        self.env.cr.execute("SELECT private_pem FROM iot_jwt_key")
        pem = self.env.cr.fetchone()[0]
        self.assertIn("PRIVATE KEY", pem)
        Key = self.env["iot.jwt.key"]
        self.assertFalse(
            [name for name in Key._fields if "priv" in name or "pem" in name]
        )
        admin = self.env.ref("base.user_admin")
        values = Key.with_user(admin).search_read([], [])
        self.assertTrue(values)
        self.assertNotIn(pem.splitlines()[1], repr(values))
        for user in (self.user, self.manager, self.plain):
            with self.subTest(user=user.login), self.assertRaises(AccessError):
                Key.with_user(user).search_read([], ["kid"])
        with self.assertRaises(AccessError):
            Key.with_user(admin).browse(values[0]["id"]).unlink()
        with self.assertRaises(AccessError):
            Key.with_user(admin).create({"kid": "forged"})

    def test_key_list_for_admins_only(self):
        admin = self.env.ref("base.user_admin")
        arch = self.env["iot.jwt.key"].with_user(admin).get_views([(False, "list")])
        self.assertIn("action_rotate", arch["views"]["list"]["arch"])
        menu = self.env.ref("iot_base.iot_jwt_key_menu")
        visible = self.env["ir.ui.menu"].with_user(self.manager)._visible_menu_ids()
        self.assertNotIn(menu.id, visible)
        visible = self.env["ir.ui.menu"].with_user(admin)._visible_menu_ids()
        self.assertIn(menu.id, visible)
        # the list's header button: an empty recordset, as the web client calls it
        action = self.env["iot.jwt.key"].with_user(admin).browse().action_rotate()
        self.assertEqual(action["params"]["type"], "success")

    def test_neutralize_removes_keys(self):
        self._config(self.user)
        self.env.flush_all()
        for query in get_neutralization_queries(["iot_base"]):
            self.env.cr.execute(query)
        self.env.cr.execute("SELECT count(*) FROM iot_jwt_key")
        self.assertEqual(self.env.cr.fetchone()[0], 0)


def set_key_columns(key, **values):
    """Write columns of the signing key ``key`` in SQL (its dates are not
    writable through the ORM), then drop the cached values."""
    for name, value in values.items():
        key.env.cr.execute(
            SQL(
                "UPDATE iot_jwt_key SET %s = %s WHERE id = %s",
                SQL.identifier(name),
                value,
                key.id,
            )
        )
    key.invalidate_model()
