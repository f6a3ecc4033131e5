# License LGPL-3.0 or later (https://www.gnu.org/licenses/lgpl).
from odoo import fields, models


class IotCredentialsSecretShow(models.AbstractModel):
    """Shows a freshly issued secret once.

    Abstract, like ``res.users.apikeys.show``: the secret only travels in the
    action's context to the dialog and is never written to a table.
    """

    _name = "iot.credentials.secret.show"
    _description = "Show MQTT Secret"

    # the field 'id' is necessary for the onchange that returns the defaults
    id = fields.Id()
    username = fields.Char(readonly=True)
    secret = fields.Char(readonly=True)
    client_id = fields.Char("Client ID", readonly=True)
