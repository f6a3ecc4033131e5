# License LGPL-3.0 or later (https://www.gnu.org/licenses/lgpl).
"""Acknowledged commands: one command to one device, with an id the device
echoes in its answer, a timeout and a state.

Odoo publishes on ``<ns>/devices/<username>/commands/<command>`` (QoS 1)::

    {"id": "<32 hex>", "command": "reboot", "payload": {...},
     "timeout": 30, "reply_to": "<ns>/devices/<username>/status/reply"}

and the device answers on ``<ns>/devices/<username>/status/reply`` (its
``status/#`` subtree, which the shipped rules already let it publish and the
listener read)::

    {"id": "<the same id>", "state": "acknowledged" | "done" | "failed",
     "result": <any JSON>}

The listener (cli/listener.py) writes the answers in its batches, matching
the id *and* the device the answer came from: a device never completes
another device's command. The answer is kept as the text received (bounded
by the listener's payload limit), never evaluated.
"""

import json
import logging
import re
import secrets
from datetime import datetime, timedelta, timezone

from psycopg2.extras import execute_values

from odoo import _, api, fields, models
from odoo.exceptions import UserError, ValidationError

from ..tools.settings import number_param

_logger = logging.getLogger(__name__)

COMMAND_RE = re.compile(r"^[A-Za-z0-9_.\-]{1,64}$")
ID_RE = re.compile(r"^[0-9a-f]{32}$")
REPLY_SUBTOPIC = "reply"  # <ns>/devices/<username>/status/reply
MAX_PAYLOAD = 8192  # bytes of the JSON payload Odoo sends
DEFAULT_TIMEOUT = 30
MAX_TIMEOUT_PARAM = "iot_base.command_max_timeout"
DEFAULT_MAX_TIMEOUT = 3600
RETENTION_PARAM = "iot_base.command_retention_days"
DEFAULT_RETENTION_DAYS = 30
# states an answer may move a request out of, per answered state
ANSWER_STATES = ("acknowledged", "done", "failed")
FINAL_STATES = ("done", "failed", "timed_out")


def new_command_id():
    """128 random bits: an id nobody can guess (a device must never learn
    another device's command ids from their shape)."""
    return secrets.token_hex(16)


