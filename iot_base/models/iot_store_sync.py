# License LGPL-3.0 or later (https://www.gnu.org/licenses/lgpl).
"""The store sync engine: Odoo is the source of truth, each broker checks
CONNECTs against its own store, which this engine keeps in sync.

One adapter per broker (``iot.mosquitto.sync``, ``iot.rabbitmq.store``,
``iot.emqx.store``), each on the store port ``iot.store.adapter`` (the only
methods the engine calls), renders what its broker must hold; the engine
decides when and how a run happens:

* after the commit of any change of credentials, secrets, rules, owners,
  groups or namespaces (once per transaction, through the engine's cron:
  the request that made the change does not wait), on the cron's interval,
  and by "Sync now";
* each adapter compares what it must hold with what it last pushed (its
  ``iot_store_pushed`` rows) and pushes only the difference; a forced run
  (or the first after a failed one) is a full run;
* runs of one adapter are serialized by a PostgreSQL advisory lock held on a
  separate connection, so the run's transaction (and its snapshot) starts
  only once the lock is held: two workers never push at once, and the second
  finds nothing left to do;
* each run leaves one ``iot.store.sync.run`` record (counts, duration,
  error), shown to IoT managers;
* nothing is done from a neutralized database: the run records why.
"""

import functools
import logging
import time
from datetime import timedelta

import odoo
from odoo import SUPERUSER_ID, _, api, fields, models
from odoo.api import Transaction
from odoo.exceptions import AccessError

from ..tools.broker_api import BrokerApiError
from ..tools.settings import database_is_neutralized
from ..tools.store_sync import SyncError

_logger = logging.getLogger(__name__)

CRON_XMLID = "iot_base.ir_cron_store_sync"
POSTCOMMIT_KEY = "iot_base.store_sync"
# the adapters, by store key; each has its own advisory lock
# (b"iot_mosq", then the following numbers)
ADAPTERS = {
    "mosquitto": "iot.mosquitto.sync",
    "rabbitmq": "iot.rabbitmq.store",
    "emqx": "iot.emqx.store",
}
LOCK_KEYS = {
    model: 0x696F745F6D6F7371 + index for index, model in enumerate(ADAPTERS.values())
}


def run_sync(dbname, force=False, after_commit=False, adapters=None):
    """Run the enabled adapters (or ``adapters``) of ``dbname``, each in a
    new cursor under its lock; return the result (never raises).

    What the after-commit hook, the cron and "Sync now" call. With
    ``after_commit``, an adapter whose lock was held skips the work when a
    run that started after the caller's commit already succeeded
    (debounce). The result is ``{"ok", "error", "adapters": {model: result}}``;
    with one adapter, that adapter's result keys are also at the top.
    """
    results = {}
    try:
        registry = odoo.modules.registry.Registry(dbname)
        if not registry.ready:
            return {"ok": False, "error": "the registry is loading", "adapters": {}}
        with odoo.sql_db.db_connect(dbname).cursor() as lock_cr:
            lock_cr.execute("SELECT clock_timestamp() AT TIME ZONE 'UTC'")
            not_before = lock_cr.fetchone()[0] if after_commit else None
            if adapters is None:
                with registry.cursor() as cr:
                    env = api.Environment(cr, SUPERUSER_ID, {})
                    adapters = env["iot.store.sync"]._enabled_adapters()
            for model in adapters:
                results[model] = _run_locked(
                    registry, lock_cr, model, force, not_before
                )
    except Exception as exc:
        _logger.exception("Store sync of database %s failed", dbname)
        return {
            "ok": False,
            "error": str(exc) or exc.__class__.__name__,
            "adapters": results,
        }
    return combine(results)


def trigger_sync(dbname):
    """After a commit: wake the engine's cron, whose worker runs the sync,
    so the committing request does not wait for it. The trigger is made
    now, after the change is committed: the cron deletes the triggers older
    than its run's start, and any run that takes this one starts after the
    change and sees it. The cron's lock and each adapter's advisory lock
    keep runs apart; triggers that pile up meanwhile make one run. Without
    the cron (deleted or archived) the sync runs here, as a fallback."""
    try:
        registry = odoo.modules.registry.Registry(dbname)
        with registry.cursor() as cr:
            env = api.Environment(cr, SUPERUSER_ID, {})
            cron = env.ref(CRON_XMLID, raise_if_not_found=False)
            if cron and cron.active:
                cron._trigger()
                return {"ok": True, "triggered": True}
    except Exception:
        _logger.exception("Triggering the store sync of %s failed", dbname)
    return run_sync(dbname, after_commit=True)


def _run_locked(registry, lock_cr, model, force, not_before):
    lock_cr.execute("SELECT pg_advisory_lock(%s)", [LOCK_KEYS[model]])
    try:
        with registry.cursor() as cr:
            if getattr(cr, "transaction", None) is None:
                # the registry at hand: no look-up (and its lock) by name
                cr.transaction = Transaction(registry)
            env = api.Environment(cr, SUPERUSER_ID, {})
            return env["iot.store.sync"]._run(model, force=force, not_before=not_before)
    except Exception as exc:
        _logger.exception("Store sync (%s) failed", model)
        return {"ok": False, "error": str(exc) or exc.__class__.__name__}
    finally:
        lock_cr.execute("SELECT pg_advisory_unlock(%s)", [LOCK_KEYS[model]])


