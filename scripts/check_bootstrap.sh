#!/usr/bin/env bash
# The path of a machine without Odoo, tested (.ci/run calls it): bootstraps
# Odoo 18.0 from ODOO_SOURCE into a cache of its own with
# scripts/odoo_bootstrap.sh — the source fetched anew on every run, the
# virtualenv reused while Odoo's requirements.txt is unchanged — then checks
# that the new virtualenv imports that Odoo and that `odoo-bin --version`
# says 18.0, and that a second bootstrap reuses everything.
#
# ODOO_SOURCE: a git URL, a local checkout or a source archive; default: the
# source folder of the Odoo that python3 imports (it must hold odoo-bin).
# IOT_CACHE_DIR: default ${XDG_CACHE_HOME:-~/.cache}/iot_base-selftest.
set -u -o pipefail
cd "$(dirname "$0")/.." || exit 2
say() { printf '%s\n' "$*" >&2; }
fail() { echo "bootstrap check: FAILED: $*"; exit 1; }

if [ -z "${ODOO_SOURCE:-}" ]; then
    ODOO_SOURCE=$(python3 -c 'import os, odoo; print(os.path.dirname(os.path.dirname(os.path.abspath(odoo.__file__))))' 2>/dev/null)
    [ -n "$ODOO_SOURCE" ] && [ -f "$ODOO_SOURCE/odoo-bin" ] \
        || fail "no ODOO_SOURCE given and python3 imports no Odoo source checkout (a folder holding odoo-bin)"
fi
export ODOO_SOURCE
export IOT_CACHE_DIR=${IOT_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/iot_base-selftest}
unset ODOO_PATH PYTHON

# shellcheck source=scripts/odoo_env.sh
. scripts/odoo_env.sh
rm -rf "$IOT_CACHE_DIR/odoo-18.0"   # the source is fetched on every check

started=$SECONDS
bootstrap_odoo || fail "bootstrap_odoo failed (see above)"
say "bootstrap took $((SECONDS - started)) s"
case "$ODOO_PATH" in "$IOT_CACHE_DIR"/*) ;; *) fail "ODOO_PATH=$ODOO_PATH is outside $IOT_CACHE_DIR" ;; esac
case "$PYTHON" in "$IOT_CACHE_DIR"/*) ;; *) fail "PYTHON=$PYTHON is outside $IOT_CACHE_DIR" ;; esac

# from a neutral folder, so that neither this repository nor ODOO_SOURCE is on the path
imported=$(cd / && "$PYTHON" -c 'import odoo, odoo.cli; print(odoo.__file__)') \
    || fail "the new virtualenv cannot import odoo"
case "$imported" in "$ODOO_PATH"/*) ;; *) fail "the new virtualenv imports $imported, not $ODOO_PATH" ;; esac
version=$(cd / && "$PYTHON" "$ODOO_PATH/odoo-bin" --version) || fail "odoo-bin --version failed"
case "$version" in "Odoo Server 18.0"*) ;; *) fail "odoo-bin --version says: $version" ;; esac

again=$(bootstrap_odoo 2>&1) || fail "the second bootstrap failed: $again"
case "$again" in *"== bootstrap:"*) fail "the second bootstrap did work again: $again" ;; esac
echo "bootstrap check: OK ($version from $ODOO_SOURCE, $imported)"
