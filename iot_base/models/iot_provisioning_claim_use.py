# License LGPL-3.0 or later (https://www.gnu.org/licenses/lgpl).
from datetime import timedelta

from odoo import api, fields, models
from odoo.tools import SQL

# requests that named no claim (a wrong secret, a malformed body) are kept
# this long: anyone can make them, a claim's own uses live with the claim
ORPHAN_RETENTION_DAYS = 30
RESULTS = [
    ("claimed", "Device registered"),
    ("reclaimed", "Device re-claimed (new secret)"),
    ("invalid", "Malformed request"),
    ("invalid_claim", "Unknown or wrong claim secret"),
    ("too_many_requests", "Throttled"),
    ("claim_revoked", "Claim revoked"),
    ("claim_expired", "Claim expired"),
    ("claim_exhausted", "Claim over its device limit"),
    ("hardware_id_not_allowed", "Hardware ID not admitted"),
    ("already_claimed", "Hardware ID registered already"),
    ("revoked", "Device revoked"),
    ("concurrent", "Concurrent claim"),
    ("limit", "Company limit reached"),
    ("invalid_csr", "Certificate request refused"),
    ("csr_unsupported", "Certificate request not supported"),
]


class IotProvisioningClaimUse(models.Model):
    """One claim request and what Odoo answered, refused ones included (a
    request with no usable claim secret has no claim). Never a secret."""

    _name = "iot.provisioning.claim.use"
    _description = "IoT Provisioning Claim Use"
    _order = "id desc"
    _rec_name = "hardware_id"
    _log_access = False

    create_date = fields.Datetime("Time", readonly=True, index=True)
    claim_id = fields.Many2one(
        "iot.provisioning.claim", readonly=True, index=True, ondelete="cascade"
    )
    company_id = fields.Many2one(
        related="claim_id.company_id", store=True, index=True, string="Company"
    )
    hardware_id = fields.Char("Hardware ID", readonly=True)
    device_id = fields.Many2one("iot.mqtt.device", readonly=True, ondelete="set null")
    peer = fields.Char("Client Address", readonly=True)
    result = fields.Selection(RESULTS, readonly=True)
    accepted = fields.Boolean(compute="_compute_accepted")

    @api.depends("result")
    def _compute_accepted(self):
        for use in self:
            use.accepted = use.result in ("claimed", "reclaimed")

    @api.model
    def _record(self, claim_id, hardware_id, device_id, peer, result):
        """Append one use (as superuser: the caller is the claim route)."""
        return self.create(
            {
                "create_date": fields.Datetime.now(),
                "claim_id": claim_id,
                "hardware_id": hardware_id,
                "device_id": device_id,
                "peer": (peer or "")[:64],
                "result": result,
            }
        )

    @api.autovacuum
    def _gc_orphan_uses(self):
        self.env.cr.execute(
            SQL(
                "DELETE FROM %s WHERE claim_id IS NULL AND create_date < %s",
                SQL.identifier(self._table),
                fields.Datetime.now() - timedelta(days=ORPHAN_RETENTION_DAYS),
            )
        )
