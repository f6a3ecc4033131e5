# License LGPL-3.0 or later (https://www.gnu.org/licenses/lgpl).
from random import randint

from odoo import fields, models


class IotMqttDeviceTag(models.Model):
    _name = "iot.mqtt.device.tag"
    _inherit = ["iot.name.mixin"]
    _description = "MQTT Device Tag"
    _order = "name"

    name = fields.Char(required=True, translate=True)
    color = fields.Integer(default=lambda self: randint(1, 11))

    _sql_constraints = [("name_uniq", "unique (name)", "This tag exists already.")]
