# License LGPL-3.0 or later (https://www.gnu.org/licenses/lgpl).
"""The access matrix: every role, every field of every model iot_base
defines or extends, every ORM path a client can call; no secret value
comes back to anyone but a system administrator."""

import re
import secrets

from odoo.exceptions import AccessError, MissingError, UserError
from odoo.tests import HttpCase, JsonRpcException, new_test_user, tagged
from odoo.tools import mute_logger

from .common import IotCommonCase

# Names a secret setting would have; each must be declared admin-only.
SECRET_NAME_RE = re.compile(r"token|secret|password|passw|api_?key|signing", re.I)
# Settings that look secret by name but are not (file paths, counts...).
NOT_SECRET_SETTINGS = {
    "iot_mosquitto_password_file",
    "iot_max_session_secrets",
}
# What a caller may get instead of data: Odoo's refusals. Anything else
# (KeyError, ValueError, TypeError...) is a crash, not a refusal, and fails.
REFUSALS = (AccessError, MissingError, UserError)
# The same refusals as a JSON-RPC error names them.
RPC_REFUSALS = {f"odoo.exceptions.{error.__name__}" for error in REFUSALS} | {
    "odoo.exceptions.ValidationError"
}


@tagged("post_install", "-at_install")
class TestSecurityMatrix(IotCommonCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.admin = cls.env.ref("base.user_admin")
        # real secrets of every kind, so that finding none means something
        cls.token = secrets.token_urlsafe(32)
        params = cls.env["ir.config_parameter"].sudo()
        params.set_param("iot_base.auth_token", cls.token)
        # and every other secret setting, present or added later
        setting_secrets = {}
        for name in cls._secret_settings(cls.env["res.config.settings"]):
            field = cls.env["res.config.settings"]._fields[name]
            parameter = getattr(field, "config_parameter", None)
            if parameter and parameter != "iot_base.auth_token":
                setting_secrets[name] = secrets.token_urlsafe(24)
                params.set_param(parameter, setting_secrets[name])
        device_a, secret_a = cls._issue_device("device_matrix_a", cls.company)
        device_b, secret_b = cls._issue_device("device_matrix_b", cls.other_company)
        session = cls.iot_user.with_user(cls.iot_user).get_or_create_iot_credentials()
        publisher_secret = cls.env["iot.mqtt.client"]._publisher_login()[1]
        Device = cls.env["iot.mqtt.device"]
        fleet_a = cls.env["iot.mqtt.fleet"].create(
            {"name": "Fleet A", "company_id": cls.company.id}
        )
        cls.env["iot.mqtt.fleet"].create(
            {"name": "Fleet B", "company_id": cls.other_company.id}
        )
        hw_a, hw_secret_a = Device._register_device(
            "02:00:00:00:00:0a", company=cls.company, fleet_id=fleet_a.id
        )
        hw_b, hw_secret_b = Device._register_device(
            "02:00:00:00:00:0b", company=cls.other_company
        )
        cls.env["iot.mqtt.device.tag"].create({"name": "matrix"})
        for company in (cls.company, cls.other_company):
            cls.env["iot.acl.rule"].create(
                {
                    "name": f"matrix {company.name}",
                    "topic": "${namespace}/matrix/#",
                    "company_id": company.id,
                }
            )
        Log = cls.env["iot.auth.log"]
        Log._record("auth", "allow", "ok", "device_matrix_a", credential_id=device_a.id)
        Log._record("auth", "allow", "ok", "device_matrix_b", credential_id=device_b.id)
        Log._record("auth", "deny", "invalid_credentials", "nobody", peer="10.0.0.9")
        cls.env["iot.auth.throttle"]._register_failure("nobody", "10.0.0.9")
        # what an administrator's settings page holds: the token, in a record
        cls.settings = (
            cls.env["res.config.settings"].with_user(cls.admin).create({}).sudo()
        )
        cls.env["iot.credentials.new"].with_user(cls.admin).create(
            {"username": "device_matrix_new"}
        )
        # a console token signing key: its private half is a secret
        cls.env["iot.jwt.key"].sudo()._sign({"exp": 0})
        cls.env.flush_all()
        cls.env.cr.execute("SELECT private_pem FROM iot_jwt_key")
        private_keys = [row[0] for row in cls.env.cr.fetchall()]
        cls.env.cr.execute("SELECT hash FROM iot_credentials_secret")
        hashes = [row[0] for row in cls.env.cr.fetchall()]
        cls.secrets = {
            "broker token": cls.token,
            "device secret A": secret_a,
            "device secret B": secret_b,
            "hardware device secret A": hw_secret_a,
            "hardware device secret B": hw_secret_b,
            "session secret": session["password"],
            "publisher secret": publisher_secret,
        }
        cls.secrets.update(
            {f"secret hash {i}": value for i, value in enumerate(hashes)}
        )
        cls.secrets.update(setting_secrets)
        for i, pem in enumerate(private_keys):
            cls.secrets[f"signing key {i}"] = pem
            # and the key's base64 body alone, in case it comes back re-wrapped
            cls.secrets[f"signing key {i} body"] = pem.splitlines()[1]
        cls.roles = {
            "public": cls.public_user,
            "portal": cls.portal_user,
            "internal": cls.internal_user,
            "iot user": cls.iot_user,
            "iot manager A": cls.iot_manager,
            "iot manager B": cls.other_manager,
        }
        cls.models_fields = cls._models_fields()
        assert hw_a and hw_b

    @staticmethod
    def _secret_settings(settings):
        """The settings of iot_base that are secrets, by their names."""
        return [
            name
            for name, field in settings._fields.items()
            if field._module == "iot_base"
            and name not in NOT_SECRET_SETTINGS
            and (
                SECRET_NAME_RE.search(name)
                or SECRET_NAME_RE.search(getattr(field, "config_parameter", "") or "")
            )
        ]

    @classmethod
    def _issue_device(cls, username, company):
        device = cls.Credentials.create(
            {"username": username, "kind": "device", "company_id": company.id}
        )
        return device, device.action_rotate_secret()["context"]["default_secret"]

    @classmethod
    def _models_fields(cls):
        """{model: field names}: every concrete model iot_base defines (all
        fields) or extends (the fields it adds; all of res.config.settings)."""
        result = {}
        for ir_model in cls.env["ir.model"].search([]):
            if "iot_base" not in (ir_model.modules or "").split(", "):
                continue
            model = cls.env.get(ir_model.model)
            if model is None or model._abstract:
                continue
            if model._original_module == "iot_base" or model._name == (
                "res.config.settings"
            ):
                names = list(model._fields)
            else:
                names = [
                    name
                    for name, field in model._fields.items()
                    if field._module == "iot_base"
                ]
            if names:
                result[model._name] = names
        return result

    # ------------------------------------------------------------------

    def _leaks(self, value):
        text = repr(value)
        return [name for name, secret in self.secrets.items() if secret in text]

    def _call(self, user, what, function):
        """Run one ORM call as ``user``; its result must hold no secret."""
        try:
            with self.env.cr.savepoint():
                result = function()
        except REFUSALS:
            return False
        except Exception as error:  # noqa: BLE001 - a crash must fail, named
            self.fail(f"{user.login}: {what} crashed instead of refusing: {error!r}")
        leaks = self._leaks(result)
        self.assertFalse(leaks, f"{user.login} got {leaks} through {what}")
        return True

    def _paths(self, model, names, ids):
        """(name, callable) of every read path of ``model`` for ``names``."""
        spec = {name: {} for name in names}
        paths = [
            ("default_get", lambda: model.default_get(names)),
            ("onchange", lambda: model.onchange({}, [], spec)),
            ("search_read", lambda: model.search_read([], names)),
            ("read", lambda: model.browse(ids).read(names)),
            ("web_read", lambda: model.browse(ids).web_read(spec)),
            ("export_data", lambda: model.browse(ids).export_data(names)),
        ]
        stored = [
            name
            for name in names
            if model._fields[name].store and model._fields[name].column_type
        ]
        for name in stored:
            paths.append(
                (
                    f"read_group by {name}",
                    lambda name=name: model.read_group([], [], [name], lazy=False),
                )
            )
            paths.append(
                (
                    f"read_group array_agg({name})",
                    lambda name=name: model.read_group(
                        [], [f"{name}:array_agg"], [], lazy=False
                    ),
                )
            )
        return paths

    def _sweep(self, user):
        """Every path over every model and field; returns how many answered."""
        answered = 0
        for model_name, names in self.models_fields.items():
            model = self.env[model_name].with_user(user)
            ids = (
                self.env[model_name]
                .sudo()
                .with_context(active_test=False)
                .search([])
                .ids
            )
            # all fields at once, then each alone: one field refused must
            # not hide what another would give (default_get works without
            # any access right to the model)
            field_sets = [names] + [[name] for name in names]
            for field_set in field_sets:
                for what, function in self._paths(model, field_set, ids):
                    answered += self._call(
                        user, f"{model_name}.{what}({field_set})", function
                    )
        Settings = self.env["res.config.settings"].with_user(user)
        settings = self.settings.with_user(user)
        for what, function in [
            ("get_values", lambda: settings.get_values()),
            ("web_save", lambda: Settings.web_save({}, {"iot_auth_token": {}})),
            ("fields_get", lambda: Settings.fields_get()),
        ]:
            answered += self._call(user, f"res.config.settings.{what}", function)
        return answered

    def test_matrix_no_secret_but_for_admins(self):
        self.assertIn("iot.credentials", self.models_fields)
        self.assertIn("iot_auth_token", self.models_fields["res.config.settings"])
        self.assertIn("iot_credential_ids", self.models_fields["res.users"])
        self.assertIn("iot_mqtt_namespace", self.models_fields["res.company"])
        self.assertIn("iot.jwt.key", self.models_fields)
        answered = {}
        for role, user in self.roles.items():
            with self.subTest(role=role):
                answered[role] = self._sweep(user)
        # the sweep did reach data: managers read most of it
        self.assertGreater(answered["iot manager B"], 200, answered)
        self.assertGreater(answered["iot user"], answered["internal"], answered)

    def test_admin_does_get_the_token(self):
        """The sweep could find nothing; it does find the admin's token."""
        Settings = self.env["res.config.settings"].with_user(self.admin)
        self.assertEqual(
            Settings.default_get(["iot_auth_token"])["iot_auth_token"], self.token
        )
        self.assertEqual(
            self.settings.with_user(self.admin).read(["iot_auth_token"])[0][
                "iot_auth_token"
            ],
            self.token,
        )
        values = Settings.onchange({}, [], {"iot_auth_token": {}})["value"]
        self.assertEqual(values["iot_auth_token"], self.token)

    def test_default_get_of_settings_honours_field_groups(self):
        """The hole of issue 8: default_get read parameters as superuser."""
        for role, user in self.roles.items():
            with self.subTest(role=role):
                Settings = self.env["res.config.settings"].with_user(user)
                names = [
                    name
                    for name, field in Settings._fields.items()
                    if getattr(field, "config_parameter", None)
                ]
                values = Settings.default_get(names)
                self.assertNotIn("iot_auth_token", values)
                self.assertFalse(self._leaks(values))
                if role.startswith("iot manager"):
                    # what is not secret stays readable for managers
                    self.assertIn("iot_mqtt_broker_url", values)

    def test_settings_give_nothing_of_iot_base_without_the_right(self):
        """Issue 16 point 12: users who are neither IoT managers nor system
        administrators read no iot_base setting, secret or not (the MQTT
        host and port, Mosquitto's file paths, the throttle), by any path."""
        Settings = self.env["res.config.settings"]
        ours = [
            name
            for name, field in Settings._fields.items()
            if field._module == "iot_base"
        ]
        stored = {
            "iot_base.mqtt_host": "mqtt-internal-7q.example.net",
            "iot_base.mqtt_port": "28883",
            "iot_base.mosquitto_acl_file": "/srv/mosq-7q/acl",
            "iot_base.throttle_max_failures": "77",
        }
        params = self.env["ir.config_parameter"].sudo()
        for key, value in stored.items():
            params.set_param(key, value)
        public_fields = [name for name in ours if not Settings._fields[name].groups]
        for role in ("public", "portal", "internal", "iot user"):
            with self.subTest(role=role):
                user = self.roles[role]
                as_user = Settings.with_user(user)
                spec = {name: {} for name in public_fields}
                got = {
                    "default_get": as_user.default_get(ours),
                    "get_values": self.settings.with_user(user).get_values(),
                    "onchange": as_user.onchange({}, [], spec)["value"],
                }
                for what, values in got.items():
                    text = repr(values)
                    self.assertFalse(
                        [v for v in stored.values() if v in text], f"{role} {what}"
                    )
                    if what != "onchange":  # a new record shows the defaults
                        self.assertFalse(
                            [name for name in values if name in ours], f"{role} {what}"
                        )
        for user in (self.iot_manager, self.admin):
            with self.subTest(user=user.login):
                values = Settings.with_user(user).default_get(ours)
                self.assertEqual(values["iot_mqtt_port"], 28883)
                self.assertEqual(values["iot_mqtt_host"], stored["iot_base.mqtt_host"])

    def test_every_secret_setting_is_admin_only(self):
        """A secret setting added later must say groups=base.group_system."""
        fields = self.env["res.config.settings"]._fields
        secret_like = self._secret_settings(self.env["res.config.settings"])
        self.assertIn("iot_auth_token", secret_like)
        for name in secret_like:
            with self.subTest(field=name):
                self.assertEqual(fields[name].groups, "base.group_system")

    def test_config_parameters_are_admin_only(self):
        for role, user in self.roles.items():
            with self.subTest(role=role):
                Params = self.env["ir.config_parameter"].with_user(user)
                with self.assertRaises(AccessError):
                    Params.get_param("iot_base.auth_token")
                with self.assertRaises(AccessError):
                    Params.search_read([("key", "like", "iot_base.")], ["value"])
                with self.assertRaises(AccessError):
                    Params.set_param("iot_base.auth_token", "forged")

    def test_settings_actions_are_admin_only(self):
        for role, user in self.roles.items():
            with self.subTest(role=role):
                settings = self.settings.with_user(user)
                for action in (
                    settings.action_iot_generate_auth_token,
                    settings.action_iot_test_connection,
                    settings.action_iot_mosquitto_sync_now,
                ):
                    with self.assertRaises(AccessError):
                        action()
                with self.assertRaises(AccessError):
                    settings.write({"iot_auth_token": "forged"})
                with self.assertRaises(AccessError):
                    settings.execute()
        params = self.env["ir.config_parameter"].sudo()
        self.assertEqual(params.get_param("iot_base.auth_token"), self.token)
        self.settings.with_user(self.admin).action_iot_generate_auth_token()
        self.assertNotEqual(params.get_param("iot_base.auth_token"), self.token)


@tagged("post_install", "-at_install")
class TestSecretSettingsOverRpc(HttpCase):
    """The attack of issue 8 as it was made: JSON-RPC of a logged-in user."""

    def setUp(self):
        super().setUp()
        self.token = secrets.token_urlsafe(32)
        self.env["ir.config_parameter"].sudo().set_param(
            "iot_base.auth_token", self.token
        )
        self.users = [
            new_test_user(self.env, login="rpc.portal", groups="base.group_portal"),
            new_test_user(self.env, login="rpc.internal", groups="base.group_user"),
            new_test_user(
                self.env,
                login="rpc.manager",
                groups="base.group_user,iot_base.iot_base_group_manager",
            ),
        ]
        self.settings_id = self.env["res.config.settings"].create({}).id

    def _call(self, method, args, kwargs=None):
        return self.make_jsonrpc_request(
            f"/web/dataset/call_kw/res.config.settings/{method}",
            {
                "model": "res.config.settings",
                "method": method,
                "args": args,
                "kwargs": kwargs or {},
            },
        )

    def _assert_no_token(self, method, args):
        """Refused, or answered without the token."""
        try:
            with mute_logger("odoo.http"):
                result = self._call(method, args)
        except JsonRpcException as error:
            # a refusal, not a crash (a 500 of any other kind fails)
            self.assertIn(str(error), RPC_REFUSALS, method)
            return
        self.assertNotIn(self.token, repr(result), method)

    def test_rpc_paths(self):
        for user in self.users:
            with self.subTest(user=user.login):
                self.authenticate(user.login, user.login)
                values = self._call("default_get", [["iot_auth_token"]])
                self.assertNotIn("iot_auth_token", values)
                ids = [self.settings_id]
                for method, args in (
                    ("default_get", [list(self.env["res.config.settings"]._fields)]),
                    ("onchange", [[], {}, [], {"iot_auth_token": {}}]),
                    ("read", [ids, ["iot_auth_token"]]),
                    ("web_read", [ids, {"iot_auth_token": {}}]),
                    ("get_values", [ids]),
                    ("action_iot_generate_auth_token", [ids]),
                ):
                    self._assert_no_token(method, args)
        self.assertEqual(
            self.env["ir.config_parameter"].sudo().get_param("iot_base.auth_token"),
            self.token,
        )
