# License LGPL-3.0 or later (https://www.gnu.org/licenses/lgpl).
import json
import re

from odoo import _, api, fields, models
from odoo.exceptions import ValidationError

from ..models.iot_mqtt_command_request import DEFAULT_TIMEOUT

COMMAND_RE = re.compile(r"^[A-Za-z0-9_.\-]{1,64}$")


class IotMqttCommand(models.TransientModel):
    """Send a JSON command to devices, or to every device of a fleet."""

    _name = "iot.mqtt.command"
    _description = "Send MQTT Command"

    device_ids = fields.Many2many("iot.mqtt.device", string="Devices")
    fleet_id = fields.Many2one("iot.mqtt.fleet")
    command = fields.Char(required=True, default="ping")
    payload = fields.Text(required=True, default="{}")
    qos = fields.Selection(
        [
            ("0", "0 - at most once"),
            ("1", "1 - at least once"),
            ("2", "2 - exactly once"),
        ],
        "QoS",
        required=True,
        default="1",
    )
    # off by default: a device that predates acknowledged commands expects
    # the payload itself on its command topic, not the envelope with an id
    acknowledged = fields.Boolean(
        "Ask for an answer",
        help="Each device gets the command with an id, and answers on its "
        "status/reply topic; the answers are recorded (IoT > Commands).",
    )
    timeout = fields.Integer(
        "Timeout (s)",
        default=DEFAULT_TIMEOUT,
        help="Without a final answer within this time, the command is timed out.",
    )

    @api.constrains("command")
    def _check_command(self):
        for wizard in self:
            if not COMMAND_RE.fullmatch(wizard.command or ""):
                raise ValidationError(
                    _("A command name is one topic level: letters, digits, . _ -")
                )

    @api.constrains("payload")
    def _check_payload(self):
        for wizard in self:
            try:
                json.loads(wizard.payload)
            except ValueError as exc:
                raise ValidationError(
                    _("The payload must be JSON: %(error)s", error=exc)
                ) from exc

    def action_send(self):
        self.ensure_one()
        devices = (self.device_ids | self.fleet_id.device_ids).filtered("active")
        if not devices:
            raise ValidationError(_("No active device to send the command to."))
        devices.check_access("write")
        if self.acknowledged:
            return self._send_acknowledged(devices)
        sent = self.env["iot.mqtt.client"]._send_command(
            devices, self.command, json.loads(self.payload), qos=int(self.qos)
        )
        return {
            "type": "ir.actions.client",
            "tag": "display_notification",
            "params": {
                "type": "success",
                "message": _(
                    "Command %(cmd)s sent to %(n)s device(s).", cmd=self.command, n=sent
                ),
                "next": {"type": "ir.actions.act_window_close"},
            },
        }

    def _send_acknowledged(self, devices):
        """One request per device; the summary is their list, whose states
        follow the answers."""
        requests = devices._send_command(
            self.command, json.loads(self.payload), self.timeout
        )
        action = self.env["ir.actions.act_window"]._for_xml_id(
            "iot_base.iot_mqtt_command_request_action"
        )
        action.update(
            {
                "name": _(
                    "Command %(cmd)s: %(n)s device(s)",
                    cmd=self.command,
                    n=len(requests),
                ),
                "domain": [("id", "in", requests.ids)],
                "view_mode": "list,form",
                "views": [(False, "list"), (False, "form")],
                "target": "current",
                "context": {},
            }
        )
        return action
