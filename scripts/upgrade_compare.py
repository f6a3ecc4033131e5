# License LGPL-3.0 or later (https://www.gnu.org/licenses/lgpl).
"""scripts/check_upgrade.sh's before/after: ``snapshot DB FILE`` writes every
row of iot_base's tables, its settings and its crons as JSON; ``compare
BEFORE AFTER`` fails when a row, a column value or a setting was lost or
changed other than by the 18.0.2.0.0 migration's renames."""

import json
import sys

import psycopg2

# 18.0.2.0.0: renamed values and keys (migrations/18.0.2.0.0/)
VALUE_RENAMES = {("iot_base.console_auth", "jwt"): "emqx_jwt"}
MERGED_KEYS = {"iot_base.rabbitmq_store_vhost": "iot_base.rabbitmq_vhost"}
# (pre-10-store-cron.py: the store engine's cron, named after the engine)
CRON_XMLIDS = {"ir_cron_mosquitto_sync": "ir_cron_store_sync"}
# crons of features the previous version did not have (their data file is
# new): expected after the upgrade; any other new cron is a problem
NEW_CRONS = {"ir_cron_command_sweep"}  # acknowledged commands (18.0.2.0.0)
# columns the ORM itself rewrites on every upgrade
VOLATILE = {"write_date", "write_uid", "__last_update"}


def snapshot(dbname, path):
    conn = psycopg2.connect(dbname=dbname)
    cr = conn.cursor()
    cr.execute(
        "SELECT table_name FROM information_schema.tables "
        "WHERE table_schema = 'public' AND table_type = 'BASE TABLE' "
        "AND table_name LIKE 'iot\\_%' ORDER BY 1"
    )
    tables = {}
    for (table,) in cr.fetchall():
        cr.execute(f'SELECT * FROM "{table}"')  # names from the catalog
        columns = [c.name for c in cr.description]
        tables[table] = [
            dict(zip(columns, map(_plain, row), strict=True)) for row in cr.fetchall()
        ]
    cr.execute(
        "SELECT key, value FROM ir_config_parameter WHERE key LIKE 'iot\\_base.%'"
    )
    params = dict(cr.fetchall())
    cr.execute(
        "SELECT d.name, c.id, c.active, c.interval_number, c.interval_type, "
        "c.nextcall::text, c.ir_actions_server_id "
        "FROM ir_model_data d JOIN ir_cron c ON c.id = d.res_id "
        "WHERE d.module = 'iot_base' AND d.model = 'ir.cron'"
    )
    crons = {name: list(values) for name, *values in cr.fetchall()}
    with open(path, "w") as handle:
        json.dump({"tables": tables, "params": params, "crons": crons}, handle)
    conn.close()


def _plain(value):
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, memoryview):
        return value.tobytes().hex()
    return str(value)


def compare(before_path, after_path):
    before, after = (json.load(open(p)) for p in (before_path, after_path))
    problems = []
    rows = 0
    for table, old_rows in before["tables"].items():
        new_rows = {
            row.get("id", i): row
            for i, row in enumerate(after["tables"].get(table, []))
        }
        if table not in after["tables"]:
            problems.append(f"table {table} is gone")
            continue
        for i, old in enumerate(old_rows):
            key = old.get("id", i)
            new = new_rows.get(key)
            if new is None:
                problems.append(f"{table} row {key} is gone")
                continue
            rows += 1
            for column, value in old.items():
                if column in VOLATILE:
                    continue
                if column not in new:
                    problems.append(f"{table}.{column} is gone")
                elif new[column] != value:
                    problems.append(
                        f"{table} row {key}: {column} {value!r} -> {new[column]!r}"
                    )
    params_old, params_new = before["params"], after["params"]
    for key, value in params_old.items():
        if key in MERGED_KEYS:
            target = MERGED_KEYS[key]
            if params_new.get(target) != value or key in params_new:
                problems.append(
                    f"setting {key}={value!r} not merged into {target}: "
                    f"{params_new.get(target)!r}"
                )
            continue
        if key == "iot_base.rabbitmq_vhost":
            continue  # checked with its merged key
        expected = VALUE_RENAMES.get((key, value), value)
        if params_new.get(key) != expected:
            problems.append(
                f"setting {key}: {value!r} -> {params_new.get(key)!r} "
                f"(expected {expected!r})"
            )
    for name, cron in before["crons"].items():
        new_name = CRON_XMLIDS.get(name, name)
        if after["crons"].get(new_name) != cron:
            problems.append(
                f"cron {name}: {cron} -> {new_name} {after['crons'].get(new_name)}"
            )
    extra = (
        set(after["crons"])
        - {CRON_XMLIDS.get(n, n) for n in before["crons"]}
        - NEW_CRONS
    )
    missing_new = NEW_CRONS - set(after["crons"])
    if missing_new:
        problems.append(
            f"new crons not installed by the upgrade: {sorted(missing_new)}"
        )
    if extra:
        problems.append(f"crons added by the upgrade: {sorted(extra)}")
    for problem in problems[:50]:
        print("  " + problem)
    print(
        f"compared {rows} rows of {len(before['tables'])} tables, "
        f"{len(params_old)} settings, {len(before['crons'])} crons: "
        f"{len(problems)} problems"
    )
    return 1 if problems else 0


if __name__ == "__main__":
    if sys.argv[1] == "snapshot":
        snapshot(sys.argv[2], sys.argv[3])
    else:
        sys.exit(compare(sys.argv[2], sys.argv[3]))
