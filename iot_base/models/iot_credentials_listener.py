# License LGPL-3.0 or later (https://www.gnu.org/licenses/lgpl).
from odoo import _, api, models
from odoo.exceptions import UserError

from .iot_listener import LISTENER_RULE_XMLIDS


class IotCredentials(models.Model):
    _inherit = "iot.credentials"

    @api.ondelete(at_uninstall=False)
    def _unlink_except_listener(self):
        # the listener's topic rules name these credentials: without any,
        # the rules would apply to every service credential
        for xmlid in LISTENER_RULE_XMLIDS:
            rule = self.env.ref(xmlid, raise_if_not_found=False)
            listeners = rule.sudo().credential_ids & self if rule else self.browse()
            if listeners:
                raise UserError(
                    _(
                        "%(name)s is Odoo's listener: revoke it instead of "
                        "deleting it.",
                        name=listeners[0].username,
                    )
                )
