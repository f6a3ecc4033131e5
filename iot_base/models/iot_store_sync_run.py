# License LGPL-3.0 or later (https://www.gnu.org/licenses/lgpl).
import json
from datetime import timedelta

from odoo import api, fields, models

STORES = [
    ("mosquitto", "Mosquitto files"),
    ("rabbitmq", "RabbitMQ internal users"),
    ("emqx", "EMQX built-in database"),
]
# runs kept per store by the autovacuum (the newest, whatever their age)
KEEP_RUNS = 200
KEEP_DAYS = 30


class IotStoreSyncRun(models.Model):
    """One run of a broker store adapter: what it pushed, how long it took,
    what went wrong. Written by the engine only (``sudo``), read by IoT
    managers; it never holds a secret or a hash."""

    _name = "iot.store.sync.run"
    _description = "Broker Store Sync Run"
    _order = "id desc"
    _rec_name = "store"

    store = fields.Selection(STORES, required=True, readonly=True, index=True)
    run_at = fields.Datetime(readonly=True)
    snapshot_at = fields.Datetime(readonly=True)
    ok = fields.Boolean("Succeeded", readonly=True)
    full = fields.Boolean("Full Run", readonly=True)
    error = fields.Text(readonly=True)
    pushed = fields.Integer(readonly=True, help="Logins written to the broker")
    deleted = fields.Integer(readonly=True, help="Logins removed from the broker")
    unchanged = fields.Integer(readonly=True)
    needs_rotation = fields.Integer(
        readonly=True,
        help="Live secrets issued before this store was enabled: the broker "
        "cannot check them until they are rotated.",
    )
    conflicts = fields.Integer(
        "Refused Logins",
        readonly=True,
        help="Logins of Odoo's credentials that the broker already holds as a "
        "user Odoo did not create (or that no API path can carry, or Odoo's "
        "own API user): never written nor deleted. The summary names them.",
    )
    seconds = fields.Float("Duration (s)", readonly=True, digits=(16, 3))
    # usernames of every company (needs rotation, approximations): for
    # system administrators; company managers see the counts
    summary = fields.Text(readonly=True, groups="base.group_system")
    result = fields.Text("Details (JSON)", readonly=True, groups="base.group_system")
    next_trigger_at = fields.Datetime(readonly=True)

    @api.model
    def _last(self, store):
        return self.search([("store", "=", store)], limit=1)

    def _result(self):
        self.ensure_one()
        text = self.sudo().result
        try:
            return json.loads(text) if text else None
        except ValueError:
            return None

    @api.model
    def _last_result(self, store):
        last = self._last(store)
        return last._result() if last else None

    @api.model
    def _state(self, store):
        last = self._last(store)
        if not last:
            return {}
        return {
            "run_at": last.run_at,
            "snapshot_at": last.snapshot_at,
            "ok": last.ok,
            "result": last.sudo().result,
            "next_trigger_at": last.next_trigger_at,
        }

    @api.model
    def _record(self, adapter, result, snapshot_at, next_trigger_at):
        return self.create(
            {
                "store": adapter._store_key,
                "run_at": fields.Datetime.now(),
                "snapshot_at": snapshot_at,
                "ok": result["ok"],
                "full": result.get("full", False),
                "error": result.get("error") or False,
                "pushed": result.get("pushed", 0),
                "deleted": result.get("deleted", 0),
                "unchanged": result.get("unchanged", 0),
                "needs_rotation": len(result.get("needs_rotation", ())),
                "conflicts": len(result.get("conflicts", ())),
                "seconds": result.get("seconds", 0.0),
                "summary": adapter._summary(result),
                "result": json.dumps(result, default=str),
                "next_trigger_at": next_trigger_at or False,
            }
        )

    @api.autovacuum
    def _gc_old_runs(self):
        """Keep the newest runs of each store, and a month of the others."""
        self.env.cr.execute(
            """
            DELETE FROM iot_store_sync_run WHERE id IN (
                SELECT id FROM (
                    SELECT id, run_at,
                           row_number() OVER (PARTITION BY store ORDER BY id DESC) AS n
                      FROM iot_store_sync_run) r
                 WHERE r.n > %s AND r.run_at < %s)
            """,
            [KEEP_RUNS, fields.Datetime.now() - timedelta(days=KEEP_DAYS)],
        )
