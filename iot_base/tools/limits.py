# License LGPL-3.0 or later (https://www.gnu.org/licenses/lgpl).
"""Per-company limits: what one company may create, so that its data cannot
change another company's cost or output by more than a constant.

Each limit is a system parameter (Settings > IoT) read here, the one place;
zero or unset means the default below.
"""

from odoo.tools import SQL

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


def company_over_limit(records, key, company_ids):
    """The first ``(company id, limit)`` that adding one ``records`` row per
    item of ``company_ids`` would take past the limit ``key``, or None.

    Counts every row of the model's table (archived ones too) in one grouped,
    indexed COUNT, whatever the number of companies or new rows.
    """
    added = {}
    for company_id in company_ids:
        added[company_id] = added.get(company_id, 0) + 1
    if not added:
        return None
    limit = company_limit(records.env, key)
    records.flush_model(["company_id"])
    records.env.cr.execute(
        SQL(
            "SELECT company_id, count(*) FROM %s WHERE company_id = ANY(%s)"
            " GROUP BY company_id",
            SQL.identifier(records._table),
            list(added),
        )
    )
    existing = dict(records.env.cr.fetchall())
    for company_id, count in added.items():
        if existing.get(company_id, 0) + count > limit:
            return company_id, limit
    return None
