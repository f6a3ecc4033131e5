# shellcheck shell=bash
# Shared by scripts/test.sh and scripts/run.sh (sourced, never executed):
# finds Odoo 18.0, installs what the addon needs, starts PostgreSQL.
#
# Knobs (all optional):
#   ODOO_PATH          folder containing odoo-bin (a git checkout of odoo);
#                      otherwise the `odoo` package importable by $PYTHON is used
#   PYTHON             interpreter that runs Odoo (default: python3)
#   ODOO_SOURCE, IOT_CACHE_DIR, IOT_BOOTSTRAP
#                      when neither ODOO_PATH nor PYTHON is given and python3
#                      has no Odoo: where scripts/odoo_bootstrap.sh gets it
#   DB_HOST, DB_PORT, DB_USER, DB_PASSWORD
#                      PostgreSQL connection (default: local socket, current user)
#   IOT_EXTRA_ADDONS   extra addons folders (comma separated), appended to the path
#   IOT_TEST_MODULE    module to install/test instead of iot_base (used to test
#                      the harness itself against a throwaway addon)

REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# a PYTHON the user gave is theirs: never replaced by a bootstrapped one
PYTHON_GIVEN=${PYTHON:+yes}
PYTHON=${PYTHON:-python3}
MODULE=${IOT_TEST_MODULE:-iot_base}
# Odoo's own date handling assumes a UTC process (odoo-bin users usually have it).
export TZ=UTC

# What the addon imports at run time, as "import_name:pip_name" pairs.
RUN_PIP_PACKAGES="paho.mqtt:paho-mqtt passlib:passlib"
# What the tests import on top (websocket-client drives Chrome in HttpCase tests;
# without it Odoo silently *skips* browser tests).
TEST_PIP_PACKAGES="$RUN_PIP_PACKAGES websocket:websocket-client hypothesis:hypothesis"
# Debian packages, as "binary:package" pairs, installed only when the binary is
# missing. Extend here, e.g. "mosquitto:mosquitto rabbitmq-server:rabbitmq-server".
RUN_APT_PACKAGES="/usr/lib/rabbitmq/bin/rabbitmq-server:rabbitmq-server"
TEST_APT_PACKAGES="$RUN_APT_PACKAGES chromium:chromium mosquitto:mosquitto"

say() { printf '%s\n' "$*" >&2; }

# shellcheck source=scripts/odoo_bootstrap.sh
. "$REPO_ROOT/scripts/odoo_bootstrap.sh"

# find_odoo: sets the ODOO_CMD array (how to start Odoo) and ADDONS_PATH, or
# prints one instruction line and exits 2. It tells apart "no Odoo" from "Odoo
# found but $PYTHON cannot import it" (a requirement missing), and names the
# failing import.
find_odoo() {
    local probe serie root status reason base_addons extra="" where
    where=${ODOO_PATH:+ODOO_PATH=$ODOO_PATH}
    if [ -n "${ODOO_PATH:-}" ] && [ ! -f "$ODOO_PATH/odoo-bin" ]; then
        say "ODOO_PATH=$ODOO_PATH has no odoo-bin: set it to the folder containing odoo-bin (a checkout of Odoo 18.0), or unset it to use the odoo package importable by $PYTHON"
        exit 2
    fi
    # release.py is read without importing odoo (it needs no requirement);
    # then `import odoo.cli` pulls in what starting Odoo needs.
    probe=$("$PYTHON" - "${ODOO_PATH:-}" 2>&1 <<'EOF_PY'
import importlib.util, os, runpy, sys
if sys.argv[1]:
    sys.path.insert(0, sys.argv[1])  # as odoo-bin does for its own folder
spec = importlib.util.find_spec("odoo")
if spec is None or not spec.submodule_search_locations:
    sys.exit("none")
root = list(spec.submodule_search_locations)[0]
serie = runpy.run_path(os.path.join(root, "release.py")).get("serie", "?")
try:
    import odoo.cli  # noqa: F401
except Exception as exc:  # noqa: BLE001 - any failure is reported, not raised
    print(serie, root, "broken", f"{type(exc).__name__}: {exc}", sep="\t")
else:
    print(serie, root, "ok", "", sep="\t")
EOF_PY
    )
    IFS=$'\t' read -r serie root status reason <<<"$(printf '%s\n' "$probe" | tail -n 1)"
    if [ -z "$root" ] || [ -z "$status" ]; then
        if [ -z "$where" ] && [ -z "$PYTHON_GIVEN" ] && [ "${IOT_BOOTSTRAP:-1}" != 0 ] \
            && [ -z "${IOT_BOOTSTRAPPED:-}" ]; then
            say "Odoo 18.0 not found (\`$PYTHON -c 'import odoo'\` fails): getting it (scripts/odoo_bootstrap.sh)"
            bootstrap_odoo || exit 2
            IOT_BOOTSTRAPPED=yes
            find_odoo
            return
        fi
        if [ -n "$where" ]; then
            say "Odoo not usable from $where with PYTHON=$PYTHON: $(printf '%s\n' "$probe" | tail -n 1)"
        else
            say "Odoo 18.0 not found: \`$PYTHON -c 'import odoo'\` fails. Set ODOO_PATH=/path/to/odoo (the folder containing odoo-bin), or PYTHON=/path/to/python (an interpreter that has Odoo)"
        fi
        exit 2
    fi
    if [ "$serie" != "18.0" ]; then
        say "Odoo $serie found in $root but 18.0 is required: install Odoo 18.0, or set ODOO_PATH=/path/to/odoo-18.0 (the folder containing odoo-bin)"
        exit 2
    fi
    if [ "$status" != "ok" ]; then
        local req="$(dirname "$root")/requirements.txt"
        [ -f "$req" ] || req="Odoo's requirements.txt"
        say "Odoo 18.0 found in $root, but PYTHON=$PYTHON cannot import it: $reason. Install Odoo's requirements into that interpreter ($PYTHON -m pip install -r $req), or set PYTHON=/path/to/python (one that has them)"
        exit 2
    fi
    # A script file, never `python -c`: in prefork mode (--workers) Odoo's
    # master re-runs sys.argv[0] for its gevent process (bench/odoo_launcher.py).
    if [ -n "${ODOO_PATH:-}" ]; then
        ODOO_CMD=("$PYTHON" "$ODOO_PATH/odoo-bin")
        # A git checkout keeps most addons (web, base_setup...) in ./addons.
        [ -d "$ODOO_PATH/addons" ] && extra="$ODOO_PATH/addons"
    else
        ODOO_CMD=("$PYTHON" "$REPO_ROOT/bench/odoo_launcher.py")
    fi
    base_addons="$root/addons"
    ADDONS_PATH="$base_addons${extra:+,$extra},$REPO_ROOT${IOT_EXTRA_ADDONS:+,$IOT_EXTRA_ADDONS}"
}

