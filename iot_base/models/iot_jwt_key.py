# License LGPL-3.0 or later (https://www.gnu.org/licenses/lgpl).
import json
import logging
import secrets
from datetime import timedelta

from odoo import _, api, fields, models
from odoo.exceptions import AccessError, UserError
from odoo.tools import SQL

from ..tools import jwt_es256, jwt_hs256
from ..tools.settings import number_param

_logger = logging.getLogger(__name__)

JWKS_REFRESH_PARAM = "iot_base.jwks_refresh_seconds"
# EMQX 5.8's JWKS connector default (emqx_authn_jwt_schema: refresh_interval)
DEFAULT_JWKS_REFRESH = 300
# /iot/jwks.json may be cached this long (by a proxy, or a broker honouring
# Cache-Control): a new key signs only after the refresh interval plus this.
JWKS_MAX_AGE = 60
JWT_LIFETIME_PARAM = "iot_base.jwt_lifetime_seconds"
DEFAULT_JWT_LIFETIME = 600
# A console token never lives longer than this, whatever the setting: a key
# that stopped signing stays published this long, so every token it signed
# can still be verified until it expires.
MAX_JWT_LIFETIME = 3600
MIN_JWT_LIFETIME = 60
# Retired keys (no longer published) are deleted after this.
RETIRED_KEEP_DAYS = 1
# "ES256" (default: key pairs, /iot/jwks.json) or "HS256" (a secret shared
# with a broker that cannot fetch a JWKS, set by a system administrator)
ALGORITHM_PARAM = "iot_base.jwt_algorithm"


