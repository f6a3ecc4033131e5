# License LGPL-3.0 or later (https://www.gnu.org/licenses/lgpl).
import logging
import time

import requests

from odoo import _, api, fields, models
from odoo.tools import SQL

from ..tools import topic_acl
from ..tools.settings import bool_param
from ..tools.store_sync import SyncError, digest, plan
from .iot_broker_session import BrokerApiError, _origin

_logger = logging.getLogger(__name__)

TIMEOUT = 30.0  # seconds per broker API call of a sync (bulk calls included)
# usernames a result lists (needs rotation, failures): enough to act on
LISTED = 20


class IotStoreAdapter(models.AbstractModel):
    """What the RabbitMQ and EMQX store adapters share: the logins Odoo
    must push, their rules, and the record of what was pushed.

    A login is a live credential (the conditions of
    ``iot.credentials._live_query``) with its newest live long-lived secret,
    under the credential's username. Console users' short-lived session
    secrets are not pushed: the broker's other backend (RabbitMQ's HTTP
    backend, EMQX's JWT authenticator) keeps deciding them.

    ``iot_store_pushed`` holds, per store and login, a digest of the state
    last pushed: an incremental run pushes the logins whose digest changed
    and deletes those that are gone; a full run compares with what the broker
    reports instead, where it can.
    """

    _name = "iot.store.adapter"
    _description = "Broker Store Adapter"
    _store_key = None
    _enabled_param = None

    def init(self):
        self.env.cr.execute(
            """
            CREATE TABLE IF NOT EXISTS iot_store_pushed (
                store varchar NOT NULL,
                login varchar NOT NULL,
                digest varchar NOT NULL,
                PRIMARY KEY (store, login)
            )
            """
        )

    # ------------------------------------------------------------------
    # State (the engine's run records)
    # ------------------------------------------------------------------

    @api.model
    def _last_result(self):
        """The details of this store's last run (a dict), or None."""
        return self.env["iot.store.sync.run"].sudo()._last_result(self._store_key)

    # ------------------------------------------------------------------
    # Configuration
    # ------------------------------------------------------------------

    @api.model
    def _store_enabled(self):
        return bool_param(self.env, self._enabled_param)

    @api.model
    def _schedule(self):
        self.env["iot.store.sync"]._schedule()

    # ------------------------------------------------------------------
    # What Odoo must push
    # ------------------------------------------------------------------

    @api.model
    def _live_rows(self):
        """(credential id, username, kind, company id, owner id, superuser,
        secret expiry, hash, salt) of every login; hash is None when the
        secret has no hash form of this store (issued before it was on)."""
        now = fields.Datetime.now()
        self.env.cr.execute(
            SQL(
                """
            SELECT c.id, c.username, c.kind, c.company_id, c.user_id,
                   COALESCE(c.is_superuser, false),
                   LEAST(c.expires_at, s.expires_at), h.hash, h.salt
              FROM iot_credentials c
              JOIN LATERAL (
                    SELECT id, expires_at FROM iot_credentials_secret
                     WHERE credential_id = c.id AND secret_type = 'long_lived'
                       AND (expires_at IS NULL OR expires_at > %(now)s)
                     ORDER BY id DESC LIMIT 1
              ) s ON true
              LEFT JOIN iot_store_hash h
                     ON h.secret_id = s.id AND h.store = %(store)s
              LEFT JOIN res_users u ON u.id = c.user_id
             WHERE %(live)s
             ORDER BY c.id
            """,
                now=now,
                store=self._store_key,
                live=self.env["iot.credentials"]._live_condition(now),
            )
        )
        return self.env.cr.fetchall()

    @api.model
    def _rules_of(self, rows):
        """{credential id: expanded rules} of ``rows``: the table and filters
        of ``iot.acl.rule._rules_for``, computed once per group of
        credentials that share them."""
        scopes = self.env["iot.acl.rule"].sudo()._rule_table()
        rule_groups = frozenset().union(*(scope[2] for scope in scopes))
        owners = {row[4] for row in rows if row[4]}
        owner_groups = (
            self.env["iot.acl.rule"].sudo()._owner_groups(owners, rule_groups)
        )
        self.env.cr.execute("SELECT id, iot_mqtt_namespace FROM res_company")
        namespaces = dict(self.env.cr.fetchall())
        applicable_cache = {}
        out = {}
        for cid, username, kind, company_id, user_id, *_rest in rows:
            groups = owner_groups[user_id] if user_id else frozenset()
            special = cid if any(cid in scope[3] for scope in scopes) else None
            key = (kind, company_id, groups, special)
            if key not in applicable_cache:
                applicable_cache[key] = [
                    scope[5]
                    for scope in scopes
                    if topic_acl.rule_applies(scope, kind, groups, cid, company_id)
                ]
            out[cid] = topic_acl.expand_rules(
                applicable_cache[key],
                username=username,
                clientid=None,
                namespace=namespaces.get(company_id),
            )
        return out

    @api.model
    def _desired(self):
        """({login: state}, needs-rotation usernames, notes, next expiry)."""
        rows = self._live_rows()
        ready = [row for row in rows if row[7] is not None]
        needs_rotation = sorted(row[1] for row in rows if row[7] is None)
        rules = self._rules_of(ready)
        states, notes = {}, []
        for row in ready:
            state, row_notes = self._render(row, rules[row[0]])
            states[row[1]] = state
            notes.extend(f"{row[1]}: {note}" for note in row_notes)
        next_expiry = min((row[6] for row in ready if row[6]), default=None)
        return states, needs_rotation, notes, next_expiry

    # ------------------------------------------------------------------
    # What was pushed
    # ------------------------------------------------------------------

    @api.model
    def _pushed(self):
        self.env.cr.execute(
            "SELECT login, digest FROM iot_store_pushed WHERE store = %s",
            [self._store_key],
        )
        return dict(self.env.cr.fetchall())

    @api.model
    def _set_pushed(self, digests, deleted=()):
        if deleted:
            self.env.cr.execute(
                "DELETE FROM iot_store_pushed WHERE store = %s AND login = ANY(%s)",
                [self._store_key, list(deleted)],
            )
        if digests:
            logins, values = zip(*sorted(digests.items()), strict=True)
            self.env.cr.execute(
                """
                INSERT INTO iot_store_pushed (store, login, digest)
                SELECT %s, l, d FROM unnest(%s::varchar[], %s::varchar[]) AS t(l, d)
                ON CONFLICT (store, login) DO UPDATE SET digest = EXCLUDED.digest
                """,
                [self._store_key, list(logins), list(values)],
            )

    # ------------------------------------------------------------------
    # One run
    # ------------------------------------------------------------------

    @api.model
    def _store_sync(self, result, force):
        """Push what changed (``force``: compare with the broker itself);
        fill ``result``; return the first expiry among the pushed secrets.
        What was pushed before a failure stays recorded: the next run starts
        from there."""
        config = self._get_config()
        t0 = time.monotonic()
        states, needs_rotation, notes, next_expiry = self._desired()
        desired = {login: digest(state) for login, state in states.items()}
        known = self._pushed()
        current = known
        if force:
            broker_states = self._read_broker_states(config)
            if broker_states is not None:
                current = {login: digest(s) for login, s in broker_states.items()}
        to_push, to_delete, unchanged = plan(desired, current)
        if force:
            # a full run also removes what an earlier run pushed and the
            # broker no longer reports (nothing to do there) from the record
            to_delete = sorted(set(to_delete) | (set(known) - set(desired)))
        result.update(
            logins=len(states),
            needs_rotation=needs_rotation,
            approximations=sorted(set(notes)),
            build_seconds=round(time.monotonic() - t0, 3),
            pushed=0,
            deleted=0,
            unchanged=unchanged,
        )
        t1 = time.monotonic()
        if to_push:
            self._push(config, {login: states[login] for login in to_push})
            self._set_pushed({login: desired[login] for login in to_push})
            result["pushed"] = len(to_push)
            # the broker checks a login at CONNECT only: a changed secret or
            # permission applies to sessions opened from now on
            self._close(config, [login for login in to_push if login in current])
        if to_delete:
            self._delete(config, to_delete)
            self._set_pushed({}, deleted=to_delete)
            result["deleted"] = len(to_delete)
        if force:
            self._set_pushed({login: desired[login] for login in desired})
        result["push_seconds"] = round(time.monotonic() - t1, 3)
        return next_expiry

    # ------------------------------------------------------------------
    # Broker calls
    # ------------------------------------------------------------------

    @api.model
    def _call(self, config, method, path, expected, **kwargs):
        """One API call of ``config`` (url, user, password); returns the
        response; raises BrokerApiError (no secret in its text)."""
        if not config["url"]:
            raise SyncError(
                _("Set the %(store)s API URL in the settings.", store=self._store_key)
            )
        url = config["url"] + path
        try:
            response = requests.request(
                method,
                url,
                auth=(config["user"], config["password"]),
                timeout=TIMEOUT,
                allow_redirects=False,
                **kwargs,
            )
        except requests.RequestException as exc:
            raise BrokerApiError(
                _(
                    "%(origin)s unreachable (%(error)s)",
                    origin=_origin(url),
                    error=exc.__class__.__name__,
                )
            ) from None
        if response.status_code not in expected:
            route = path.split("?", 1)[0]
            if method in ("PUT", "DELETE"):
                # the last segment names a login (of any company): the run's
                # error is shown to every IoT manager
                route = route.rsplit("/", 1)[0] + "/…"
            raise BrokerApiError(
                _(
                    "%(origin)s answered HTTP %(status)s to %(method)s %(path)s",
                    origin=_origin(url),
                    status=response.status_code,
                    method=method,
                    path=route,
                )
            )
        return response

    # ------------------------------------------------------------------
    # Result
    # ------------------------------------------------------------------

    @api.model
    def _summary(self, result):
        if not result.get("ok"):
            return _("Error: %(error)s", error=result.get("error"))
        parts = [
            _(
                "%(logins)s logins: %(pushed)s pushed, %(deleted)s deleted, "
                "%(unchanged)s unchanged (%(mode)s run)",
                logins=result.get("logins", 0),
                pushed=result.get("pushed", 0),
                deleted=result.get("deleted", 0),
                unchanged=result.get("unchanged", 0),
                mode=_("full") if result.get("full") else _("incremental"),
            ),
            _("%(s)s s", s=result.get("seconds")),
        ]
        rotation = result.get("needs_rotation") or []
        if rotation:
            parts.append(
                _(
                    "%(n)s credentials need rotation (their secret predates "
                    "this store): %(names)s",
                    n=len(rotation),
                    names=", ".join(rotation[:LISTED]),
                )
            )
        if result.get("approximations"):
            parts.append(
                _(
                    "stricter in the broker: %(notes)s",
                    notes="; ".join(result["approximations"][:LISTED]),
                )
            )
        return ". ".join(parts)

    @api.model
    def _log_result(self, result):
        if result["ok"]:
            _logger.info("%s store sync: %s", self._store_key, self._summary(result))
        else:
            _logger.warning(
                "%s store sync failed: %s", self._store_key, result["error"]
            )
