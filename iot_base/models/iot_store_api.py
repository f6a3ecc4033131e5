# License LGPL-3.0 or later (https://www.gnu.org/licenses/lgpl).
import logging
import time

from odoo import _, api, fields, models
from odoo.tools import SQL

from ..tools.broker_api import addressable
from ..tools.store_sync import LiveLogin, SyncError, digest, plan

_logger = logging.getLogger(__name__)

TIMEOUT = 30.0  # seconds per broker API call of a sync (bulk calls included)
# usernames a result lists (needs rotation, failures): enough to act on
LISTED = 20
# what the broker holds under a login (:meth:`IotStoreApi._claims`):
# this store's user, what is left of it (EMQX: its rules), nothing, or a
# user this store did not create
OURS, LEFTOVER, ABSENT, FOREIGN = "ours", "leftover", "absent", "foreign"
# the digest of a login claimed by a push that has not completed yet
CLAIMED = "claimed"


class IotStoreApi(models.AbstractModel):
    """The store port (``iot.store.adapter``) for a broker Odoo keeps
    through its REST API (RabbitMQ, EMQX): the logins Odoo must push, their
    rules, the record of what was pushed, and one run.

    A login is a live credential with its newest live long-lived secret,
    under the credential's username (:meth:`_live_logins`, on the port's one
    query). Console users' short-lived session secrets are not pushed: the
    broker's other backend (RabbitMQ's HTTP backend, EMQX's JWT
    authenticator) keeps deciding them.

    ``iot_store_pushed`` holds, per store and login, a digest of the state
    last pushed: an incremental run pushes the logins whose digest changed
    and deletes those that are gone; a full run compares with what the broker
    reports instead, where it can.
    """

    _name = "iot.store.api"
    _inherit = "iot.store.adapter"
    _description = "Broker Store Kept Through an API"

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
    # What Odoo must push
    # ------------------------------------------------------------------

    @api.model
    def _live_logins(self):
        """The :class:`LiveLogin` of every live credential, in credential
        order, with this store's form of its secret."""
        self.env.cr.execute(
            SQL(
                """
            SELECT q.credential_id, q.username, q.kind, q.company_id, q.user_id,
                   q.superuser, q.expires_at, h.hash, h.salt
              FROM (%(live)s) q
              LEFT JOIN iot_store_hash h
                     ON h.secret_id = q.secret_id AND h.store = %(store)s
             ORDER BY q.credential_id
            """,
                live=self._live_secrets(fields.Datetime.now(), newest_only=True),
                store=self._store_key,
            )
        )
        return [LiveLogin._make(row) for row in self.env.cr.fetchall()]

    @api.model
    def _desired(self):
        """({login: state}, needs-rotation usernames, notes, next expiry)."""
        logins = self._live_logins()
        ready = [login for login in logins if login.hash is not None]
        needs_rotation = sorted(
            login.username for login in logins if login.hash is None
        )
        rules = self.env["iot.acl.rule"].sudo()._rules_for_logins(ready)
        states, notes = {}, []
        for login in ready:
            state, login_notes = self._render(login, rules[login.credential_id])
            states[login.username] = state
            notes.extend(f"{login.username}: {note}" for note in login_notes)
        next_expiry = min(
            (login.expires_at for login in ready if login.expires_at), default=None
        )
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
        from there. Only broker users this store owns are written or
        deleted (:meth:`_claims`); any other login is refused and reported
        (``result["conflicts"]``), and the rest of the run proceeds."""
        config = self._get_config()
        client = self._client(config)
        t0 = time.monotonic()
        states, needs_rotation, notes, next_expiry = self._desired()
        desired = {login: digest(state) for login, state in states.items()}
        known = self._pushed()
        current = known
        if force:
            broker_states = self._read_broker_states(client, config)
            if broker_states is not None:
                current = {login: digest(s) for login, s in broker_states.items()}
        to_push, to_delete, unchanged = plan(desired, current)
        if force:
            # a full run also removes what an earlier run pushed and the
            # broker no longer reports (nothing to do there) from the record
            to_delete = sorted(set(to_delete) | (set(known) - set(desired)))
        touched = set(to_push) | set(to_delete)
        # never sent: a name no path can carry, Odoo's own API user
        unaddressable = {login for login in touched if not addressable(login)}
        reserved = touched & self._reserved_logins(config)
        claims = self._claims(client, sorted(touched - unaddressable - reserved), known)
        foreign = {login for login, claim in claims.items() if claim == FOREIGN}
        refused = unaddressable | reserved | foreign
        to_push = [login for login in to_push if login not in refused]
        owned = {
            login: claims[login]
            for login in to_delete
            if claims.get(login) in (OURS, LEFTOVER)
        }
        result.update(
            logins=len(states),
            needs_rotation=needs_rotation,
            approximations=sorted(set(notes)),
            conflicts=sorted(refused),
            build_seconds=round(time.monotonic() - t0, 3),
            pushed=0,
            deleted=0,
            unchanged=unchanged,
        )
        if refused:
            _logger.warning(
                "%s store: %s logins refused (a broker user Odoo did not "
                "create, Odoo's API user, or a name no API path can carry)",
                self._store_key,
                len(refused),
            )
        t1 = time.monotonic()
        if to_push:
            # claimed before the first write: a run that fails after it
            # still knows the users it created
            self._set_pushed(
                {login: CLAIMED for login in to_push if login not in known}
            )
            self._push(client, config, {login: states[login] for login in to_push})
            self._set_pushed({login: desired[login] for login in to_push})
            result["pushed"] = len(to_push)
            # the broker checks a login at CONNECT only: a changed secret or
            # permission applies to sessions opened from now on
            self._close(client, [login for login in to_push if login in current])
        if owned:
            self._delete(client, owned)
        # forgotten: the logins deleted or gone, and those that are not this
        # store's (any more); an unaddressable one stays, and is reported
        forget = [
            login
            for login in touched
            if login not in unaddressable
            and (login in to_delete or login in foreign or login in reserved)
            and login in known
        ]
        if forget:
            self._set_pushed({}, deleted=forget)
        result["deleted"] = len(
            [login for login in to_delete if claims.get(login) in (OURS, LEFTOVER)]
        )
        if force:
            self._set_pushed(
                {login: desired[login] for login in desired if login not in refused}
            )
        result["push_seconds"] = round(time.monotonic() - t1, 3)
        return next_expiry

    # ------------------------------------------------------------------
    # What each API store implements (broker calls: tools/broker_api.py)
    # ------------------------------------------------------------------

    @api.model
    def _get_config(self):
        """{"url", "user", "password", ...} of this store's broker API."""
        raise NotImplementedError

    @api.model
    def _render(self, login, rules):
        """(state, notes): what the broker must hold for ``login`` (a
        :class:`LiveLogin`) with ``rules`` (JSON-able, compared by digest),
        and where the broker ends up stricter than Odoo."""
        raise NotImplementedError

    @api.model
    def _client(self, config):
        """The API client of this store's broker, for ``config``."""
        if not config["url"]:
            raise SyncError(
                _("Set the %(store)s API URL in the settings.", store=self._store_key)
            )
        return self.env["iot.broker.api"]._client(
            self._store_key, TIMEOUT, config=config
        )

    @api.model
    def _reserved_logins(self, config):
        """Logins never written nor deleted whatever Odoo holds: the user
        Odoo itself calls the API with."""
        return {config["user"]} if config.get("user") else set()

    @api.model
    def _read_broker_states(self, client, config):
        """{login: state} of the users the broker holds as this store's, in
        the form of :meth:`_render`, or None when the broker cannot say."""
        raise NotImplementedError

    @api.model
    def _claims(self, client, logins, known):
        """{login: OURS | LEFTOVER | ABSENT | FOREIGN} of ``logins`` as the
        broker holds them now (``known``: what this store pushed)."""
        raise NotImplementedError

    @api.model
    def _push(self, client, config, states):
        """Write ``states`` ({login: state}) to the broker."""
        raise NotImplementedError

    @api.model
    def _delete(self, client, claims):
        """Delete the users of ``claims`` ({login: OURS | LEFTOVER}); raise
        when one was not deleted (the run fails, the login is kept)."""
        raise NotImplementedError

    @api.model
    def _close(self, client, logins):
        """Close the live sessions of ``logins`` (the broker checks a login
        at CONNECT only): the call the session cut-off makes too."""
        if logins:
            client.disconnect_users(sorted(logins))

    # ------------------------------------------------------------------
    # Result
    # ------------------------------------------------------------------

    @api.model
    def _summary_parts(self, result):
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
        conflicts = result.get("conflicts") or []
        if conflicts:
            parts.append(
                _(
                    "%(n)s logins refused, never written nor deleted (a broker "
                    "user of that name that Odoo did not create, Odoo's own API "
                    "user, or a name the API cannot address): %(names)s",
                    n=len(conflicts),
                    names=", ".join(conflicts[:LISTED]),
                )
            )
        if result.get("approximations"):
            parts.append(
                _(
                    "stricter in the broker: %(notes)s",
                    notes="; ".join(result["approximations"][:LISTED]),
                )
            )
        return parts
