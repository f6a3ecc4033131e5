# License LGPL-3.0 or later (https://www.gnu.org/licenses/lgpl).
from datetime import timedelta

from odoo import _, api, fields, models
from odoo.tools import SQL

PRESENCE_STATES = [
    ("unknown", "Never Seen"),
    ("online", "Online"),
    ("offline", "Offline"),
    ("stale", "Stale"),
]
# Why a device is offline when Odoo, not the device, ended its connection:
# set at once by the change that ended it (never a green "Online" next to a
# red "Revoked"), cleared by the next presence change the listener hears.
PRESENCE_REASONS = [
    ("revoked", "Revoked"),
    ("owner_archived", "Owner Archived"),
    ("token_regenerated", "New Broker Token"),
    ("deleted", "Deleted"),
]
# the bus notification type of presence changes (static/src/presence_badge)
PRESENCE_NOTIFICATION = "iot_base.presence"
# the bus channel tag of a company's fleet (see ir_websocket.py)
FLEET_CHANNEL = "iot_fleet"
DASHBOARD_LOGINS = 10


class IotMqttDevice(models.Model):
    """What the listener (``odoo-bin iot-listen``) learns of each device:
    its presence and its last readings. The listener writes these columns
    in SQL, in batches; the ORM only reads them."""

    _inherit = "iot.mqtt.device"

    presence_state = fields.Selection(
        PRESENCE_STATES,
        "Presence",
        default="unknown",
        required=True,
        readonly=True,
        copy=False,
        index=True,
    )
    presence_since = fields.Datetime(readonly=True, copy=False)
    presence_reason = fields.Selection(
        PRESENCE_REASONS,
        "Offline Because",
        readonly=True,
        copy=False,
        help="Set when a change in Odoo ended the device's connection "
        "(revoked, owner archived, new broker token); cleared by the next "
        "presence change the listener hears.",
    )
    presence_heartbeat_at = fields.Datetime("Last Heartbeat", readonly=True, copy=False)
    last_message_at = fields.Datetime("Last Message", readonly=True, copy=False)
    # the last login (broker) or the last message (listener), the later
    last_seen = fields.Datetime(compute="_compute_last_seen", related=False)
    reading_ids = fields.One2many(
        "iot.device.reading", "device_id", string="Last Readings", readonly=True
    )
    # the daily cap of history rows (iot.listener._listener_write_history)
    history_day = fields.Date("History Rows Day", readonly=True, copy=False)
    history_day_rows = fields.Integer(
        "History Rows That Day", readonly=True, copy=False
    )

    @api.depends("credential_id.last_auth_at", "last_message_at")
    def _compute_last_seen(self):
        for device in self:
            times = [
                t
                for t in (device.credential_id.last_auth_at, device.last_message_at)
                if t
            ]
            device.last_seen = max(times) if times else False

    def action_view_history(self):
        self.ensure_one()
        action = self.env["ir.actions.act_window"]._for_xml_id(
            "iot_base.iot_device_reading_history_action"
        )
        action["domain"] = [("device_id", "=", self.id)]
        action["context"] = {}
        return action

    # ------------------------------------------------------------------
    # Fleet dashboard
    # ------------------------------------------------------------------

    @api.model
    def get_fleet_dashboard(self):
        """Counts for the Fleet dashboard, read with the caller's rights (a
        manager sees the companies they are allowed in, nothing else)."""
        company_domain = [("company_id", "in", self.env.companies.ids)]
        counts = dict.fromkeys(dict(PRESENCE_STATES), 0)
        for state, count in self._read_group(
            company_domain, ["presence_state"], ["__count"]
        ):
            counts[state] = count
        now = fields.Datetime.now().replace(second=0, microsecond=0)
        throughput = self.env["iot.throughput"]
        series = dict.fromkeys(
            (now - timedelta(minutes=offset) for offset in range(60, 0, -1)), 0
        )
        dropped = 0
        # a row per company and minute: at most 60 per company
        for row in throughput.search_read(
            company_domain + [("minute", ">=", min(series))],
            ["minute", "messages", "dropped"],
        ):
            if row["minute"] in series:
                series[row["minute"]] += row["messages"]
            dropped += row["dropped"]
        last_complete = now - timedelta(minutes=1)
        logins = []
        auth_log = self.env["iot.auth.log"]
        if auth_log.has_access("read"):
            for entry in auth_log.search(
                [("result", "=", "deny"), ("action", "=", False)],
                limit=DASHBOARD_LOGINS,
                order="create_date desc, id desc",
            ):
                logins.append(
                    {
                        "id": entry.id,
                        "username": entry.username,
                        "clientid": entry.clientid,
                        "reason": dict(
                            entry._fields["reason"]._description_selection(self.env)
                        ).get(entry.reason, ""),
                        "at": fields.Datetime.to_string(entry.create_date),
                    }
                )
        return {
            "presence": counts,
            "messages_per_minute": series.get(last_complete, 0),
            "dropped_last_hour": dropped,
            "series": [
                {"minute": fields.Datetime.to_string(minute), "messages": count}
                for minute, count in series.items()
            ],
            "refused_logins": logins,
            "can_see_logins": auth_log.has_access("read"),
            "labels": dict(PRESENCE_STATES),
            "title": _("Fleet"),
        }

    # ------------------------------------------------------------------
    # Bus
    # ------------------------------------------------------------------

    @api.model
    def _notify_presence(self, changes):
        """Tell the companies' browsers about presence changes: ``changes``
        is a list of (device id, company id, state, since[, reason])."""
        by_company = {}
        for device_id, company_id, state, since, *reason in changes:
            by_company.setdefault(company_id, []).append(
                {
                    "id": device_id,
                    "presence_state": state,
                    "presence_since": fields.Datetime.to_string(since)
                    if since
                    else False,
                    "presence_reason": reason[0] if reason else False,
                }
            )
        bus = self.env["bus.bus"].sudo()
        for company_id, devices in by_company.items():
            bus._sendone(
                (self.env["res.company"].browse(company_id), FLEET_CHANNEL),
                PRESENCE_NOTIFICATION,
                {"devices": devices},
            )
        return list(by_company)

    # ------------------------------------------------------------------
    # Presence ended by Odoo
    # ------------------------------------------------------------------

    @api.model
    def _presence_cut(self, devices, reason):
        """``devices`` are offline from now on because of ``reason`` (one of
        :data:`PRESENCE_REASONS`): Odoo ended or refuses their connection.
        Online and stale devices turn offline; a never-seen one stays never
        seen; each gets the reason. Written in SQL (the listener writes the
        same columns) and announced on the bus at the commit, so that open
        badges and Fleet pages change at once. Returns the changes."""
        if not devices:
            return []
        now = fields.Datetime.now()
        self.env.cr.execute(
            SQL(
                """
            UPDATE iot_mqtt_device
               SET presence_state = CASE WHEN presence_state = 'unknown'
                                         THEN 'unknown' ELSE 'offline' END,
                   presence_since = CASE WHEN presence_state IN ('online', 'stale')
                                         THEN %(now)s ELSE presence_since END,
                   presence_reason = %(reason)s
             WHERE id IN %(ids)s
               AND (presence_state IN ('online', 'stale')
                    OR presence_reason IS DISTINCT FROM %(reason)s)
         RETURNING id, company_id, presence_state, presence_since, presence_reason
            """,
                now=now,
                reason=reason,
                ids=tuple(devices.ids),
            )
        )
        changes = self.env.cr.fetchall()
        self.invalidate_model(["presence_state", "presence_since", "presence_reason"])
        if changes:
            self._notify_presence(changes)
        return changes

    @api.model
    def _presence_cut_credentials(self, credentials, reason):
        """:meth:`_presence_cut` of the devices of ``credentials``."""
        if not credentials:
            return []
        devices = (
            self.sudo()
            .with_context(active_test=False)
            .search([("credential_id", "in", credentials.ids)])
        )
        return self._presence_cut(devices, reason)

    @api.model
    def _presence_clear_reason(self, devices):
        """A restored device: what ended its connection no longer holds (it
        stays offline until the listener hears it)."""
        if not devices:
            return
        self.env.cr.execute(
            SQL(
                "UPDATE iot_mqtt_device SET presence_reason = NULL"
                " WHERE id IN %s AND presence_reason IS NOT NULL"
                " RETURNING id, company_id, presence_state, presence_since",
                tuple(devices.ids),
            )
        )
        changes = self.env.cr.fetchall()
        self.invalidate_model(["presence_reason"])
        if changes:
            self._notify_presence(changes)

    def unlink(self):
        gone = [
            (device.id, device.company_id.id, "offline", False, "deleted")
            for device in self.sudo()
        ]
        res = super().unlink()
        # open Fleet pages and lists drop them at once
        self._notify_presence(gone)
        return res
