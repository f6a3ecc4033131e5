# License LGPL-3.0 or later (https://www.gnu.org/licenses/lgpl).
from odoo import _, fields, models
from odoo.exceptions import ValidationError


class IotMqttDeviceRegister(models.TransientModel):
    """Register a device from the backend and show its secret once."""

    _name = "iot.mqtt.device.register"
    _description = "Register MQTT Device"

    name = fields.Char(required=True)
    hardware_id = fields.Char("Hardware ID", required=True)
    company_id = fields.Many2one(
        "res.company", required=True, default=lambda self: self.env.company
    )
    fleet_id = fields.Many2one("iot.mqtt.fleet")
    tag_ids = fields.Many2many("iot.mqtt.device.tag", string="Tags")
    firmware_version = fields.Char()

    def action_register(self):
        self.ensure_one()
        device, secret = self.env["iot.mqtt.device"]._register_device(
            self.hardware_id,
            name=self.name,
            company=self.company_id,
            fleet_id=self.fleet_id.id,
            tag_ids=[(6, 0, self.tag_ids.ids)],
            firmware_version=self.firmware_version,
        )
        if not secret:
            raise ValidationError(
                _(
                    "Device %(name)s is registered already with this hardware ID; "
                    "use Rotate Secret on it for a new secret.",
                    name=device.name,
                )
            )
        return device.credential_id._action_show_secret(secret)
