#!/usr/bin/env python3
# License LGPL-3.0 or later (https://www.gnu.org/licenses/lgpl).
"""Reconnect storm: N devices CONNECT at once to a freshly started broker.
See bench/README.md ("Reconnect storm").

One command, everything throwaway:

    python3 bench/bench_storm.py            # ~4 minutes on 2 cores

Cases, side by side, each on a broker started for it, the same client:
  (a)  Mosquitto, anonymous access: the machine's limit;
  (b)  Mosquitto files written by Odoo (iot.mosquitto.sync);
  (c0) RabbitMQ, one internal user created by hand, every client using it:
       RabbitMQ's own floor;
  (c)  RabbitMQ internal users kept by Odoo (iot.rabbitmq.store);
  (d)  RabbitMQ's HTTP backend asking Odoo at each CONNECT (prefork Odoo,
       2 workers): today's way.

The client (bench/storm_client.py: raw MQTT 3.1.1 CONNECT/CONNACK on
non-blocking sockets, one epoll loop per ``--client-processes`` process) keeps
``--in-flight`` CONNECTs outstanding, keeps every accepted connection open until
all are connected, retries a refused or dropped CONNECT (counted as a failure),
and measures its own CPU: a case whose rate is more than a third of what the
client can do on one core (connected / client CPU seconds) is marked
client-bound, i.e. it measured the client, not the broker.
Odoo requests during a storm are counted from Odoo's access log.
Database, Odoo, brokers, devices by SQL and MQTT packets: bench/harness.py.
"""

import argparse
import json
import os
import secrets
import sys
import time
from pathlib import Path

import harness
import storm_client
from harness import say, superuser_env

TOKEN = "storm-" + secrets.token_hex(8)
DEVICE_PREFIX = "storm_dev_"


# ---------------------------------------------------------------------------
# The storm client (bench/storm_client.py: raw sockets, one epoll loop per
# process, measuring its own CPU)
# ---------------------------------------------------------------------------


def storm(host, port, logins, in_flight, processes=1, timeout=180):
    packets = [harness.mqtt_connect_packet(*login) for login in logins]
    return storm_client.storm(host, port, packets, in_flight, processes, timeout)


# ---------------------------------------------------------------------------
# Inside Odoo: devices, syncs
# ---------------------------------------------------------------------------


def inner(command, spec, odoo_args):
    registry = harness.open_registry(odoo_args)
    dbname = registry.db_name
    engine = sys.modules["odoo.addons.iot_base.models.iot_store_sync"]
    rabbit = sys.modules["odoo.addons.iot_base.tools.rabbitmq_store"]
    out = {}
    if command == "setup":
        with registry.cursor() as cr:
            env = superuser_env(cr)
            env["ir.config_parameter"].sudo().set_param(
                "iot_base.auth_token", spec["token"]
            )
            names = [f"{DEVICE_PREFIX}{i:05d}" for i in range(spec["devices"])]
            clear = harness.insert_devices(cr, env, names)
            # the RabbitMQ hash form, as if the secrets were issued with the
            # store enabled (iot.store.hash)
            cr.execute(
                "SELECT c.username, s.id FROM iot_credentials_secret s "
                "JOIN iot_credentials c ON c.id = s.credential_id "
                "WHERE c.username LIKE %s",
                [DEVICE_PREFIX + "%"],
            )
            rows = cr.fetchall()
            cr.execute(
                "INSERT INTO iot_store_hash (secret_id, store, hash) "
                "SELECT unnest(%s::int[]), 'rabbitmq', unnest(%s::varchar[])",
                [
                    [sid for _u, sid in rows],
                    [rabbit.rabbitmq_hash(clear[u])[0] for u, _sid in rows],
                ],
            )
            cr.execute("ANALYZE iot_credentials")
            cr.execute("ANALYZE iot_credentials_secret")
            cr.postcommit.clear()
        out["secrets"] = clear
    elif command in ("mosquitto", "rabbitmq"):
        with registry.cursor() as cr:
            env = superuser_env(cr)
            params = env["ir.config_parameter"].sudo()
            for key, value in spec["params"].items():
                params.set_param(key, value)
            cr.postcommit.clear()
        model = {"mosquitto": "iot.mosquitto.sync", "rabbitmq": "iot.rabbitmq.store"}
        start = time.monotonic()
        result = engine.run_sync(dbname, force=True, adapters=[model[command]])
        out["sync_seconds"] = round(time.monotonic() - start, 3)
        out["ok"], out["error"] = result["ok"], result.get("error")
        out["pushed"] = result.get("pushed")
    print("BENCH_STORM " + json.dumps(out))


