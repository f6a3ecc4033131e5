# License LGPL-3.0 or later (https://www.gnu.org/licenses/lgpl).
import secrets

from odoo import _, api, fields, models
from odoo.exceptions import UserError

from ..tools.limits import LIMIT_DEFAULTS
from ..tools.settings import bool_param
from .emqx.iot_emqx_store import ENABLED_PARAM as EMQX_STORE_PARAM
from .iot_app import (
    CONSOLE_AUTH_PARAM,
    DEFAULT_BROKER_URL,
    DEFAULT_RABBITMQ_RESOURCE_SERVER,
    RABBITMQ_RESOURCE_SERVER_PARAM,
)
from .iot_auth_log import DEFAULT_MAX_ROWS, DEFAULT_RETENTION_DAYS
from .iot_broker_api import (
    EMQX_KEY_PARAM,
    EMQX_SECRET_PARAM,
    EMQX_URL_PARAM,
    RABBITMQ_PASSWORD_PARAM,
    RABBITMQ_URL_PARAM,
    RABBITMQ_USER_PARAM,
)
from .iot_credentials_secret import DEFAULT_MAX_SESSION_SECRETS
from .iot_device_reading_history import DEFAULT_HISTORY_CAP, HISTORY_CAP_PARAM
from .iot_jwt_key import (
    ALGORITHM_PARAM,
    DEFAULT_JWKS_REFRESH,
    DEFAULT_JWT_LIFETIME,
    JWKS_REFRESH_PARAM,
    JWT_LIFETIME_PARAM,
)
from .iot_listener import DEFAULT_MAX_PAYLOAD, MAX_PAYLOAD_PARAM
from .mosquitto.iot_mosquitto_sync import (
    ACL_FILE_PARAM,
    ENABLED_PARAM,
    PASSWORD_FILE_PARAM,
    PID_FILE_PARAM,
)
from .rabbitmq.iot_rabbitmq_store import ENABLED_PARAM as RABBITMQ_STORE_PARAM
from .rabbitmq.iot_rabbitmq_store import VHOST_PARAM as RABBITMQ_VHOST_PARAM
from .res_users import DEFAULT_SESSION_LIFETIME_HOURS

AUTH_TOKEN_PARAM = "iot_base.auth_token"


