#!/usr/bin/env bash
# `make run`: serve Odoo 18.0 with iot_base on http://127.0.0.1:8069.
#
# The first time, creates the database $IOT_DB (default "iot") with iot_base
# installed, no demo data; log in as admin / admin (Odoo's default on a
# database created this way). Later runs find iot_base installed and just
# serve (no -u: run `odoo -u iot_base` yourself, or drop the db, to upgrade).
# When this database is already served on the port, says so and exits 0
# (after bringing the broker in line with the broker token).
# Knobs:
#   IOT_DB               database (default iot)
#   IOT_HTTP_PORT        Odoo's HTTP port (default 8069)
#   IOT_HTTP_INTERFACE   address Odoo listens on (default 127.0.0.1: admin/admin
#                        must not face a network; 0.0.0.0 opens it)
#   IOT_WORKERS          N > 0: prefork mode, as production runs (--workers=N);
#                        Odoo's own websocket (bus) is then on IOT_GEVENT_PORT
#   IOT_GEVENT_PORT      Odoo's gevent (websocket) port in prefork mode (8072)
#   IOT_WS_PORT, IOT_MQTT_PORT, IOT_MGMT_PORT, IOT_BROKER_DIR
#                        the local broker's (scripts/local_broker.sh)
#   IOT_CONSOLE_AUTH     rabbitmq_jwt (default: the console logs in with signed
#                        tokens the local broker verifies itself) or secret
#   ODOO_DATA_DIR        filestore (default Odoo's ~/.local/share/Odoo)
#   IOT_RUN_DIR          pid files of what this started, for `make stop`
#                        (default ${TMPDIR:-/tmp}/iot_base_run_$UID)
# plus the ones in scripts/odoo_env.sh (PYTHON, ODOO_PATH, DB_*).
set -u -o pipefail
# shellcheck source=scripts/odoo_env.sh
. "$(dirname "$0")/odoo_env.sh"

DB=${IOT_DB:-iot}
HTTP_PORT=${IOT_HTTP_PORT:-8069}
INTERFACE=${IOT_HTTP_INTERFACE:-127.0.0.1}
WORKERS=${IOT_WORKERS:-0}
GEVENT_PORT=${IOT_GEVENT_PORT:-8072}
# the local broker's ports, the same defaults as scripts/local_broker.sh
export IOT_MQTT_PORT=${IOT_MQTT_PORT:-1884} IOT_WS_PORT=${IOT_WS_PORT:-8083}
export IOT_MGMT_PORT=${IOT_MGMT_PORT:-15673}
DATA_OPT=(${ODOO_DATA_DIR:+--data-dir="$ODOO_DATA_DIR"})
RUN_DIR=${IOT_RUN_DIR:-${TMPDIR:-/tmp}/iot_base_run_$(id -u)}
# where this machine reaches Odoo (0.0.0.0 / :: listen on loopback too)
case "$INTERFACE" in 0.0.0.0 | "" | :: ) LOCAL_HOST=127.0.0.1 ;; *) LOCAL_HOST=$INTERFACE ;; esac
URL="http://$LOCAL_HOST:$HTTP_PORT"

case "$WORKERS" in
    '' | *[!0-9]*) say "IOT_WORKERS=$WORKERS: a number of worker processes is expected"; exit 2 ;;
esac

# port_user HOST PORT [DB]: "free", "this" (an Odoo serving DB), "odoo"
# (another Odoo) or "other" (something else listens).
port_user() {
    "$PYTHON" - "$@" <<'EOF'
import json, socket, sys, urllib.request
host, port = sys.argv[1], int(sys.argv[2])
db = sys.argv[3] if len(sys.argv) > 3 else None
try:
    socket.create_connection((host, port), timeout=2).close()
except OSError:
    print("free")
    sys.exit()
base = f"http://{host}:{port}"
try:
    with urllib.request.urlopen(base + "/web/health", timeout=5) as response:
        is_odoo = json.load(response).get("status") == "pass"
except Exception:  # noqa: BLE001 - not an Odoo
    is_odoo = False
if not is_odoo or not db:
    print("odoo" if is_odoo else "other")
    sys.exit()
body = json.dumps({"jsonrpc": "2.0", "method": "call", "params": {}}).encode()
request = urllib.request.Request(
    base + "/web/database/list", body, {"Content-Type": "application/json"}
)
try:
    with urllib.request.urlopen(request, timeout=5) as response:
        served = json.load(response).get("result") or []
except Exception:  # noqa: BLE001 - database listing disabled
    served = []
print("this" if served == [db] else "odoo")
EOF
}

