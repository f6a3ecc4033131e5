# License LGPL-3.0 or later (https://www.gnu.org/licenses/lgpl).
from odoo import models


class BusBus(models.Model):
    _inherit = "bus.bus"

    def _poll(self, channels, last=0, ignore_ids=None):
        """A websocket's channels are fixed when it subscribes; each
        delivery re-checks the IoT channels against the user's current
        rights (models/ir_websocket.py), so that a user who lost a company
        or the IoT group stops hearing its presence at once."""
        channels = self.env["ir.websocket"]._iot_current_channels(channels)
        return super()._poll(channels, last=last, ignore_ids=ignore_ids)
