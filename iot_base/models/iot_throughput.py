# License LGPL-3.0 or later (https://www.gnu.org/licenses/lgpl).
import logging
from datetime import timedelta

from odoo import api, fields, models

_logger = logging.getLogger(__name__)

THROUGHPUT_RETENTION_DAYS = 30


class IotThroughput(models.Model):
    """Messages the listener received per company and minute (counters it
    keeps and adds here once per batch)."""

    _name = "iot.throughput"
    _description = "MQTT Message Throughput"
    _order = "minute desc, company_id"
    _rec_name = "minute"

    company_id = fields.Many2one("res.company", required=True, readonly=True)
    minute = fields.Datetime(readonly=True, required=True, index=True)
    messages = fields.Integer(readonly=True)
    dropped = fields.Integer(
        readonly=True,
        help="Messages refused by the listener: not UTF-8, too large, outside "
        "the topic layout, unknown device, or naming another device.",
    )

    _sql_constraints = [
        (
            "company_minute_uniq",
            "unique (company_id, minute)",
            "One counter per company and minute.",
        )
    ]

    @api.autovacuum
    def _gc_old_throughput(self):
        self.env.cr.execute(
            "DELETE FROM iot_throughput WHERE minute < %s",
            [fields.Datetime.now() - timedelta(days=THROUGHPUT_RETENTION_DAYS)],
        )
        _logger.info("GC %r deleted %d rows", self._name, self.env.cr.rowcount)
