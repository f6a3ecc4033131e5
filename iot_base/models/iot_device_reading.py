# License LGPL-3.0 or later (https://www.gnu.org/licenses/lgpl).
import json

from markupsafe import Markup

from odoo import api, fields, models

from ..tools import payload_json

# what the device form shows of a JSON reading: at most this many rows
TABLE_MAX_ROWS = 50


class IotDeviceReading(models.Model):
    """The last payload a device published on one of its telemetry topics,
    written by the listener (``odoo-bin iot-listen``) as an upsert."""

    _name = "iot.device.reading"
    _description = "Last Device Reading"
    _order = "device_id, topic"
    _rec_name = "topic"

    device_id = fields.Many2one(
        "iot.mqtt.device", required=True, readonly=True, index=True, ondelete="cascade"
    )
    company_id = fields.Many2one("res.company", required=True, readonly=True)
    topic = fields.Char(
        readonly=True,
        help="The topic levels after <namespace>/devices/<username>/telemetry "
        "(empty for the telemetry topic itself).",
    )
    payload = fields.Text(readonly=True)
    is_json = fields.Boolean("JSON", readonly=True)
    received_at = fields.Datetime("Received", readonly=True)
    payload_html = fields.Html(
        "Reading", compute="_compute_payload_html", sanitize=False
    )

    _sql_constraints = [
        (
            "device_topic_uniq",
            "unique (device_id, topic)",
            "One last reading per device and topic.",
        )
    ]

    @api.depends("payload", "is_json")
    def _compute_payload_html(self):
        for reading in self:
            reading.payload_html = reading._render_payload()

    def _render_payload(self):
        """A JSON object as a key/value table, anything else as escaped text."""
        self.ensure_one()
        value = None
        if self.is_json:
            try:
                # bounded (a row stored before the listener checked is text)
                value = payload_json.loads(self.payload or "null")
            except ValueError:
                value = None
        if not isinstance(value, dict):
            return Markup("<code>%s</code>") % (self.payload or "")
        rows = [
            Markup("<tr><th>%s</th><td>%s</td></tr>")
            % (
                key,
                item if isinstance(item, str) else json.dumps(item, sort_keys=True),
            )
            for key, item in list(value.items())[:TABLE_MAX_ROWS]
        ]
        return (
            Markup('<table class="table table-sm o_iot_reading_table"><tbody>')
            + Markup("").join(rows)
            + Markup("</tbody></table>")
        )
