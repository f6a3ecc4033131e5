# License LGPL-3.0 or later (https://www.gnu.org/licenses/lgpl).
"""Zero-touch provisioning: a claim secret a device exchanges once for its
own identity (AWS IoT fleet provisioning by claim, ThingsBoard's provision
key). The claim secret is stored like a device secret (clear index + hash,
in columns the ORM does not know) and never authenticates to a broker."""

import logging
import re
from datetime import timedelta

from psycopg2.errors import (
    LockNotAvailable,
    SerializationFailure,
    UniqueViolation,
)

from odoo import _, api, fields, models
from odoo.exceptions import UserError, ValidationError
from odoo.tools import SQL

from ..tools.names import NAME_MAX
from ..tools.secret_hash import (
    INDEX_SIZE,
    SECRET_CRYPT_CONTEXT,
    is_secret_format,
    new_secret,
    verify_secret,
)
from ..tools.x509 import X509Error, load_csr
from .iot_mqtt_device import FIRMWARE_MAX, normalize_hardware_id

_logger = logging.getLogger(__name__)

DEFAULT_LIFETIME_DAYS = 30
DEFAULT_MAX_DEVICES = 100
# a hardware id is at most 128 characters: so is a pattern for it
PATTERN_MAX = 128
PATTERN_RE = re.compile(r"^[a-z0-9:._\-*?]{1,128}$")
# what a claim request may carry, and the JSON type of each field
CLAIM_FIELDS = {
    "hardware_id": str,
    "claim_secret": str,
    "name": str,
    "firmware_version": str,
    "csr": str,
}
# hashed when no claim has the secret's index, so that a wrong secret costs
# the same as a right one with a wrong value
_DUMMY_HASH = SECRET_CRYPT_CONTEXT.hash("0" * 40)


class ClaimRefused(Exception):
    """A claim request refused: ``status`` and ``code`` for the JSON answer,
    ``retry_after`` (seconds) for a throttled one."""

    def __init__(self, message, status, code, retry_after=None):
        super().__init__(message)
        self.status = status
        self.code = code
        self.retry_after = retry_after


def glob_matches(pattern, text):
    """Whether ``text`` matches the glob ``pattern`` (``*`` any run, ``?``
    one character, anything else itself), in O(len(pattern) * len(text)):
    the greedy two-pointer walk with one back-track point, never a regex
    that could backtrack exponentially."""
    p = t = 0
    star = mark = -1
    while t < len(text):
        if p < len(pattern) and pattern[p] in ("?", text[t]):
            p += 1
            t += 1
        elif p < len(pattern) and pattern[p] == "*":
            star, mark = p, t
            p += 1
        elif star != -1:
            p = star + 1
            mark += 1
            t = mark
        else:
            return False
    while p < len(pattern) and pattern[p] == "*":
        p += 1
    return p == len(pattern)


