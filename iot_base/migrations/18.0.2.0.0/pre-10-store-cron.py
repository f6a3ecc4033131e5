# License LGPL-3.0 or later (https://www.gnu.org/licenses/lgpl).
"""18.0.2.0.0: the store sync engine's cron is named after the engine.

``iot_base.ir_cron_mosquitto_sync`` (from the time Mosquitto's files were the
only store) becomes ``iot_base.ir_cron_store_sync``. The XML ids are renamed
before the data files load, so the upgrade finds its one cron under the new
name and keeps it as it is (the record is ``noupdate``: interval, active,
next call, triggers). Both XML ids move: the cron's and that of the server
action it ``_inherits`` (``<cron xmlid>_ir_actions_server``, made by
``_load_records``), which would otherwise stay behind under the old name.
"""

MODULE = "iot_base"
RENAMES = {
    "ir_cron_mosquitto_sync": "ir_cron_store_sync",
    "ir_cron_mosquitto_sync_ir_actions_server": "ir_cron_store_sync_ir_actions_server",
}


def rename_cron(cr):
    for old, new in RENAMES.items():
        # (never onto a name that already exists: that record is then kept)
        cr.execute(
            """UPDATE ir_model_data SET name = %(new)s
                WHERE module = %(module)s AND name = %(old)s
                  AND NOT EXISTS (SELECT 1 FROM ir_model_data
                                   WHERE module = %(module)s AND name = %(new)s)""",
            {"module": MODULE, "old": old, "new": new},
        )


def migrate(cr, version):
    if version:
        rename_cron(cr)
