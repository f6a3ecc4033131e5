# License LGPL-3.0 or later (https://www.gnu.org/licenses/lgpl).
import logging
import re
import secrets
import string
import time

from psycopg2.errors import UniqueViolation

from odoo import _, api, fields, models
from odoo.exceptions import UserError, ValidationError

from ..tools import broker_api
from ..tools.client_ids import issued_client_id
from ..tools.limits import company_over_limit
from ..tools.names import NAME_MAX, name_problem
from ..tools.settings import database_is_neutralized
from .iot_app import DEFAULT_BROKER_URL
from .iot_broker_session import BUDGET, TIMEOUT

_logger = logging.getLogger(__name__)

MAC_SEPARATORS_RE = re.compile(r"[\s:.\-]")
HEX12_RE = re.compile(r"^[0-9a-f]{12}$")
HARDWARE_ID_RE = re.compile(r"^[a-z0-9][a-z0-9:._\-]{0,127}$")
DEFAULT_USERNAME_PATTERN = "device_{random8}"
RANDOM_ALPHABET = string.ascii_lowercase + string.digits
FIRMWARE_MAX = 64
MAX_TAGS = 32
# what a provisioning request may carry, and the JSON type of each field
# what RabbitMQ records as the reason of a connection Disconnect closed
DISCONNECT_REASON = "disconnected from Odoo (not revoked)"
PROVISION_FIELDS = {
    "hardware_id": str,
    "name": str,
    "firmware_version": str,
    "fleet": str,
    "tags": list,
    "rotate": bool,
}


class ProvisioningConflict(UserError):
    """The hardware ID is taken in a way registering cannot settle: its device
    is revoked (only a manager's Restore brings it back), or another request
    is registering it right now. ``code`` says which."""

    def __init__(self, message, code):
        super().__init__(message)
        self.code = code


def normalize_hardware_id(value):
    """``AA-BB-CC-DD-EE-FF`` and ``aabb.ccdd.eeff`` -> ``aa:bb:cc:dd:ee:ff``;
    any other id is trimmed and lower-cased. None when unusable."""
    if not isinstance(value, str):
        return None
    cleaned = value.strip().lower()
    compact = MAC_SEPARATORS_RE.sub("", cleaned)
    if HEX12_RE.match(compact):
        return ":".join(compact[i : i + 2] for i in range(0, 12, 2))
    return cleaned if HARDWARE_ID_RE.fullmatch(cleaned) else None


