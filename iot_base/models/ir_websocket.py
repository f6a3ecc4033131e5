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

    def _iot_current_channels(self, channels):
        """``channels`` without the presence channels of the companies the
        current user may no longer hear (lost the company or the IoT group
        since the websocket subscribed: see models/bus_bus.py)."""
        companies = {channel: _fleet_company(channel) for channel in channels}
        if not any(companies.values()):
            return channels
        # read from the database, not from has_group's cache: the process
        # serving websockets learns of another process's group changes only
        # at its next registry signaling check
        user = self.env.user.sudo()
        group = self.env.ref("iot_base.iot_base_group_user", raise_if_not_found=False)
        allowed = (
            set(user.company_ids.ids) if user and group in user.groups_id else set()
        )
        return [
            channel
            for channel, company in companies.items()
            if company is None or company in allowed
        ]


def _fleet_company(channel):
    """The company id of a presence channel, as ``_build_bus_channel_list``
    makes it or as a websocket holds it (``(db, model, id, name)``); None
    for any other channel."""
    if not isinstance(channel, tuple):
        return None
    if len(channel) == 2 and channel[1] == FLEET_CHANNEL:
        record = channel[0]
        if isinstance(record, models.BaseModel) and record._name == "res.company":
            return record.id
    if (
        len(channel) == 4
        and channel[1] == "res.company"
        and channel[3] == FLEET_CHANNEL
    ):
        return channel[2]
    return None