class IotProvisioningClaim(models.Model):
    _name = "iot.provisioning.claim"
    _description = "IoT Provisioning Claim"
    _order = "id desc"
    _check_company_auto = True

    name = fields.Char(required=True)
    company_id = fields.Many2one(
        "res.company", required=True, default=lambda self: self.env.company, index=True
    )
    fleet_id = fields.Many2one(
        "iot.mqtt.fleet",
        check_company=True,
        index=True,
        # not "set null": deleting the fleet would silently widen the claim
        ondelete="restrict",
        help="Devices claimed with this secret join this fleet.",
    )
    expires_at = fields.Datetime(
        "Expires On",
        required=True,
        default=lambda self: (
            fields.Datetime.now() + timedelta(days=DEFAULT_LIFETIME_DAYS)
        ),
    )
    max_devices = fields.Integer(
        "Maximum Devices", required=True, default=DEFAULT_MAX_DEVICES
    )
    claimed_count = fields.Integer(
        "Devices Claimed",
        readonly=True,
        copy=False,
        default=0,
        help="Devices registered with this claim (re-claims not counted).",
    )
    hardware_id_pattern = fields.Char(
        "Allowed Hardware IDs",
        help="A glob the hardware ID must match (after normalization: lower "
        "case, MAC addresses as aa:bb:cc:dd:ee:ff): * any run of characters, "
        "? one character, e.g. aa:bb:cc:* or sensor-????. Empty: any.",
    )
    allow_reclaim = fields.Boolean(
        "Allow Re-claiming",
        help="A device this claim registered may claim again (a factory reset): "
        "it gets a new secret and the previous one stops working. Otherwise a "
        "second claim of the same hardware ID is refused.",
    )
    revoked_at = fields.Datetime("Revoked On", readonly=True, copy=False)
    secret_issued_at = fields.Datetime("Secret Issued On", readonly=True, copy=False)
    state = fields.Selection(
        [
            ("draft", "No Secret"),
            ("active", "Active"),
            ("exhausted", "Exhausted"),
            ("expired", "Expired"),
            ("revoked", "Revoked"),
        ],
        compute="_compute_state",
    )
    use_ids = fields.One2many(
        "iot.provisioning.claim.use", "claim_id", string="Uses", readonly=True
    )
    use_count = fields.Integer(compute="_compute_use_count")

    _sql_constraints = [
        (
            "max_devices_positive",
            "CHECK (max_devices > 0)",
            "A claim registers at least one device.",
        ),
    ]

    def init(self):
        # the secret's clear index and hash: columns the ORM does not know,
        # so that no one reads them through the ORM, whatever their rights
        self.env.cr.execute(
            SQL(
                "ALTER TABLE %(table)s"
                " ADD COLUMN IF NOT EXISTS secret_index varchar(%(size)s),"
                " ADD COLUMN IF NOT EXISTS secret_hash varchar",
                table=SQL.identifier(self._table),
                size=INDEX_SIZE,
            )
        )
        self.env.cr.execute(
            SQL(
                "CREATE INDEX IF NOT EXISTS %s ON %s (secret_index)",
                SQL.identifier(f"{self._table}_secret_index_idx"),
                SQL.identifier(self._table),
            )
        )

    @api.depends("revoked_at", "expires_at", "claimed_count", "max_devices")
    def _compute_state(self):
        now = fields.Datetime.now()
        for claim in self:
            if claim.revoked_at:
                claim.state = "revoked"
            elif claim.expires_at and claim.expires_at <= now:
                claim.state = "expired"
            elif not claim.secret_issued_at:
                claim.state = "draft"
            elif claim.claimed_count >= claim.max_devices:
                claim.state = "exhausted"
            else:
                claim.state = "active"

    def _compute_use_count(self):
        counts = dict(
            self.env["iot.provisioning.claim.use"]._read_group(
                [("claim_id", "in", self.ids)], ["claim_id"], ["__count"]
            )
        )
        for claim in self:
            claim.use_count = counts.get(claim, 0)

    @api.constrains("hardware_id_pattern")
    def _check_hardware_id_pattern(self):
        for claim in self:
            pattern = claim.hardware_id_pattern
            if pattern and not PATTERN_RE.fullmatch(pattern):
                raise ValidationError(
                    _(
                        "The allowed hardware IDs must be a glob of at most "
                        "%(max)s lower-case letters, digits, ':', '.', '_', '-', "
                        "'*' and '?'.",
                        max=PATTERN_MAX,
                    )
                )

    @api.model_create_multi
    def create(self, vals_list):
        for vals in vals_list:
            # the counters and the revocation are the claim's own
            vals.pop("claimed_count", None)
            vals.pop("revoked_at", None)
            vals.pop("secret_issued_at", None)
            if vals.get("hardware_id_pattern"):
                vals["hardware_id_pattern"] = vals["hardware_id_pattern"].strip()
        return super().create(vals_list)

    def write(self, vals):
        if {"claimed_count", "revoked_at", "secret_issued_at"} & set(vals):
            raise UserError(
                _("The counters and the revocation of a claim cannot be edited.")
            )
        if vals.get("hardware_id_pattern"):
            vals["hardware_id_pattern"] = vals["hardware_id_pattern"].strip()
        res = super().write(vals)
        if "company_id" in vals:
            # record rules are checked before a write only: moving a claim
            # into a company the writer does not manage must fail too
            self.check_access("write")
        return res

    @api.ondelete(at_uninstall=False)
    def _unlink_except_used(self):
        # its uses are the audit trail of the devices it registered
        used = self.filtered("use_ids")
        if used:
            raise UserError(
                _(
                    "Claim %(name)s has been used: revoke it instead of deleting it.",
                    name=used[0].name,
                )
            )

    # ------------------------------------------------------------------
    # Actions
    # ------------------------------------------------------------------

    def action_new_secret(self):
        """Issue the claim secret (a previous one stops working), shown once."""
        self.ensure_one()
        self.check_access("write")
        if self.state in ("revoked", "expired"):
            raise UserError(
                _("Claim %(name)s is %(state)s.", name=self.name, state=self.state)
            )
        secret, index, secret_hash = new_secret()
        self.env.cr.execute(
            SQL(
                "UPDATE %s SET secret_index = %s, secret_hash = %s,"
                " secret_issued_at = %s WHERE id = %s",
                SQL.identifier(self._table),
                index,
                secret_hash,
                fields.Datetime.now(),
                self.id,
            )
        )
        self.invalidate_recordset(["secret_issued_at", "state"])
        _logger.info("Provisioning claim #%s: secret issued", self.id)
        return {
            "type": "ir.actions.act_window",
            "res_model": "iot.credentials.secret.show",
            "name": _("Claim Secret"),
            "views": [
                (
                    self.env.ref(
                        "iot_base.iot_provisioning_claim_secret_show_view_form"
                    ).id,
                    "form",
                )
            ],
            "target": "new",
            "context": {"default_username": self.name, "default_secret": secret},
        }

    def action_revoke(self):
        """Revoke the claims for good: no device claims with them any more
        (the devices they registered keep their own identity)."""
        self.check_access("write")
        if not self:
            return
        self.env.cr.execute(
            SQL(
                # the hash stays: a device still trying is told it is revoked
                "UPDATE %s SET revoked_at = %s WHERE id IN %s AND revoked_at IS NULL",
                SQL.identifier(self._table),
                fields.Datetime.now(),
                tuple(self.ids),
            )
        )
        self.invalidate_recordset(["revoked_at", "state"])

    def action_view_devices(self):
        self.ensure_one()
        return {
            "type": "ir.actions.act_window",
            "res_model": "iot.mqtt.device",
            "name": _("Claimed Devices"),
            "views": [(False, "list"), (False, "form")],
            "domain": [("id", "in", self.use_ids.device_id.ids)],
        }

    # ------------------------------------------------------------------
    # The claim request (controllers/claim.py), run as superuser
    # ------------------------------------------------------------------

    @api.model
    def _claim(self, payload, peer):
        """Exchange a claim request for a device identity.

        :param payload: the request's JSON object (strings already checked
            for NUL and lone surrogates)
        :param peer: the client's address
        :return: (device, its new secret, whether it was created now)
        :raise ClaimRefused: the answer to give, recorded in the claim's uses
        """
        Throttle = self.env["iot.auth.throttle"].sudo()
        claim = self.browse()
        try:
            # before any secret is hashed: a flood from one address stops here
            wait = Throttle._provisioning_wait(f"claim-peer:{peer}")
            if wait:
                raise ClaimRefused(
                    _("Too many claims from this address: retry in %(s)s s.", s=wait),
                    429,
                    "too_many_requests",
                    wait,
                )
            self._check_payload(payload)
            claim = self._find_by_secret(payload["claim_secret"])
            if not claim:
                raise ClaimRefused(
                    _("Unknown, revoked or wrong claim secret."), 403, "invalid_claim"
                )
            wait = Throttle._provisioning_wait(f"claim:{claim.id}")
            if wait:
                raise ClaimRefused(
                    _("Too many claims with this secret: retry in %(s)s s.", s=wait),
                    429,
                    "too_many_requests",
                    wait,
                )
            claim = claim.with_company(claim.company_id)
            return claim._claim_locked(payload, peer)
        except ClaimRefused as exc:
            self._record_use(claim, payload, peer, exc.code)
            raise

    @api.model
    def _check_payload(self, payload):
        if set(payload) - set(CLAIM_FIELDS):
            raise ClaimRefused(
                _(
                    "Unknown field in the request body; the fields are: %(fields)s.",
                    fields=", ".join(CLAIM_FIELDS),
                ),
                400,
                "invalid",
            )
        for key, value in payload.items():
            if value is not None and not isinstance(value, CLAIM_FIELDS[key]):
                raise ClaimRefused(
                    _("%(key)s must be a string.", key=key), 400, "invalid"
                )
        for key in ("hardware_id", "claim_secret"):
            if not payload.get(key):
                raise ClaimRefused(_("%(key)s is required.", key=key), 400, "invalid")

    @api.model
    def _find_by_secret(self, secret):
        """The claim whose secret is ``secret``, or an empty recordset;
        a wrong secret costs the same hash as a right one."""
        if not is_secret_format(secret):
            SECRET_CRYPT_CONTEXT.verify("0" * 40, _DUMMY_HASH)
            return self.browse()
        self.env.cr.execute(
            SQL(
                "SELECT id, secret_hash FROM %s WHERE secret_index = %s"
                " AND secret_hash IS NOT NULL",
                SQL.identifier(self._table),
                secret[:INDEX_SIZE],
            )
        )
        rows = self.env.cr.fetchall() or [(None, _DUMMY_HASH)]
        found = self.browse()
        for claim_id, secret_hash in rows:
            if verify_secret(secret, secret_hash) and claim_id:
                found = self.browse(claim_id)
        return found

    def _claim_locked(self, payload, peer):
        """The claim's checks and the registration, under a lock of the
        claim's row: two requests for the last free slot are serialized, and
        the later one sees the count the earlier one wrote (or fails to
        serialize, answered as a conflict to retry)."""
        self.ensure_one()
        Device = self.env["iot.mqtt.device"].sudo().with_company(self.company_id)
        hardware_id = normalize_hardware_id(payload["hardware_id"])
        if not hardware_id:
            raise ClaimRefused(
                _(
                    "hardware_id must be a MAC address or 1 to 128 letters, digits, "
                    "':', '.', '_' or '-'."
                ),
                400,
                "invalid",
            )
        if payload.get("csr"):
            # checked (tools/x509.py) so that a device learns whether its CSR
            # is usable; issuing waits for the company's CA (issue 19)
            try:
                load_csr(payload["csr"])
            except X509Error as exc:
                raise ClaimRefused(
                    _("The CSR is refused: %(why)s.", why=exc.args[0]),
                    400,
                    "invalid_csr",
                ) from exc
            raise ClaimRefused(
                _("This Odoo does not issue certificates yet: claim without a CSR."),
                422,
                "csr_unsupported",
            )
        try:
            name = Device._provisioned_name(payload.get("name"), "name", NAME_MAX)
            firmware = Device._provisioned_name(
                payload.get("firmware_version"), "firmware_version", FIRMWARE_MAX
            )
        except ValidationError as exc:
            raise ClaimRefused(exc.args[0], 400, "invalid") from exc
        try:
            with self.env.cr.savepoint():
                # a concurrent claim's commit is expected here, not an error
                self.env.cr.execute(
                    SQL(
                        "SELECT revoked_at, expires_at, max_devices, claimed_count"
                        " FROM %s WHERE id = %s FOR NO KEY UPDATE",
                        SQL.identifier(self._table),
                        self.id,
                    ),
                    log_exceptions=False,
                )
                revoked_at, expires_at, max_devices, claimed = self.env.cr.fetchone()
        except (SerializationFailure, LockNotAvailable) as exc:
            raise ClaimRefused(
                _("Another device is claiming with this secret now; try again."),
                409,
                "concurrent",
                1,
            ) from exc
        if revoked_at:
            raise ClaimRefused(_("This claim is revoked."), 403, "claim_revoked")
        if expires_at <= fields.Datetime.now():
            raise ClaimRefused(_("This claim has expired."), 403, "claim_expired")
        pattern = self.hardware_id_pattern
        if pattern and not glob_matches(pattern, hardware_id):
            raise ClaimRefused(
                _("This claim does not admit this hardware ID."),
                403,
                "hardware_id_not_allowed",
            )
        device = Device._find_by_hardware_id(hardware_id, company=self.company_id)
        if device:
            device, secret = self._reclaim(device, payload, peer)
            return device, secret, False
        if claimed >= max_devices:
            raise ClaimRefused(
                _("This claim has registered all the devices it may."),
                403,
                "claim_exhausted",
            )
        values = {"fleet_id": self.fleet_id.id} if self.fleet_id else {}
        if firmware:
            values["firmware_version"] = firmware
        try:
            with self.env.cr.savepoint():
                device, secret = Device._register_device(
                    hardware_id, name=name, company=self.company_id, **values
                )
        except UniqueViolation as exc:
            raise ClaimRefused(
                _("Another request is registering this device; try again."),
                409,
                "concurrent",
                1,
            ) from exc
        except ValidationError as exc:
            raise ClaimRefused(exc.args[0], 400, "invalid") from exc
        except UserError as exc:
            # the company's limits (tools/limits.py)
            raise ClaimRefused(exc.args[0], 422, "limit") from exc
        self.env.cr.execute(
            SQL(
                "UPDATE %s SET claimed_count = claimed_count + 1 WHERE id = %s",
                SQL.identifier(self._table),
                self.id,
            )
        )
        self.invalidate_recordset(["claimed_count", "state"])
        self._record_use(self, payload, peer, "claimed", device)
        return device, secret, True

    def _reclaim(self, device, payload, peer):
        """A new secret for a device this claim registered, when the claim
        allows re-claiming; else the 409 answer."""
        if device.state == "revoked":
            raise ClaimRefused(
                _("The device with this hardware ID is revoked."), 409, "revoked"
            )
        mine = self.env["iot.provisioning.claim.use"].search_count(
            [
                ("claim_id", "=", self.id),
                ("device_id", "=", device.id),
                ("result", "=", "claimed"),
            ],
            limit=1,
        )
        if not (self.allow_reclaim and mine):
            raise ClaimRefused(
                _("A device with this hardware ID is registered already."),
                409,
                "already_claimed",
            )
        secret = device._issue_device_secret()
        self._record_use(self, payload, peer, "reclaimed", device)
        return device, secret

    @api.model
    def _record_use(self, claim, payload, peer, result, device=None):
        hardware_id = payload.get("hardware_id")
        self.env["iot.provisioning.claim.use"].sudo()._record(
            claim_id=claim.id if claim else None,
            hardware_id=hardware_id[:128] if isinstance(hardware_id, str) else None,
            device_id=device.id if device else None,
            peer=peer,
            result=result,
        )
