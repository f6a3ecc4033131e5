# License LGPL-3.0 or later (https://www.gnu.org/licenses/lgpl).
"""What every benchmark needs around the code it measures."""

import importlib
import sys
import types
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
ADDON_DIR = REPO_ROOT / "iot_base"
_HELPERS = "iot_base_test_helpers"


def test_helper(name):
    """The addon's plain-Python test helper ``iot_base/tests/<name>.py``
    (``brokers``, ``mosquitto_broker``), without importing Odoo or the test
    suite: benchmarks start brokers the way the tests do."""
    if _HELPERS not in sys.modules:
        package = types.ModuleType(_HELPERS)
        package.__path__ = [str(ADDON_DIR / "tests")]
        sys.modules[_HELPERS] = package
    return importlib.import_module(f"{_HELPERS}.{name}")


def free_ports(count):
    """``count`` distinct TCP ports free on loopback right now."""
    return test_helper("brokers").free_ports(count)
