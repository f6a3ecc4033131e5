# License LGPL-3.0 or later (https://www.gnu.org/licenses/lgpl).
import hashlib
import math
from datetime import timedelta

from odoo import api, fields, models
from odoo.tools import SQL

from ..tools.limits import company_limit
from ..tools.settings import number_param

# default and highest value used: a larger one is cut to it, so that a typo in
# a setting never overflows the SQL integers or Python's timedelta
YEAR = 366 * 24 * 3600
DEFAULTS = {
    "iot_base.throttle_max_failures": (10, 10**6),
    "iot_base.throttle_window_seconds": (60, YEAR),
    "iot_base.throttle_cooldown_seconds": (300, YEAR),
}
# A peer (one address, possibly a NAT in front of many devices) may fail
# this many times more than one username from it before it is blocked.
PEER_FACTOR = 5
# provisioning requests per API key are counted over this window (seconds)
PROVISIONING_WINDOW = 60
PROVISIONING_LIMIT = "iot_base.max_provisioning_per_minute"


class IotAuthThrottle(models.Model):
    """Failed broker logins, one row per failure and key, appended only.

    Keys are the client's address (``peer:``) and the username from that
    address (``pair:``), never a username alone: a username is not a secret,
    so whoever blocks it would lock its owner out; secrets are 160 random
    bits, so limiting guesses per username protects nothing. No address
    (RabbitMQ's user check, EMQX without ``peerhost``), no throttle: the
    address Odoo sees then is the broker's, shared by every client.

    Rows are only ever inserted (never updated): concurrent failures never
    conflict, even under REPEATABLE READ. A failure that reaches the limit
    carries ``blocked_until``; a login only reads.

    The same table counts provisioning requests per API key (``provision:``
    and a digest of the key, never the key): one row per request, whose
    ``blocked_until`` is the end of the window it counts in.
    """

    _name = "iot.auth.throttle"
    _description = "MQTT Authentication Throttle"
    _log_access = False
    _order = "failed_at desc, id desc"

    key = fields.Char(required=True, readonly=True, index=True)
    # always set (rows are written in SQL); not required, so that upgrading
    # over rows of the former layout adds the column without a NOT NULL
    failed_at = fields.Datetime(readonly=True)
    blocked_until = fields.Datetime(readonly=True)

    def init(self):
        # rows were one per key, updated in place, until this layout: the
        # uniqueness would make appended rows conflict, and the old rows
        # (no failure time) mean nothing now
        self.env.cr.execute(
            "ALTER TABLE iot_auth_throttle DROP CONSTRAINT IF EXISTS"
            " iot_auth_throttle_key_unique;"
            " DELETE FROM iot_auth_throttle WHERE failed_at IS NULL"
        )

    @api.model
    def _settings(self):
        return {
            key.rsplit(".", 1)[1]: min(number_param(self.env, key, default), highest)
            for key, (default, highest) in DEFAULTS.items()
        }

    @api.model
    def _keys(self, username, peer):
        """{key: failures allowed in a window} for a login from ``peer``."""
        if not peer:
            return {}
        limit = self._settings()["throttle_max_failures"]
        return {
            f"peer:{peer}"[:300]: limit * PEER_FACTOR,
            f"pair:{peer}|{username}"[:300]: limit,
        }

    @api.model
    def _is_blocked(self, username, peer):
        keys = self._keys(username, peer)
        if not keys:
            return False
        self.env.cr.execute(
            SQL(
                "SELECT 1 FROM iot_auth_throttle"
                " WHERE key IN %s AND blocked_until > %s LIMIT 1",
                tuple(keys),
                fields.Datetime.now(),
            )
        )
        return bool(self.env.cr.rowcount)

    @api.model
    def _register_failure(self, username, peer):
        keys = self._keys(username, peer)
        if not keys:
            return
        settings = self._settings()
        now = fields.Datetime.now()
        # failures counted in the window include this one; concurrent ones
        # not yet committed are missed, which only delays a block a little
        self.env.cr.execute(
            SQL(
                """
            INSERT INTO iot_auth_throttle (key, failed_at, blocked_until)
            SELECT k.key, %(now)s,
                   CASE WHEN (SELECT count(*) FROM iot_auth_throttle t
                               WHERE t.key = k.key AND t.failed_at > %(since)s
                             ) + 1 >= k.max_failures
                        THEN %(until)s::timestamp END
              FROM unnest(%(keys)s::varchar[], %(limits)s::int[])
                   AS k(key, max_failures)
            """,
                now=now,
                since=now - timedelta(seconds=settings["throttle_window_seconds"]),
                until=now + timedelta(seconds=settings["throttle_cooldown_seconds"]),
                keys=list(keys),
                limits=list(keys.values()),
            )
        )

    @api.model
    def _provisioning_wait(self, api_key):
        """Count one provisioning request made with ``api_key``: 0 when it
        may go on, else the seconds until one more may (at most
        ``iot_base.max_provisioning_per_minute`` a minute per key).

        Requests of concurrent transactions are not seen until committed: a
        burst spread over N workers may pass the limit by N - 1.
        """
        key = "provision:" + hashlib.sha256(api_key.encode()).hexdigest()
        limit = company_limit(self.env, PROVISIONING_LIMIT)
        now = fields.Datetime.now()
        self.env.cr.execute(
            SQL(
                "SELECT count(*), min(blocked_until) FROM iot_auth_throttle"
                " WHERE key = %s AND blocked_until > %s",
                key,
                now,
            )
        )
        count, first_end = self.env.cr.fetchone()
        if count >= limit:
            return max(1, math.ceil((first_end - now).total_seconds()))
        self.env.cr.execute(
            SQL(
                "INSERT INTO iot_auth_throttle (key, failed_at, blocked_until)"
                " VALUES (%s, %s, %s)",
                key,
                now,
                now + timedelta(seconds=PROVISIONING_WINDOW),
            )
        )
        return 0

    @api.autovacuum
    def _gc_throttle(self):
        settings = self._settings()
        now = fields.Datetime.now()
        self.env.cr.execute(
            SQL(
                """
            DELETE FROM iot_auth_throttle
             WHERE (blocked_until IS NULL OR blocked_until < %s) AND failed_at < %s
            """,
                now,
                now - timedelta(seconds=settings["throttle_window_seconds"]),
            )
        )
