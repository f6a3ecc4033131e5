# License LGPL-3.0 or later (https://www.gnu.org/licenses/lgpl).
import logging

from odoo import api, fields, models
from odoo.tools import SQL

from ..tools.secret_hash import INDEX_SIZE, new_secret
from ..tools.settings import number_param

_logger = logging.getLogger(__name__)

MAX_SESSION_SECRETS_PARAM = "iot_base.max_session_secrets"
DEFAULT_MAX_SESSION_SECRETS = 20


class IotCredentialsSecret(models.Model):
    """A secret of an MQTT credential, stored like ``res.users.apikeys``.

    The table is created by hand so that the hash and the clear index prefix
    are columns the ORM does not know: no one can read them through the ORM,
    whatever their rights.
    """

    _name = "iot.credentials.secret"
    _description = "MQTT Credential Secret"
    _auto = False
    _order = "id desc"
    _allow_sudo_commands = False

    credential_id = fields.Many2one(
        "iot.credentials", required=True, readonly=True, ondelete="cascade"
    )
    company_id = fields.Many2one(related="credential_id.company_id")
    secret_type = fields.Selection(
        [("session", "Session"), ("long_lived", "Long-lived")],
        required=True,
        readonly=True,
    )
    expires_at = fields.Datetime("Expires On", readonly=True)
    create_date = fields.Datetime("Created On", readonly=True)

    def init(self):
        table = SQL.identifier(self._table)
        self.env.cr.execute(
            SQL(
                """
            CREATE TABLE IF NOT EXISTS %(table)s (
                id serial PRIMARY KEY,
                credential_id integer NOT NULL
                    REFERENCES iot_credentials(id) ON DELETE CASCADE,
                secret_type varchar NOT NULL,
                expires_at timestamp without time zone,
                index varchar(%(size)s) NOT NULL
                    CHECK (char_length(index) = %(size)s),
                hash varchar NOT NULL,
                create_date timestamp without time zone
                    DEFAULT (now() at time zone 'utc')
            )
            """,
                table=table,
                size=INDEX_SIZE,
            )
        )
        self.env.cr.execute(
            SQL(
                "CREATE INDEX IF NOT EXISTS %s ON %s (credential_id, index)",
                SQL.identifier(f"{self._table}_credential_id_index_idx"),
                table,
            )
        )
        self.env.cr.execute(
            SQL(
                "CREATE INDEX IF NOT EXISTS %s ON %s (expires_at)",
                SQL.identifier(f"{self._table}_expires_at_idx"),
                table,
            )
        )

    @api.model
    def _issue(self, credential, secret_type, expires_at=None, secret=None):
        """Store a new secret for ``credential``: (the secret in clear, its
        row id).

        The clear value exists only in the return value: the caller shows it
        once and forgets it. ``secret`` is for secrets Odoo derives itself
        and never stores (see ``iot.mqtt.client``).
        """
        secret, index, secret_hash = new_secret(secret)
        self.env.cr.execute(
            SQL(
                """
            INSERT INTO %s (credential_id, secret_type, expires_at, index, hash)
            VALUES (%s, %s, %s, %s, %s)
            RETURNING id
            """,
                SQL.identifier(self._table),
                credential.id,
                secret_type,
                expires_at or None,
                index,
                secret_hash,
            )
        )
        secret_id = self.env.cr.fetchone()[0]
        self._store_broker_hashes(secret_id, secret_type, secret)
        if secret_type == "session":
            self._trim_sessions(credential)
        self.invalidate_model()
        _logger.info(
            "MQTT %s secret issued for credential #%s", secret_type, credential.id
        )
        self.env["iot.store.sync"]._schedule()
        return secret, secret_id

    @api.model
    def _store_broker_hashes(self, secret_id, secret_type, secret):
        """Give the new secret the hash forms the broker stores need
        (``iot.store.hash``): its clear value exists only now."""
        self.env["iot.store.hash"]._store(secret_id, secret_type, secret)

    @api.model
    def _max_session_secrets(self):
        return number_param(
            self.env, MAX_SESSION_SECRETS_PARAM, DEFAULT_MAX_SESSION_SECRETS
        )

    @api.model
    def _trim_sessions(self, credential):
        """Keep the newest session secrets of ``credential`` up to the cap:
        each console load issues one, so the oldest go first."""
        self.env.cr.execute(
            SQL(
                """
            DELETE FROM %(table)s WHERE id IN (
                SELECT id FROM %(table)s
                 WHERE credential_id = %(credential)s AND secret_type = 'session'
                 ORDER BY id DESC OFFSET %(keep)s)
            """,
                table=SQL.identifier(self._table),
                credential=credential.id,
                keep=self._max_session_secrets(),
            )
        )

    @api.model
    def _revoke_credentials(self, credentials, secret_type=None):
        """Delete the secrets of ``credentials`` (optionally of one type)."""
        if not credentials:
            return
        self.env["iot.broker.session"]._cut_secrets(credentials, secret_type)
        query = SQL(
            "DELETE FROM %s WHERE credential_id IN %s",
            SQL.identifier(self._table),
            tuple(credentials.ids),
        )
        if secret_type:
            query = SQL("%s AND secret_type = %s", query, secret_type)
        self.env.cr.execute(query)
        self.invalidate_model()
        self.env["iot.store.sync"]._schedule()

    @api.autovacuum
    def _gc_expired_secrets(self):
        self.env.cr.execute(
            SQL(
                """
            DELETE FROM %s WHERE expires_at IS NOT NULL AND expires_at < %s
            """,
                SQL.identifier(self._table),
                fields.Datetime.now(),
            )
        )
        _logger.info(
            "GC %r deleted %d expired secrets", self._name, self.env.cr.rowcount
        )
        self.env["iot.store.sync"]._schedule()
