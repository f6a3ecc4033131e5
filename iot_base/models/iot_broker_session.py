# License LGPL-3.0 or later (https://www.gnu.org/licenses/lgpl).
"""Closing the live broker sessions of credentials that lost their right.

A broker checks a login at CONNECT only: RabbitMQ 3.10 keeps the connection
open (and caches its topic checks), EMQX keeps the client. So when a
credential stops being live (revoked or archived, deleted, renamed, expired,
owner archived, deleted or no longer an IoT user), Odoo closes its sessions
through the broker's API, after the commit: a rolled-back change cuts
nothing, and each username is re-checked against the committed data first.

* RabbitMQ 3.10, management API: ``DELETE /api/connections/username/{name}``
  closes every connection of the user, MQTT over TCP and WebSocket included
  (rabbitmq_management 3.10.8, ``rabbit_mgmt_wm_connection_user_name``).
* EMQX 5.8, REST API with an API key as Basic auth: ``GET /api/v5/clients
  ?username=`` then ``DELETE /api/v5/clients/{clientid}`` (v5.8.9,
  ``apps/emqx_management/src/emqx_mgmt_api_clients.erl``).
* Mosquitto needs nothing here: the file sync's reload (SIGHUP) re-checks
  every connected client against the new password file.

Both are ``disconnect_users`` of the broker API clients that
``iot.broker.api`` makes from the settings, the calls the stores make too; a
username no path segment can carry is never sent (the cut-off reports it as
failed).

Nothing happens on a neutralized database (``database.is_neutralized``).
"""

import functools
import json
import logging
import time

import psycopg2

import odoo
from odoo import SUPERUSER_ID, _, api, fields, models
from odoo.tools import SQL

from ..tools import broker_api
from ..tools.broker_api import BrokerApiError
from ..tools.settings import database_is_neutralized

_logger = logging.getLogger(__name__)

POSTCOMMIT_KEY = "iot_base.broker_session_cut"
# credential fields whose change may end the right of a credential's logins
ENDING_FIELDS = frozenset(("active", "username", "expires_at", "user_id", "kind"))

# The cut-off runs in the request that committed: it must stay short.
TIMEOUT = 3.0  # seconds per call (connect, then each read)
BUDGET = 5.0  # seconds for every broker call of one commit
# what ``disconnect_users`` counts on each broker
UNITS = {"rabbitmq": "usernames", "emqx": "clients"}


def run_cutoff(dbname, pending):
    """:meth:`IotBrokerSession._cutoff` of ``pending`` in a new cursor, after
    the commit; return the result (never raises)."""
    try:
        registry = odoo.modules.registry.Registry(dbname)
        with registry.cursor() as cr:
            env = api.Environment(cr, SUPERUSER_ID, {})
            return env["iot.broker.session"]._cutoff(pending)
    except Exception as exc:
        _logger.exception("Closing revoked MQTT sessions of %s failed", dbname)
        return {"ok": False, "error": exc.__class__.__name__}


