# License LGPL-3.0 or later (https://www.gnu.org/licenses/lgpl).
import re
from datetime import datetime, timedelta
from typing import NamedTuple

from psycopg2 import errors

from odoo import _, api, fields, models
from odoo.exceptions import AccessError, UserError, ValidationError
from odoo.tools import SQL

from ..tools import client_ids
from ..tools.limits import company_over_limit
from ..tools.secret_hash import INDEX_SIZE, MAX_SECRET_LENGTH, verify_secret

# the context key, and its only value, of Odoo's own code giving out one of
# the reserved (``odoo_``) usernames: a Python object, which no RPC context
# (JSON) can carry (see _create_odoo_credentials)
ODOO_OWN_KEY = "iot_base_odoo_own_credential"
ODOO_OWN = object()
# Changes of these fields change what a broker must be told (Mosquitto files)
BROKER_FIELDS = {
    "username",
    "kind",
    "user_id",
    "company_id",
    "is_superuser",
    "active",
    "expires_at",
}
# How stale ``last_auth_at`` may get before an authentication refreshes it:
# writing it on every CONNECT would make the broker's hot path contend.
LAST_AUTH_RESOLUTION = timedelta(minutes=5)


class IssuedSecret(NamedTuple):
    """A secret just issued, in clear, the only time it exists so."""

    secret: str
    expires_at: datetime | None
    secret_id: int


