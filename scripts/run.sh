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

# The local MQTT broker: a private RabbitMQ node whose MQTT logins are
# checked by this Odoo (scripts/local_broker.sh), WebSocket on
# ws://localhost:8083/mqtt, iot_base's default broker URL. It needs the broker
# token: generated here once if the database has none.
start_mqtt_broker() {
    local token
    token=$(psql "${PG_OPTS[@]}" -d "$DB" -Atqc \
        "SELECT value FROM ir_config_parameter WHERE key = 'iot_base.auth_token'")
    if [ -z "$token" ]; then
        token=$("$PYTHON" -c 'import secrets; print(secrets.token_urlsafe(32))')
        psql "${PG_OPTS[@]}" -d "$DB" -qc \
            "INSERT INTO ir_config_parameter (key, value, create_date, write_date)
             VALUES ('iot_base.auth_token', '$token', now(), now())
             ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value" >/dev/null
    fi
    say "== starting the local MQTT broker (RabbitMQ, ws://localhost:8083/mqtt)"
    if IOT_ODOO_URL="http://127.0.0.1:$HTTP_PORT" "$REPO_ROOT/scripts/local_broker.sh" \
        start "$token"; then
        configure_session_cutoff
    else
        say "warning: the local MQTT broker did not start"
    fi
}

# Odoo closes revoked credentials' live connections through the node's
# management API (iot_base.rabbitmq_management_*). The password goes to psql
# on stdin: a command line is visible to every user.
configure_session_cutoff() {
    local dir secret
    dir=${IOT_BROKER_DIR:-${TMPDIR:-/tmp}/iot_base_rabbitmq_$(id -u)}
    secret=$(cat "$dir/management.secret" 2>/dev/null) || {
        say "warning: no $dir/management.secret: revoking will not cut live sessions"
        return 0
    }
    psql "${PG_OPTS[@]}" -d "$DB" -q -v ON_ERROR_STOP=1 >/dev/null <<SQL
INSERT INTO ir_config_parameter (key, value, create_date, write_date)
VALUES ('iot_base.rabbitmq_management_url',
        'http://127.0.0.1:${IOT_MGMT_PORT:-15673}', now(), now()),
       ('iot_base.rabbitmq_management_user', 'iot_base/odoo', now(), now()),
       ('iot_base.rabbitmq_management_password', '$secret', now(), now())
    ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value, write_date = now();
SQL
}

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
# --db-filter: the broker calls Odoo without a session, so Odoo must know the
# database from the request alone
odoo_cmd -d "$DB" "${DATA_OPT[@]}" --http-port="$HTTP_PORT" --db-filter="^$DB\$"
exec "${ODOO_RUN[@]}"
