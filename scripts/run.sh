#!/usr/bin/env bash
# `make run`: serve Odoo 18.0 with iot_base on http://localhost:8069.
#
# The first time, creates the database $IOT_DB (default "iot") with iot_base
# installed, no demo data; log in as admin / admin (Odoo's default on a
# database created this way). Later runs find iot_base installed and just
# serve (no -u: run `odoo -u iot_base` yourself, or drop the db, to upgrade).
# Knobs: IOT_DB, IOT_HTTP_PORT (default 8069), ODOO_DATA_DIR (filestore; default
# Odoo's ~/.local/share/Odoo), plus the ones in scripts/odoo_env.sh.
set -u -o pipefail
# shellcheck source=scripts/odoo_env.sh
. "$(dirname "$0")/odoo_env.sh"

DB=${IOT_DB:-iot}
HTTP_PORT=${IOT_HTTP_PORT:-8069}
DATA_OPT=(${ODOO_DATA_DIR:+--data-dir="$ODOO_DATA_DIR"})

# ---------------------------------------------------------------------------
# HOOK: start the local MQTT broker here, before Odoo serves (e.g. mosquitto
# with iot_base's generated password/ACL files). Add its Debian package to
# RUN_APT_PACKAGES in scripts/odoo_env.sh. Must return (run it in the
# background / daemonized) and be idempotent: `make run` may be run again.
start_mqtt_broker() {
    :
}
# ---------------------------------------------------------------------------

find_odoo
ensure_apt "$RUN_APT_PACKAGES"
ensure_pip "$RUN_PIP_PACKAGES"
ensure_postgres

state=$(psql "${PG_OPTS[@]}" -d "$DB" -Atqc \
    "SELECT state FROM ir_module_module WHERE name = '$MODULE'" 2>/dev/null)
if [ "$state" != "installed" ]; then
    say "== creating database $DB with $MODULE installed (admin / admin)"
    odoo_cmd -d "$DB" "${DATA_OPT[@]}" -i "$MODULE" --without-demo=all --stop-after-init \
        --http-port="$HTTP_PORT"
    "${ODOO_RUN[@]}" </dev/null || { say "installing $MODULE into $DB failed"; exit 1; }
fi

start_mqtt_broker

say "== serving $DB on http://localhost:$HTTP_PORT (login admin / password admin)"
odoo_cmd -d "$DB" "${DATA_OPT[@]}" --http-port="$HTTP_PORT"
exec "${ODOO_RUN[@]}"
