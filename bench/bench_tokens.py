# License LGPL-3.0 or later (https://www.gnu.org/licenses/lgpl).
"""Console connects to RabbitMQ 3.10: signed tokens against session secrets.

In one run, N console-like MQTT clients (one user's pages: ``<user>~<hex>``
client ids, the console's own rules) connect at once to a fresh RabbitMQ
node (tests/brokers/rabbitmq.py, OAuth 2 + HTTP backends) with tokens from
``/iot/app/config``'s code; then the same N connect to another fresh node
with session secrets, which its HTTP backend checks with Odoo. Reported per
mode: wall time until all are connected, connects/s, Odoo requests per
connect (from Odoo's access log) and Odoo's CPU time (its processes'
utime+stime).

    python3 bench/bench_tokens.py [--clients 2000] [--concurrency 200]
        [--workers 2] [--db-host ... --db-user ...] [--keep-db]

Reuses bench_auth.py's Bench (a prefork Odoo on a throwaway database with
iot_base and the floor addon, on bench/harness.py) and tests/brokers/rabbitmq.py's
node (harness.test_helper).
Run with a JSON spec as first argument (by Bench.run_in_odoo), it works
inside Odoo and makes the clients' passwords through the addon's own code.
"""

import argparse
import asyncio
import json
import sys
import time

import harness
from harness import cpu_seconds, mqtt_connect_packet, say, superuser_env

SETUP_MARKER = "BENCH_TOKENS_SETUP"
USER_LOGIN = "bench.console@example.com"


# ---------------------------------------------------------------------------
# Inside Odoo: the clients' passwords (run by Bench.run_in_odoo)
# ---------------------------------------------------------------------------


def odoo_setup(spec, odoo_args):
    registry = harness.open_registry(odoo_args)
    with registry.cursor() as cr:
        env = superuser_env(cr)
        params = env["ir.config_parameter"].sudo()
        params.set_param("iot_base.auth_token", spec["token"])
        params.set_param("iot_base.max_session_secrets", str(spec["clients"] + 10))
        params.set_param("iot_base.throttle_max_failures", "1000000000")
        params.set_param("iot_base.jwt_lifetime_seconds", "3600")
        user = env["res.users"].create(
            {
                "name": "Bench Console",
                "login": USER_LOGIN,
                "groups_id": [
                    (4, env.ref("base.group_user").id),
                    (4, env.ref("iot_base.iot_base_group_user").id),
                ],
            }
        )
        app = env["iot.app"].with_user(user)
        out = {}
        for mode in ("secret", "rabbitmq_jwt"):
            params.set_param("iot_base.console_auth", mode)
            t0 = time.monotonic()
            configs = [app._page_config() for _i in range(spec["clients"])]
            out[mode] = {
                "issue_seconds": time.monotonic() - t0,
                "clients": [
                    [
                        c["client_id"],
                        c["credentials"]["username"],
                        c["credentials"]["password"],
                    ]
                    for c in configs
                ],
            }
    print(SETUP_MARKER + " " + json.dumps(out))


# ---------------------------------------------------------------------------
# MQTT 3.1.1 CONNECT over TCP, many at once (asyncio; no thread per client)
# ---------------------------------------------------------------------------


async def connect_all(port, clients, concurrency, timeout):
    """Connect every client (and keep them open until all are done):
    (seconds until the last CONNACK, refused count, writers)."""
    gate = asyncio.Semaphore(concurrency)
    writers, refused = [], []

    async def one(client_id, username, password):
        async with gate:
            try:
                reader, writer = await asyncio.wait_for(
                    asyncio.open_connection("127.0.0.1", port), timeout
                )
                writer.write(mqtt_connect_packet(client_id, username, password, 600))
                await writer.drain()
                connack = await asyncio.wait_for(reader.readexactly(4), timeout)
            except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError) as exc:
                refused.append(repr(exc)[:80])
                return
            if connack[0] != 0x20 or connack[3] != 0:
                refused.append(f"CONNACK {connack.hex()}")
                writer.close()
                return
            writers.append(writer)

    t0 = time.monotonic()
    await asyncio.gather(*(one(*c) for c in clients))
    return time.monotonic() - t0, refused, writers


