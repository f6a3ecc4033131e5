# License LGPL-3.0 or later (https://www.gnu.org/licenses/lgpl).
"""The database side of the listener (``odoo-bin iot-listen``, cli/): its
settings, its service credentials and the batched writes of what it heard.

One service credential per company, linked from the company
(``res.company.iot_listener_credential_id``, never looked up by name) and
named ``odoo_listener_<company id>`` when that name is free, whose only topic
rules (data/iot_acl_rule_data.xml) let it subscribe to the company's device
status and telemetry topics. Its secrets are session
secrets issued by the listener when it starts (and renewed before they
expire), kept in the listener's memory only: each running listener has its
own, so on Mosquitto each has its own login (``<username>~<secret id>``,
which is also its client id) and several listeners can share the load.
"""

import logging
import secrets
from collections import Counter
from datetime import timedelta

from psycopg2.extras import execute_values

from odoo import _, api, fields, models
from odoo.exceptions import UserError

from ..tools.client_ids import make_client_id
from ..tools.settings import bool_param, database_is_neutralized, number_param
from .iot_device_reading_history import (
    DEFAULT_HISTORY_CAP,
    DEFAULT_HISTORY_DAYS,
    HISTORY_CAP_PARAM,
    HISTORY_DAYS_PARAM,
)

_logger = logging.getLogger(__name__)

# the first name tried for a company's listener credential; when another
# credential holds it, ``<name>_2`` ... ``<name>_<MAX_LISTENER_NAMES>``
LISTENER_USERNAME = "odoo_listener_{company_id}"
MAX_LISTENER_NAMES = 20
LISTENER_RULE_XMLIDS = (
    "iot_base.iot_acl_rule_listener_status",
    "iot_base.iot_acl_rule_listener_telemetry",
)
HEARTBEAT_TIMEOUT_PARAM = "iot_base.listener_heartbeat_timeout"
DEFAULT_HEARTBEAT_TIMEOUT = 120
HISTORY_PARAM = "iot_base.listener_history"
HISTORY_INTERVAL_PARAM = "iot_base.listener_history_interval"
DEFAULT_HISTORY_INTERVAL = 60
SHARED_GROUP_PARAM = "iot_base.listener_shared_group"
MAX_PAYLOAD_PARAM = "iot_base.listener_max_payload"
DEFAULT_MAX_PAYLOAD = 8192
# a listener secret lives this long, and is renewed when less is left
SECRET_LIFETIME = timedelta(days=2)
SECRET_RENEW_BEFORE = timedelta(hours=12)


