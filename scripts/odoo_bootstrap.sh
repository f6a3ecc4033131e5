# shellcheck shell=bash
# Sourced by scripts/odoo_env.sh (never executed): gets Odoo 18.0 community
# for a machine that has none, into a cache folder outside the repository,
# with a virtualenv holding Odoo's pinned requirements; reused on later runs.
#
# Knobs (all optional):
#   ODOO_SOURCE     where to get Odoo from: a git URL (default: the official
#                   repository, shallow clone of branch $ODOO_BRANCH), a local
#                   checkout (a folder holding odoo-bin), or a source archive
#                   (.tar.gz, .tar.xz, .tgz, .zip)
#   ODOO_BRANCH     branch of a git ODOO_SOURCE (default 18.0)
#   IOT_CACHE_DIR   the cache folder (default ${XDG_CACHE_HOME:-~/.cache}/iot_base):
#                   odoo-18.0/ (the source), venv-18.0/ (the virtualenv)
#   IOT_BOOTSTRAP_PYTHON
#                   the interpreter the virtualenv is made from (default python3;
#                   Odoo 18.0 supports Python 3.10 to 3.12)
#   IOT_BOOTSTRAP=0 never bootstrap: stop with the "not found" message instead
#
# Needs no root for itself. Building Odoo's pinned requirements needs a C
# compiler and the PostgreSQL client headers (Debian: build-essential,
# libpq-dev, python3-dev, python3-venv): installed with apt-get when missing,
# as root or through `sudo -n`; without either, one line names the packages.
# python-ldap (only Odoo's auth_ldap uses it; it needs libldap2-dev and
# libsasl2-dev) is left out.

ODOO_DEFAULT_SOURCE="https://github.com/odoo/odoo.git"
# the sdists of some pinned requirements still import pkg_resources
BOOTSTRAP_PIP_CONSTRAINT="setuptools<70"
BOOTSTRAP_APT_PACKAGES="gcc:build-essential pg_config:libpq-dev"

bootstrap_cache_dir() {
    printf '%s\n' "${IOT_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/iot_base}"
}

# _odoo_serie DIR: the serie in DIR/odoo/release.py (read, not imported).
_odoo_serie() {
    "${IOT_BOOTSTRAP_PYTHON:-python3}" - "$1/odoo/release.py" <<'EOF_PY' 2>/dev/null
import runpy, sys
print(runpy.run_path(sys.argv[1]).get("serie", "?"))
EOF_PY
}

# _fetch_odoo_source SOURCE TARGET: TARGET becomes a folder holding odoo-bin.
_fetch_odoo_source() {
    local source=$1 target=$2 inner
    rm -rf "$target" && mkdir -p "$target" || return 1
    if [ -d "$source" ]; then
        [ -f "$source/odoo-bin" ] || { say "ODOO_SOURCE=$source holds no odoo-bin"; return 1; }
        if [ -e "$source/.git" ]; then
            say "== bootstrap: cloning the local checkout $source"
            rmdir "$target" && git clone -q --depth 1 "file://$(cd "$source" && pwd)" "$target" || return 1
        else
            say "== bootstrap: copying $source"
            cp -a "$source/." "$target/" || return 1
        fi
    elif [ -f "$source" ]; then
        say "== bootstrap: unpacking $source"
        case "$source" in
            *.zip) "${IOT_BOOTSTRAP_PYTHON:-python3}" -m zipfile -e "$source" "$target" || return 1 ;;
            *) tar -xf "$source" -C "$target" || return 1 ;;
        esac
        if [ ! -f "$target/odoo-bin" ]; then
            # an archive usually holds one top folder (odoo-18.0/)
            inner=$(find "$target" -mindepth 2 -maxdepth 2 -name odoo-bin -printf '%h\n' | head -n 1)
            [ -n "$inner" ] || { say "ODOO_SOURCE=$source holds no odoo-bin"; return 1; }
            find "$inner" -mindepth 1 -maxdepth 1 -exec mv -t "$target" {} + && rmdir "$inner" || return 1
        fi
    else
        say "== bootstrap: cloning $source (branch ${ODOO_BRANCH:-18.0}, shallow)"
        rmdir "$target" && git clone -q --depth 1 --branch "${ODOO_BRANCH:-18.0}" "$source" "$target" \
            || { say "could not clone $source: set ODOO_SOURCE to a reachable git URL, a local checkout or a source archive of Odoo 18.0"; return 1; }
    fi
}