class IotJwtKey(models.Model):
    """A key pair that signs the console's MQTT tokens (ES256, P-256).

    The table is created by hand so that the private key is a column the ORM
    does not know: nobody reads it through the ORM, whatever their rights;
    only ``_sign`` reads it, in SQL. A key is published in /iot/jwks.json
    from its creation, signs from ``sign_from`` (after the brokers have
    refreshed their key set) until a newer key signs, and is published until
    ``retire_at`` (when the last token it signed has expired).
    """

    _name = "iot.jwt.key"
    _description = "MQTT Token Signing Key"
    _auto = False
    _order = "sign_from desc, id desc"
    _rec_name = "kid"
    _allow_sudo_commands = False

    kid = fields.Char("Key ID", readonly=True)
    algorithm = fields.Char(readonly=True)
    public_jwk = fields.Text("Public Key (JWK)", readonly=True)
    sign_from = fields.Datetime("Signs From", readonly=True)
    retire_at = fields.Datetime("Unpublished On", readonly=True)
    create_date = fields.Datetime("Created On", readonly=True)
    state = fields.Selection(
        [
            ("published", "Published, not signing yet"),
            ("signing", "Signing"),
            ("retiring", "Published, no longer signing"),
            ("retired", "Retired"),
            ("shared", "HS256 shared secret (never published)"),
        ],
        compute="_compute_state",
    )

    def init(self):
        self.env.cr.execute(
            SQL(
                """
            CREATE TABLE IF NOT EXISTS %(table)s (
                id serial PRIMARY KEY,
                kid varchar NOT NULL UNIQUE,
                algorithm varchar NOT NULL,
                public_jwk text NOT NULL,
                private_pem text,
                sign_from timestamp without time zone NOT NULL,
                retire_at timestamp without time zone,
                create_date timestamp without time zone
                    DEFAULT (now() at time zone 'utc')
            )
            """,
                table=SQL.identifier(self._table),
            )
        )

    def _compute_state(self):
        now = fields.Datetime.now()
        signing = self._signing_row(now)
        for key in self:
            if key.algorithm == jwt_hs256.ALGORITHM:
                key.state = "shared"
            elif key.retire_at and key.retire_at <= now:
                key.state = "retired"
            elif key.sign_from > now:
                key.state = "published"
            elif signing and key.id == signing[0]:
                key.state = "signing"
            else:
                key.state = "retiring"

    # ------------------------------------------------------------------
    # Settings
    # ------------------------------------------------------------------

    @api.model
    def _token_lifetime(self):
        """Seconds a console token lives (setting, within 1 min..1 h)."""
        return number_param(
            self.env,
            JWT_LIFETIME_PARAM,
            DEFAULT_JWT_LIFETIME,
            bounds=(MIN_JWT_LIFETIME, MAX_JWT_LIFETIME),
        )

    @api.model
    def _jwks_refresh(self):
        """Seconds the brokers take at most to fetch a new key set."""
        return number_param(
            self.env, JWKS_REFRESH_PARAM, DEFAULT_JWKS_REFRESH, bounds=(0, 86400)
        )

    # ------------------------------------------------------------------
    # Keys
    # ------------------------------------------------------------------

    @api.model
    def _signing_row(self, now):
        """(id, kid) of the key that signs at ``now``, or None."""
        self.env.cr.execute(
            SQL(
                """
            SELECT id, kid FROM %s
             WHERE sign_from <= %s AND (retire_at IS NULL OR retire_at > %s)
               AND private_pem IS NOT NULL AND algorithm = %s
             ORDER BY sign_from DESC, id DESC
             LIMIT 1
            """,
                SQL.identifier(self._table),
                now,
                now,
                jwt_es256.ALGORITHM,
            )
        )
        return self.env.cr.fetchone()

    @api.model
    def _create_key(self, sign_from):
        kid = secrets.token_hex(8)
        private_pem = jwt_es256.new_private_pem()
        self.env.cr.execute(
            SQL(
                """
            INSERT INTO %s (kid, algorithm, public_jwk, private_pem, sign_from)
            VALUES (%s, %s, %s, %s, %s) RETURNING id
            """,
                SQL.identifier(self._table),
                kid,
                jwt_es256.ALGORITHM,
                json.dumps(jwt_es256.public_jwk(private_pem, kid), sort_keys=True),
                private_pem,
                sign_from,
            )
        )
        key_id = self.env.cr.fetchone()[0]
        self.invalidate_model()
        _logger.info("MQTT token signing key %s created, signs from %s", kid, sign_from)
        return self.browse(key_id)

    @api.model
    def _published_jwks(self):
        """The JWK Set of every key a broker must know now (RFC 7517 5)."""
        now = fields.Datetime.now()
        self.env.cr.execute(
            SQL(
                """
            SELECT public_jwk FROM %s
             WHERE (retire_at IS NULL OR retire_at > %s) AND algorithm = %s
             ORDER BY sign_from DESC, id DESC
            """,
                SQL.identifier(self._table),
                now,
                jwt_es256.ALGORITHM,
            )
        )
        return {"keys": [json.loads(row[0]) for row in self.env.cr.fetchall()]}

    @api.model
    def _algorithm(self):
        value = self.env["ir.config_parameter"].sudo().get_param(ALGORITHM_PARAM)
        return (
            jwt_hs256.ALGORITHM if value == jwt_hs256.ALGORITHM else jwt_es256.ALGORITHM
        )

    @api.model
    def _hs256_row(self):
        """(kid, secret) of the shared HS256 secret, or None."""
        self.env.cr.execute(
            SQL(
                """
            SELECT kid, private_pem FROM %s WHERE algorithm = %s
             ORDER BY id DESC LIMIT 1
            """,
                SQL.identifier(self._table),
                jwt_hs256.ALGORITHM,
            )
        )
        return self.env.cr.fetchone()

    @api.model
    def _set_hs256_secret(self, secret):
        """Store the HS256 secret shared with the broker (replacing the
        previous one), in the column no ORM read reaches. Never logged."""
        if not self.env.user.has_group("base.group_system"):
            raise AccessError(_("Only system administrators may set the HS256 secret."))
        problem = jwt_hs256.secret_problem(secret)
        if problem:
            raise UserError(_("%(problem)s", problem=problem))
        table = SQL.identifier(self._table)
        self.env.cr.execute(
            SQL("DELETE FROM %s WHERE algorithm = %s", table, jwt_hs256.ALGORITHM)
        )
        kid = "hs256-" + secrets.token_hex(4)
        self.env.cr.execute(
            SQL(
                """
            INSERT INTO %s (kid, algorithm, public_jwk, private_pem, sign_from)
            VALUES (%s, %s, '{}', %s, %s)
            """,
                table,
                kid,
                jwt_hs256.ALGORITHM,
                secret,
                fields.Datetime.now(),
            )
        )
        self.invalidate_model()
        _logger.info("MQTT token HS256 secret replaced (key id %s)", kid)
        return kid

    @api.model
    def _sign(self, claims):
        """``claims`` signed by the current key (made on first use), or by
        the shared HS256 secret when the algorithm setting says so.

        The first key of a database signs at once: there is no older key a
        broker could still use instead.
        """
        if self._algorithm() == jwt_hs256.ALGORITHM:
            row = self._hs256_row()
            if not row:
                raise UserError(
                    _(
                        "Console tokens are set to HS256 but no shared secret is set: "
                        "a system administrator sets it in Settings > IoT."
                    )
                )
            return jwt_hs256.sign(row[1], row[0], claims)
        now = fields.Datetime.now()
        row = self._signing_row(now)
        if not row:
            key = self._create_key(now)
            row = (key.id, key.kid)
        self.env.cr.execute(
            SQL(
                "SELECT private_pem FROM %s WHERE id = %s",
                SQL.identifier(self._table),
                row[0],
            )
        )
        return jwt_es256.sign(self.env.cr.fetchone()[0], row[1], claims)

    @api.model
    def _rotate(self):
        """Publish a new key now; it signs once every broker has fetched it.

        The keys signing until then are unpublished when the last token they
        can have signed has expired.
        """
        now = fields.Datetime.now()
        current = self._signing_row(now)
        delay = self._jwks_refresh() + JWKS_MAX_AGE if current else 0
        sign_from = now + timedelta(seconds=delay)
        key = self._create_key(sign_from)
        self.env.cr.execute(
            SQL(
                """
            UPDATE %s SET retire_at = %s
             WHERE id != %s AND retire_at IS NULL AND algorithm = %s
            """,
                SQL.identifier(self._table),
                sign_from + timedelta(seconds=MAX_JWT_LIFETIME + 60),
                key.id,
                jwt_es256.ALGORITHM,
            )
        )
        self.invalidate_model()
        return key

    @api.model
    def action_rotate(self):
        if not self.env.user.has_group("base.group_system"):
            raise AccessError(_("Only system administrators may rotate signing keys."))
        key = self._rotate()
        return {
            "type": "ir.actions.client",
            "tag": "display_notification",
            "params": {
                "type": "success",
                "message": _(
                    "New signing key %(kid)s published; it signs from %(when)s UTC.",
                    kid=key.kid,
                    when=fields.Datetime.to_string(key.sign_from),
                ),
            },
        }

    @api.autovacuum
    def _gc_retired_keys(self):
        self.env.cr.execute(
            SQL(
                "DELETE FROM %s WHERE retire_at < %s",
                SQL.identifier(self._table),
                fields.Datetime.now() - timedelta(days=RETIRED_KEEP_DAYS),
            )
        )
        self.invalidate_model()