# The local MQTT broker: a private RabbitMQ node whose MQTT logins are
# checked by this Odoo (scripts/local_broker.sh). It needs the broker token:
# generated here once if the database has none; a node started with another
# token (Settings > IoT > Generate) or for another Odoo URL is restarted.
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
    say "== local MQTT broker (RabbitMQ): MQTT 127.0.0.1:$IOT_MQTT_PORT, ws://localhost:$IOT_WS_PORT/mqtt, management 127.0.0.1:$IOT_MGMT_PORT"
    if IOT_ODOO_URL="http://127.0.0.1:$HTTP_PORT" "$REPO_ROOT/scripts/local_broker.sh" \
        start "$token" >&2; then
        configure_broker
    else
        say "warning: the local MQTT broker did not start"
    fi
}

# Points Odoo at its own broker: the console's WebSocket URL, Odoo's own MQTT
# client (publishing, "Test Connection", the provisioning reply), and the
# management API through which Odoo closes revoked credentials' live
# connections. The password goes to psql on stdin: a command line is visible
# to every user.
configure_broker() {
    local dir secret
    dir=${IOT_BROKER_DIR:-${TMPDIR:-/tmp}/iot_base_rabbitmq_$(id -u)}
    secret=$(cat "$dir/management.secret" 2>/dev/null) || {
        say "warning: no $dir/management.secret: revoking will not cut live sessions"
        secret=""
    }
    psql "${PG_OPTS[@]}" -d "$DB" -q -v ON_ERROR_STOP=1 >/dev/null <<SQL
INSERT INTO ir_config_parameter (key, value, create_date, write_date)
VALUES ('iot_base.mqtt_broker_url', 'ws://localhost:$IOT_WS_PORT/mqtt', now(), now()),
       ('iot_base.mqtt_host', '127.0.0.1', now(), now()),
       ('iot_base.mqtt_port', '$IOT_MQTT_PORT', now(), now()),
       ('iot_base.rabbitmq_management_url', 'http://127.0.0.1:$IOT_MGMT_PORT', now(), now()),
       ('iot_base.rabbitmq_management_user', 'iot_base/odoo', now(), now()),
       ('iot_base.rabbitmq_management_password', '$secret', now(), now())
    ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value, write_date = now();
-- no TLS on the local broker; Odoo stores a boolean setting's False as no row
DELETE FROM ir_config_parameter WHERE key = 'iot_base.mqtt_tls';
SQL
    configure_console_tokens
}

# The local broker verifies the console's signed tokens itself (OAuth 2
# backend, keys from /iot/jwks.json): a new database's console uses them.
# A choice made since in Settings > IoT > Console Login is kept.
configure_console_tokens() {
    [ "${IOT_CONSOLE_AUTH:-rabbitmq_jwt}" = rabbitmq_jwt ] || return 0
    psql "${PG_OPTS[@]}" -d "$DB" -q -v ON_ERROR_STOP=1 >/dev/null <<SQL
INSERT INTO ir_config_parameter (key, value, create_date, write_date)
VALUES ('iot_base.console_auth', 'rabbitmq_jwt', now(), now()),
       ('iot_base.rabbitmq_resource_server_id', '${IOT_RESOURCE_SERVER_ID:-iot_base}', now(), now())
    ON CONFLICT (key) DO NOTHING;
SQL
}

find_odoo
ensure_apt "$RUN_APT_PACKAGES"
ensure_pip "$RUN_PIP_PACKAGES"
ensure_postgres

served=$(port_user "$LOCAL_HOST" "$HTTP_PORT" "$DB")
case "$served" in
    this)
        # a new token since it started: the broker follows it
        start_mqtt_broker
        say "already running at $URL (database $DB): nothing to do"
        exit 0
        ;;
    odoo)
        say "port $HTTP_PORT is already served by another Odoo (not database $DB alone): stop it, or set IOT_HTTP_PORT=another port"
        exit 1
        ;;
    other)
        say "port $HTTP_PORT is in use by another program: set IOT_HTTP_PORT=a free port"
        exit 1
        ;;
