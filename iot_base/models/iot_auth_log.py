# License LGPL-3.0 or later (https://www.gnu.org/licenses/lgpl).
import logging
from datetime import timedelta

from odoo import api, fields, models
from odoo.tools import SQL

from ..tools.settings import number_param

_logger = logging.getLogger(__name__)

REASONS = [
    ("ok", "Accepted"),
    ("invalid_credentials", "Unknown user or wrong secret"),
    ("throttled", "Too many failures"),
    ("bad_request", "Malformed request"),
    ("bad_token", "Wrong broker token"),
    ("topic_denied", "Topic not allowed"),
    ("unknown_user", "Unknown or revoked user"),
    ("clientid_denied", "Client ID of another credential"),
    ("username_denied", "Username this broker cannot be given"),
]
DEFAULT_RETENTION_DAYS = 30
DEFAULT_MAX_ROWS = 200000


class IotAuthLog(models.Model):
    """What the broker asked and what Odoo answered. Never a secret."""

    _name = "iot.auth.log"
    _description = "MQTT Authentication Log"
    _order = "id desc"
    _rec_name = "username"
    _log_access = False

    create_date = fields.Datetime("Time", readonly=True, index=True)
    endpoint = fields.Selection(
        [
            ("auth", "Authentication"),
            ("acl", "Authorization"),
            ("rabbitmq", "RabbitMQ"),
        ],
        readonly=True,
    )
    username = fields.Char(readonly=True, index=True)
    clientid = fields.Char("Client ID", readonly=True)
    peer = fields.Char("Peer Address", readonly=True)
    result = fields.Selection([("allow", "Allow"), ("deny", "Deny")], readonly=True)
    reason = fields.Selection(REASONS, readonly=True)
    action = fields.Selection(
        [("publish", "Publish"), ("subscribe", "Subscribe")], readonly=True
    )
    topic = fields.Char(readonly=True)
    credential_id = fields.Many2one(
        "iot.credentials", readonly=True, ondelete="set null"
    )
    company_id = fields.Many2one(related="credential_id.company_id", store=True)

    @api.model
    def _record(
        self,
        endpoint,
        result,
        reason,
        username="",
        clientid="",
        peer="",
        action=None,
        topic=None,
        credential_id=None,
    ):
        """Append one decision; a plain INSERT, cheap on the broker's path."""
        self.env.cr.execute(
            SQL(
                """
            -- the broker's reply need not wait for the WAL flush: a crash
            -- may lose the last fraction of a second of audit rows, never
            -- consistency (sent with the INSERT: no extra round trip)
            SET LOCAL synchronous_commit TO OFF;
            INSERT INTO iot_auth_log (create_date, endpoint, result, reason, username,
                clientid, peer, action, topic, credential_id, company_id)
            VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s,
                (SELECT company_id FROM iot_credentials WHERE id = %s))
            """,
                fields.Datetime.now(),
                endpoint,
                result,
                reason,
                _clip(username),
                _clip(clientid),
                _clip(peer, 64),
                action,
                _clip(topic, 512),
                credential_id,
                credential_id,
            )
        )

    @api.autovacuum
    def _gc_auth_log(self):
        """Keep the log bounded: by age, then by count."""
        days = number_param(
            self.env, "iot_base.audit_retention_days", DEFAULT_RETENTION_DAYS
        )
        max_rows = number_param(self.env, "iot_base.audit_max_rows", DEFAULT_MAX_ROWS)
        self.env.cr.execute(
            SQL(
                "DELETE FROM iot_auth_log WHERE create_date < %s",
                fields.Datetime.now() - timedelta(days=days),
            )
        )
        deleted = self.env.cr.rowcount
        self.env.cr.execute(
            SQL(
                """
            DELETE FROM iot_auth_log WHERE id <= (
                SELECT id FROM iot_auth_log ORDER BY id DESC OFFSET %s LIMIT 1)
            """,
                max_rows,
            )
        )
        deleted += self.env.cr.rowcount
        _logger.info("GC %r deleted %d entries", self._name, deleted)


def _clip(value, size=256):
    """Log what we were sent, but never unboundedly much of it."""
    if value is None:
        return None
    return str(value)[:size]