def combine(results):
    """One result for several adapter results (see :func:`run_sync`)."""
    errors = [r["error"] for r in results.values() if not r.get("ok")]
    combined = {}
    if len(results) == 1:
        combined.update(next(iter(results.values())))
    combined.update(
        ok=not errors,
        error="; ".join(str(e) for e in errors) or None,
        adapters=results,
    )
    return combined


class IotStoreSync(models.AbstractModel):
    _name = "iot.store.sync"
    _description = "Broker Store Sync Engine"

    # ------------------------------------------------------------------
    # Triggers
    # ------------------------------------------------------------------

    @api.model
    def _store_models(self):
        """{store key: adapter model} of the adapters this registry has."""
        return {key: model for key, model in ADAPTERS.items() if model in self.env}

    @api.model
    def _enabled_adapters(self):
        """The adapters switched on in the settings, in a fixed order."""
        return [
            model
            for model in self._store_models().values()
            if self.env[model]._store_enabled()
        ]

    @api.model
    def _schedule(self):
        """Sync every enabled store once the current transaction commits
        (once per transaction), without holding the request that made the
        change (:func:`trigger_sync`). Nothing on a neutralized database.
        Revoked sessions are cut in the request itself, at its commit
        (``iot.broker.session``)."""
        if not self.env.registry.ready:
            # (while modules load, the cron or the next change syncs)
            return
        if not self._enabled_adapters() or database_is_neutralized(self.env):
            return
        postcommit = self.env.cr.postcommit
        if postcommit.data.get(POSTCOMMIT_KEY):
            return
        postcommit.data[POSTCOMMIT_KEY] = True
        postcommit.add(functools.partial(trigger_sync, self.env.cr.dbname))

    @api.model
    def _cron_sync(self):
        if self._enabled_adapters() and not database_is_neutralized(self.env):
            run_sync(self.env.cr.dbname)

    @api.model
    def action_sync_now(self):
        """A full run of every enabled store: for system administrators (it
        reads and writes every company's logins on every broker)."""
        if not self.env.is_system():
            raise AccessError(
                _("Only system administrators can sync every broker store.")
            )
        result = run_sync(self.env.cr.dbname, force=True)
        ok = result["ok"]
        return {
            "type": "ir.actions.client",
            "tag": "display_notification",
            "params": {
                "title": _("Broker stores synced") if ok else _("Broker sync failed"),
                "message": result["error"]
                or _("%(n)s stores synced", n=len(result["adapters"])),
                "type": "success" if ok else "danger",
                "sticky": not ok,
                "next": {"type": "ir.actions.client", "tag": "reload"},
            },
        }

    # ------------------------------------------------------------------
    # One run
    # ------------------------------------------------------------------

    @api.model
    def _run(self, model, force=False, not_before=None):
        """Run the adapter ``model`` in the current transaction; record and
        return the result. Configuration, file and broker problems are the
        result's ``error``, never raised."""
        adapter = self.env[model]
        Run = self.env["iot.store.sync.run"].sudo()
        started = time.monotonic()
        self.env.cr.execute("SELECT now() AT TIME ZONE 'UTC'")
        snapshot_at = self.env.cr.fetchone()[0]
        last = Run._last(adapter._store_key)
        if (
            not force
            and not_before
            and last.ok
            and last.snapshot_at
            and last.snapshot_at >= not_before
        ):
            # a run that started after our caller's commit already succeeded
            return dict(last._result() or {"ok": True}, skipped=True)
        full = bool(force or not last.ok)
        result = {
            "ok": False,
            "error": None,
            "full": full,
            "at": fields.Datetime.to_string(fields.Datetime.now()),
        }
        next_expiry = None
        try:
            if database_is_neutralized(self.env):
                raise SyncError(
                    _(
                        "This database is neutralized: nothing is written to "
                        "or sent to any broker."
                    )
                )
            next_expiry = adapter._store_sync(result, force=full)
            result["ok"] = True
        except (SyncError, BrokerApiError) as exc:
            result["error"] = str(exc)
        except OSError as exc:
            result["error"] = _(
                "%(error)s: %(file)s",
                error=exc.strerror or str(exc),
                file=exc.filename or "",
            )
        result["seconds"] = round(time.monotonic() - started, 3)
        next_trigger_at = self._schedule_expiry(next_expiry, last.next_trigger_at)
        Run._record(adapter, result, snapshot_at, next_trigger_at)
        adapter._log_result(result)
        return result

    @api.model
    def _schedule_expiry(self, next_expiry, already):
        """Make the cron run when the first pushed secret expires, so an
        expired secret leaves the broker within about a minute."""
        if not next_expiry:
            return already or False
        at = next_expiry + timedelta(seconds=1)
        if already and already == at:
            return already
        cron = self.env.ref(CRON_XMLID, raise_if_not_found=False)
        if cron:
            cron.sudo()._trigger(at)
        return at