class ResConfigSettings(models.TransientModel):
    _inherit = "res.config.settings"

    iot_mqtt_broker_url = fields.Char(
        "MQTT Broker WebSocket URL",
        config_parameter="iot_base.mqtt_broker_url",
        default=DEFAULT_BROKER_URL,
    )
    # Every secret setting carries groups="base.group_system": default_get()
    # and get_values() below honour it like read() does.
    iot_auth_token = fields.Char(
        "Broker Token",
        config_parameter=AUTH_TOKEN_PARAM,
        groups="base.group_system",
        help="Shared secret the broker puts in /iot/auth/<token> "
        "(or sends as 'Authorization: Bearer <token>').",
    )
    # what the page shows of the token: its end, never the token (shown
    # once, when generated)
    iot_auth_token_hint = fields.Char(
        "Current Broker Token",
        compute="_compute_iot_auth_token_hint",
        groups="base.group_system",
    )
    iot_session_lifetime_hours = fields.Float(
        "Session Secret Lifetime",
        config_parameter="iot_base.session_lifetime_hours",
        default=DEFAULT_SESSION_LIFETIME_HOURS,
    )
    iot_max_session_secrets = fields.Integer(
        "Session Secrets per Credential",
        config_parameter="iot_base.max_session_secrets",
        default=DEFAULT_MAX_SESSION_SECRETS,
        help="Live session secrets one credential may hold (one per console "
        "load); issuing one more deletes the oldest.",
    )

    iot_throttle_max_failures = fields.Integer(
        "Failures Before Throttling",
        config_parameter="iot_base.throttle_max_failures",
        default=10,
        help="Failed authentications per username or peer address within the "
        "window after which that username or address is refused at once.",
    )
    iot_throttle_window_seconds = fields.Integer(
        "Failure Window",
        config_parameter="iot_base.throttle_window_seconds",
        default=60,
    )
    iot_throttle_cooldown_seconds = fields.Integer(
        "Throttle Cool-down",
        config_parameter="iot_base.throttle_cooldown_seconds",
        default=300,
    )
    iot_audit_retention_days = fields.Integer(
        "Keep Broker Decisions",
        config_parameter="iot_base.audit_retention_days",
        default=DEFAULT_RETENTION_DAYS,
    )
    iot_audit_max_rows = fields.Integer(
        "Keep at Most",
        config_parameter="iot_base.audit_max_rows",
        default=DEFAULT_MAX_ROWS,
        help="The daily clean-up deletes the oldest broker decisions beyond "
        "this many, whatever their age.",
    )

    iot_mqtt_host = fields.Char(
        "MQTT Host",
        config_parameter="iot_base.mqtt_host",
        default="localhost",
        help="Where Odoo itself connects (MQTT over TCP) to publish commands.",
    )
    iot_mqtt_port = fields.Integer(
        "MQTT Port", config_parameter="iot_base.mqtt_port", default=1883
    )
    iot_mqtt_tls = fields.Boolean("MQTT over TLS", config_parameter="iot_base.mqtt_tls")
    iot_mqtt_timeout = fields.Float(
        "MQTT Timeout",
        config_parameter="iot_base.mqtt_timeout",
        default=5.0,
        help="Longest time a publish from Odoo may take, connection included.",
    )
    iot_mqtt_namespace = fields.Char(
        related="company_id.iot_mqtt_namespace", readonly=False
    )
    iot_device_username_pattern = fields.Char(
        related="company_id.iot_device_username_pattern", readonly=False
    )

    @api.model
    def default_get(self, fields_list):
        # Odoo's default_get reads config parameters as superuser and ignores
        # field groups: drop what the caller may not read.
        allowed = [name for name in fields_list if self._iot_may_read(name)]
        res = super().default_get(allowed)
        for name in allowed:
            field = self._fields.get(name)
            if (
                name in res
                and field._module == "iot_base"
                and field.type == "boolean"
                and getattr(field, "config_parameter", None)
                and self.env["ir.config_parameter"]
                .sudo()
                .get_param(field.config_parameter)
            ):
                # Odoo reads any non-empty string as on (bool("False")): the
                # page shows what the code reads, tools/settings.bool_param
                res[name] = bool_param(self.env, field.config_parameter)
        return {name: value for name, value in res.items() if name in allowed}

    def get_values(self):
        res = super().get_values()
        return {name: value for name, value in res.items() if self._iot_may_read(name)}

    def _iot_may_read(self, name):
        """Whether the caller may read the setting ``name``: its field's
        groups, and nothing of iot_base's but for IoT managers and system
        administrators (the page is theirs; everyone else is promised none
        of it, broker addresses and file paths included)."""
        field = self._fields.get(name)
        if field is None:
            return True
        if field._module == "iot_base" and not self._iot_is_settings_reader():
            return False
        return field.is_accessible(self.env)

    def _iot_is_settings_reader(self):
        user = self.env.user
        return (
            self.env.su
            or user.has_group("base.group_system")
            or user.has_group("iot_base.iot_base_group_manager")
        )

    def _iot_check_system(self):
        """The settings' actions are for whoever may write the settings
        (``base.group_system``, by the model's access rights)."""
        self.check_access("write")

    def action_iot_test_connection(self):
        self.ensure_one()
        self._iot_check_system()
        self.execute()
        message = self.env["iot.mqtt.client"]._test_connection()
        return {
            "type": "ir.actions.client",
            "tag": "display_notification",
            "params": {"type": "success", "message": message, "sticky": False},
        }

    def action_iot_generate_auth_token(self):
        """A new broker token, shown once (the page shows only its end).
        Every broker still configured with the old one refuses the logins it
        asks Odoo about from now on: the devices whose logins it asks about
        (all, unless a broker checks them against its own store) are shown
        offline at once, with the reason."""
        self.ensure_one()
        self._iot_check_system()
        token = secrets.token_urlsafe(32)
        self.env["ir.config_parameter"].sudo().set_param(AUTH_TOKEN_PARAM, token)
        if not self._iot_devices_in_store():
            devices = self.env["iot.mqtt.device"].sudo().with_context(active_test=False)
            devices._presence_cut(
                devices.search([("presence_state", "in", ("online", "stale"))]),
                "token_regenerated",
            )
        return {
            "type": "ir.actions.act_window",
            "res_model": "iot.credentials.secret.show",
            "name": _("New Broker Token"),
            "views": [
                (self.env.ref("iot_base.iot_auth_token_show_view_form").id, "form")
            ],
            "target": "new",
            "context": {"default_secret": token},
        }

    def _iot_devices_in_store(self):
        """Whether the brokers check devices' logins against their own store
        (Mosquitto files, RabbitMQ internal users, EMQX built-in database),
        which the broker token does not reach."""
        return any(
            bool_param(self.env, param)
            for param in (ENABLED_PARAM, RABBITMQ_STORE_PARAM, EMQX_STORE_PARAM)
        )

    # (a dependency, so that the page's first onchange computes it)
    @api.depends("company_id")
    def _compute_iot_auth_token_hint(self):
        token = self.env["ir.config_parameter"].sudo().get_param(AUTH_TOKEN_PARAM)
        if not token:
            hint = _("none: every broker request is refused")
        elif len(token) >= 16:
            hint = _("set, ends in …%(end)s", end=token[-4:])
        else:
            hint = _("set")
        for settings in self:
            settings.iot_auth_token_hint = hint

    iot_mosquitto_sync_enabled = fields.Boolean(
        "Mosquitto Files",
        config_parameter=ENABLED_PARAM,
        help="Write a Mosquitto 2.0 password file and ACL file from the MQTT "
        "credentials and topic rules after every change, and make the broker "
        "reload them.",
    )
    iot_mosquitto_password_file = fields.Char(
        "Password File",
        config_parameter=PASSWORD_FILE_PARAM,
        help="Absolute path of Mosquitto's password_file.",
    )
    iot_mosquitto_acl_file = fields.Char(
        "ACL File",
        config_parameter=ACL_FILE_PARAM,
        help="Absolute path of Mosquitto's acl_file.",
    )
    iot_mosquitto_pid_file = fields.Char(
        "PID File",
        config_parameter=PID_FILE_PARAM,
        help="Mosquitto's pid_file: the broker gets SIGHUP after each change. "
        "Empty: the broker's host reloads it.",
    )
    iot_mosquitto_last_result = fields.Text(
        "Last Mosquitto Sync", compute="_compute_iot_mosquitto_last_result"
    )

    @api.depends("iot_mosquitto_sync_enabled")
    def _compute_iot_mosquitto_last_result(self):
        text = self._iot_last_result_text("iot.mosquitto.sync")
        for settings in self:
            settings.iot_mosquitto_last_result = text

    def _iot_last_result_text(self, engine_model):
        """The last run of a broker engine (its ``_last_result`` and
        ``_summary``), as the settings page shows it."""
        engine = self.env[engine_model].sudo()
        result = engine._last_result()
        text = engine._summary(result) if result else ""
        if result and result.get("at"):
            text = f"{result['at']} UTC: {text}"
        return text

    def set_values(self):
        params = self.env["ir.config_parameter"].sudo()
        # The page never changes the broker token (it does not show it; only
        # Generate a New Token does): a page opened before a regeneration
        # must not write the old token back when saved.
        token = params.get_param(AUTH_TOKEN_PARAM)
        for settings in self:
            settings.iot_auth_token = token
        keys = (ENABLED_PARAM, PASSWORD_FILE_PARAM, ACL_FILE_PARAM, PID_FILE_PARAM)
        keys += self._iot_store_keys()
        before = [params.get_param(key) for key in keys]
        res = super().set_values()
        if (
            params.get_param(ALGORITHM_PARAM) == "HS256"
            and not self.env["iot.jwt.key"].sudo()._hs256_row()
        ):
            raise UserError(
                _("HS256 token signatures need a shared secret: type one first.")
            )
        if [params.get_param(key) for key in keys] != before:
            self.env["iot.store.sync"]._schedule()
        return res

    def action_iot_mosquitto_sync_now(self):
        self.ensure_one()
        self._iot_check_system()
        return self.env["iot.mosquitto.sync"]._action_sync_now()

    # Closing revoked clients' live sessions (iot.broker.session): broker
    # API endpoints and their secrets, for system administrators only.
    iot_rabbitmq_management_url = fields.Char(
        "RabbitMQ Management API",
        config_parameter=RABBITMQ_URL_PARAM,
        groups="base.group_system",
        help="Base URL of RabbitMQ's management plugin, e.g. http://127.0.0.1:15672: "
        "Odoo closes the connections of revoked credentials through it.",
    )
    iot_rabbitmq_management_user = fields.Char(
        "RabbitMQ Management User",
        config_parameter=RABBITMQ_USER_PARAM,
        groups="base.group_system",
    )
    iot_rabbitmq_management_password = fields.Char(
        "RabbitMQ Management Password",
        config_parameter=RABBITMQ_PASSWORD_PARAM,
        groups="base.group_system",
    )
    iot_emqx_api_url = fields.Char(
        "EMQX REST API",
        config_parameter=EMQX_URL_PARAM,
        groups="base.group_system",
        help="Base URL of EMQX's REST API, e.g. http://emqx:18083: Odoo kicks "
        "the clients of revoked credentials through it.",
    )
    iot_emqx_api_key = fields.Char(
        "EMQX API Key", config_parameter=EMQX_KEY_PARAM, groups="base.group_system"
    )
    iot_emqx_api_secret = fields.Char(
        "EMQX API Secret",
        config_parameter=EMQX_SECRET_PARAM,
        groups="base.group_system",
    )
    iot_broker_session_last_result = fields.Text(
        "Last Session Cut-off",
        compute="_compute_iot_broker_session_last_result",
        groups="base.group_system",
    )

    def _compute_iot_broker_session_last_result(self):
        text = self._iot_last_result_text("iot.broker.session")
        for settings in self:
            settings.iot_broker_session_last_result = text

    # The console's MQTT password: a session secret checked by Odoo at each
    # CONNECT, or a token the broker verifies itself (iot.jwt.key).
    iot_console_auth = fields.Selection(
        [
            ("secret", "Session Secrets"),
            ("emqx_jwt", "Signed Tokens for EMQX (JWT)"),
            ("rabbitmq_jwt", "Signed Tokens for RabbitMQ (OAuth 2)"),
        ],
        "Console Login",
        config_parameter=CONSOLE_AUTH_PARAM,
        default="secret",
        groups="base.group_system",
        help="Signed tokens: the broker verifies the console's token with the keys "
        "of /iot/jwks.json and never calls Odoo for it (EMQX's JWT authenticator, "
        "RabbitMQ 3.10's rabbitmq_auth_backend_oauth2; the token's form differs, "
        "so choose the broker). Mosquitto keeps session secrets.",
    )
    iot_rabbitmq_resource_server_id = fields.Char(
        "RabbitMQ Resource Server ID",
        config_parameter=RABBITMQ_RESOURCE_SERVER_PARAM,
        default=DEFAULT_RABBITMQ_RESOURCE_SERVER,
        groups="base.group_system",
        help="auth_oauth2.resource_server_id of the RabbitMQ node: the tokens' "
        "audience and the prefix of their scopes (letters, digits, _ and -).",
    )
    iot_jwt_lifetime_seconds = fields.Integer(
        "Token Lifetime",
        config_parameter=JWT_LIFETIME_PARAM,
        default=DEFAULT_JWT_LIFETIME,
        groups="base.group_system",
        help="How long a console token is valid (60 to 3600 seconds); the console "
        "reconnects with a fresh one before it expires.",
    )
    iot_jwks_refresh_seconds = fields.Integer(
        "Broker Key Refresh",
        config_parameter=JWKS_REFRESH_PARAM,
        default=DEFAULT_JWKS_REFRESH,
        groups="base.group_system",
        help="The brokers' JWKS refresh interval (EMQX: refresh_interval): a new "
        "signing key signs only after this delay.",
    )

    iot_jwt_algorithm = fields.Selection(
        [
            ("ES256", "ES256 key pairs (brokers fetch /iot/jwks.json)"),
            ("HS256", "HS256 shared secret (brokers that cannot fetch a JWKS)"),
        ],
        "Token Signature",
        config_parameter=ALGORITHM_PARAM,
        default="ES256",
        groups="base.group_system",
    )
    # Write-only: typed by a system administrator, stored where no ORM read
    # reaches (iot.jwt.key's raw column), never shown again, never logged.
    iot_jwt_hs256_secret = fields.Char(
        "New HS256 Shared Secret",
        compute="_compute_iot_jwt_hs256_secret",
        inverse="_inverse_iot_jwt_hs256_secret",
        groups="base.group_system",
        help="At least 32 bytes, the same as in the broker's configuration (EMQX: "
        "the JWT authenticator's secret; RabbitMQ: advanced.config signing_keys). "
        "Write-only: leave empty to keep the current one.",
    )
    iot_jwt_hs256_secret_set = fields.Boolean(
        "HS256 Secret Set",
        compute="_compute_iot_jwt_hs256_secret",
        groups="base.group_system",
    )

    def _compute_iot_jwt_hs256_secret(self):
        is_set = bool(self.env["iot.jwt.key"].sudo()._hs256_row())
        for settings in self:
            settings.iot_jwt_hs256_secret = False
            settings.iot_jwt_hs256_secret_set = is_set

    def _inverse_iot_jwt_hs256_secret(self):
        for settings in self:
            if settings.iot_jwt_hs256_secret:
                settings._iot_check_system()
                self.env["iot.jwt.key"].sudo()._set_hs256_secret(
                    settings.iot_jwt_hs256_secret
                )

    def action_iot_rotate_jwt_key(self):
        self.ensure_one()
        self._iot_check_system()
        return self.env["iot.jwt.key"].action_rotate()

    # The listener (odoo-bin iot-listen, models/iot_listener.py)
    iot_listener_heartbeat_timeout = fields.Integer(
        "Heartbeat Timeout",
        config_parameter="iot_base.listener_heartbeat_timeout",
        default=120,
        groups="base.group_system",
        help="An online device that sends nothing for this long is shown stale.",
    )
    iot_listener_shared_group = fields.Char(
        "Shared Subscription Group",
        config_parameter="iot_base.listener_shared_group",
        groups="base.group_system",
        help="Set (e.g. odoo) on brokers with shared subscriptions (Mosquitto "
        "2.0, EMQX 5): listeners subscribe to $share/<group>/... and split the "
        "messages. Leave empty for RabbitMQ 3.10 (MQTT 3.1.1 only, no shared "
        "subscriptions: $share/... is taken as a plain topic and the listener "
        "hears nothing); run one listener there.",
    )
    iot_listener_history = fields.Boolean(
        "Reading History",
        config_parameter="iot_base.listener_history",
        groups="base.group_system",
        help="Keep numeric readings over time, one per device, topic and interval.",
    )
    iot_listener_history_interval = fields.Integer(
        "Sampling Interval",
        config_parameter="iot_base.listener_history_interval",
        default=60,
        groups="base.group_system",
    )
    iot_listener_history_days = fields.Integer(
        "History Retention",
        config_parameter="iot_base.listener_history_days",
        default=30,
        groups="base.group_system",
    )
    iot_listener_history_max_rows_per_day = fields.Integer(
        "History Rows per Device and Day",
        config_parameter=HISTORY_CAP_PARAM,
        default=DEFAULT_HISTORY_CAP,
        groups="base.group_system",
        help="Past this many new history rows in a UTC day, a device's "
        "readings are kept as last readings only until midnight UTC.",
    )
    iot_listener_max_payload = fields.Integer(
        "Largest Message",
        config_parameter=MAX_PAYLOAD_PARAM,
        default=DEFAULT_MAX_PAYLOAD,
        groups="base.group_system",
        help="Larger messages are dropped by the listener and counted (64 to "
        "262,144 bytes).",
    )

    # Broker stores kept by Odoo (iot.store.sync): which brokers check
    # CONNECTs against their own store; the API endpoints and secrets are
    # those above. System administrators only.
    iot_rabbitmq_store_enabled = fields.Boolean(
        "RabbitMQ Internal Users",
        config_parameter=RABBITMQ_STORE_PARAM,
        groups="base.group_system",
        help="Keep the devices' and services' credentials as RabbitMQ internal "
        "users (management API): the node checks their CONNECTs without Odoo. "
        "Secrets issued before need a rotation.",
    )
    iot_rabbitmq_vhost = fields.Char(
        "RabbitMQ MQTT Virtual Host",
        config_parameter=RABBITMQ_VHOST_PARAM,
        groups="base.group_system",
        help="Empty: /. The virtual host of rabbitmq_mqtt (mqtt.vhost): the one "
        "Odoo answers for in the HTTP backend, scopes the console tokens to and "
        "writes the internal users' permissions in.",
    )
    iot_emqx_store_enabled = fields.Boolean(
        "EMQX Built-in Database",
        config_parameter=EMQX_STORE_PARAM,
        groups="base.group_system",
        help="Keep the devices' and services' credentials and topic rules in "
        "EMQX's built-in database (REST API, salted sha256): EMQX checks their "
        "CONNECTs without Odoo. Secrets issued before need a rotation.",
    )
    iot_store_sync_last_result = fields.Text(
        "Last Store Syncs",
        compute="_compute_iot_store_sync_last_result",
        groups="base.group_system",
    )

    def _compute_iot_store_sync_last_result(self):
        lines = [
            f"{store}: {self._iot_last_result_text(model)}"
            for store, model in self.env["iot.store.sync"]._store_models().items()
            if store != "mosquitto" and self.env[model].sudo()._last_result()
        ]
        for settings in self:
            settings.iot_store_sync_last_result = "\n".join(lines)

    def action_iot_store_sync_now(self):
        self.ensure_one()
        self._iot_check_system()
        return self.env["iot.store.sync"].action_sync_now()

    def _iot_store_keys(self):
        return (RABBITMQ_STORE_PARAM, RABBITMQ_VHOST_PARAM, EMQX_STORE_PARAM)

    # Per-company limits (tools/limits.py reads them; 0: the default)
    iot_max_rules_per_company = fields.Integer(
        "Topic Rules per Company",
        config_parameter="iot_base.max_rules_per_company",
        default=LIMIT_DEFAULTS["iot_base.max_rules_per_company"],
        groups="base.group_system",
        help="At most this many topic rules (archived ones included) per "
        "company; rules for every company are not counted.",
    )
    iot_max_devices_per_company = fields.Integer(
        "Devices per Company",
        config_parameter="iot_base.max_devices_per_company",
        default=LIMIT_DEFAULTS["iot_base.max_devices_per_company"],
        groups="base.group_system",
        help="At most this many devices (archived ones included) per company.",
    )
    iot_max_credentials_per_company = fields.Integer(
        "MQTT Credentials per Company",
        config_parameter="iot_base.max_credentials_per_company",
        default=LIMIT_DEFAULTS["iot_base.max_credentials_per_company"],
        groups="base.group_system",
        help="At most this many MQTT credentials (devices, services and users) "
        "per company.",
    )
    iot_max_provisioning_per_minute = fields.Integer(
        "Registrations per Minute and API Key",
        config_parameter="iot_base.max_provisioning_per_minute",
        default=LIMIT_DEFAULTS["iot_base.max_provisioning_per_minute"],
        groups="base.group_system",
        help="Device registrations one provisioning API key may make per minute.",
    )
