# License LGPL-3.0 or later (https://www.gnu.org/licenses/lgpl).
"""Per-company limits: what one company may create, so that its data cannot
change another company's cost or output by more than a constant.

Each limit is a system parameter (Settings > IoT) read here, the one place;
zero or unset means the default below.
"""

from .settings import number_param

# parameter key -> default
LIMIT_DEFAULTS = {
    # topic rules (allow and deny) owned by one company
    "iot_base.max_rules_per_company": 1000,
    # devices of one company (archived ones included: they keep their names)
    "iot_base.max_devices_per_company": 100000,
    # MQTT credentials of one company (devices, services and users)
    "iot_base.max_credentials_per_company": 200000,
    # device registrations per provisioning API key and minute
    "iot_base.max_provisioning_per_minute": 60,
}


def company_limit(env, key):
    """The limit ``key`` (one of :data:`LIMIT_DEFAULTS`) in force."""
    return number_param(env, key, LIMIT_DEFAULTS[key])
