#!/usr/bin/env bash
# `make lint`: ruff (.ruff.toml) over the Python code, then pylint with
# pylint-odoo's OCA mandatory checks (.pylintrc) over the addons.
# Exits non-zero on any finding; runs both tools even when the first complains.
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
[ "$rc" -eq 0 ] && echo "lint: OK" || echo "lint: FAILED"
exit "$rc"
