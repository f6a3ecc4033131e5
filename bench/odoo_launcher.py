# License LGPL-3.0 or later (https://www.gnu.org/licenses/lgpl).
"""``odoo-bin`` for the importable ``odoo`` package (every Odoo process a
benchmark starts, through bench/harness.py, and ``make run`` / ``make test``
through scripts/odoo_env.sh).

A real script file, not ``python -c``: in prefork mode Odoo's master spawns
its gevent process as ``[sys.executable, sys.argv[0], 'gevent', ...]``, and
with ``python -c`` that becomes ``python -c gevent`` -- a NameError, respawned
in a loop that burns CPU.
"""

import os
import sys

os.environ["TZ"] = "UTC"
# Python put this script's folder first on sys.path: Odoo's imports must not
# find bench/'s modules there.
HERE = os.path.dirname(os.path.abspath(__file__))
if sys.path and os.path.abspath(sys.path[0]) == HERE:
    del sys.path[0]

import odoo  # noqa: E402

if __name__ == "__main__":
    odoo.cli.main()