# ---------------------------------------------------------------------------
# Outside
# ---------------------------------------------------------------------------


def anonymous_mosquitto():
    """Mosquitto of tests/brokers/mosquitto.py with anonymous access."""

    class Broker(harness.test_helper("brokers.mosquitto").MosquittoBroker):
        def config(self):
            return (
                super()
                .config()
                .replace("allow_anonymous false", "allow_anonymous true")
                .replace("use_username_as_clientid true\n", "")
            )

    return Broker()


class Storm(harness.Workspace):
    def __init__(self, args):
        super().__init__(args, "iot_bench_storm")
        self.mosquitto = harness.test_helper("brokers.mosquitto")
        self.brokers = harness.test_helper("brokers.rabbitmq")
        self.odoo = harness.OdooServer(self.odoo_opts(), self.tmp / "odoo.log")

    def run_inner(self, command, spec):
        return self.run_in_odoo(
            Path(__file__), ["--inner", command, json.dumps(spec)], "BENCH_STORM"
        )

    def start_odoo(self):
        self.odoo.start(
            self.args.workers, lambda: self.brokers.port_open(self.odoo.port)
        )
        self.odoo_url = f"http://{self.odoo.host}:{self.odoo.port}"

    def odoo_requests(self):
        text = self.odoo.log_text()
        return sum("/iot/rabbitmq/" in line for line in text.splitlines())

    def rabbitmq(self):
        node = self.brokers.RabbitMQBroker(self.odoo_url, TOKEN)
        node.start()
        return node

    def case(self, name, host, port, logins):
        before = self.odoo_requests()
        say(f"== ({name}) {len(logins)} CONNECTs, {self.args.in_flight} in flight")
        result = storm(
            host, port, logins, self.args.in_flight, self.args.client_processes
        )
        time.sleep(0.5)  # the access log is written after the reply
        result["odoo_requests"] = self.odoo_requests() - before
        say(
            f"   {result['connected']}/{result['attempted']} in "
            f"{result['wall_seconds']} s ({result['connects_per_second']}/s), "
            f"{result['failures']} failures, {result['odoo_requests']} Odoo requests; "
            f"client {result['client_cpu_seconds']} CPU s, up to "
            f"{result['client_capacity_per_second']}/s per core"
            + (" — CLIENT-BOUND" if result["client_bound"] else "")
        )
        return result

    def run(self):
        a = self.args
        self.install()
        say(f"== {a.devices} devices by SQL")
        secrets_by_name = self.run_inner(
            "setup", {"devices": a.devices, "token": TOKEN}
        )["secrets"]
        names = sorted(secrets_by_name)

        def logins(count):
            return [
                (f"{n}~s{i}", n, secrets_by_name[n])
                for i, n in enumerate(names[:count])
            ]

        self.start_odoo()
        results = {}

        # (a) anonymous Mosquitto
        anonymous = anonymous_mosquitto()
        anonymous.start()
        try:
            results["a"] = self.case(
                "a",
                anonymous.host,
                anonymous.port,
                [(f"anon~{i}", "", "") for i in range(a.devices)],
            )
        finally:
            anonymous.stop()

        # (b) Mosquitto files
        broker = self.mosquitto.MosquittoBroker()
        broker.start()
        try:
            sync = self.run_inner(
                "mosquitto",
                {
                    "params": {
                        "iot_base.mosquitto_sync_enabled": "True",
                        "iot_base.mosquitto_password_file": broker.password_file,
                        "iot_base.mosquitto_acl_file": broker.acl_file,
                        "iot_base.mosquitto_pid_file": broker.pid_file,
                    }
                },
            )
            if not sync["ok"]:
                raise RuntimeError(sync["error"])
            harness.wait_accepted(
                broker.host, broker.port, names[-1], secrets_by_name[names[-1]]
            )
            # Mosquitto uses the username as client id (use_username_as_clientid)
            results["b"] = self.case("b", broker.host, broker.port, logins(a.devices))
            results["b"]["sync_seconds"] = sync["sync_seconds"]
        finally:
            broker.stop()
            self.run_inner(
                "mosquitto", {"params": {"iot_base.mosquitto_sync_enabled": "False"}}
            )

        # (c0) RabbitMQ, one user made by hand
        node = self.rabbitmq()
        try:
            password = secrets.token_hex(20)
            node.management_request(
                "PUT", "/api/users/storm_floor", {"password": password, "tags": ""}
            )
            node.management_request(
                "PUT",
                "/api/permissions/%2F/storm_floor",
                {"configure": ".*", "write": ".*", "read": ".*"},
            )
            results["c0"] = self.case(
                "c0",
                "127.0.0.1",
                node.mqtt_port,
                [
                    (f"storm_floor~{i}", "storm_floor", password)
                    for i in range(a.devices)
                ],
            )
        finally:
            node.stop()

        # (c) RabbitMQ internal users kept by Odoo
        node = self.rabbitmq()
        try:
            sync = self.run_inner(
                "rabbitmq",
                {
                    "params": {
                        "iot_base.rabbitmq_store_enabled": "True",
                        "iot_base.rabbitmq_management_url": node.management_url,
                        "iot_base.rabbitmq_management_user": node.management_user,
                        "iot_base.rabbitmq_management_password": (
                            node.management_password
                        ),
                    }
                },
            )
            if not sync["ok"]:
                raise RuntimeError(sync["error"])
            say(f"   full sync of {sync['pushed']} users: {sync['sync_seconds']} s")
            results["c"] = self.case(
                "c", "127.0.0.1", node.mqtt_port, logins(a.devices)
            )
            results["c"]["sync_seconds"] = sync["sync_seconds"]
        finally:
            node.stop()
            self.run_inner(
                "rabbitmq",
                {
                    "params": {
                        "iot_base.rabbitmq_store_enabled": "False",
                        "iot_base.rabbitmq_management_url": "",
                    }
                },
            )

        # (d) RabbitMQ's HTTP backend against Odoo
        node = self.rabbitmq()
        try:
            results["d"] = self.case(
                "d", "127.0.0.1", node.mqtt_port, logins(a.http_devices)
            )
        finally:
            node.stop()
        return results

    def cleanup(self):
        try:
            self.odoo.stop()
        finally:
            super().cleanup()