class IotMqttDevice(models.Model):
    _name = "iot.mqtt.device"
    _inherit = ["iot.name.mixin"]
    _description = "MQTT Device"
    _order = "name, id"
    _check_company_auto = True

    name = fields.Char(required=True)
    hardware_id = fields.Char(
        "Hardware ID",
        required=True,
        index=True,
        copy=False,
        help="A stable identifier of the hardware, e.g. its MAC address. "
        "Registering the same hardware ID again returns this device.",
    )
    company_id = fields.Many2one(
        "res.company", required=True, default=lambda self: self.env.company, index=True
    )
    active = fields.Boolean(default=True)
    tag_ids = fields.Many2many("iot.mqtt.device.tag", string="Tags")
    fleet_id = fields.Many2one("iot.mqtt.fleet", check_company=True)
    firmware_version = fields.Char()
    credential_id = fields.Many2one(
        "iot.credentials",
        string="MQTT Credential",
        readonly=True,
        copy=False,
        ondelete="restrict",
        check_company=True,
    )
    username = fields.Char(related="credential_id.username", string="MQTT Username")
    last_seen = fields.Datetime(
        related="credential_id.last_auth_at", string="Last Seen"
    )
    state = fields.Selection(
        [("active", "Active"), ("expired", "Expired"), ("revoked", "Revoked")],
        compute="_compute_state",
    )
    topic_prefix = fields.Char(compute="_compute_topic_prefix")
    note = fields.Text()

    _sql_constraints = [
        (
            "hardware_company_uniq",
            "unique (company_id, hardware_id)",
            "A device with this hardware ID is registered already.",
        )
    ]

    @api.depends("credential_id.active", "credential_id.is_expired")
    def _compute_state(self):
        for device in self:
            credential = device.credential_id
            if not credential.active:
                device.state = "revoked"
            elif credential.is_expired:
                device.state = "expired"
            else:
                device.state = "active"

    @api.depends("credential_id.username", "company_id.iot_mqtt_namespace")
    def _compute_topic_prefix(self):
        for device in self:
            device.topic_prefix = (
                f"{device.company_id.iot_mqtt_namespace}/devices/{device.username}"
                if device.username
                else False
            )

    @api.constrains("hardware_id")
    def _check_hardware_id(self):
        for device in self:
            if normalize_hardware_id(device.hardware_id) != device.hardware_id:
                raise ValidationError(
                    _("%(hw)r is not a usable hardware ID.", hw=device.hardware_id)
                )

    @api.model_create_multi
    def create(self, vals_list):
        for vals in vals_list:
            if "hardware_id" in vals:
                vals["hardware_id"] = (
                    normalize_hardware_id(vals["hardware_id"]) or vals["hardware_id"]
                )
        self._check_company_limit(
            [vals.get("company_id") or self.env.company.id for vals in vals_list]
        )
        devices = super().create(vals_list)
        devices.filtered(lambda d: not d.credential_id)._create_credentials()
        return devices

    def write(self, vals):
        if "hardware_id" in vals:
            vals["hardware_id"] = (
                normalize_hardware_id(vals["hardware_id"]) or vals["hardware_id"]
            )
        if vals.get("company_id"):
            moved = self.filtered(lambda d: d.company_id.id != vals["company_id"])
            self._check_company_limit([vals["company_id"]] * len(moved))
        if "active" in vals:
            # the credential changes with the device: the writer must be
            # allowed to change it (a superuser's is for administrators)
            self.credential_id.check_access("write")
        res = super().write(vals)
        if "active" in vals:
            credentials = self.credential_id.sudo()
            if vals["active"]:
                credentials.filtered(lambda c: not c.active).action_unarchive()
            else:
                credentials.filtered("active").action_archive()
        return res

    def unlink(self):
        self.credential_id.check_access("unlink")
        credentials = self.credential_id.sudo()
        res = super().unlink()
        # revoked with the device; its secrets go with it (ON DELETE CASCADE)
        credentials.unlink()
        return res

    @api.model
    def _check_company_limit(self, company_ids):
        """Refuse adding devices to the companies ``company_ids`` (one id per
        new device) past ``iot_base.max_devices_per_company``."""
        over = company_over_limit(self, "iot_base.max_devices_per_company", company_ids)
        if over:
            raise UserError(
                _(
                    "%(company)s may have at most %(limit)s devices (archived "
                    "ones included; Settings > IoT): delete unused ones first.",
                    company=self.env["res.company"].browse(over[0]).sudo().name,
                    limit=over[1],
                )
            )

    def _iot_name_fields(self):
        return dict(super()._iot_name_fields(), firmware_version=FIRMWARE_MAX)

    # ------------------------------------------------------------------
    # Credentials
    # ------------------------------------------------------------------

    def _username_from_pattern(self, planned=frozenset()):
        """The company's pattern, e.g. ``device_{random8}`` or seed 003's
        ``device:{tenant}:{hardware_id}``, made unique (also against the
        usernames ``planned`` for devices of the same batch)."""
        self.ensure_one()
        pattern = (
            self.company_id.iot_device_username_pattern or DEFAULT_USERNAME_PATTERN
        )
        credentials = self.env["iot.credentials"].sudo()
        for _attempt in range(5):
            values = {
                "random8": "".join(secrets.choice(RANDOM_ALPHABET) for _i in range(8)),
                "tenant": self.company_id.iot_mqtt_namespace or "",
                "hardware_id": MAC_SEPARATORS_RE.sub("", self.hardware_id or ""),
                "name": re.sub(r"[^a-z0-9]+", "_", self.name.lower()).strip("_"),
            }
            try:
                username = pattern.format(**values)
            except (KeyError, IndexError, ValueError) as exc:
                raise ValidationError(
                    _("The device username pattern %(p)r is not valid.", p=pattern)
                ) from exc
            # whoever registers (the provisioning API runs this as sudo):
            # a device never gets a reserved or unaddressable name
            error = credentials._username_error(username)
            if error:
                raise ValidationError(
                    _(
                        "The device username pattern %(p)r gives %(u)r, which "
                        "cannot be used: %(why)s",
                        p=pattern,
                        u=username,
                        why=error,
                    )
                )
            if "{random8}" in pattern and (
                username in planned
                or credentials.with_context(active_test=False).search_count(
                    [("username", "=", username)]
                )
            ):
                continue
            return credentials._free_username(username, planned)
        raise ValidationError(_("Could not find a free device username."))

    def _create_credentials(self):
        """Give each device of ``self`` its credential, in one batch (one
        limit check per batch, whatever its size)."""
        planned = set()
        vals_list = []
        for device in self:
            username = device._username_from_pattern(planned)
            planned.add(username)
            vals_list.append(
                {
                    "username": username,
                    "kind": "device",
                    "company_id": device.company_id.id,
                    "note": _(
                        "Device %(name)s (%(hw)s)",
                        name=device.name,
                        hw=device.hardware_id,
                    ),
                }
            )
        credentials = self.env["iot.credentials"].sudo().create(vals_list)
        for device, credential in zip(self, credentials, strict=True):
            device.credential_id = credential

    def _issue_device_secret(self):
        """A new long-lived secret for the device (the previous one stops
        working); returned in clear, once."""
        self.ensure_one()
        self.check_access("write")
        if self.state == "revoked":
            raise UserError(
                _("Device %(name)s is revoked: restore it first.", name=self.name)
            )
        credential = self.credential_id.sudo()
        self.env["iot.credentials.secret"].sudo()._revoke_credentials(
            credential, "long_lived"
        )
        return credential._issue_secret("long_lived")[0]

    @api.model
    def _register_device(
        self, hardware_id, name=None, company=None, rotate=False, **values
    ):
        """Register a device by hardware ID, idempotently.

        :return: (device, secret or None): the secret only when one was
            issued now (new device, or ``rotate``); an existing device keeps
            its secret.
        :raise ProvisioningConflict: the hardware ID is a revoked device's
        """
        normalized = normalize_hardware_id(hardware_id)
        if not normalized:
            raise ValidationError(
                _("%(hw)r is not a usable hardware ID.", hw=hardware_id)
            )
        company = company or self.env.company
        device = self._find_by_hardware_id(normalized, company=company)
        if device.state == "revoked":
            raise ProvisioningConflict(
                _(
                    "Device %(name)s with this hardware ID is revoked. An IoT "
                    "manager can restore it (Restore on the device in Odoo), or "
                    "delete it to register the hardware again.",
                    name=device.name,
                ),
                "revoked",
            )
        if not device:
            device = self.create(
                dict(
                    values,
                    hardware_id=normalized,
                    name=name or normalized,
                    company_id=company.id,
                )
            )
            return device, device._issue_device_secret()
        if values:
            device.write(values)
        return device, device._issue_device_secret() if rotate else None

    @api.model
    def _find_by_hardware_id(self, hardware_id, company=None):
        normalized = normalize_hardware_id(hardware_id)
        if not normalized:
            return self.browse()
        return self.with_context(active_test=False).search(
            [
                ("hardware_id", "=", normalized),
                ("company_id", "=", (company or self.env.company).id),
            ],
            limit=1,
        )

    @api.model
    def _provision(self, payload):
        """Register a device from a provisioning API payload (a dict), in the
        current company; nothing is written unless all of it is valid.

        :return: (device, secret or None, created)
        :raise ValidationError: with a message fit for the API client
        :raise ProvisioningConflict: revoked device, or a concurrent request
        """
        if set(payload) - set(PROVISION_FIELDS):
            raise ValidationError(
                _(
                    "Unknown field in the request body; the fields are: %(fields)s.",
                    fields=", ".join(PROVISION_FIELDS),
                )
            )
        for key, value in payload.items():
            kind = PROVISION_FIELDS[key]
            if value is not None and not isinstance(value, kind):
                raise ValidationError(
                    _("%(key)s must be a %(type)s.", key=key, type=kind.__name__)
                )
        if not payload.get("hardware_id"):
            raise ValidationError(_("hardware_id is required."))
        hardware_id = normalize_hardware_id(payload["hardware_id"])
        if not hardware_id:
            raise ValidationError(
                _(
                    "hardware_id must be a MAC address or 1 to 128 letters, digits, "
                    "':', '.', '_' or '-'."
                )
            )
        name = self._provisioned_name(payload.get("name"), "name", NAME_MAX)
        fleet = self._provisioned_name(payload.get("fleet"), "fleet", NAME_MAX)
        firmware = self._provisioned_name(
            payload.get("firmware_version"), "firmware_version", FIRMWARE_MAX
        )
        tags = payload.get("tags") or []
        if len(tags) > MAX_TAGS:
            raise ValidationError(
                _("tags may hold at most %(max)s names.", max=MAX_TAGS)
            )
        if not all(isinstance(tag, str) for tag in tags):
            raise ValidationError(_("tags must be a list of names."))
        tags = [self._provisioned_name(tag, "tags", NAME_MAX) for tag in tags]
        existed = bool(self._find_by_hardware_id(hardware_id))
        try:
            # a conflict below must not leave a fleet or tag behind
            with self.env.cr.savepoint():
                values = {}
                if firmware:
                    values["firmware_version"] = firmware
                if fleet:
                    values["fleet_id"] = self._get_or_create_named(
                        "iot.mqtt.fleet", fleet
                    ).id
                if tags:
                    values["tag_ids"] = [
                        (4, self._get_or_create_named("iot.mqtt.device.tag", tag).id)
                        for tag in dict.fromkeys(tags)
                    ]
                device, secret = self._register_device(
                    hardware_id,
                    name=name,
                    rotate=bool(payload.get("rotate")),
                    **values,
                )
        except UniqueViolation as exc:
            raise ProvisioningConflict(
                _("Another request is registering this device; try again."),
                "concurrent",
            ) from exc
        return device, secret, not existed

    @api.model
    def _provisioned_name(self, value, key, max_length):
        """``value`` stripped, None when absent; ValidationError when unusable."""
        if value is None:
            return None
        problem = name_problem(self.env, value, key, max_length)
        if problem:
            raise ValidationError(problem)
        return value.strip()

    @api.model
    def _get_or_create_named(self, model, name):
        records = self.env[model]
        domain = [("name", "=", name)]
        if "company_id" in records._fields:
            domain.append(("company_id", "=", self.env.company.id))
        return records.search(domain, limit=1) or records.create({"name": name})

    def _provisioning_reply(self, secret):
        """What a device needs to connect (seed 002's reply)."""
        self.ensure_one()
        params = self.env["ir.config_parameter"].sudo()
        settings = self.env["iot.mqtt.client"]._settings()
        return {
            "device_id": self.id,
            "hardware_id": self.hardware_id,
            "name": self.name,
            "username": self.username,
            # only with the secret (it is derived from it): the id nobody
            # else can learn, required where the broker does not bind ids
            "client_id": issued_client_id(self.username, secret) if secret else None,
            # only when issued by this call: it is never shown again
            "password": secret,
            "broker": {
                "host": settings["host"],
                "port": settings["port"],
                "tls": settings["tls"],
                "websocket_url": params.get_param(
                    "iot_base.mqtt_broker_url", DEFAULT_BROKER_URL
                ),
            },
            "topics": self._topics(),
        }

    # ------------------------------------------------------------------
    # Actions
    # ------------------------------------------------------------------

    def action_rotate_secret(self):
        self.ensure_one()
        secret = self._issue_device_secret()
        return self.credential_id._action_show_secret(secret)

    def action_revoke(self):
        self.check_access("write")
        self.action_archive()

    def action_restore(self):
        """Bring a revoked device back with a new secret, shown once: the only
        way back, registering its hardware ID again is refused."""
        self.ensure_one()
        self.check_access("write")
        if self.state != "revoked":
            raise UserError(_("Device %(name)s is not revoked.", name=self.name))
        # unarchives the credential too, even when it alone was revoked; the
        # broker's checks read the credential row in SQL, so write it now
        self.write({"active": True})
        self.credential_id.flush_recordset(["active"])
        secret = self._issue_device_secret()
        return self.credential_id._action_show_secret(secret)

    def action_disconnect(self):
        """Close the device's live MQTT connections now, without revoking it:
        it may connect again at once (e.g. after a firmware change, or to make
        it reconnect). Through the broker APIs of Settings → IoT → Revoked
        Sessions (RabbitMQ: DELETE /api/connections/username/<u>; EMQX: each
        client of the username, DELETE /api/v5/clients/<id>), the paths made
        by tools/broker_api.py. Mosquitto has no such API: it cannot.
        Returns a notification saying what each broker did."""
        self.ensure_one()
        # IoT managers of the device's company (access rights, record rules)
        self.check_access("write")
        if self.state == "revoked":
            raise UserError(
                _(
                    "Device %(name)s is revoked: its connections were closed "
                    "then, and it cannot connect.",
                    name=self.name,
                )
            )
        if database_is_neutralized(self.env):
            return self._disconnect_notification(
                "warning",
                _(
                    "This database is a neutralized copy: Odoo does not act "
                    "on any broker from it."
                ),
            )
        apis = self.env["iot.broker.api"].sudo()
        config = apis._get_config()
        brokers = [broker for broker, values in config.items() if values["url"]]
        if not brokers:
            return self._disconnect_notification(
                "warning",
                _(
                    "No broker can disconnect %(name)s: Mosquitto has no API to "
                    "close one client's connection without revoking it (revoke "
                    "the device, or rotate its secret, instead). For RabbitMQ "
                    "or EMQX, give their API in Settings → IoT → Revoked "
                    "Sessions.",
                    name=self.name,
                ),
            )
        username = self.credential_id.sudo().username
        if not broker_api.addressable(username):
            return self._disconnect_notification(
                "warning",
                _(
                    "The MQTT username of %(name)s cannot be addressed on a "
                    "broker API.",
                    name=self.name,
                ),
            )
        deadline = time.monotonic() + BUDGET
        done, failed = [], []
        for broker in brokers:
            label = {"rabbitmq": "RabbitMQ", "emqx": "EMQX"}[broker]
            try:
                client = apis._client(broker, TIMEOUT, deadline, config[broker])
                if broker == "rabbitmq":
                    client.close_connections(username, DISCONNECT_REASON)
                    done.append(_("%(broker)s closed its connections", broker=label))
                else:
                    count = client.kick_user(username)
                    done.append(
                        _(
                            "%(broker)s disconnected %(count)s clients",
                            broker=label,
                            count=count,
                        )
                    )
            except broker_api.BrokerApiError as exc:
                # the error text holds no secret nor login (tools/broker_api.py)
                _logger.warning(
                    "Disconnecting device %s on %s failed: %s", self.id, broker, exc
                )
                failed.append(
                    _("%(broker)s failed: %(error)s", broker=label, error=exc)
                )
        _logger.info(
            "Device %s disconnected (not revoked) by user %s", self.id, self.env.uid
        )
        message = _(
            "%(name)s: %(what)s. It may connect again at once (Revoke stops it).",
            name=self.name,
            what="; ".join(done + failed),
        )
        return self._disconnect_notification(
            "warning" if failed else "success", message
        )

    def _disconnect_notification(self, kind, message):
        return {
            "type": "ir.actions.client",
            "tag": "display_notification",
            "params": {"type": kind, "message": message, "sticky": kind != "success"},
        }

    def action_send_command(self):
        return self._action_command_wizard()

    def _action_command_wizard(self, fleet=None):
        return {
            "type": "ir.actions.act_window",
            "res_model": "iot.mqtt.command",
            "name": _("Send Command"),
            "views": [(False, "form")],
            "target": "new",
            "context": {
                "default_device_ids": self.ids,
                "default_fleet_id": fleet.id if fleet else False,
            },
        }

    def _topics(self):
        self.ensure_one()
        prefix = self.topic_prefix
        return {
            "telemetry": f"{prefix}/telemetry",
            "status": f"{prefix}/status",
            "commands": f"{prefix}/commands",
        }
