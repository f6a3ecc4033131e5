#!/usr/bin/env bash
# A private RabbitMQ 3.10 node for local use (`make run`), whose MQTT users are
# Odoo's iot.credentials (rabbitmq_auth_backend_http -> /iot/rabbitmq/<token>/...).
#
#   scripts/local_broker.sh start TOKEN   start in the background (idempotent)
#   scripts/local_broker.sh stop          stop it
#   scripts/local_broker.sh status        "running (pid N)" / "stopped" (exit 3)
#
# TOKEN is Odoo's broker token (Settings > IoT, system parameter
# iot_base.auth_token). Listens on loopback only: MQTT over WebSocket on
# ws://localhost:8083/mqtt (iot_base's default broker URL), MQTT over TCP on
# 1884 (1883 is usually a system Mosquitto), the management API on
# http://127.0.0.1:15673 for Odoo's internal user iot_base/odoo (password in
# $IOT_BROKER_DIR/management.secret), through which Odoo closes the
# connections of revoked credentials. It never touches a system
# RabbitMQ node. The config is written by iot_base/tests/brokers/rabbitmq.py, the same
# code the tests use.
# Knobs: IOT_BROKER_DIR (node data and logs; default
# ${TMPDIR:-/tmp}/iot_base_rabbitmq_$UID), IOT_ODOO_URL (default
# http://127.0.0.1:8069), IOT_MQTT_PORT (1884), IOT_WS_PORT (8083),
# IOT_MGMT_PORT (15673),
# IOT_RABBITMQ_SERVER (start script; default Debian's), PYTHON,
# IOT_CONSOLE_AUTH (default rabbitmq_jwt: the node's OAuth 2 backend verifies
# the console's signed tokens with $IOT_ODOO_URL/iot/jwks.json, before the
# HTTP backend that still checks every device secret; "secret": HTTP only),
# IOT_RESOURCE_SERVER_ID (the tokens' audience, default iot_base).
set -u -o pipefail

REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PYTHON=${PYTHON:-python3}
# run as a module of iot_base/tests (brokers/ is a package of plain Python)
export PYTHONPATH="$REPO_ROOT/iot_base/tests${PYTHONPATH:+:$PYTHONPATH}"
DIR=${IOT_BROKER_DIR:-${TMPDIR:-/tmp}/iot_base_rabbitmq_$(id -u)}
ARGS=(--dir "$DIR" --odoo-url "${IOT_ODOO_URL:-http://127.0.0.1:8069}"
      --mqtt-port "${IOT_MQTT_PORT:-1884}" --ws-port "${IOT_WS_PORT:-8083}"
      --management-port "${IOT_MGMT_PORT:-15673}")
if [ "${IOT_CONSOLE_AUTH:-rabbitmq_jwt}" = rabbitmq_jwt ]; then
    ARGS+=(--oauth2 "${IOT_RESOURCE_SERVER_ID:-iot_base}")
fi

usage() {
    sed -n '2,8s/^# \{0,1\}//p' "$0" >&2
    exit 2
}

case "${1:-}" in
    start)
        [ -n "${2:-}" ] || usage
        mkdir -p "$DIR" && chmod 700 "$DIR"
        # through the environment: a command line is visible to every user
        IOT_BROKER_TOKEN="$2" exec "$PYTHON" -m brokers.rabbitmq rabbitmq-start "${ARGS[@]}"
        ;;
    stop | status)
        exec "$PYTHON" -m brokers.rabbitmq "rabbitmq-$1" "${ARGS[@]}"
        ;;
    *)
        usage
        ;;
esac
