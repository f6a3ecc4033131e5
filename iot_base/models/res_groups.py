# License LGPL-3.0 or later (https://www.gnu.org/licenses/lgpl).
from odoo import models


class ResGroups(models.Model):
    _inherit = "res.groups"

    def write(self, vals):
        if "users" in vals or "implied_ids" in vals:
            self.env["iot.broker.session"]._cut_users(self.users)
        res = super().write(vals)
        if "users" in vals or "implied_ids" in vals:
            # who is an IoT user changed (Mosquitto files)
            self.env["iot.store.sync"]._schedule()
        return res
