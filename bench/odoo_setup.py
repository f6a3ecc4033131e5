# License LGPL-3.0 or later (https://www.gnu.org/licenses/lgpl).
"""Prepare the benchmark database through the ORM (run by bench_auth.py).

Usage: python3 bench/odoo_setup.py '<json spec>' <odoo options...>

Runs inside Odoo (no server), on the throwaway database named in the odoo
options, and prints one JSON line on stdout: what the load generator needs
(clear secrets, namespace). Everything here goes through the addon's own
code paths (``create``, ``action_rotate_secret``, ``set_param``), so the
secrets are real ones. Bulk filler rows are NOT made here: bench_auth.py
inserts them with SQL between the two latency measurements.
"""

import json
import sys

from harness import open_registry, superuser_env


def main():
    spec = json.loads(sys.argv[1])
    registry = open_registry(sys.argv[2:])
    with registry.cursor() as cr:
        env = superuser_env(cr)
        params = env["ir.config_parameter"].sudo()
        params.set_param("iot_base.auth_token", spec["token"])
        # Measure the full deny path (verify + failure bookkeeping + audit)
        # instead of the throttle's short cut; the throttled path has its own
        # scenario (a username blocked below).
        params.set_param("iot_base.throttle_max_failures", str(spec["max_failures"]))

        credentials = env["iot.credentials"].sudo()
        existing = credentials.with_context(active_test=False).search_count([])
        names = [
            spec["device_prefix"] % i for i in range(spec["devices"] - existing - 1)
        ]
        names.append(spec["blocked_username"])
        records = credentials.create(
            [{"username": name, "kind": "device"} for name in names]
        )
        secrets = {}
        for record in records:
            action = record.action_rotate_secret()
            secrets[record.username] = action["context"]["default_secret"]

        # The throttled path: this username is blocked for a day from each
        # client address the benchmark uses (models/iot_auth_throttle.py).
        for peer in spec["blocked_peers"]:
            cr.execute(
                """
                INSERT INTO iot_auth_throttle (key, failed_at, blocked_until)
                VALUES (%s, now() at time zone 'utc',
                        now() at time zone 'utc' + interval '1 day')
                """,
                [f"pair:{peer}|{spec['blocked_username']}"],
            )
        company = env.company
        out = {
            "secrets": secrets,
            "namespace": company.iot_mqtt_namespace or "",
            "company_id": company.id,
            "credentials": credentials.with_context(active_test=False).search_count([]),
        }
    print("BENCH_SETUP " + json.dumps(out))


if __name__ == "__main__":
    main()
