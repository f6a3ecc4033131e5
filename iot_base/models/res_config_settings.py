# License LGPL-3.0 or later (https://www.gnu.org/licenses/lgpl).
import secrets

from odoo import fields, models

from .res_users import DEFAULT_SESSION_LIFETIME_HOURS

DEFAULT_BROKER_URL = "ws://localhost:8083/mqtt"


class ResConfigSettings(models.TransientModel):
    _inherit = "res.config.settings"

    iot_mqtt_broker_url = fields.Char(
        "MQTT Broker WebSocket URL",
        config_parameter="iot_base.mqtt_broker_url",
        default=DEFAULT_BROKER_URL,
    )
    iot_auth_token = fields.Char(
        "Broker Token",
        config_parameter="iot_base.auth_token",
        help="Shared secret the broker puts in /iot/auth/<token> "
        "(or sends as 'Authorization: Bearer <token>').",
    )
    iot_session_lifetime_hours = fields.Float(
        "Session Secret Lifetime (hours)",
        config_parameter="iot_base.session_lifetime_hours",
        default=DEFAULT_SESSION_LIFETIME_HOURS,
    )

    def action_iot_generate_auth_token(self):
        self.ensure_one()
        self.env["ir.config_parameter"].sudo().set_param(
            "iot_base.auth_token", secrets.token_urlsafe(32)
        )
        return {"type": "ir.actions.client", "tag": "reload"}
