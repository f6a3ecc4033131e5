# License LGPL-3.0 or later (https://www.gnu.org/licenses/lgpl).
from datetime import timedelta

from odoo import _, api, fields, models

from .iot_mqtt_device_presence import PRESENCE_STATES

SERIES_MINUTES = 60
LOGIN_HOURS = 24
RECENT_LOGINS = 10


class IotFleetDashboard(models.AbstractModel):
    """The data of IoT > Fleet (static/src/fleet): presence counts, the
    messages of the last hour per minute, the refused logins of the last day
    per hour, the last refused logins and the choices of the device list's
    filters. Everything is read with the caller's rights, for the companies
    they work in (``self.env.companies``): never a sudo read."""

    _name = "iot.fleet.dashboard"
    _description = "IoT Fleet Dashboard"

    @api.model
    def get_dashboard_data(self):
        company_ids = self.env.companies.ids
        now = fields.Datetime.now()
        data = {
            "now": fields.Datetime.to_string(now),
            "labels": dict(PRESENCE_STATES),
            "reasons": dict(
                self.env["iot.mqtt.device"]
                ._fields["presence_reason"]
                ._description_selection(self.env)
            ),
            "presence": self._presence_counts(company_ids),
            "filters": self._filter_choices(),
        }
        data.update(self._throughput(company_ids, now))
        data.update(self._refused_logins(company_ids, now))
        return data

    def _presence_counts(self, company_ids):
        Device = self.env["iot.mqtt.device"]
        counts = dict.fromkeys(dict(PRESENCE_STATES), 0)
        for state, count in Device._read_group(
            [("company_id", "in", company_ids)], ["presence_state"], ["__count"]
        ):
            counts[state] = count
        return counts

    def _throughput(self, company_ids, now):
        """Messages per minute over the last hour, the current minute
        included (the listener adds to it once per batch: it is partial)."""
        current = now.replace(second=0, microsecond=0)
        minutes = [
            current - timedelta(minutes=offset)
            for offset in range(SERIES_MINUTES - 1, -1, -1)
        ]
        messages = dict.fromkeys(minutes, 0)
        dropped = 0
        Throughput = self.env["iot.throughput"]
        can_read = Throughput.has_access("read")
        if can_read:
            # a row per company and minute: at most 60 per company
            for row in Throughput.search_read(
                [("company_id", "in", company_ids), ("minute", ">=", minutes[0])],
                ["minute", "messages", "dropped"],
            ):
                minute = row["minute"].replace(second=0, microsecond=0)
                if minute in messages:
                    messages[minute] += row["messages"]
                dropped += row["dropped"]
        return {
            "series": [
                {
                    "minute": fields.Datetime.to_string(minute),
                    "messages": count,
                    "partial": minute == current,
                }
                for minute, count in messages.items()
            ],
            "messages_this_minute": messages[current],
            "messages_last_minute": messages[current - timedelta(minutes=1)],
            "dropped_last_hour": dropped,
            "can_see_throughput": can_read,
        }

    def _refused_logins(self, company_ids, now):
        """Refused logins (not topic checks) per hour over the last day, and
        the last ones. A login refused before Odoo knew whose it was has no
        company: the record rules show it to administrators only."""
        Log = self.env["iot.auth.log"]
        if not Log.has_access("read"):
            return {
                "can_see_logins": False,
                "logins_per_hour": [],
                "refused_logins": [],
            }
        current = now.replace(minute=0, second=0, microsecond=0)
        hours = [
            current - timedelta(hours=offset)
            for offset in range(LOGIN_HOURS - 1, -1, -1)
        ]
        domain = [
            ("result", "=", "deny"),
            ("action", "=", False),
            "|",
            ("company_id", "=", False),
            ("company_id", "in", company_ids),
        ]
        counts = dict.fromkeys(hours, 0)
        # bucketed in UTC, as the minutes are (the browser shows local times)
        for hour, count in Log.with_context(tz="UTC")._read_group(
            domain + [("create_date", ">=", hours[0])],
            ["create_date:hour"],
            ["__count"],
        ):
            hour = hour.replace(tzinfo=None)
            if hour in counts:
                counts[hour] += count
        reasons = dict(Log._fields["reason"]._description_selection(self.env))
        unknown = _("unknown")
        recent = [
            {
                "id": entry.id,
                # what the broker sent; nothing sent is not "false"
                "username": entry.username or unknown,
                "clientid": entry.clientid or unknown,
                "peer": entry.peer or "",
                "reason": reasons.get(entry.reason, ""),
                "at": fields.Datetime.to_string(entry.create_date),
            }
            for entry in Log.search(
                domain, limit=RECENT_LOGINS, order="create_date desc, id desc"
            )
        ]
        return {
            "can_see_logins": True,
            "logins_per_hour": [
                {"hour": fields.Datetime.to_string(hour), "count": count}
                for hour, count in counts.items()
            ],
            "refused_logins": recent,
        }

    def _filter_choices(self):
        """The device list's filters: the fleets, tags and companies the
        user can see (the fleets' record rules apply)."""
        company_ids = self.env.companies.ids
        fleets = self.env["iot.mqtt.fleet"].search(
            [("company_id", "in", company_ids)], order="name"
        )
        tags = self.env["iot.mqtt.device.tag"].search([], order="name")
        return {
            "fleets": [[fleet.id, fleet.display_name] for fleet in fleets],
            "tags": [[tag.id, tag.display_name] for tag in tags],
            "companies": [
                [company.id, company.display_name] for company in self.env.companies
            ],
        }

    @api.model
    def get_device_peers(self, device_ids):
        """The address of each device's last accepted login, where the user
        may read Broker Decisions: ``{device id: peer}``."""
        Log = self.env["iot.auth.log"]
        if not Log.has_access("read"):
            return {}
        # search, not browse: another company's device is not read
        devices = self.env["iot.mqtt.device"].search([("id", "in", device_ids)])
        by_credential = {d.credential_id.id: d.id for d in devices if d.credential_id}
        last = Log._read_group(
            [
                ("credential_id", "in", list(by_credential)),
                ("result", "=", "allow"),
                ("action", "=", False),
                ("peer", "!=", False),
            ],
            ["credential_id"],
            ["id:max"],
        )
        entries = Log.browse([entry_id for _credential, entry_id in last])
        return {by_credential[entry.credential_id.id]: entry.peer for entry in entries}
