# License LGPL-3.0 or later (https://www.gnu.org/licenses/lgpl).
from random import randint

from odoo import _, api, fields, models
from odoo.exceptions import ValidationError

from ..tools.names import name_problem


class IotMqttDeviceTag(models.Model):
    _name = "iot.mqtt.device.tag"
    _description = "MQTT Device Tag"
    _order = "name"

    name = fields.Char(required=True, translate=True)
    color = fields.Integer(default=lambda self: randint(1, 11))

    _sql_constraints = [("name_uniq", "unique (name)", "This tag exists already.")]

    @api.model_create_multi
    def create(self, vals_list):
        for vals in vals_list:
            self._check_name_values(vals)
        return super().create(vals_list)

    def write(self, vals):
        self._check_name_values(vals)
        return super().write(vals)

    @api.model
    def _check_name_values(self, vals):
        problem = "name" in vals and name_problem(
            self.env, vals["name"], _("The tag name")
        )
        if problem:
            raise ValidationError(problem)
