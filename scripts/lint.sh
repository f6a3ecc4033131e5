#!/usr/bin/env bash
# `make lint`: ruff (.ruff.toml) over the Python code, pylint with
# pylint-odoo's OCA mandatory checks (.pylintrc) over the addons, then eslint
# (eslint.config.cjs) and prettier (.prettierrc.cjs) over the addons' JavaScript,
# both with OCA's 18.0 configuration and versions (package.json).
# Exits non-zero on any error; runs every tool even when an earlier one complains.
# eslint's warnings are printed and do not fail (OCA's configuration marks the
# rules it does not enforce as warnings).
set -u -o pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
# Versions this configuration was checked against; installed only when missing.
LINT_PIP_PACKAGES="ruff==0.17.6 pylint-odoo==10.0.12"

if ! "$PYTHON" -m ruff --version >/dev/null 2>&1 \
    || ! "$PYTHON" -c "import pylint_odoo" 2>/dev/null; then
    echo "installing $LINT_PIP_PACKAGES" >&2
    # shellcheck disable=SC2086  # word splitting wanted
    "$PYTHON" -m pip install --quiet --disable-pip-version-check $LINT_PIP_PACKAGES </dev/null >&2
fi

# Folders that exist; addons are the folders holding a __manifest__.py.
py_dirs=() addons=()
for dir in iot_base scripts bench; do [ -d "$dir" ] && py_dirs+=("$dir"); done
for manifest in */__manifest__.py; do [ -f "$manifest" ] && addons+=("${manifest%/__manifest__.py}"); done

rc=0
echo "== ruff check ${py_dirs[*]}"
"$PYTHON" -m ruff check --config .ruff.toml --output-format=concise "${py_dirs[@]}" || rc=1
if [ ${#addons[@]} -gt 0 ]; then
    echo "== pylint (pylint-odoo, OCA mandatory checks) ${addons[*]}"
    "$PYTHON" -m pylint --rcfile=.pylintrc "${addons[@]}" && echo "pylint: no findings" || rc=1
fi
js_files=()
while IFS= read -r -d '' file; do js_files+=("$file"); done < <(
    find "${addons[@]}" -path '*/static/lib' -prune -o -name '*.js' -print0 2>/dev/null | sort -z)
if [ ${#js_files[@]} -gt 0 ]; then
    if ! command -v npm >/dev/null 2>&1; then
        echo "lint: npm (Node.js) is needed for eslint and prettier; install Debian's nodejs and npm" >&2
        rc=1
    else
        # node_modules/ follows package-lock.json: reinstalled when the lock changed.
        lock_sum=$(sha256sum package-lock.json | cut -d' ' -f1)
        if [ "$(cat node_modules/.iot_base-lock 2>/dev/null)" != "$lock_sum" ]; then
            echo "installing eslint and prettier (npm ci)" >&2
            if npm ci --no-audit --no-fund --loglevel=error </dev/null >&2; then
                echo "$lock_sum" >node_modules/.iot_base-lock
            else
                rc=1
            fi
        fi
        echo "== eslint (OCA configuration) ${#js_files[@]} files"
        npx --no-install eslint --no-warn-ignored "${js_files[@]}" && echo "eslint: no errors" || rc=1
        echo "== prettier --check (OCA configuration) ${#js_files[@]} files"
        npx --no-install prettier --check --log-level=warn "${js_files[@]}" \
            && echo "prettier: formatted" || { echo "(fix with: npx prettier --write <files>)"; rc=1; }
    fi
fi
[ "$rc" -eq 0 ] && echo "lint: OK" || echo "lint: FAILED"
exit "$rc"
