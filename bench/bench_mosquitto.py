#!/usr/bin/env python3
# License LGPL-3.0 or later (https://www.gnu.org/licenses/lgpl).
"""Mosquitto file sync of iot_base: full sync of 100,000 credentials, and
"credential created" to "device can connect". See bench/MOSQUITTO.md.

One command, everything throwaway:

    python3 bench/bench_mosquitto.py              # ~1.5 minutes on 2 cores

1. snapshots ``iot_base`` and installs it into a throwaway database;
2. inside Odoo (this script again, ``--inner``): starts a Mosquitto 2.0 on
   free loopback ports (iot_base/tests/brokers/mosquitto.py), enables the
   Mosquitto files, inserts N device credentials with real PBKDF2 secrets by
   SQL (plus one IoT user with S session secrets: S per-secret logins with
   ACL sections), and keeps C devices connected;
3. full sync, R times: ``run_sync(force=True)`` (one SQL query, both files
   built, written atomically, SIGHUP), then the time until Mosquitto has
   reloaded, i.e. until a device added just before the sync is accepted
   (a CONNECT sent right after the signal is answered once the reload is
   done); the C connected devices are re-checked by the broker meanwhile;
4. created -> connected, R times, through the real code path: a new
   cursor creates a device credential and rotates its secret, commits (the
   after-commit hook syncs and signals), then CONNECT is retried until
   accepted;
5. stops Mosquitto, drops the database, whatever happened.

Prints a table (and JSON with --json). Exit 0 unless something failed.
"""

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import harness
from harness import (
    insert_devices,
    mqtt_connect,
    say,
    superuser_env,
    test_helper,
    wait_accepted,
)

DEVICE_PREFIX = "bench_dev_"
GOAL_SECONDS = 2.0


# ---------------------------------------------------------------------------
# Inside Odoo
# ---------------------------------------------------------------------------


def inner(spec, odoo_args):
    registry = harness.open_registry(odoo_args)  # imports iot_base
    dbname = registry.db_name
    sync_module = sys.modules["odoo.addons.iot_base.models.iot_mosquitto_sync"]
    run_sync = sync_module.run_sync
    broker = test_helper("brokers.mosquitto").MosquittoBroker()
    out = {"runs": [], "created": []}
    broker.start()
    held = []
    try:
        host, port = broker.host, broker.port
        with registry.cursor() as cr:
            env = superuser_env(cr)
            params = env["ir.config_parameter"].sudo()
            params.set_param(sync_module.ENABLED_PARAM, "True")
            params.set_param(sync_module.PASSWORD_FILE_PARAM, broker.password_file)
            params.set_param(sync_module.ACL_FILE_PARAM, broker.acl_file)
            params.set_param(sync_module.PID_FILE_PARAM, broker.pid_file)

        t0 = time.monotonic()
        count = spec["credentials"]
        with registry.cursor() as cr:
            env = superuser_env(cr)
            names = [f"{DEVICE_PREFIX}{i:06d}" for i in range(count)]
            clear = insert_devices(cr, env, names)
            user = env["res.users"].create(
                {
                    "name": "Bench Console",
                    "login": "bench.console@example.com",
                    "groups_id": [
                        (
                            6,
                            0,
                            [
                                env.ref("base.group_user").id,
                                env.ref("iot_base.iot_base_group_user").id,
                            ],
                        )
                    ],
                }
            )
            sessions = [
                user.with_user(user).get_or_create_iot_credentials()
                for _i in range(spec["sessions"])
            ]
            cr.execute("ANALYZE iot_credentials")
            cr.execute("ANALYZE iot_credentials_secret")
            cr.postcommit.clear()  # the first sync is measured below
        out["setup_seconds"] = round(time.monotonic() - t0, 1)
        say(
            f"   {count} devices and {len(sessions)} session secrets in "
            f"{out['setup_seconds']} s"
        )

        first = run_sync(dbname, force=True)
        if not first.get("ok"):
            raise RuntimeError(f"first sync failed: {first.get('error')}")
        out["first_sync"] = first
        out["files"] = {
            "password_bytes": os.path.getsize(broker.password_file),
            "acl_bytes": os.path.getsize(broker.acl_file),
        }
        wait_accepted(host, port, names[-1], clear[names[-1]])

        for i in range(spec["connected"]):
            name = names[i]
            code, sock = mqtt_connect(host, port, name, clear[name], keep=True)
            if code != 0:
                raise RuntimeError(f"{name} refused ({code})")
            held.append(sock)

        for run in range(spec["runs"]):
            # a device the broker does not know yet tells when it has reloaded
            with registry.cursor() as cr:
                env = superuser_env(cr)
                name = f"bench_new_{run:03d}"
                secret = insert_devices(cr, env, [name])[name]
                cr.postcommit.clear()
            if mqtt_connect(host, port, name, secret) == 0:
                raise RuntimeError("accepted before the sync")
            start = time.monotonic()
            result = run_sync(dbname, force=True)
            synced = time.monotonic()
            if not result.get("ok"):
                raise RuntimeError(f"sync failed: {result.get('error')}")
            reload_wait = wait_accepted(host, port, name, secret)
            total = time.monotonic() - start
            out["runs"].append(
                {
                    "total": total,
                    "sync": synced - start,
                    "reload_wait": reload_wait,
                    "query": result["query_seconds"],
                    "password_build": result["password_build_seconds"],
                    "acl_build": result["acl_build_seconds"],
                    "write": result["write_seconds"],
                    "logins": result["logins"],
                    "sections": result["sections"],
                    "pattern_lines": result["pattern_lines"],
                }
            )
            say(
                f"   full sync {run + 1}: {total:.3f} s (sync {synced - start:.3f}, "
                f"reload {reload_wait:.3f})"
            )

        alive = 0
        for sock in held:
            try:
                sock.setblocking(False)
                alive += sock.recv(1) != b""
            except BlockingIOError:
                alive += 1
            except OSError:
                pass
        out["still_connected"] = alive

        for run in range(spec["runs"]):
            name = f"bench_created_{run:03d}"
            start = time.monotonic()
            with registry.cursor() as cr:
                env = superuser_env(cr)
                device = env["iot.credentials"].create(
                    {"username": name, "kind": "device"}
                )
                secret = device.action_rotate_secret()["context"]["default_secret"]
                committing = time.monotonic()
                # leaving the block commits: the after-commit hook syncs
            committed = time.monotonic()
            connect_wait = wait_accepted(host, port, name, secret)
            total = time.monotonic() - start
            out["created"].append(
                {
                    "total": total,
                    "create": committing - start,
                    "commit_and_sync": committed - committing,
                    "connect_wait": connect_wait,
                }
            )
            say(f"   created -> connected {run + 1}: {total:.3f} s")
        with registry.cursor() as cr:
            env = superuser_env(cr)
            out["last_result"] = env["iot.mosquitto.sync"]._last_result()
    finally:
        for sock in held:
            sock.close()
        broker.stop()
    print("BENCH_MOSQUITTO " + json.dumps(out, default=str))


