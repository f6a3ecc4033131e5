# License LGPL-3.0 or later (https://www.gnu.org/licenses/lgpl).
from datetime import timedelta

from odoo import api, fields, models
from odoo.tools import SQL

DEFAULTS = {
    "iot_base.throttle_max_failures": 10,
    "iot_base.throttle_window_seconds": 60,
    "iot_base.throttle_cooldown_seconds": 300,
}


class IotAuthThrottle(models.Model):
    """Failed authentications per username and per peer address.

    Written only on failures; a request only reads it, so the allow path
    never contends on it. Shared by all workers through the database.
    """

    _name = "iot.auth.throttle"
    _description = "MQTT Authentication Throttle"
    _log_access = False

    key = fields.Char(required=True, readonly=True)
    failures = fields.Integer(readonly=True)
    window_start = fields.Datetime(readonly=True)
    blocked_until = fields.Datetime(readonly=True, index=True)

    _sql_constraints = [("key_unique", "unique(key)", "One row per key.")]

    @api.model
    def _settings(self):
        params = self.env["ir.config_parameter"].sudo()
        values = {}
        for key, default in DEFAULTS.items():
            try:
                value = int(params.get_param(key, default))
            except (TypeError, ValueError):
                value = default
            values[key.rsplit(".", 1)[1]] = value if value > 0 else default
        return values

    @api.model
    def _keys(self, username, peer):
        keys = [f"user:{username}"[:300]]
        if peer:
            keys.append(f"peer:{peer}"[:300])
        return keys

    @api.model
    def _is_blocked(self, username, peer):
        self.env.cr.execute(
            SQL(
                "SELECT 1 FROM iot_auth_throttle"
                " WHERE key IN %s AND blocked_until > %s LIMIT 1",
                tuple(self._keys(username, peer)),
                fields.Datetime.now(),
            )
        )
        return bool(self.env.cr.rowcount)

    @api.model
    def _register_failure(self, username, peer):
        settings = self._settings()
        now = fields.Datetime.now()
        window_start = now - timedelta(seconds=settings["throttle_window_seconds"])
        blocked_until = now + timedelta(seconds=settings["throttle_cooldown_seconds"])
        # one statement for both keys (rows locked in the same order as before)
        self.env.cr.execute(
            SQL(
                """
            INSERT INTO iot_auth_throttle AS t (key, failures, window_start)
            SELECT key, 1, %(now)s FROM unnest(%(keys)s::varchar[]) AS key
            ON CONFLICT (key) DO UPDATE SET
                failures = CASE WHEN t.window_start < %(window_start)s
                                THEN 1 ELSE t.failures + 1 END,
                window_start = CASE WHEN t.window_start < %(window_start)s
                                    THEN %(now)s ELSE t.window_start END
            RETURNING key, failures
            """,
                keys=self._keys(username, peer),
                now=now,
                window_start=window_start,
            )
        )
        reached = [
            key
            for key, failures in self.env.cr.fetchall()
            if failures >= settings["throttle_max_failures"]
        ]
        if reached:
            self.env.cr.execute(
                SQL(
                    """
                UPDATE iot_auth_throttle SET blocked_until = %s, failures = 0,
                    window_start = %s
                 WHERE key IN %s
                """,
                    blocked_until,
                    now,
                    tuple(reached),
                )
            )

    @api.autovacuum
    def _gc_throttle(self):
        settings = self._settings()
        now = fields.Datetime.now()
        self.env.cr.execute(
            SQL(
                """
            DELETE FROM iot_auth_throttle
             WHERE (blocked_until IS NULL OR blocked_until < %s) AND window_start < %s
            """,
                now,
                now - timedelta(seconds=settings["throttle_window_seconds"]),
            )
        )
