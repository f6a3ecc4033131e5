# License LGPL-3.0 or later (https://www.gnu.org/licenses/lgpl).
"""``odoo-bin`` for the importable ``odoo`` package (used by bench_auth.py).

A real script file, not ``python -c``: in prefork mode Odoo's master spawns
its gevent process as ``[sys.executable, sys.argv[0], 'gevent', ...]``, and
with ``python -c`` that becomes ``python -c gevent`` -- a NameError, respawned
in a loop that burns CPU during the whole benchmark.
"""

import os

os.environ["TZ"] = "UTC"

import odoo  # noqa: E402

if __name__ == "__main__":
    odoo.cli.main()