class IotCredentials(models.Model):
    _name = "iot.credentials"
    _description = "MQTT Credentials"
    _order = "username"
    _rec_name = "username"
    _check_company_auto = True

    username = fields.Char(required=True, index=True, copy=False)
    kind = fields.Selection(
        [("user", "User"), ("device", "Device"), ("service", "Service")],
        required=True,
        default="device",
        index=True,
    )
    user_id = fields.Many2one(
        "res.users",
        string="Owner",
        index=True,
        ondelete="cascade",
        check_company=True,
        help="The Odoo user this credential belongs to (kind User).",
    )
    company_id = fields.Many2one(
        "res.company",
        required=True,
        index=True,
        default=lambda self: self.env.company,
    )
    is_superuser = fields.Boolean(
        "Broker Superuser",
        help="The broker skips every topic check for this credential.",
    )
    active = fields.Boolean(default=True)
    expires_at = fields.Datetime(
        "Expires On", help="After this date no secret of the credential works."
    )
    is_expired = fields.Boolean(
        "Expired", compute="_compute_is_expired", search="_search_is_expired"
    )
    last_auth_at = fields.Datetime("Last Authentication", readonly=True)
    note = fields.Text()
    secret_ids = fields.One2many(
        "iot.credentials.secret", "credential_id", string="Secrets", readonly=True
    )
    secret_count = fields.Integer(compute="_compute_secret_count")

    _sql_constraints = [
        ("username_unique", "unique(username)", "This MQTT username is taken."),
    ]

    @api.depends("expires_at")
    def _compute_is_expired(self):
        now = fields.Datetime.now()
        for credential in self:
            credential.is_expired = bool(
                credential.expires_at and credential.expires_at <= now
            )

    def _search_is_expired(self, operator, value):
        if operator not in ("=", "!="):
            raise ValidationError(_("Unsupported search on Expired."))
        expired = (operator == "=") == bool(value)
        now = fields.Datetime.now()
        if expired:
            return [("expires_at", "<=", now)]
        return ["|", ("expires_at", "=", False), ("expires_at", ">", now)]

    @api.depends("secret_ids")
    def _compute_secret_count(self):
        for credential in self:
            credential.secret_count = len(credential.sudo().secret_ids)

    @api.constrains("username")
    def _check_username(self):
        odoo_own = self.env.context.get(ODOO_OWN_KEY) is ODOO_OWN
        for credential in self:
            error = self._username_error(credential.username, odoo_own)
            if error:
                raise ValidationError(error)

    @api.constrains("kind", "user_id")
    def _check_owner(self):
        for credential in self:
            if credential.kind == "user" and not credential.user_id:
                raise ValidationError(_("A user credential needs an owner."))

    @api.model_create_multi
    def create(self, vals_list):
        for vals in vals_list:
            if vals.get("username"):
                vals["username"] = vals["username"].strip()
        if any(vals.get("is_superuser") for vals in vals_list):
            self._check_superuser_change()
        if self.env.context.get(ODOO_OWN_KEY) is not ODOO_OWN:
            self._check_company_limit(
                [vals.get("company_id") or self.env.company.id for vals in vals_list]
            )
        credentials = super().create(vals_list)
        self.env["iot.store.sync"]._schedule()
        return credentials

    def write(self, vals):
        if "is_superuser" in vals and any(
            credential.is_superuser != bool(vals["is_superuser"]) for credential in self
        ):
            self._check_superuser_change()
        if vals.get("company_id"):
            moved = self.filtered(lambda c: c.company_id.id != vals["company_id"])
            self._check_company_limit([vals["company_id"]] * len(moved))
        self.env["iot.broker.session"]._cut(self, vals)
        restored = self.filtered(lambda c: not c.active) if vals.get("active") else ()
        res = super().write(vals)
        if "company_id" in vals:
            # Odoo checks record rules before a write only: moving a
            # credential (whose secret the writer knows) into a company the
            # writer does not manage must fail too.
            self.check_access("write")
        if "active" in vals and not vals["active"]:
            # Revoking is final: unarchiving must not bring old secrets back.
            self.env["iot.credentials.secret"].sudo()._revoke_credentials(self)
            # its devices are offline now, never "Online" beside "Revoked"
            self.env["iot.mqtt.device"]._presence_cut_credentials(self, "revoked")
        elif restored:
            self.env["iot.mqtt.device"]._presence_clear_reason(
                self.env["iot.mqtt.device"]
                .sudo()
                .with_context(active_test=False)
                .search([("credential_id", "in", restored.ids)])
            )
        if BROKER_FIELDS & set(vals):
            self.env["iot.store.sync"]._schedule()
        return res

    def unlink(self):
        self.env["iot.broker.session"]._cut(self)
        res = super().unlink()
        self.env["iot.store.sync"]._schedule()
        return res

    def _check_superuser_change(self):
        """Broker superusers skip every topic check of every company: only
        system administrators make or unmake them. (Writing or deleting a
        superuser credential is refused to others by its record rules.)"""
        if not self.env.is_system():
            raise AccessError(
                _("Only administrators can make or unmake a broker superuser.")
            )

    @api.model
    def _check_company_limit(self, company_ids):
        """Refuse adding credentials to the companies ``company_ids`` (one id
        per new credential) past ``iot_base.max_credentials_per_company``."""
        over = company_over_limit(
            self, "iot_base.max_credentials_per_company", company_ids
        )
        if over:
            raise UserError(
                _(
                    "%(company)s may have at most %(limit)s MQTT credentials "
                    "(archived ones included; Settings > IoT): delete unused "
                    "ones first.",
                    company=self.env["res.company"].browse(over[0]).sudo().name,
                    limit=over[1],
                )
            )

    @api.model
    def _create_odoo_credentials(self, vals_list):
        """Create Odoo's own service credentials: the only way to give out a
        reserved ``odoo_`` username (not open to RPC, and sudo alone does
        not do it). Not counted against the company's limit."""
        own = self.sudo().with_context(**{ODOO_OWN_KEY: ODOO_OWN})
        return own.create(vals_list).with_env(self.env)

    @api.model
    def _load_records(self, data_list, update=False, ignore_duplicates=False):
        # this module's data files create Odoo's own credentials (odoo_publisher)
        if self.env.su and all(
            (data.get("xml_id") or "").startswith("iot_base.") for data in data_list
        ):
            self = self.with_context(**{ODOO_OWN_KEY: ODOO_OWN})
        return super()._load_records(data_list, update, ignore_duplicates)

    @api.ondelete(at_uninstall=False)
    def _unlink_except_odoo_publisher(self):
        # iot.mqtt.client connects as this credential, found by its xmlid
        publisher = self.env.ref(
            "iot_base.iot_credentials_odoo_publisher", raise_if_not_found=False
        )
        if publisher and publisher in self:
            raise UserError(
                _(
                    "%(name)s is Odoo's own MQTT client: revoke it instead of "
                    "deleting it.",
                    name=publisher.username,
                )
            )

    # ------------------------------------------------------------------
    # Usernames
    # ------------------------------------------------------------------

    @api.model
    def _username_error(self, username, odoo_own=False):
        """Why ``username`` cannot be given out (a sentence for whoever asked
        for it), or None; ``odoo_own``: Odoo's own code is asking for one of
        its service usernames (tools/client_ids.py has the policy)."""
        problem = client_ids.username_problem(username, odoo_own)
        if problem == client_ids.BAD_CHARSET:
            return _(
                "The MQTT username %(name)r may only contain letters, "
                "digits and . _ : @ - (%(max)s at most).",
                name=username,
                max=client_ids.USERNAME_MAX,
            )
        if problem == client_ids.ONLY_DOTS:
            return _(
                "The MQTT username %(name)r is made of dots only, which broker "
                "APIs cannot address: use a letter or digit too.",
                name=username,
            )
        if problem == client_ids.RESERVED:
            return _(
                "The MQTT username %(name)r starts with %(prefix)s: such names "
                "are Odoo's own (its publisher and listeners).",
                name=username,
                prefix=client_ids.RESERVED_PREFIX,
            )
        return None

    @api.model
    def _sanitize_login(self, login):
        """``admin@example.com`` -> ``admin_example_com``."""
        cleaned = re.sub(r"[^a-z0-9]+", "_", (login or "").lower()).strip("_")
        return cleaned[:100] or "user"

    @api.model
    def _free_username(self, base, planned=frozenset()):
        """``base``, or ``base_2``, ``base_3``... the first one neither taken
        nor ``planned`` (by the batch being created)."""
        taken = set(planned) | set(
            self.with_context(active_test=False)
            .sudo()
            .search([("username", "=like", f"{base}%")])
            .mapped("username")
        )
        if base not in taken:
            return base
        suffix = 2
        while f"{base}_{suffix}" in taken:
            suffix += 1
        return f"{base}_{suffix}"

    # ------------------------------------------------------------------
    # Secrets
    # ------------------------------------------------------------------

    def _issue_secret(self, secret_type, lifetime=None):
        """Issue a secret for this credential: an :class:`IssuedSecret`."""
        self.ensure_one()
        expires_at = fields.Datetime.now() + lifetime if lifetime else None
        if self.expires_at and (not expires_at or self.expires_at < expires_at):
            expires_at = self.expires_at
        secret, secret_id = (
            self.env["iot.credentials.secret"]
            .sudo()
            ._issue(self, secret_type, expires_at)
        )
        return IssuedSecret(secret, expires_at, secret_id)

    @api.model
    def _authenticate(self, username, secret):
        """Return the credential that ``username``/``secret`` proves, or an
        empty recordset. The one place where secrets are checked."""
        return self._authenticate_secret(username, secret)[0]

    @api.model
    def _authenticate_secret(self, username, secret):
        """Like ``_authenticate``, also returning when the secret expires.

        Anything that is not a pair of sane strings is refused before any
        query. The query keeps only live rows whose clear index matches, so
        in practice a single hash is checked. Runs as superuser: the caller
        is the broker.

        :return: (credential or empty recordset, expiry datetime or None)
        """
        if not (
            isinstance(secret, str)
            and INDEX_SIZE < len(secret) <= MAX_SECRET_LENGTH
            and self._is_sane_username(username)
        ):
            return self.browse(), None
        self.env.cr.execute(
            self._live_query(
                SQL("s.hash, s.expires_at, c.last_auth_at, %s", self._hot_columns()),
                username,
                SQL(
                    "JOIN iot_credentials_secret s ON s.credential_id = c.id "
                    "AND s.index = %s AND (s.expires_at IS NULL OR s.expires_at > %s)",
                    secret[:INDEX_SIZE],
                    fields.Datetime.now(),
                ),
            )
        )
        for row in self.env.cr.fetchall():
            credential_id, secret_hash, expires_at, last_auth_at = row[:4]
            if verify_secret(secret, secret_hash):
                credential = self.sudo().browse(credential_id)
                credential._prime_hot_cache(row[4:])
                credential._touch_last_auth(last_auth_at)
                return credential, expires_at
        return self.browse(), None

    @api.model
    def _find_live(self, username):
        """The credential named ``username`` if it may use the broker now
        (active, unexpired, owner active and still an IoT user)."""
        if not self._is_sane_username(username):
            return self.browse()
        self.env.cr.execute(self._live_query(self._hot_columns(), username))
        row = self.env.cr.fetchone()
        if not row:
            return self.browse()
        credential = self.sudo().browse(row[0])
        credential._prime_hot_cache(row[1:])
        return credential

    # What the broker's replies read; fetched with the lookup itself so that
    # building the reply costs no further query (the ORM would otherwise
    # read the whole credential row, then the whole res_company row).
    _HOT_FIELDS = ("username", "kind", "is_superuser", "company_id", "user_id")

    @api.model
    def _hot_columns(self):
        return SQL(", ").join(
            [SQL.identifier("c", name) for name in self._HOT_FIELDS]
            + [SQL("co.iot_mqtt_namespace")]
        )

    def _prime_hot_cache(self, values):
        self.ensure_one()
        cache = self.env.cache
        for name, value in zip(self._HOT_FIELDS, values[:-1], strict=True):
            field = self._fields[name]
            cache.update(self, field, [field.convert_to_cache(value, self)])
        company = self.env["res.company"].browse(values[3])
        field = company._fields["iot_mqtt_namespace"]
        cache.update(company, field, [field.convert_to_cache(values[-1], company)])

    @api.model
    def _is_sane_username(self, username):
        return isinstance(username, str) and 0 < len(username) <= 128

    @api.model
    def _live_query(self, columns, username, join=None):
        return SQL(
            """
            SELECT c.id, %(columns)s
              FROM iot_credentials c
              %(join)s
              JOIN res_company co ON co.id = c.company_id
              LEFT JOIN res_users u ON u.id = c.user_id
             WHERE c.username = %(username)s AND %(live)s
            """,
            columns=columns,
            join=join or SQL(""),
            username=username,
            live=self._live_condition(fields.Datetime.now()),
        )

    @api.model
    def _live_condition(self, now):
        """SQL: the credential ``c`` may use the broker at ``now`` (active,
        unexpired, owner active and still an IoT user); ``u`` is its owner,
        LEFT JOINed. The one definition of a live credential."""
        group_id = self.env["ir.model.data"]._xmlid_to_res_id(
            "iot_base.iot_base_group_user", raise_if_not_found=False
        )
        return SQL(
            """(c.active
               AND (c.expires_at IS NULL OR c.expires_at > %(now)s)
               AND (c.user_id IS NULL OR u.active)
               AND (c.kind != 'user' OR EXISTS (
                    SELECT 1 FROM res_groups_users_rel r
                     WHERE r.uid = c.user_id AND r.gid = %(group_id)s)))""",
            now=now,
            group_id=group_id or 0,
        )

    def _touch_last_auth(self, last_auth_at):
        """Record a successful authentication, at most every few minutes.

        ``SKIP LOCKED``: when another worker is already writing the row, its
        timestamp is as good as ours, so never wait for it; and when another
        one wrote it after our snapshot (a serialization failure under
        REPEATABLE READ), neither: the login must not fail for a timestamp.
        """
        now = fields.Datetime.now()
        if last_auth_at and now - last_auth_at < LAST_AUTH_RESOLUTION:
            return
        try:
            with self.env.cr.savepoint(flush=False):
                self.env.cr.execute(
                    SQL(
                        """
                    UPDATE iot_credentials SET last_auth_at = %(now)s
                     WHERE id = (SELECT id FROM iot_credentials WHERE id = %(id)s
                                 FOR NO KEY UPDATE SKIP LOCKED)
                    """,
                        now=now,
                        id=self.id,
                    ),
                    log_exceptions=False,
                )
        except errors.SerializationFailure:
            return
        self.invalidate_recordset(["last_auth_at"])

    # ------------------------------------------------------------------
    # Actions
    # ------------------------------------------------------------------

    def action_rotate_secret(self):
        """Replace the long-lived secret and show the new one, once."""
        self.ensure_one()
        self.check_access("write")
        if self.kind == "user":
            raise ValidationError(
                _(
                    "User credentials get short-lived session secrets from the "
                    "MQTT console; there is no long-lived secret to rotate."
                )
            )
        if not self.active:
            raise ValidationError(_("Restore the credential before issuing a secret."))
        secrets_model = self.env["iot.credentials.secret"].sudo()
        secrets_model._revoke_credentials(self, "long_lived")
        secret = self._issue_secret("long_lived").secret
        return self._action_show_secret(secret)

    def action_revoke(self):
        """Archive the credential: every secret of it fails from now on."""
        self.check_access("write")
        self.action_archive()

    def _action_show_secret(self, secret):
        self.ensure_one()
        return {
            "type": "ir.actions.act_window",
            "res_model": "iot.credentials.secret.show",
            "name": _("MQTT Secret"),
            "views": [(False, "form")],
            "target": "new",
            "context": {
                "default_username": self.username,
                "default_secret": secret,
                # a device's client id comes with its secret (shown once)
                "default_client_id": client_ids.issued_client_id(self.username, secret)
                if self.kind == "device"
                else False,
            },
        }