class IotBrokerSession(models.AbstractModel):
    _name = "iot.broker.session"
    _description = "Live MQTT Broker Sessions"

    def init(self):
        # the last result, for the settings page (same reason as the
        # Mosquitto sync state: no ir.config_parameter write per cut-off)
        self.env.cr.execute(
            """
            CREATE TABLE IF NOT EXISTS iot_broker_session_state (
                id integer PRIMARY KEY CHECK (id = 1),
                run_at timestamp without time zone,
                ok boolean,
                result text
            )
            """
        )

    # ------------------------------------------------------------------
    # Hooks
    # ------------------------------------------------------------------

    @api.model
    def _cut(self, credentials, vals=None):
        """After the commit, close the broker sessions of ``credentials``
        that are no longer live then. Call it from any change that may end a
        credential's right (``vals``: of a write, ignored unless it touches
        :data:`ENDING_FIELDS`), before the change when it renames or deletes."""
        if vals is not None and not ENDING_FIELDS & set(vals):
            return
        pending = self._pending(credentials)
        if pending is None:
            return
        for credential in credentials.sudo().with_context(active_test=False):
            pending["check"].setdefault(credential.id, set()).add(credential.username)

    @api.model
    def _cut_secrets(self, credentials, secret_type=None):
        """Before secrets of ``credentials`` are deleted (all, or those of
        ``secret_type``): after the commit, close the sessions of their
        usernames, even if the credential stays live (a broker cannot tell
        which session used which secret), but only if a secret really went
        (a rolled-back revoke cuts nothing). Session secrets pruned by
        count are no revocation: not cut."""
        if secret_type not in (None, "long_lived"):
            return
        pending = self._pending(credentials)
        if pending is None:
            return
        query = SQL(
            "SELECT c.username, s.id FROM iot_credentials_secret s "
            "JOIN iot_credentials c ON c.id = s.credential_id "
            "WHERE s.credential_id IN %s",
            tuple(credentials.ids),
        )
        if secret_type:
            query = SQL("%s AND s.secret_type = %s", query, secret_type)
        self.env.cr.execute(query)
        for username, secret_id in self.env.cr.fetchall():
            pending["secrets"].setdefault(username, set()).add(secret_id)

    @api.model
    def _pending(self, credentials):
        """What this transaction will cut after its commit (queued once), or
        None when there is nothing to do."""
        if not credentials or not self.env.registry.ready:
            return None
        if not self.env["iot.broker.api"]._configured() or database_is_neutralized(
            self.env
        ):
            return None
        postcommit = self.env.cr.postcommit
        pending = postcommit.data.get(POSTCOMMIT_KEY)
        if pending is None:
            pending = postcommit.data[POSTCOMMIT_KEY] = {"check": {}, "secrets": {}}
            postcommit.add(functools.partial(run_cutoff, self.env.cr.dbname, pending))
        return pending

    @api.model
    def _cut_users(self, users):
        """:meth:`_cut` for every credential owned by ``users``."""
        if (
            not users
            or not self.env.registry.ready
            or not self.env["iot.broker.api"]._configured()
        ):
            return
        self._cut(
            self.env["iot.credentials"]
            .sudo()
            .with_context(active_test=False)
            .search([("user_id", "in", users.ids)])
        )

    # ------------------------------------------------------------------
    # Cut-off (after the commit)
    # ------------------------------------------------------------------

    @api.model
    def _cutoff(self, pending):
        """Close the sessions of the usernames of ``pending``: those of
        ``pending["check"]`` ({credential id: usernames}) that no live
        credential holds now, those of ``pending["secrets"]`` ({username:
        secret ids}) of which a secret is gone; record and return the result."""
        if database_is_neutralized(self.env):
            return {"ok": True, "skipped": "neutralized"}
        credentials = self.env["iot.credentials"]
        usernames = {
            username
            for names in pending.get("check", {}).values()
            for username in names
            if not credentials._find_live(username)
        }
        revoked = pending.get("secrets", {})
        if revoked:
            self.env.cr.execute(
                "SELECT id FROM iot_credentials_secret WHERE id = ANY(%s)",
                [sorted(set().union(*revoked.values()))],
            )
            remaining = {row[0] for row in self.env.cr.fetchall()}
            usernames.update(u for u, ids in revoked.items() if ids - remaining)
        usernames = sorted(usernames)
        if not usernames:
            return {"ok": True, "usernames": 0}
        # a name no path can carry (an all-dot login of an older database)
        # is never sent: it would address another object
        addressable = [u for u in usernames if broker_api.addressable(u)]
        refused = len(usernames) - len(addressable)
        started = time.monotonic()
        deadline = started + BUDGET
        result = {
            "ok": True,
            "at": fields.Datetime.to_string(fields.Datetime.now()),
            "usernames": len(usernames),
            "brokers": {},
        }
        apis = self.env["iot.broker.api"]
        for broker, config in apis._get_config().items():
            if not config["url"]:
                continue
            try:
                client = apis._client(broker, TIMEOUT, deadline, config)
                # RabbitMQ closes a user's connections in one call
                closed = client.disconnect_users(addressable)
                result["brokers"][broker] = {"closed": closed, "unit": UNITS[broker]}
                if refused:
                    raise BrokerApiError(
                        _(
                            "%(n)s usernames cannot be addressed on the API",
                            n=refused,
                        )
                    )
            except BrokerApiError as exc:
                result["ok"] = False
                result["brokers"][broker] = {"error": str(exc)}
                _logger.warning(
                    "Closing the sessions of %s revoked MQTT usernames on %s "
                    "failed: %s",
                    len(usernames),
                    broker,
                    exc,
                )
        result["seconds"] = round(time.monotonic() - started, 3)
        if result["ok"]:
            _logger.info("Revoked MQTT sessions closed: %s", self._summary(result))
        self._write_state(result)
        return result

    # ------------------------------------------------------------------
    # State
    # ------------------------------------------------------------------

    @api.model
    def _write_state(self, result):
        try:
            with self.env.cr.savepoint(flush=False):
                self._upsert_state(result)
        except psycopg2.errors.SerializationFailure:
            # another cut-off recorded its result at the same moment: keep it
            _logger.info("Concurrent session cut-off: this result is not recorded")

    @api.model
    def _upsert_state(self, result):
        self.env.cr.execute(
            """
            INSERT INTO iot_broker_session_state (id, run_at, ok, result)
            VALUES (1, %s, %s, %s)
            ON CONFLICT (id) DO UPDATE SET
                run_at = EXCLUDED.run_at, ok = EXCLUDED.ok, result = EXCLUDED.result
            """,
            [fields.Datetime.now(), result["ok"], json.dumps(result)],
        )

    @api.model
    def _last_result(self):
        self.env.cr.execute("SELECT result FROM iot_broker_session_state WHERE id = 1")
        row = self.env.cr.fetchone()
        try:
            return json.loads(row[0]) if row and row[0] else None
        except ValueError:
            return None

    @api.model
    def _summary(self, result):
        parts = []
        for broker, outcome in sorted(result.get("brokers", {}).items()):
            if "error" in outcome:
                parts.append(
                    _(
                        "%(broker)s: error: %(error)s",
                        broker=broker,
                        error=outcome["error"],
                    )
                )
            else:
                parts.append(
                    _(
                        "%(broker)s: closed (%(n)s %(unit)s)",
                        broker=broker,
                        n=outcome["closed"],
                        unit=outcome.get("unit", ""),
                    )
                )
        return _(
            "%(at)s UTC, %(n)s revoked usernames: %(parts)s (%(s)s s)",
            at=result.get("at"),
            n=result.get("usernames", 0),
            parts="; ".join(parts) or _("no broker API configured"),
            s=result.get("seconds"),
        )