# _bootstrap_venv SRC VENV: VENV holds Odoo's requirements (once per requirements.txt).
_bootstrap_venv() {
    local src=$1 venv=$2 base=${IOT_BOOTSTRAP_PYTHON:-python3} sum req constraint
    [ -f "$src/requirements.txt" ] || { say "$src has no requirements.txt"; return 1; }
    sum=$(sha256sum "$src/requirements.txt" | cut -d' ' -f1)
    if [ "$(cat "$venv/.iot_base-requirements" 2>/dev/null)" = "$sum" ] \
        && "$venv/bin/python" -c "import odoo" 2>/dev/null; then
        return 0
    fi
    ensure_apt "$BOOTSTRAP_APT_PACKAGES"
    if [ ! -x "$venv/bin/python" ]; then
        say "== bootstrap: virtualenv $venv ($("$base" --version 2>&1))"
        "$base" -m venv "$venv" \
            || { say "could not create a virtualenv with $base: install Debian's python3-venv, or set IOT_BOOTSTRAP_PYTHON"; return 1; }
    fi
    # the venv finds this Odoo the way a checkout's users do: on its path
    "$venv/bin/python" -c 'import site, sys; open(site.getsitepackages()[0] + "/iot_base_odoo.pth", "w").write(sys.argv[1] + "\n")' "$src"
    req=$(mktemp) constraint=$(mktemp)
    grep -viE '^[[:space:]]*python-ldap([^a-z0-9_.-]|$)' "$src/requirements.txt" >"$req"
    printf '%s\n' "$BOOTSTRAP_PIP_CONSTRAINT" >"$constraint"
    say "== bootstrap: installing Odoo's requirements into $venv (a few minutes, once)"
    if ! PIP_CONSTRAINT="$constraint" "$venv/bin/python" -m pip install --quiet \
        --disable-pip-version-check -r "$req" </dev/null >&2; then
        rm -f "$req" "$constraint"
        say "could not install Odoo's requirements (see above): Debian needs build-essential libpq-dev python3-dev"
        return 1
    fi
    rm -f "$req" "$constraint"
    printf '%s\n' "$sum" >"$venv/.iot_base-requirements"
}

# bootstrap_odoo: sets ODOO_PATH and PYTHON to a cached Odoo 18.0 and its
# virtualenv, getting them first when missing; returns non-zero (after one
# line saying why) when it cannot.
bootstrap_odoo() {
    local cache src venv serie
    cache=$(bootstrap_cache_dir)
    src="$cache/odoo-18.0" venv="$cache/venv-18.0"
    mkdir -p "$cache" || return 1
    if [ ! -f "$src/odoo-bin" ]; then
        _fetch_odoo_source "${ODOO_SOURCE:-$ODOO_DEFAULT_SOURCE}" "$src.partial" || return 1
        serie=$(_odoo_serie "$src.partial")
        if [ "$serie" != "18.0" ]; then
            say "ODOO_SOURCE=${ODOO_SOURCE:-$ODOO_DEFAULT_SOURCE} holds Odoo ${serie:-?}, not 18.0"
            rm -rf "$src.partial"
            return 1
        fi
        rm -rf "$src" && mv "$src.partial" "$src" || return 1
    fi
    _bootstrap_venv "$src" "$venv" || return 1
    say "== using the Odoo 18.0 of $src with $venv/bin/python"
    ODOO_PATH=$src
    PYTHON=$venv/bin/python
}
