# License LGPL-3.0 or later (https://www.gnu.org/licenses/lgpl).
"""The store port: what the store sync engine (``iot.store.sync``) calls on
each broker's adapter, declared once, as ``odoo.http.Dispatcher`` declares
what a route type provides (odoo/http.py, 18.0).

An adapter is an abstract model that ``_inherit``s this one, sets
:attr:`IotStoreAdapter._store_key` and :attr:`IotStoreAdapter._enabled_param`
and implements the methods below that raise NotImplementedError; the engine
calls nothing else. Adapters: ``iot.mosquitto.sync`` (files), and on
``iot.store.api`` (a broker's REST API) ``iot.rabbitmq.store`` and
``iot.emqx.store``.
"""

import logging

from odoo import _, api, models
from odoo.tools import SQL

from ..tools.settings import bool_param, database_is_neutralized

_logger = logging.getLogger(__name__)


class IotStoreAdapter(models.AbstractModel):
    _name = "iot.store.adapter"
    _description = "Broker Store Adapter"
    # the adapter's key in the engine (``iot_store_sync.ADAPTERS``), its run
    # records and its hash forms
    _store_key = None
    # the system parameter (a Boolean settings field) that switches it on
    _enabled_param = None

    # ------------------------------------------------------------------
    # What the engine calls
    # ------------------------------------------------------------------

    @api.model
    def _store_enabled(self):
        """Switched on in the settings (neutralized or not)."""
        return bool_param(self.env, self._enabled_param)

    @api.model
    def _store_sync(self, result, force):
        """Make the broker hold what Odoo holds now (``force``: compare with
        the broker itself, not with the last run); fill ``result`` with the
        run's counts; return the first expiry among what was pushed (or None).
        Raise SyncError, BrokerApiError or OSError to fail the run."""
        raise NotImplementedError

    @api.model
    def _last_result(self):
        """The details of this store's last run (a dict), or None."""
        return self.env["iot.store.sync.run"].sudo()._last_result(self._store_key)

    @api.model
    def _summary(self, result):
        """One line for people: the run's error, or :meth:`_summary_parts`."""
        if not result.get("ok"):
            return _("Error: %(error)s", error=result.get("error"))
        return ". ".join(part for part in self._summary_parts(result) if part)

    @api.model
    def _summary_parts(self, result):
        """The sentences that tell a successful run of this store."""
        raise NotImplementedError

    @api.model
    def _log_result(self, result):
        """Log one run: its summary, or its error as a warning."""
        if result["ok"]:
            _logger.info("%s store sync: %s", self._store_key, self._summary(result))
        else:
            _logger.warning(
                "%s store sync failed: %s", self._store_key, result["error"]
            )

    # ------------------------------------------------------------------
    # What every adapter offers its callers
    # ------------------------------------------------------------------

    @api.model
    def _is_enabled(self):
        """On, and not a neutralized copy (which must not drive a broker)."""
        return self._store_enabled() and not database_is_neutralized(self.env)

    @api.model
    def _live_secrets(self, now, newest_only=False):
        """The one query of what a store may let in: every live secret of
        every live credential (``iot.credentials._live_condition``), as
        credential_id, username, kind, company_id, user_id, superuser,
        secret_id, newest, expires_at (the credential's or the secret's,
        whichever comes first), hash. ``newest`` marks the credential's newest
        live long-lived secret, the one its username logs in with
        (``newest_only``: only those rows)."""
        return SQL(
            """
            SELECT c.id AS credential_id, c.username, c.kind, c.company_id,
                   c.user_id, COALESCE(c.is_superuser, false) AS superuser,
                   s.id AS secret_id, COALESCE(s.id = ll.id, false) AS newest,
                   LEAST(c.expires_at, s.expires_at) AS expires_at, s.hash
              FROM iot_credentials c
              LEFT JOIN (
                    SELECT credential_id, max(id) AS id
                      FROM iot_credentials_secret
                     WHERE secret_type = 'long_lived'
                       AND (expires_at IS NULL OR expires_at > %(now)s)
                     GROUP BY credential_id
              ) ll ON ll.credential_id = c.id
              JOIN iot_credentials_secret s
                ON s.credential_id = c.id
               AND (s.expires_at IS NULL OR s.expires_at > %(now)s)
               AND (s.id = ll.id OR NOT %(newest_only)s)
              LEFT JOIN res_users u ON u.id = c.user_id
             WHERE %(live)s
            """,
            now=now,
            newest_only=bool(newest_only),
            live=self.env["iot.credentials"]._live_condition(now),
        )

    @api.model
    def _sync(self, force=False, not_before=None):
        """One run of this store in the current transaction, recorded like
        any other (``iot.store.sync._run``); return its result."""
        return self.env["iot.store.sync"]._run(
            self._name, force=force, not_before=not_before
        )