# odoo_cmd ARGS...: sets the ODOO_RUN array, the full Odoo command line (addons
# path, database connection, ARGS). Run it as "${ODOO_RUN[@]}" straight in a
# pipeline or with exec, so Odoo is a direct child and gets Ctrl-C/SIGTERM.
odoo_cmd() {
    ODOO_RUN=("${ODOO_CMD[@]}" --addons-path="$ADDONS_PATH"
        ${DB_HOST:+--db_host="$DB_HOST"} ${DB_PORT:+--db_port="$DB_PORT"}
        ${DB_USER:+--db_user="$DB_USER"} ${DB_PASSWORD:+--db_password="$DB_PASSWORD"}
        "$@")
}

# psql/dropdb connection options, matching the ones given to Odoo.
pg_opts() {
    PG_OPTS=()
    [ -n "${DB_HOST:-}" ] && PG_OPTS+=(-h "$DB_HOST")
    [ -n "${DB_PORT:-}" ] && PG_OPTS+=(-p "$DB_PORT")
    [ -n "${DB_USER:-}" ] && PG_OPTS+=(-U "$DB_USER")
    [ -n "${DB_PASSWORD:-}" ] && export PGPASSWORD="$DB_PASSWORD"
    return 0
}

# ensure_pip "import:pip ...": pip-installs only the packages that don't import.
ensure_pip() {
    local pair missing=()
    for pair in $1; do
        "$PYTHON" -c "import ${pair%%:*}" 2>/dev/null || missing+=("${pair#*:}")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    say "installing Python packages: ${missing[*]}"
    "$PYTHON" -m pip install --quiet --disable-pip-version-check "${missing[@]}" </dev/null >&2 \
        || say "warning: pip install ${missing[*]} failed"
}

# ensure_apt "binary:package ...": apt-installs only packages whose binary is missing.
ensure_apt() {
    local pair missing=() sudo=""
    for pair in $1; do
        command -v "${pair%%:*}" >/dev/null 2>&1 || [ -x "/usr/sbin/${pair%%:*}" ] \
            || missing+=("${pair#*:}")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    [ "$(id -u)" -ne 0 ] && sudo="sudo -n"
    if ! command -v apt-get >/dev/null 2>&1; then
        say "warning: missing ${missing[*]} and no apt-get: install them by hand"
        return 0
    fi
    say "installing Debian packages: ${missing[*]}"
    { $sudo apt-get update -qq \
        && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}"; } \
        </dev/null >&2 || say "warning: apt-get install ${missing[*]} failed"
}

# ensure_postgres: starts the local cluster when it doesn't answer; never fatal
# (Odoo then fails with its own clear connection error).
ensure_postgres() {
    pg_opts
    command -v pg_isready >/dev/null 2>&1 || return 0
    pg_isready -q "${PG_OPTS[@]}" && return 0
    say "PostgreSQL is not answering: starting it"
    if command -v pg_ctlcluster >/dev/null 2>&1 && [ -d /etc/postgresql ]; then
        local v
        for v in $(ls /etc/postgresql); do
            pg_ctlcluster --skip-systemctl-redirect "$v" main start >&2 || true
        done
    elif command -v service >/dev/null 2>&1; then
        service postgresql start >&2 || true
    fi
    local i
    for i in $(seq 1 20); do
        pg_isready -q "${PG_OPTS[@]}" && return 0
        sleep 0.5
    done
    say "warning: PostgreSQL still not answering (${DB_HOST:-local socket}); set DB_HOST/DB_PORT/DB_USER"
}

# free_ports N: prints N distinct free TCP ports (held open together, so distinct).
free_ports() {
    "$PYTHON" - "$1" <<'EOF'
import socket, sys
socks = [socket.socket() for _ in range(int(sys.argv[1]))]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in socks))
EOF
}

# module_depends: the comma-separated "depends" of $MODULE's manifest.
module_depends() {
    local dir
    for dir in ${ADDONS_PATH//,/ }; do
        if [ -f "$dir/$MODULE/__manifest__.py" ]; then
            "$PYTHON" -c 'import ast, sys
print(",".join(ast.literal_eval(open(sys.argv[1]).read()).get("depends") or []) or "base")' \
                "$dir/$MODULE/__manifest__.py"
            return
        fi
    done
    echo base
}
