#!/usr/bin/env bash
# `make stop`: stops what `make run` started: Odoo, the listener and the local
# MQTT broker (scripts/local_broker.sh stop). Only processes whose pid files
# `make run` wrote, and whose command line is still the one it started, are
# signalled (a reused pid is left alone). Same knobs as scripts/run.sh
# (IOT_RUN_DIR, IOT_BROKER_DIR and the broker's ports).
set -u -o pipefail
REPO_ROOT=$(cd "$(dirname "$0")/.." && pwd)
RUN_DIR=${IOT_RUN_DIR:-${TMPDIR:-/tmp}/iot_base_run_$(id -u)}
say() { printf '%s\n' "$*" >&2; }

# stop_pidfile NAME FILE MARK: TERM (then KILL after 15 s) the process in FILE
# if its command line contains MARK.
stop_pidfile() {
    local name=$1 file=$2 mark=$3 pid i
    pid=$(cat "$file" 2>/dev/null) || { say "$name: not running"; return 0; }
    case "$pid" in '' | *[!0-9]*) rm -f "$file"; say "$name: not running"; return 0 ;; esac
    if ! tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "$mark"; then
        rm -f "$file"
        say "$name: not running"
        return 0
    fi
    kill -TERM "$pid" 2>/dev/null
    for i in $(seq 1 30); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.5
    done
    if kill -0 "$pid" 2>/dev/null; then
        say "$name (pid $pid) did not stop in 15 s: killing it"
        kill -KILL "$pid" 2>/dev/null
    fi
    rm -f "$file"
    say "$name (pid $pid): stopped"
}

stop_pidfile "Odoo" "$RUN_DIR/odoo.pid" "--pidfile=$RUN_DIR/odoo.pid"
stop_pidfile "listener" "$RUN_DIR/listener.pid" "iot-listen"
"$REPO_ROOT/scripts/local_broker.sh" stop
