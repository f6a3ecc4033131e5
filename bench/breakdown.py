# License LGPL-3.0 or later (https://www.gnu.org/licenses/lgpl).
"""Where one authentication's time goes, step by step (run by bench_auth.py).

Usage: python3 bench/breakdown.py '<json spec>' <odoo options...>

Runs inside Odoo (no HTTP server) on the benchmark database and times each
step of the broker's hot path in isolation, many times, with the ORM cache
cleared before every iteration as a fresh HTTP request would have it. Prints
one JSON line on stdout: step -> (median us, p90 us). A step whose method no
longer exists is reported as missing rather than failing the benchmark.
"""

import json
import statistics
import sys
import time

from harness import open_registry, superuser_env

from odoo.tools import SQL


def measure(env, steps, iterations, rounds=5, warmup=10):
    """Time every step ``iterations`` times, in ``rounds`` interleaved rounds
    (so that a burst of machine noise does not land on one step only).

    steps: [(name, fn, before or None)]; returns name -> [median us, p90 us].
    """
    samples = {name: [] for name, _fn, _before in steps}
    per_round = max(1, iterations // rounds)
    for r in range(rounds):
        for name, fn, before in steps:
            for i in range(per_round + (warmup if r == 0 else 0)):
                env.invalidate_all()
                if before:
                    before()
                t0 = time.perf_counter()
                fn()
                dt = time.perf_counter() - t0
                if r or i >= warmup:
                    samples[name].append(dt)
    out = {}
    for name, values in samples.items():
        values.sort()
        out[name] = [
            statistics.median(values) * 1e6,
            values[int(len(values) * 0.9)] * 1e6,
        ]
    return out


def explain_lookup(env, creds, user, secret):
    """EXPLAIN ANALYZE of the query ``_authenticate_secret`` really sends
    (captured, so that it follows the addon's code), 5th run in the session."""
    cr = env.cr
    captured = []
    execute = cr.execute

    def spy(query, params=None, log_exceptions=True):
        captured.append((query, params))
        return execute(query, params, log_exceptions)

    cr.execute = spy
    try:
        env.invalidate_all()
        creds._authenticate_secret(user, secret)
    finally:
        cr.execute = execute
    for query, params in captured:
        if isinstance(query, SQL):
            query, params = query.code, query.params
        if "iot_credentials_secret" in query:
            for _ in range(5):
                cr.execute("EXPLAIN (ANALYZE, COSTS OFF, SUMMARY ON) " + query, params)
                plan = [row[0] for row in cr.fetchall()]
            cr.rollback()
            return plan
    cr.rollback()
    return ["(no query on iot_credentials_secret captured)"]


def main():
    spec = json.loads(sys.argv[1])
    registry = open_registry(sys.argv[2:])
    n = spec.get("iterations", 300)
    user, secret, peer = spec["username"], spec["secret"], spec["peer"]
    values = {
        "username": user,
        "password": secret,
        "clientid": user + "~c",
        "peerhost": peer,
    }
    acl_values = {
        "username": user,
        "clientid": user + "~c",
        "action": "publish",
        "topic": spec["topic"],
        "qos": "0",
        "retain": "false",
    }
    out = {}
    with registry.cursor() as cr:
        env = superuser_env(cr)
        broker = env["iot.broker.emqx"].sudo()
        creds = env["iot.credentials"].sudo()
        throttle = env["iot.auth.throttle"].sudo()
        credential = creds.search([("username", "=", user)])

        steps = []

        def step(name, fn, before=None):
            try:
                fn()  # fails early if the method is gone
            except AttributeError as exc:
                out[name] = f"missing: {exc}"
                return
            steps.append((name, fn, before))

        def reply_reads():
            c = creds.browse(credential.id)
            return (
                c.is_superuser,
                c.kind,
                c.company_id.iot_mqtt_namespace,
                c.company_id.id,
            )

        from odoo.addons.iot_base.tools import secret_hash  # noqa: PLC0415
        from odoo.addons.iot_base.tools.emqx.acl import compile_acl  # noqa: PLC0415

        cr.execute(
            "SELECT hash FROM iot_credentials_secret WHERE credential_id = %s",
            [credential.id],
        )
        stored_hash = cr.fetchone()[0]

        step("SQL round trip (SELECT 1)", lambda: cr.execute("SELECT 1"))
        step("_check_token", lambda: broker._check_token([spec["token"], None]))
        step("throttle._is_blocked", lambda: throttle._is_blocked(user, peer))
        step(
            "credentials._authenticate_secret",
            lambda: creds._authenticate_secret(user, secret),
        )
        step(
            "  of which verify_secret (PBKDF2)",
            lambda: secret_hash.verify_secret(secret, stored_hash),
        )
        step("ORM read of credential + company (cold)", reply_reads)
        rules = broker._rules(credential, user + "-c")
        step(
            "reply: _rules (ORM cache warm)",
            lambda: broker._rules(creds.browse(credential.id), user + "-c"),
            before=reply_reads,
        )
        step("reply: emqx.acl.compile_acl", lambda: compile_acl(rules))

        def log_allow():
            broker._log(
                "auth",
                "allow",
                "ok",
                username=user,
                clientid=user + "~c",
                peer=peer,
                credential_id=credential.id,
            )

        step("_log (audit INSERT)", log_allow)
        step("commit after the audit INSERT", cr.commit, before=log_allow)
        step(
            "commit of a read-only transaction",
            cr.commit,
            before=lambda: cr.execute("SELECT 1"),
        )
        step(
            "throttle._register_failure",
            lambda: throttle._register_failure(user + "_nobody", peer),
        )

        # The whole decision of each endpoint path (what differs between the
        # paths; Odoo's HTTP layer around it is the same for all of them).
        wrong = secret[:8] + ("0" if secret[8] != "0" else "1") + secret[9:]
        auth_paths = {
            "valid": values,
            "wrong secret": dict(values, password=wrong),
            "unknown user": dict(
                values,
                username="bench_breakdown_ghost",
                clientid="bench_breakdown_ghost~c",
            ),
            "throttled": dict(
                values,
                username=spec["blocked_username"],
                password=spec["blocked_secret"],
                clientid=spec["blocked_username"] + "~c",
            ),
        }
        acl_paths = {
            "allow": acl_values,
            "deny": dict(acl_values, topic=spec["topic"].replace(user, "someone_else")),
        }

        def decide(method, path_values):
            def run():
                getattr(broker, method)(dict(path_values), peer)
                cr.commit()

            return run

        for path, path_values in auth_paths.items():
            step(
                f"_emqx_authenticate + commit ({path})",
                decide("_emqx_authenticate", path_values),
            )
        for path, path_values in acl_paths.items():
            step(
                f"_emqx_authorize + commit ({path})",
                decide("_emqx_authorize", path_values),
            )
        cr.rollback()
        out.update(measure(env, steps, n))
        cr.execute("SELECT count(*) FROM iot_credentials")
        out["_credentials"] = cr.fetchone()[0]
        out["_plan"] = explain_lookup(env, creds, user, secret)
    print("BENCH_BREAKDOWN " + json.dumps(out))


if __name__ == "__main__":
    main()
