#!/usr/bin/env bash
# `make test`: installs iot_base with its tests in a throwaway database, then
# prints a summary whose LAST line is "N passed, N failed".
#
# Two Odoo runs on the same database, so that "iot_base must install without a
# warning" looks at iot_base only:
#   1. setup: install iot_base's dependencies (no tests);
#   2. test:  install iot_base with --test-enable (at_install tests run during
#             the install, post_install tests right after it).
# scripts/odoo_test_report.py then reads both logs and decides the exit status.
#
# Knobs: TEST_TAGS (passed to --test-tags, e.g. ":TestMqtt" or
# "/iot_base:TestFoo.test_bar"; default: Odoo's standard tests of iot_base),
# IOT_TEST_TIMEOUT (seconds the test run may take before it is ended as hung;
# default 2400), plus the ones in scripts/odoo_env.sh.
# A full run (no TEST_TAGS) fails with fewer tests than .ci/min_tests (the
# count of the last full run on main: raise it when you add tests).
set -u -o pipefail
# shellcheck source=scripts/odoo_env.sh
. "$(dirname "$0")/odoo_env.sh"

find_odoo
ensure_apt "$TEST_APT_PACKAGES"
ensure_pip "$TEST_PIP_PACKAGES"
ensure_postgres

DB="iot_test_$$"
LOG_DIR="$REPO_ROOT/.test-logs"
SETUP_LOG="$LOG_DIR/$DB.setup.log"
TEST_LOG="$LOG_DIR/$DB.log"
DATA_DIR=$(mktemp -d "${TMPDIR:-/tmp}/iot_test_data.XXXXXX")   # filestore, thrown away
mkdir -p "$LOG_DIR"
# Keep the logs of the last 10 runs only.
ls -1t "$LOG_DIR"/iot_test_*.log 2>/dev/null | tail -n +21 | xargs -r rm -f

cleanup() {
    # --force (PostgreSQL >= 13) also ends connections an interrupted Odoo left.
    dropdb "${PG_OPTS[@]}" --if-exists --force "$DB" 2>/dev/null \
        || dropdb "${PG_OPTS[@]}" --if-exists "$DB" 2>>"$TEST_LOG" \
        || say "warning: could not drop database $DB (see $TEST_LOG)"
    rm -rf "$DATA_DIR"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Free ports, so tests never clash with a `make run` on 8069 or a parallel run.
read -r HTTP_PORT GEVENT_PORT < <(free_ports 2)
COMMON=(-d "$DB" --data-dir="$DATA_DIR" --without-demo=all --stop-after-init
        --http-port="$HTTP_PORT" --gevent-port="$GEVENT_PORT" --workers=0
        --max-cron-threads=0)

say "== [setup] installing $(module_depends) into throwaway database $DB"
odoo_cmd "${COMMON[@]}" -i "$(module_depends)"
"${ODOO_RUN[@]}" </dev/null 2>&1 | tee "$SETUP_LOG"
SETUP_RC=${PIPESTATUS[0]}

TEST_RC=1
TIMED_OUT=0
MIN_TESTS=0
[ -z "${TEST_TAGS:-}" ] && [ "$MODULE" = iot_base ] && MIN_TESTS=$(cat "$REPO_ROOT/.ci/min_tests" 2>/dev/null || echo 0)
: >"$TEST_LOG"
if [ "$SETUP_RC" -eq 0 ]; then
    say "== [test] installing $MODULE with tests (log: ${TEST_LOG#"$REPO_ROOT"/})"
    odoo_cmd "${COMMON[@]}" -i "$MODULE" --test-enable --log-level=test \
        ${TEST_TAGS:+--test-tags="$TEST_TAGS"}
    timeout --foreground --kill-after=60 "${IOT_TEST_TIMEOUT:-2400}" "${ODOO_RUN[@]}" </dev/null 2>&1 \
        | tee "$TEST_LOG"
    TEST_RC=${PIPESTATUS[0]}
    # timeout's own status for "ended at the limit" (124, or 137 after KILL)
    case "$TEST_RC" in 124 | 137) TIMED_OUT=${IOT_TEST_TIMEOUT:-2400} ;; esac
fi
ln -sfn "$DB.log" "$LOG_DIR/latest.log"

# Drop the database now (the trap stays for interruptions), so nothing prints
# after the closing line.
cleanup
trap - EXIT
exec "$PYTHON" "$REPO_ROOT/scripts/odoo_test_report.py" --module "$MODULE" \
    --setup-log "$SETUP_LOG" --setup-rc "$SETUP_RC" \
    --log "$TEST_LOG" --rc "$TEST_RC" --min-tests "$MIN_TESTS" --timed-out "$TIMED_OUT"