async def close_all(writers):
    for writer in writers:
        writer.write(b"\xe0\x00")  # DISCONNECT
        writer.close()
    await asyncio.gather(*(w.wait_closed() for w in writers), return_exceptions=True)


# ---------------------------------------------------------------------------
# The run
# ---------------------------------------------------------------------------


def count_requests(server, offset):
    with open(server.log, "rb") as log:
        log.seek(offset)
        text = log.read().decode(errors="replace")
    return {
        "rabbitmq": text.count("POST /iot/rabbitmq/"),
        # the access log redacts /iot/ paths but the route names of the
        # broker endpoints: a GET /iot/*** is the JWKS (no other GET here)
        "jwks": text.count('"GET /iot/***'),
    }


def run_mode(bench, server, mode, setup, args, brokers):
    clients = setup[mode]["clients"]
    oauth2 = {"resource_server_id": "iot_base"} if mode == "rabbitmq_jwt" else None
    node = brokers.RabbitMQBroker(
        f"http://{server.host}:{server.port}", bench.token, oauth2=oauth2
    )
    node.start()
    try:
        pids = [server.proc.pid, *server.worker_pids()]
        offset = server.log_size()
        cpu0 = cpu_seconds(*pids)
        wall, refused, writers = asyncio.run(
            _connect_and_close(node.mqtt_port, clients, args)
        )
        time.sleep(1)  # the last access log lines
        cpu = cpu_seconds(*pids) - cpu0
        requests = count_requests(server, offset)
    finally:
        node.stop()
    connected = len(clients) - len(refused)
    return {
        "mode": mode,
        "clients": len(clients),
        "connected": connected,
        "refused": len(refused),
        "refusal_sample": refused[:3],
        "wall_seconds": round(wall, 2),
        "connects_per_second": round(connected / wall, 1) if wall else None,
        "odoo_rabbitmq_requests": requests["rabbitmq"],
        "odoo_requests_per_connect": round(requests["rabbitmq"] / max(connected, 1), 2),
        "odoo_jwks_fetches": requests["jwks"],
        "odoo_cpu_seconds": round(cpu, 2),
        "password_issue_seconds": round(setup[mode]["issue_seconds"], 1),
        "open_at_once": writers,
    }


async def _connect_and_close(port, clients, args):
    wall, refused, writers = await connect_all(
        port, clients, args.concurrency, args.timeout
    )
    await close_all(writers)
    return wall, refused, len(writers)


def main():
    if len(sys.argv) > 1 and sys.argv[1].startswith("{"):
        # Bench.run_in_odoo: <spec json> <odoo options...>
        odoo_setup(json.loads(sys.argv[1]), sys.argv[2:])
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=200)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--timeout", type=float, default=60.0)
    harness.add_common_arguments(parser)
    args = parser.parse_args()
    args.compare = None

    import bench_auth  # noqa: PLC0415 - its Bench, not needed inside Odoo

    brokers = harness.test_helper("brokers.rabbitmq")
    bench = bench_auth.Bench(args)
    bench.servers = [bench.main]

    def work():
        bench.create_db()
        t0 = time.monotonic()
        setup = bench.run_in_odoo(
            "bench_tokens.py",
            {"token": bench.token, "clients": args.clients},
            bench.main,
            SETUP_MARKER,
        )
        say(
            f"== {args.clients} session secrets and {args.clients} tokens issued "
            f"in {time.monotonic() - t0:.0f} s"
        )
        bench.main.start(args.workers)
        results = []
        for mode in ("rabbitmq_jwt", "secret"):
            say(f"== {args.clients} clients, {mode}, fresh RabbitMQ node")
            result = run_mode(bench, bench.main, mode, setup, args, brokers)
            results.append(result)
            say("   " + json.dumps(result))
        out = {"results": results, "machine": bench_auth.machine()}
        print(json.dumps(out, indent=2))
        harness.write_json(args.json, args, **out)
        return 0 if all(r["refused"] == 0 for r in results) else 1

    return harness.run_benchmark(work, bench.cleanup)


if __name__ == "__main__":
    sys.exit(main())