class IotListener(models.AbstractModel):
    _name = "iot.listener"
    _description = "MQTT Listener (database side)"

    # ------------------------------------------------------------------
    # Settings and plan
    # ------------------------------------------------------------------

    @api.model
    def _listener_settings(self):
        params = self.env["ir.config_parameter"].sudo()
        shared = (params.get_param(SHARED_GROUP_PARAM) or "").strip()
        return dict(
            self.env["iot.mqtt.client"]._settings(),
            mosquitto=self.env["iot.mosquitto.sync"].sudo()._is_enabled(),
            heartbeat_timeout=number_param(
                self.env,
                HEARTBEAT_TIMEOUT_PARAM,
                DEFAULT_HEARTBEAT_TIMEOUT,
                int,
                (5, 86400),
            ),
            history=bool_param(self.env, HISTORY_PARAM),
            history_interval=number_param(
                self.env,
                HISTORY_INTERVAL_PARAM,
                DEFAULT_HISTORY_INTERVAL,
                int,
                (1, 86400),
            ),
            history_days=number_param(
                self.env, HISTORY_DAYS_PARAM, DEFAULT_HISTORY_DAYS
            ),
            # a topic level: no wildcard, no separator
            shared_group=shared if shared.isidentifier() else "",
            max_payload=number_param(
                self.env, MAX_PAYLOAD_PARAM, DEFAULT_MAX_PAYLOAD, int, (64, 262144)
            ),
        )

    @api.model
    def _check_can_listen(self):
        if database_is_neutralized(self.env):
            raise UserError(
                _(
                    "This database is a neutralized copy: the listener does not "
                    "connect to any broker from it."
                )
            )

    @api.model
    def _listener_companies(self):
        return (
            self.env["res.company"]
            .sudo()
            .search([("iot_mqtt_namespace", "!=", False)], order="id")
        )

    @api.model
    def _listener_devices(self):
        """{username: (device id, company id)} of every live device, and
        {device id: presence state} (one query)."""
        self.env.cr.execute(
            """
            SELECT c.username, d.id, d.company_id, d.presence_state
              FROM iot_mqtt_device d
              JOIN iot_credentials c ON c.id = d.credential_id
             WHERE d.active AND c.active
            """
        )
        devices, states = {}, {}
        for username, device_id, company_id, state in self.env.cr.fetchall():
            devices[username] = (device_id, company_id)
            states[device_id] = state
        return devices, states

    @api.model
    def _listener_topics(self):
        """{(device id, topic)} of the stored last readings."""
        self.env.cr.execute("SELECT device_id, topic FROM iot_device_reading")
        return {(device_id, topic or "") for device_id, topic in self.env.cr.fetchall()}

    # ------------------------------------------------------------------
    # Credentials
    # ------------------------------------------------------------------

    @api.model
    def _listener_credential(self, company):
        """The company's listener credential, found by the company's link to
        it (never by its name, which someone may have taken first), made on
        first use; a revoked one stays revoked (the listener then skips the
        company)."""
        company = company.sudo()
        credential = company.iot_listener_credential_id
        if not credential:
            credential = self._listener_adopt(company) or self._listener_create(company)
            if not credential:
                return credential
            company.iot_listener_credential_id = credential
        rules = self.env["iot.acl.rule"].sudo()
        for xmlid in LISTENER_RULE_XMLIDS:
            rule = self.env.ref(xmlid, raise_if_not_found=False)
            if rule and credential not in rule.credential_ids:
                rules |= rule
        if rules:
            rules.write({"credential_ids": [(4, credential.id)]})
        return credential

    @api.model
    def _listener_adopt(self, company):
        """The listener credential this code made before companies linked
        theirs: the company's own service credential on the listener rules
        (which only this code, or an administrator, fills)."""
        credentials = self.env["iot.credentials"].sudo().browse()
        for xmlid in LISTENER_RULE_XMLIDS:
            rule = self.env.ref(xmlid, raise_if_not_found=False)
            if rule:
                rule = rule.sudo().with_context(active_test=False)
                credentials |= rule.credential_ids
        mine = credentials.filtered(
            lambda c: c.company_id == company and c.kind == "service" and not c.user_id
        )
        return mine[:1] if len(mine) == 1 else mine.browse()

    @api.model
    def _listener_create(self, company):
        """A new listener credential for ``company``, under the first free
        name of ``odoo_listener_<id>``, ``odoo_listener_<id>_2``...: a name
        someone else holds is skipped, never used or changed."""
        credentials = self.env["iot.credentials"].sudo().with_context(active_test=False)
        base = LISTENER_USERNAME.format(company_id=company.id)
        names = [base] + [f"{base}_{n}" for n in range(2, MAX_LISTENER_NAMES + 1)]
        taken = set(credentials.search([("username", "in", names)]).mapped("username"))
        free = [name for name in names if name not in taken]
        if not free:
            _logger.warning(
                "listener: the names %s to %s are all taken by other credentials:"
                " company %s is not listened to",
                names[0],
                names[-1],
                company.id,
            )
            return credentials.browse()
        if free[0] != base:
            _logger.info(
                "listener: %s is another credential's: company %s's listener is %s",
                base,
                company.id,
                free[0],
            )
        return credentials._create_odoo_credentials(
            {
                "username": free[0],
                "kind": "service",
                "company_id": company.id,
                "note": _(
                    "Odoo's listener (odoo-bin iot-listen): device status and "
                    "telemetry of %(company)s.",
                    company=company.name,
                ),
            }
        )

    @api.model
    def _install_listener_credentials(self):
        for company in self._listener_companies():
            self._listener_credential(company)

    @api.model
    def _listener_login(self, company, current=None):
        """The MQTT login of this listener for ``company``: a dict (username,
        client_id, password, expires_at, credential_id), ``current`` when
        still valid long enough, else made with a new session secret. None
        when the company's listener credential is revoked."""
        credential = self._listener_credential(company)
        if not credential.active or credential.is_expired:
            return None
        now = fields.Datetime.now()
        if (
            current
            and current["expires_at"] > now + SECRET_RENEW_BEFORE
            and credential._authenticate(credential.username, current["password"])
        ):
            return current
        issued = credential._issue_secret("session", SECRET_LIFETIME)
        secret, expires_at = issued.secret, issued.expires_at
        username = credential.username
        client_id = make_client_id(username, secrets.token_hex(6))
        login = (
            self.env["iot.mosquitto.sync"]
            .sudo()
            ._broker_login(username, issued.secret_id)
        )
        if login != username:
            # Mosquitto: one login per secret, and the login is the client id
            username = client_id = login
        return {
            "company_id": company.id,
            "credential_id": credential.id,
            "username": username,
            "client_id": client_id,
            "password": secret,
            "expires_at": expires_at,
        }

    # ------------------------------------------------------------------
    # Batched writes
    # ------------------------------------------------------------------

    @api.model
    def _listener_write(self, batch, heartbeat_timeout, now=None):
        """Write one batch of what the listener heard, in this transaction.

        ``batch``: dict of lists
        - presence: (device id, state or None, state_at, heartbeat_at, message_at)
        - readings: (device id, company id, topic, payload, is_json, received_at)
        - history: (device id, company id, topic, key, value, sampled_at)
        - throughput: (company id, minute, messages, dropped)
        Devices whose last heartbeat is older than ``heartbeat_timeout``
        seconds turn stale. Returns the presence changes notified on the bus,
        as (device id, company id, state, since).
        """
        cr = self.env.cr
        now = now or fields.Datetime.now()
        changes = []
        batch = self._listener_live_rows(batch)
        if batch.get("presence"):
            rows = execute_values(
                cr,
                """
                WITH v (id, state, state_at, heartbeat_at, message_at) AS (VALUES %s),
                old AS (
                    SELECT d.id, d.presence_state
                      FROM iot_mqtt_device d JOIN v ON v.id = d.id
                     ORDER BY d.id FOR NO KEY UPDATE OF d
                )
                UPDATE iot_mqtt_device d
                   SET presence_state = COALESCE(v.state, CASE
                           WHEN d.presence_state = 'offline' THEN 'offline'
                           ELSE 'online' END),
                       presence_since = CASE
                           WHEN COALESCE(v.state, CASE
                                WHEN d.presence_state = 'offline' THEN 'offline'
                                ELSE 'online' END) = d.presence_state
                           THEN COALESCE(d.presence_since, v.state_at)
                           ELSE v.state_at END,
                       presence_reason = CASE
                           WHEN COALESCE(v.state, CASE
                                WHEN d.presence_state = 'offline' THEN 'offline'
                                ELSE 'online' END) = d.presence_state
                           THEN d.presence_reason END,
                       presence_heartbeat_at = GREATEST(
                           d.presence_heartbeat_at, v.heartbeat_at),
                       last_message_at = GREATEST(d.last_message_at, v.message_at)
                  FROM v JOIN old ON old.id = v.id
                 WHERE d.id = v.id
             RETURNING d.id, d.company_id, d.presence_state, d.presence_since,
                       old.presence_state
                """,
                batch["presence"],
                template=(
                    "(%s, %s::varchar, %s::timestamp, %s::timestamp, %s::timestamp)"
                ),
                fetch=True,
            )
            changes.extend(row[:4] for row in rows if row[2] != row[4])
        if batch.get("readings"):
            execute_values(
                cr,
                """
                INSERT INTO iot_device_reading AS r
                       (device_id, company_id, topic, payload, is_json, received_at,
                        create_date, write_date, create_uid, write_uid)
                VALUES %s
                ON CONFLICT (device_id, topic) DO UPDATE
                   SET payload = EXCLUDED.payload, is_json = EXCLUDED.is_json,
                       received_at = EXCLUDED.received_at,
                       write_date = EXCLUDED.write_date
                 WHERE r.received_at IS NULL OR r.received_at <= EXCLUDED.received_at
                """,
                [
                    row + (now, now, self.env.uid, self.env.uid)
                    for row in batch["readings"]
                ],
            )
        if batch.get("history"):
            self._listener_write_history(batch["history"], now)
        if batch.get("throughput"):
            execute_values(
                cr,
                """
                INSERT INTO iot_throughput AS t
                       (company_id, minute, messages, dropped,
                        create_date, write_date, create_uid, write_uid)
                VALUES %s
                ON CONFLICT (company_id, minute) DO UPDATE
                   SET messages = t.messages + EXCLUDED.messages,
                       dropped = t.dropped + EXCLUDED.dropped,
                       write_date = EXCLUDED.write_date
                """,
                [
                    row + (now, now, self.env.uid, self.env.uid)
                    for row in batch["throughput"]
                ],
            )
        changes.extend(self._listener_mark_stale(heartbeat_timeout, now))
        if changes:
            self.env["iot.mqtt.device"].invalidate_model(
                ["presence_state", "presence_since"]
            )
            self.env["iot.mqtt.device"]._notify_presence(changes)
        return changes

    @api.model
    def _listener_write_history(self, rows, now):
        """Upsert the history ``rows``, at most the daily cap of new rows per
        device (counted on the device row, locked by _listener_live_rows, so
        that several listeners share one count): past it, a device's rows are
        dropped until the next UTC day."""
        cr = self.env.cr
        cap = number_param(self.env, HISTORY_CAP_PARAM, DEFAULT_HISTORY_CAP)
        today = now.date()
        cr.execute(
            "SELECT id, history_day, history_day_rows FROM iot_mqtt_device"
            " WHERE id = ANY(%s)",
            [sorted({row[0] for row in rows})],
        )
        used = {
            device_id: count if day == today else 0
            for device_id, day, count in cr.fetchall()
        }
        kept, full = [], set()
        room = {device_id: cap - count for device_id, count in used.items()}
        # oldest first: what is kept of a batch is the start of the day's story
        for row in sorted(rows, key=lambda row: (row[5], row[2], row[3])):
            if room.get(row[0], 0) > 0:
                room[row[0]] -= 1
                kept.append(row + (now, now, self.env.uid, self.env.uid))
            elif used.get(row[0], cap) < cap:
                full.add(row[0])  # reached in this batch: said once a day
        if not kept:
            return
        inserted = execute_values(
            cr,
            """
            INSERT INTO iot_device_reading_history AS h
                   (device_id, company_id, topic, key, value, sampled_at,
                    create_date, write_date, create_uid, write_uid)
            VALUES %s
            ON CONFLICT (device_id, topic, key, sampled_at) DO UPDATE
               SET value = EXCLUDED.value, write_date = EXCLUDED.write_date
            RETURNING h.device_id, (h.xmax = 0)
            """,
            kept,
            fetch=True,
        )
        # only new rows count (an interval's later values update its row)
        added = Counter(device_id for device_id, new in inserted if new)
        if added:
            execute_values(
                cr,
                """
                UPDATE iot_mqtt_device d
                   SET history_day = v.day, history_day_rows = v.rows
                  FROM (VALUES %s) AS v (id, day, rows)
                 WHERE d.id = v.id
                """,
                [
                    (device_id, today, used[device_id] + count)
                    for device_id, count in sorted(added.items())
                ],
                template="(%s, %s::date, %s)",
            )
        for device_id in sorted(full):
            _logger.info(
                "device %s reached its %d history rows of the day: more are"
                " dropped until midnight UTC",
                device_id,
                cap,
            )

    @api.model
    def _listener_live_rows(self, batch):
        """``batch`` without the rows of devices deleted since the listener
        read them (their rows would break the foreign keys), the others
        locked until the commit, in one statement in id order (another
        listener's flush waits instead of deadlocking)."""
        ids = {
            row[0]
            for key in ("presence", "readings", "history")
            for row in batch.get(key) or ()
        }
        if not ids:
            return batch
        self.env["iot.mqtt.device"].flush_model(["active", "credential_id"])
        self.env["iot.credentials"].flush_model(["active"])
        self.env.cr.execute(
            "SELECT d.id, d.active AND COALESCE(c.active, false)"
            "  FROM iot_mqtt_device d"
            "  LEFT JOIN iot_credentials c ON c.id = d.credential_id"
            " WHERE d.id = ANY(%s)"
            " ORDER BY d.id FOR NO KEY UPDATE OF d",
            [sorted(ids)],
        )
        rows = self.env.cr.fetchall()
        live = {row[0] for row in rows}
        # a device revoked since the listener read the devices: what it was
        # still heard saying does not make it online again (Odoo set it
        # offline, with the reason, when it was revoked)
        allowed = {row[0] for row in rows if row[1]}
        if live == ids and allowed == ids:
            return batch
        return dict(
            batch,
            presence=[row for row in batch.get("presence") or () if row[0] in allowed],
            **{
                key: [row for row in batch.get(key) or () if row[0] in live]
                for key in ("readings", "history")
            },
        )

    @api.model
    def _listener_mark_stale(self, heartbeat_timeout, now):
        """Online devices silent for longer than the heartbeat timeout turn
        stale (in SQL: with several listeners, none sees every heartbeat); a
        revoked one (left online by a version that did not set it offline on
        revocation) turns offline, revoked, never stale."""
        limit = now - timedelta(seconds=heartbeat_timeout)
        self.env.cr.execute(
            """
            UPDATE iot_mqtt_device d
               SET presence_state = CASE WHEN d.active AND COALESCE(c.active, false)
                                         THEN 'stale' ELSE 'offline' END,
                   presence_reason = CASE WHEN d.active AND COALESCE(c.active, false)
                                          THEN NULL ELSE 'revoked' END,
                   presence_since = %s
              FROM iot_mqtt_device d2
              LEFT JOIN iot_credentials c ON c.id = d2.credential_id
             WHERE d2.id = d.id
               AND d.presence_state = 'online'
               AND GREATEST(d.presence_heartbeat_at, d.last_message_at,
                            d.presence_since) < %s
         RETURNING d.id, d.company_id, d.presence_state, d.presence_since,
                   d.presence_reason
            """,
            [now, limit],
        )
        return self.env.cr.fetchall()