def report(args, results):
    a_rate = results["a"]["connects_per_second"] or 0
    c0_rate = results["c0"]["connects_per_second"] or 0
    lines = [
        f"Reconnect storm, {args.in_flight} CONNECTs in flight, "
        f"{os.cpu_count()} cores, "
        f"{args.client_processes} client process(es)",
        "| case | connected | wall (s) | connects/s | vs (a) | vs (c0) | failures "
        "| Odoo requests | client CPU (s) | client capacity/s | valid |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    labels = {
        "a": "(a) Mosquitto, anonymous",
        "b": "(b) Mosquitto files",
        "c0": "(c0) RabbitMQ, one hand-made user",
        "c": "(c) RabbitMQ internal users kept by Odoo",
        "d": "(d) RabbitMQ HTTP backend → Odoo",
    }
    for key in ("a", "b", "c0", "c", "d"):
        r = results[key]
        rate = r["connects_per_second"] or 0
        vs_c0 = f"{rate / c0_rate:.2f}×" if key in ("c", "d") and c0_rate else ""
        lines.append(
            f"| {labels[key]} | {r['connected']}/{r['attempted']} | "
            f"{r['wall_seconds']} | {rate} | {rate / a_rate:.2f}× | {vs_c0} | "
            f"{r['failures']} | {r['odoo_requests']} | {r['client_cpu_seconds']} | "
            f"{r['client_capacity_per_second']} | "
            f"{'client-bound' if r['client_bound'] else 'yes'} |"
        )
    lines.append(
        "valid: the client could do at least 3× the case's rate on one core of its "
        "own; client-bound: the figure is a floor of the broker's rate"
    )
    return "\n".join(lines)


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--devices", type=int, default=10_000)
    parser.add_argument(
        "--http-devices", type=int, default=1000, help="CONNECTs of case (d)"
    )
    parser.add_argument("--in-flight", type=int, default=50)
    parser.add_argument(
        "--client-processes",
        type=int,
        default=1,
        help="storm client processes (each with its own epoll loop)",
    )
    parser.add_argument("--workers", type=int, default=2, help="Odoo workers (d)")
    harness.add_common_arguments(parser)
    return parser.parse_args(argv)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--inner"]:
        inner(argv[1], json.loads(argv[2]), argv[4:])
        return 0
    args = parse_args(argv)
    bench = Storm(args)

    def work():
        results = bench.run()
        text = report(args, results)
        print(text)
        harness.write_json(args.json, args, results=results)
        return 0

    return harness.run_benchmark(work, bench.cleanup)


if __name__ == "__main__":
    sys.exit(main())