class IotMqttCommandRequest(models.Model):
    _name = "iot.mqtt.command.request"
    _description = "MQTT Command (acknowledged)"
    _order = "id desc"
    _rec_name = "command"

    name = fields.Char(
        "Command ID",
        required=True,
        readonly=True,
        copy=False,
        # indexed by its UNIQUE constraint (a second index would only cost)
        default=lambda self: new_command_id(),
    )
    device_id = fields.Many2one(
        "iot.mqtt.device",
        required=True,
        readonly=True,
        index=True,
        ondelete="cascade",
    )
    company_id = fields.Many2one(
        "res.company",
        related="device_id.company_id",
        store=True,
        readonly=True,
        index=True,
    )
    command = fields.Char(required=True, readonly=True)
    payload = fields.Text(readonly=True, default="{}")
    timeout = fields.Integer(
        "Timeout (s)", required=True, readonly=True, default=DEFAULT_TIMEOUT
    )
    state = fields.Selection(
        [
            ("queued", "Queued"),
            ("sent", "Sent"),
            ("acknowledged", "Acknowledged"),
            ("done", "Done"),
            ("failed", "Failed"),
            ("timed_out", "Timed Out"),
        ],
        required=True,
        readonly=True,
        default="queued",
        index=True,
    )
    sent_at = fields.Datetime(readonly=True)
    answered_at = fields.Datetime(readonly=True)
    answer = fields.Text(readonly=True, help="The device's last answer, as received.")

    _sql_constraints = [
        ("name_unique", "UNIQUE(name)", "A command id is unique."),
        ("timeout_positive", "CHECK(timeout > 0)", "A timeout is positive."),
    ]

    @api.constrains("command")
    def _check_command(self):
        for request in self:
            if not COMMAND_RE.fullmatch(request.command or ""):
                raise ValidationError(
                    _("A command name is one topic level: letters, digits, . _ -")
                )

    @api.constrains("payload")
    def _check_payload(self):
        for request in self:
            if len((request.payload or "").encode()) > MAX_PAYLOAD:
                raise ValidationError(
                    _(
                        "A command payload is at most %(max)s bytes of JSON.",
                        max=MAX_PAYLOAD,
                    )
                )
            try:
                json.loads(request.payload or "null")
            except ValueError as exc:
                raise ValidationError(
                    _("The payload must be JSON: %(error)s", error=exc)
                ) from exc

    @api.constrains("timeout")
    def _check_timeout(self):
        high = self._max_timeout()
        for request in self:
            if not 1 <= request.timeout <= high:
                raise ValidationError(
                    _(
                        "A command timeout is between 1 and %(max)s seconds.",
                        max=high,
                    )
                )

    @api.model
    def _max_timeout(self):
        return number_param(
            self.env, MAX_TIMEOUT_PARAM, DEFAULT_MAX_TIMEOUT, int, (1, 86400)
        )

    # ------------------------------------------------------------------
    # Sending
    # ------------------------------------------------------------------

    @api.model
    def _create_and_send(self, devices, command, payload=None, timeout=None):
        """One request per device of ``devices``, published at once (one
        broker connection); returns the requests, sent. The caller must be
        allowed to write the devices (checked as the caller: record rules
        per company); the requests are written as superuser, so nobody sets
        a state or an answer by hand. Raises UserError (the broker's words)
        when the broker does not take them: nothing is then recorded."""
        devices = devices.filtered("active")
        if not devices:
            raise UserError(_("No active device to send the command to."))
        devices.check_access("write")
        body = json.dumps(payload if payload is not None else {})
        requests = self.sudo().create(
            [
                {
                    "device_id": device.id,
                    "command": command,
                    "payload": body,
                    "timeout": timeout or DEFAULT_TIMEOUT,
                }
                for device in devices
            ]
        )
        requests._publish()
        return requests.with_env(self.env)

    def _message(self):
        self.ensure_one()
        topics = self.device_id._topics()
        return (
            f"{topics['commands']}/{self.command}",
            json.dumps(
                {
                    "id": self.name,
                    "command": self.command,
                    "payload": json.loads(self.payload or "null"),
                    "timeout": self.timeout,
                    "reply_to": f"{topics['status']}/{REPLY_SUBTOPIC}",
                }
            ),
            1,
            False,
        )

    def _publish(self):
        """Publish the queued requests of ``self`` and mark them sent. The
        state is written before the publish, in this transaction: an answer
        the listener hears before the commit is retried by it for a few
        seconds (cli/listener.py, ANSWER_RETRY)."""
        queued = self.filtered(lambda r: r.state == "queued")
        if not queued:
            return 0
        queued.sudo().write({"state": "sent", "sent_at": fields.Datetime.now()})
        return self.env["iot.mqtt.client"]._publish(
            [request._message() for request in queued]
        )

    # ------------------------------------------------------------------
    # Timeouts and retention
    # ------------------------------------------------------------------

    @api.model
    def _mark_timed_out(self, now=None):
        """Sent or acknowledged requests without a final answer within
        their timeout turn timed_out (in SQL: the listener's sweep and the
        cron alike). Returns their ids. (``sent_at`` is stored to the second,
        rounded down: a timeout may end up to a second early, never late.)"""
        # not rounded to the second, as fields.Datetime.now() is
        now = now or datetime.now(timezone.utc).replace(tzinfo=None)
        self.flush_model()
        self.env.cr.execute(
            """
            UPDATE iot_mqtt_command_request
               SET state = 'timed_out', write_date = %s
             WHERE state IN ('sent', 'acknowledged')
               AND sent_at + timeout * interval '1 second' < %s
         RETURNING id
            """,
            [now, now],
        )
        ids = [row[0] for row in self.env.cr.fetchall()]
        if ids:
            self.invalidate_model(["state"])
        return ids

    @api.model
    def _cron_sweep(self):
        self._mark_timed_out()
        days = number_param(self.env, RETENTION_PARAM, DEFAULT_RETENTION_DAYS)
        limit = fields.Datetime.now() - timedelta(days=days)
        self.flush_model()
        self.env.cr.execute(
            "DELETE FROM iot_mqtt_command_request"
            " WHERE state IN %s AND create_date < %s",
            [FINAL_STATES, limit],
        )

    # ------------------------------------------------------------------
    # Answers (the listener's batches)
    # ------------------------------------------------------------------

    @api.model
    def _listener_write_answers(self, rows):
        """Write the devices' answers ``rows``: (device id, company id,
        command id, state, answer text, answered_at). An answer moves its
        request only when the id is of a request *of that device and
        company*, sent or acknowledged (a final answer also from
        acknowledged); anything else changes nothing.

        Returns (written, unknown, refused): the rows written, the rows
        whose id no request has (yet: the sender may not have committed),
        the rows whose id is another device's request or already final."""
        if not rows:
            return [], [], []
        self.flush_model()
        # one answer per request and batch, the final one first
        updated = execute_values(
            self.env.cr,
            """
            WITH v (device_id, company_id, uid, state, answer, answered_at)
                 AS (VALUES %s)
            UPDATE iot_mqtt_command_request r
               SET state = w.state, answer = w.answer,
                   answered_at = w.answered_at, write_date = w.answered_at
              FROM (SELECT DISTINCT ON (uid, device_id, company_id) * FROM v
                     ORDER BY uid, device_id, company_id,
                              (state = 'acknowledged'), answered_at DESC) w
             WHERE r.name = w.uid
               AND r.device_id = w.device_id
               AND r.company_id = w.company_id
               AND (r.state = 'sent'
                    OR (r.state = 'acknowledged' AND w.state IN ('done', 'failed')))
         RETURNING r.name, r.device_id, r.company_id
            """,
            rows,
            template=(
                "(%s::int, %s::int, %s::varchar, %s::varchar, %s::text,"
                " %s::timestamp)"
            ),
            fetch=True,
        )
        written_keys = set(updated)
        self.env.cr.execute(
            "SELECT name FROM iot_mqtt_command_request WHERE name = ANY(%s)",
            [sorted({row[2] for row in rows})],
        )
        existing = {uid for (uid,) in self.env.cr.fetchall()}
        written, unknown, refused = [], [], []
        for row in rows:
            if (row[2], row[0], row[1]) in written_keys:
                written.append(row)
            elif row[2] in existing:
                refused.append(row)
            else:
                unknown.append(row)
        if written:
            self.invalidate_model(["state", "answer", "answered_at"])
        return written, unknown, refused


# the device's side of the commands, here beside them (as the presence's in
# iot_mqtt_device_presence.py): one feature per file
class IotMqttDevice(models.Model):
    _inherit = "iot.mqtt.device"  # pylint: disable=consider-merging-classes-inherited

    command_request_ids = fields.One2many(
        "iot.mqtt.command.request",
        "device_id",
        string="Commands",
        readonly=True,
        groups="iot_base.iot_base_group_manager",
    )

    def _send_command(self, command, payload=None, timeout=None):
        """Send ``command`` with ``payload`` (JSON-serialisable) to each
        device of ``self`` and ask for an answer within ``timeout`` seconds;
        returns the requests (one per device), sent. For automation and
        other addons, as the caller (who must be allowed to write the
        devices)."""
        return self.env["iot.mqtt.command.request"]._create_and_send(
            self, command, payload, timeout
        )

    def send_command(self, command, payload=None, timeout=None):
        """``_send_command`` over RPC: the ids of the requests."""
        return self._send_command(command, payload, timeout).ids
