# License LGPL-3.0 or later (https://www.gnu.org/licenses/lgpl).
from odoo import fields, models


class IotMqttFleet(models.Model):
    """A group of devices that receive fleet commands together."""

    _name = "iot.mqtt.fleet"
    _inherit = ["iot.name.mixin"]
    _description = "MQTT Device Fleet"
    _order = "name"
    _check_company_auto = True

    name = fields.Char(required=True)
    company_id = fields.Many2one(
        "res.company", required=True, default=lambda self: self.env.company, index=True
    )
    device_ids = fields.One2many("iot.mqtt.device", "fleet_id", string="Devices")
    device_count = fields.Integer(compute="_compute_device_count")
    claim_ids = fields.One2many(
        "iot.provisioning.claim", "fleet_id", string="Provisioning Claims"
    )

    _sql_constraints = [
        ("name_company_uniq", "unique (name, company_id)", "This fleet exists already.")
    ]

    def _compute_device_count(self):
        counts = dict(
            self.env["iot.mqtt.device"]._read_group(
                [("fleet_id", "in", self.ids)], ["fleet_id"], ["__count"]
            )
        )
        for fleet in self:
            fleet.device_count = counts.get(fleet, 0)

    def write(self, vals):
        res = super().write(vals)
        if "company_id" in vals:
            # record rules are checked before a write only: moving a fleet
            # into a company the writer does not manage must fail too
            self.check_access("write")
        return res

    def action_send_command(self):
        self.ensure_one()
        return self.device_ids.filtered("active")._action_command_wizard(fleet=self)
