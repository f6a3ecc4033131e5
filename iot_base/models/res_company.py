# License LGPL-3.0 or later (https://www.gnu.org/licenses/lgpl).
import re

from odoo import _, api, fields, models
from odoo.exceptions import ValidationError

# One MQTT topic level that is safe in every broker's ACL syntax.
# No "." either: RabbitMQ's routing keys use it as their word separator, so
# the rules of a company "acme" (acme/#, key acme.#) would reach the topics
# of a company "acme.x" (tools/rabbitmq/__init__.py).
NAMESPACE_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")


class ResCompany(models.Model):
    _inherit = "res.company"

    iot_mqtt_namespace = fields.Char(
        "MQTT Namespace",
        compute="_compute_iot_mqtt_namespace",
        store=True,
        readonly=False,
        copy=False,
        help="First topic level of this company's MQTT topics "
        "(<namespace>/devices/..., <namespace>/users/...).",
    )

    iot_device_username_pattern = fields.Char(
        "Device Username Pattern",
        default="device_{random8}",
        help="MQTT username of new devices. Placeholders: {random8} (8 random "
        "letters and digits), {tenant} (the MQTT namespace), {hardware_id} "
        "(without separators), {name}. E.g. device:{tenant}:{hardware_id}.",
    )

    # set by the listener's own code only (models/iot_listener.py): the link,
    # not the name, says which credential is the company's listener
    iot_listener_credential_id = fields.Many2one(
        "iot.credentials",
        "Listener Credential",
        readonly=True,
        copy=False,
        ondelete="set null",
        groups="base.group_system",
        help="The service credential Odoo's listener (odoo-bin iot-listen) uses "
        "for this company.",
    )

    _sql_constraints = [
        (
            "iot_mqtt_namespace_unique",
            "unique(iot_mqtt_namespace)",
            "Another company already uses this MQTT namespace.",
        ),
    ]

    # No dependency on purpose: computed once, for existing companies when
    # this module is installed and for new ones in create(); renaming a
    # company must not move its topics.
    @api.depends()
    def _compute_iot_mqtt_namespace(self):
        taken = set(
            self.search([("id", "not in", self.ids)]).mapped("iot_mqtt_namespace")
        )
        for company in self:
            if company.iot_mqtt_namespace:
                continue
            base = re.sub(r"[^a-z0-9]+", "_", (company.name or "").lower()).strip("_")
            base = (base or "company")[:50]
            candidate, suffix = base, 2
            while candidate in taken:
                candidate, suffix = f"{base}_{suffix}", suffix + 1
            taken.add(candidate)
            company.iot_mqtt_namespace = candidate

    @api.model_create_multi
    def create(self, vals_list):
        companies = super().create(vals_list)
        companies.filtered(
            lambda c: not c.iot_mqtt_namespace
        )._compute_iot_mqtt_namespace()
        return companies

    def write(self, vals):
        res = super().write(vals)
        if "iot_mqtt_namespace" in vals:
            self.env["iot.store.sync"]._schedule()
        return res

    @api.constrains("iot_mqtt_namespace")
    def _check_iot_mqtt_namespace(self):
        for company in self:
            if not NAMESPACE_RE.fullmatch(company.iot_mqtt_namespace or ""):
                raise ValidationError(
                    _(
                        "The MQTT namespace %(ns)r must be one topic level: lower-case "
                        "letters, digits, _ and - (63 at most; no dot, which RabbitMQ "
                        "reads as a level separator).",
                        ns=company.iot_mqtt_namespace,
                    )
                )
