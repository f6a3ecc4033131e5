#!/usr/bin/env bash
# The upgrade path, tested: installs iot_base as it was at OLD_REF (default:
# the last commit of version 18.0.1.0.0) in a throwaway database, fills it
# through that version's own ORM (scripts/upgrade_seed.py: every iot_base
# setting, credentials with secrets, devices, rules, store state), then
# upgrades it with this tree (`-u iot_base`) and checks that every setting,
# secret, store state and rule is still there (scripts/upgrade_compare.py),
# with the renames of the 18.0.2.0.0 migration. Last line: "upgrade check: OK"
# or "upgrade check: FAILED: ...". Knobs: OLD_REF, the ones of scripts/odoo_env.sh.
set -u -o pipefail
cd "$(dirname "$0")/.." || exit 2
# shellcheck source=scripts/odoo_env.sh
. scripts/odoo_env.sh
fail() { echo "upgrade check: FAILED: $*"; exit 1; }

find_odoo
ensure_pip "$RUN_PIP_PACKAGES"
ensure_postgres
if [ -z "${OLD_REF:-}" ]; then
    bump=$(git log -1 --format=%H -G'"version": "18.0.1.0.0"' -- iot_base/__manifest__.py) \
        && [ -n "$bump" ] || fail "no commit of iot_base 18.0.1.0.0 in this clone's history"
    OLD_REF="$bump^"
fi
WORK=$(mktemp -d "${TMPDIR:-/tmp}/iot_upgrade.XXXXXX")
DB="iot_upgrade_$$"
cleanup() {
    dropdb "${PG_OPTS[@]}" --if-exists --force "$DB" 2>/dev/null
    rm -rf "$WORK"
}
trap cleanup EXIT
mkdir -p "$WORK/old" "$WORK/data"
git archive "$OLD_REF" iot_base | tar -x -C "$WORK/old" || fail "cannot read iot_base at $OLD_REF"
say "== [upgrade] iot_base at $(git rev-parse --short "$OLD_REF") into $DB, then -u with this tree"

NEW_ADDONS=$ADDONS_PATH
OLD_ADDONS=${ADDONS_PATH/$REPO_ROOT/$WORK/old}
COMMON=(-d "$DB" --data-dir="$WORK/data" --without-demo=all --stop-after-init
        --http-port="$(free_ports 1)" --workers=0 --max-cron-threads=0 --log-level=warn)
run_odoo() {  # ADDONS LOG ARGS...
    local addons=$1 log=$2
    shift 2
    ADDONS_PATH=$addons odoo_cmd "${COMMON[@]}" "$@"
    "${ODOO_RUN[@]}" </dev/null >"$log" 2>&1 || { tail -n 30 "$log"; return 1; }
}
run_odoo "$OLD_ADDONS" "$WORK/install.log" -i iot_base || fail "installing the old version"
ADDONS_PATH=$OLD_ADDONS odoo_cmd shell -d "$DB" --data-dir="$WORK/data" --no-http --log-level=warn
export IOT_UPGRADE_SECRETS="$WORK/secrets.json"
"${ODOO_RUN[@]}" <scripts/upgrade_seed.py >"$WORK/seed.log" 2>&1 \
    && grep -q "^seed: OK" "$WORK/seed.log" || { tail -n 30 "$WORK/seed.log"; fail "filling the old version"; }
"$PYTHON" scripts/upgrade_compare.py snapshot "$DB" "$WORK/before.json" || fail "snapshot before"
run_odoo "$NEW_ADDONS" "$WORK/upgrade.log" -u iot_base || fail "-u iot_base with this tree"
if grep -E " (ERROR|CRITICAL) " "$WORK/upgrade.log"; then fail "the upgrade logged errors"; fi
"$PYTHON" scripts/upgrade_compare.py snapshot "$DB" "$WORK/after.json" || fail "snapshot after"
"$PYTHON" scripts/upgrade_compare.py compare "$WORK/before.json" "$WORK/after.json" \
    || fail "data changed by the upgrade (see above)"
# and the secrets issued before still log in, through the new code
ADDONS_PATH=$NEW_ADDONS odoo_cmd shell -d "$DB" --data-dir="$WORK/data" --no-http --log-level=warn
"${ODOO_RUN[@]}" <scripts/upgrade_verify.py >"$WORK/verify.log" 2>&1
grep -E "^verify: " "$WORK/verify.log"
grep -q "^verify: OK" "$WORK/verify.log" || { tail -n 30 "$WORK/verify.log"; fail "old secrets after the upgrade"; }
echo "upgrade check: OK ($(git rev-parse --short "$OLD_REF") -> this tree)"
