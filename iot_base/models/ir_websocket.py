# License LGPL-3.0 or later (https://www.gnu.org/licenses/lgpl).
from odoo import models

from .iot_mqtt_device_presence import FLEET_CHANNEL


class IrWebsocket(models.AbstractModel):
    _inherit = "ir.websocket"

    def _build_bus_channel_list(self, channels):
        """IoT users hear the presence changes of the devices of the
        companies they are allowed in (the devices they may read)."""
        channels = super()._build_bus_channel_list(channels)
        user = self.env.user
        if user and user.has_group("iot_base.iot_base_group_user"):
            channels.extend((company, FLEET_CHANNEL) for company in user.company_ids)
        return channels
