# License LGPL-3.0 or later (https://www.gnu.org/licenses/lgpl).
import logging
from datetime import timedelta

from odoo import api, fields, models

from ..tools.settings import number_param

_logger = logging.getLogger(__name__)

HISTORY_DAYS_PARAM = "iot_base.listener_history_days"
DEFAULT_HISTORY_DAYS = 30
# at most this many new rows per device and (UTC) day, whatever its topics,
# keys and the sampling interval allow (32 x 16 per second: 44 million)
HISTORY_CAP_PARAM = "iot_base.listener_history_max_rows_per_day"
DEFAULT_HISTORY_CAP = 10000


class IotDeviceReadingHistory(models.Model):
    """Numeric readings over time (when the history setting is on): at most
    one row per device, topic, key and sampling interval (the last value of
    the interval)."""

    _name = "iot.device.reading.history"
    _description = "Device Reading History"
    _order = "sampled_at desc, id desc"
    _rec_name = "key"

    device_id = fields.Many2one(
        "iot.mqtt.device", required=True, readonly=True, index=True, ondelete="cascade"
    )
    company_id = fields.Many2one("res.company", required=True, readonly=True)
    topic = fields.Char(readonly=True)
    key = fields.Char(
        readonly=True,
        help="The JSON key of the value (empty when the payload is a number).",
    )
    value = fields.Float(readonly=True, aggregator="avg")
    sampled_at = fields.Datetime(
        "Interval", readonly=True, index=True, help="Start of the sampling interval."
    )

    _sql_constraints = [
        (
            "sample_uniq",
            "unique (device_id, topic, key, sampled_at)",
            "One value per device, topic, key and interval.",
        )
    ]

    @api.autovacuum
    def _gc_old_history(self):
        days = number_param(self.env, HISTORY_DAYS_PARAM, DEFAULT_HISTORY_DAYS)
        self.env.cr.execute(
            "DELETE FROM iot_device_reading_history WHERE sampled_at < %s",
            [fields.Datetime.now() - timedelta(days=days)],
        )
        _logger.info("GC %r deleted %d rows", self._name, self.env.cr.rowcount)