# ---------------------------------------------------------------------------
# Outside: database, report
# ---------------------------------------------------------------------------


class Bench(harness.Workspace):
    def __init__(self, args):
        super().__init__(args, "iot_bench_mosq")

    def measure(self):
        a = self.args
        spec = {
            "credentials": a.credentials,
            "sessions": a.sessions,
            "connected": a.connected,
            "runs": a.runs,
        }
        say(
            f"== {a.credentials} devices, {a.sessions} session secrets, "
            f"{a.connected} devices connected, {a.runs} runs"
        )
        return self.run_in_odoo(
            Path(__file__), ["--inner", json.dumps(spec)], "BENCH_MOSQUITTO", True
        )


def median_max(values):
    return statistics.median(values), max(values)


def report(args, data):
    runs, created = data["runs"], data["created"]
    lines = [
        f"Mosquitto sync benchmark: {args.credentials} device credentials + "
        f"{args.sessions} session secrets, {args.connected} devices connected "
        f"during the syncs, {len(runs)} runs (median / max)",
        f"machine: {os.cpu_count()} CPUs, {harness.machine()}, "
        f"mosquitto {harness.mosquitto_version()}, Python {sys.version.split()[0]}",
        f"files: password {data['files']['password_bytes']:,} bytes, "
        f"ACL {data['files']['acl_bytes']:,} bytes "
        f"({runs[0]['logins']} logins, {runs[0]['pattern_lines']} pattern lines, "
        f"{runs[0]['sections']} user sections)",
        "",
        "full sync (force):              median    max",
    ]
    for key, label in (
        ("query", "  SQL query"),
        ("password_build", "  password file built"),
        ("acl_build", "  ACL file built"),
        ("write", "  both files written"),
        ("sync", "  run_sync() returned"),
        ("reload_wait", "  then broker reloaded"),
        ("total", "  TOTAL until a new login works"),
    ):
        med, top = median_max([r[key] for r in runs])
        lines.append(f"{label:<31} {med:6.3f} s {top:6.3f} s")
    med, _top = median_max([r["total"] for r in runs])
    verdict = "MET" if med < GOAL_SECONDS else "MISSED"
    lines.append(f"goal: full sync under {GOAL_SECONDS:.0f} s -> {verdict}")
    lines.append(
        f"connected devices still connected after the syncs: "
        f"{data['still_connected']}/{args.connected}"
    )
    lines += ["", "created -> can connect (ORM create + rotate, commit, hook):"]
    for key, label in (
        ("create", "  create + rotate secret"),
        ("commit_and_sync", "  commit (hook syncs)"),
        ("connect_wait", "  then CONNECT accepted"),
        ("total", "  TOTAL"),
    ):
        med, top = median_max([r[key] for r in created])
        lines.append(f"{label:<31} {med:6.3f} s {top:6.3f} s")
    return "\n".join(lines)


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--credentials", type=int, default=100_000)
    parser.add_argument(
        "--sessions",
        type=int,
        default=20,
        help="session secrets of one console user (per-secret logins)",
    )
    parser.add_argument(
        "--connected",
        type=int,
        default=1000,
        help="devices kept connected during the syncs",
    )
    parser.add_argument("--runs", type=int, default=5)
    harness.add_common_arguments(parser)
    return parser.parse_args(argv)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--inner"]:
        inner(json.loads(argv[1]), argv[3:])
        return 0
    args = parse_args(argv)
    bench = Bench(args)

    def work():
        bench.install()
        data = bench.measure()
        text = report(args, data)
        print(text)
        harness.write_json(args.json, args, data=data, report=text)
        return 0

    return harness.run_benchmark(work, bench.cleanup)


if __name__ == "__main__":
    sys.exit(main())