esac
if [ "$WORKERS" -gt 0 ]; then
    if [ "$(port_user "$LOCAL_HOST" "$GEVENT_PORT")" != free ]; then
        say "port $GEVENT_PORT (Odoo's gevent port in prefork mode) is in use: set IOT_GEVENT_PORT=a free port"
        exit 1
    fi
    # The master would respawn a gevent process that cannot start, forever:
    # try it once (it imports Odoo evented, i.e. gevent's monkey-patching).
    if ! gevent_error=$("${ODOO_CMD[@]}" gevent --version 2>&1 >/dev/null); then
        say "prefork mode: Odoo's gevent process cannot start with PYTHON=$PYTHON: $(printf '%s\n' "$gevent_error" | tail -n 1)"
        say "(repair gevent's install, e.g. $PYTHON -m pip install 'setuptools>=70,<81' when pkg_resources misses zope.interface, or run without IOT_WORKERS)"
        exit 1
    fi
fi

state=$(psql "${PG_OPTS[@]}" -d "$DB" -Atqc \
    "SELECT state FROM ir_module_module WHERE name = '$MODULE'" 2>/dev/null)
if [ "$state" != "installed" ]; then
    say "== creating database $DB with $MODULE installed (admin / admin)"
    odoo_cmd -d "$DB" "${DATA_OPT[@]}" -i "$MODULE" --without-demo=all --stop-after-init \
        --http-port="$HTTP_PORT"
    "${ODOO_RUN[@]}" </dev/null || { say "installing $MODULE into $DB failed"; exit 1; }
fi

start_mqtt_broker
mkdir -p "$RUN_DIR" && chmod 700 "$RUN_DIR"

# The listener (odoo-bin iot-listen, iot_base/cli/): device presence, last
# readings, throughput. It runs beside Odoo and stops when Odoo does (a
# watcher follows this shell's pid, which exec below hands to Odoo). Until
# Odoo answers the broker's login checks it retries with back-off.
# IOT_LISTENER=0 leaves it off; its log: IOT_LISTENER_LOG.
if [ "${IOT_LISTENER:-1}" != 0 ]; then
    LISTENER_LOG=${IOT_LISTENER_LOG:-${TMPDIR:-/tmp}/iot_listener_$DB.log}
    say "== listener (odoo-bin iot-listen -d $DB), log: $LISTENER_LOG"
    # the command comes right after --addons-path: Odoo finds addon commands so
    "${ODOO_CMD[@]}" --addons-path="$ADDONS_PATH" iot-listen -d "$DB" "${DATA_OPT[@]}" \
        ${DB_HOST:+--db_host="$DB_HOST"} ${DB_PORT:+--db_port="$DB_PORT"} \
        ${DB_USER:+--db_user="$DB_USER"} ${DB_PASSWORD:+--db_password="$DB_PASSWORD"} \
        --logfile="$LISTENER_LOG" </dev/null &
    listener_pid=$!
    echo "$listener_pid" >"$RUN_DIR/listener.pid"
    ( while kill -0 $$ 2>/dev/null && kill -0 "$listener_pid" 2>/dev/null; do sleep 2; done
      kill -TERM "$listener_pid" 2>/dev/null ) </dev/null >/dev/null 2>&1 &
fi

mode="threaded"
PREFORK=()
if [ "$WORKERS" -gt 0 ]; then
    mode="prefork, $WORKERS workers, gevent port $GEVENT_PORT"
    PREFORK=(--workers="$WORKERS" --gevent-port="$GEVENT_PORT")
fi
say "== serving $DB on $URL ($mode; login admin / password admin; \`make stop\` stops it all)"
# --db-filter: the broker calls Odoo without a session, so Odoo must know the
# database from the request alone
odoo_cmd -d "$DB" "${DATA_OPT[@]}" --http-interface="$INTERFACE" --http-port="$HTTP_PORT" \
    "${PREFORK[@]}" --db-filter="^$DB\$" --pidfile="$RUN_DIR/odoo.pid"
exec "${ODOO_RUN[@]}"
