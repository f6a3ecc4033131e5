#!/usr/bin/env bash
# `make pot`: regenerates iot_base/i18n/iot_base.pot (the terms to translate:
# Python, views, data and the JavaScript's _t strings) from a throwaway
# database with iot_base installed. Run it after changing any user-facing text.
set -u -o pipefail
# shellcheck source=scripts/odoo_env.sh
. "$(dirname "$0")/odoo_env.sh"

find_odoo
ensure_pip "$RUN_PIP_PACKAGES"
ensure_postgres

DB="iot_pot_$$"
DATA_DIR=$(mktemp -d "${TMPDIR:-/tmp}/iot_pot_data.XXXXXX")
LOG="$DATA_DIR/pot.log"
cleanup() {
    dropdb "${PG_OPTS[@]}" --if-exists "$DB" 2>/dev/null
    rm -rf "$DATA_DIR"
}
trap cleanup EXIT
read -r HTTP_PORT GEVENT_PORT < <(free_ports 2)
COMMON=(-d "$DB" --data-dir="$DATA_DIR" --without-demo=all --stop-after-init
        --http-port="$HTTP_PORT" --gevent-port="$GEVENT_PORT" --log-level=warn)

say "== installing $MODULE into throwaway database $DB"
odoo_cmd "${COMMON[@]}" -i "$MODULE"
"${ODOO_RUN[@]}" </dev/null >"$LOG" 2>&1 || { cat "$LOG" >&2; exit 1; }
POT="$REPO_ROOT/$MODULE/i18n/$MODULE.pot"
mkdir -p "$(dirname "$POT")"
odoo_cmd "${COMMON[@]}" --i18n-export="$POT" --modules="$MODULE"
"${ODOO_RUN[@]}" </dev/null >"$LOG" 2>&1 || { cat "$LOG" >&2; exit 1; }
say "== wrote ${POT#"$REPO_ROOT"/} ($(grep -c '^msgid' "$POT") terms)"
