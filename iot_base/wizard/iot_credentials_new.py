# License LGPL-3.0 or later (https://www.gnu.org/licenses/lgpl).
from odoo import fields, models


class IotCredentialsNew(models.TransientModel):
    """Create a device or service credential and show its secret once."""

    _name = "iot.credentials.new"
    _description = "New MQTT Credential"

    username = fields.Char(required=True)
    kind = fields.Selection(
        [("device", "Device"), ("service", "Service")],
        required=True,
        default="device",
    )
    company_id = fields.Many2one(
        "res.company", required=True, default=lambda self: self.env.company
    )
    is_superuser = fields.Boolean("Broker Superuser")
    expires_at = fields.Datetime("Expires On")
    note = fields.Text()

    def action_create(self):
        self.ensure_one()
        credential = self.env["iot.credentials"].create(
            {
                "username": self.username,
                "kind": self.kind,
                "company_id": self.company_id.id,
                "is_superuser": self.is_superuser,
                "expires_at": self.expires_at,
                "note": self.note,
            }
        )
        return credential.action_rotate_secret()
