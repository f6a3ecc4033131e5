#!/usr/bin/env python3
# License LGPL-3.0 or later (https://www.gnu.org/licenses/lgpl).
"""The listener (odoo-bin iot-listen) under load: N devices x R messages/s
through Mosquitto for D seconds. See bench/README.md, "Listener".

One command, everything throwaway:

    python3 bench/bench_listener.py        # 1,000 devices x 10 msg/s, 60 s

1. installs a snapshot of ``iot_base`` into a throwaway database
   (harness.Workspace) and starts a Mosquitto 2.0 on free loopback ports
   (iot_base/tests/brokers/mosquitto.py) whose files Odoo writes;
2. inside Odoo (this script, ``--setup``): N devices registered through the
   addon's own code (``_register_device``: device, credential, secret);
3. starts ``odoo-bin iot-listen`` as its own process (harness.OdooProcess);
4. a publisher process (this script, ``--publish``, raw MQTT 3.1.1 over
   sockets: no client library in the loop) connects every device with a Last
   Will, publishes a retained ``online``, then per device and second one
   ``heartbeat`` and R-1 JSON telemetry messages at QoS 1, for D seconds;
5. measures: messages the listener counted (iot.throughput) against those
   published, the lag at the end (last publish -> everything committed),
   transactions/s and rows written/s in the database (pg_stat_database,
   pg_stat_user_tables), the listener's CPU per 1,000 messages (/proc);
6. SIGTERM to the listener (it must stop cleanly), stops Mosquitto, drops
   the database, whatever happened.
"""

import argparse
import json
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import harness
from harness import (
    cpu_seconds,
    mqtt_connect_packet,
    mqtt_publish_packet,
    say,
    superuser_env,
)

TABLES = (
    "iot_mqtt_device",
    "iot_device_reading",
    "iot_throughput",
    "iot_device_reading_history",
)
# a slow listener must show as lag, not as messages Mosquitto dropped (its
# default keeps 1,000 QoS 1 messages per client, 20 in flight)
BROKER_CONFIG = "max_queued_messages 1000000\nmax_inflight_messages 1000\n"


# ---------------------------------------------------------------------------
# Inside Odoo: the devices
# ---------------------------------------------------------------------------


def setup(spec, odoo_args):
    registry = harness.open_registry(odoo_args)
    with registry.cursor() as cr:
        env = superuser_env(cr)
        params = env["ir.config_parameter"].sudo()
        for key, value in spec["params"].items():
            params.set_param(key, value)
        devices = {}
        Device = env["iot.mqtt.device"]
        for index in range(spec["devices"]):
            device, secret = Device._register_device(f"bench-{index:06d}")
            devices[device.username] = secret
        namespace = env.ref("base.main_company").iot_mqtt_namespace
    # committed: the after-commit hook has written Mosquitto's files
    print("BENCH_SETUP " + json.dumps({"devices": devices, "namespace": namespace}))


# ---------------------------------------------------------------------------
# The publisher: a minimal MQTT 3.1.1 client per device, on raw sockets
# ---------------------------------------------------------------------------


def publish(spec):
    host, port, ns = spec["host"], spec["port"], spec["namespace"]
    rate, duration = spec["rate"], spec["duration"]
    devices = []
    for username, secret in spec["devices"].items():
        status = f"{ns}/devices/{username}/status"
        sock = socket.create_connection((host, port), timeout=30)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.sendall(
            mqtt_connect_packet(username, username, secret, 60, (status, "offline"))
        )
        connack = b""
        while len(connack) < 4:
            chunk = sock.recv(4 - len(connack))
            if not chunk:
                raise RuntimeError(f"{username}: connection closed before CONNACK")
            connack += chunk
        if connack[3] != 0:
            raise RuntimeError(f"{username}: CONNACK {connack[3]}")
        sock.sendall(mqtt_publish_packet(status, b"online", 1, retain=True))
        sock.setblocking(False)
        devices.append((sock, status, f"{ns}/devices/{username}/telemetry/env"))
    published, packet_id, behind = len(devices), 1, 0.0
    start = time.monotonic()
    tick = 1.0 / rate
    ticks = int(duration * rate)
    for index in range(ticks):
        due = start + index * tick
        now = time.monotonic()
        if due > now:
            time.sleep(due - now)
        else:
            behind = max(behind, now - due)
        packet_id = packet_id % 65535 + 1
        stamp = f"{time.time():.3f}"
        for sock, status, telemetry in devices:
            if index % rate == 0:
                packet = mqtt_publish_packet(status, b"heartbeat", packet_id)
            else:
                body = f'{{"t": {stamp}, "seq": {index}, "temperature": 21.5}}'
                packet = mqtt_publish_packet(telemetry, body.encode(), packet_id)
            view = memoryview(packet)
            while view:
                try:
                    view = view[sock.send(view) :]
                except BlockingIOError:
                    time.sleep(0.0005)
            published += 1
        if index % rate == 0:  # drain the PUBACKs once a second
            for sock, _status, _telemetry in devices:
                try:
                    while sock.recv(65536):
                        pass
                except BlockingIOError:
                    pass
    last = time.time()
    print(
        "BENCH_PUBLISH "
        + json.dumps(
            {
                "published": published,
                "last_publish": last,
                "behind": behind,
                "seconds": time.monotonic() - start,
            }
        ),
        flush=True,
    )
    # stay connected (no Last Will) until told to go
    sys.stdin.read()
    for sock, _status, _telemetry in devices:
        sock.setblocking(True)
        sock.sendall(b"\xe0\x00")  # DISCONNECT
        sock.close()


# ---------------------------------------------------------------------------
# Outside: orchestration and measurements
# ---------------------------------------------------------------------------


class ListenerBench(harness.Workspace):
    def __init__(self, args):
        super().__init__(args, "iot_bench_listen")
        self.broker = None
        self.listener = None
        self.publisher = None

    def connect_db(self):
        connection = self.pg.connect(self.db)
        connection.autocommit = True
        return connection

    def db_counters(self, cr):
        cr.execute(
            "SELECT xact_commit FROM pg_stat_database WHERE datname = %s", [self.db]
        )
        commits = cr.fetchone()[0]
        cr.execute(
            "SELECT COALESCE(sum(n_tup_ins + n_tup_upd), 0) FROM pg_stat_user_tables"
            " WHERE relname = ANY(%s)",
            [list(TABLES)],
        )
        return commits, int(cr.fetchone()[0])

    def run_setup(self, params):
        spec = {"devices": self.args.devices, "params": params}
        return self.run_in_odoo(
            Path(__file__), ["--setup", json.dumps(spec)], "BENCH_SETUP"
        )

    def start_listener(self):
        """``odoo-bin iot-listen`` on this database, connected and subscribed."""
        self.listener = harness.OdooProcess(
            self.odoo_opts(), self.tmp / "listener.log", "listener", "iot-listen"
        )
        self.listener.start(
            ["--log-level=info"],
            ready=lambda: "connected, subscribed" in self.listener.log_text(),
            timeout=60,
        )

    def measure(self):
        a = self.args
        self.broker = harness.test_helper("brokers.mosquitto").MosquittoBroker(
            extra_config=BROKER_CONFIG
        )
        self.broker.start()
        params = {
            "iot_base.mosquitto_sync_enabled": "True",
            "iot_base.mosquitto_password_file": self.broker.password_file,
            "iot_base.mosquitto_acl_file": self.broker.acl_file,
            "iot_base.mosquitto_pid_file": self.broker.pid_file,
            "iot_base.mqtt_host": self.broker.host,
            "iot_base.mqtt_port": str(self.broker.port),
            "iot_base.listener_history": "True" if a.history else "False",
        }
        say(f"== registering {a.devices} devices")
        data = self.run_setup(params)
        self.start_listener()
        say(f"== {a.devices} devices x {a.rate} msg/s for {a.duration} s")
        connection = self.connect_db()
        cr = connection.cursor()
        spec = {
            "host": self.broker.host,
            "port": self.broker.port,
            "namespace": data["namespace"],
            "devices": data["devices"],
            "rate": a.rate,
            "duration": a.duration,
        }
        spec_file = self.tmp / "publisher.json"
        spec_file.write_text(json.dumps(spec))
        commits0, rows0 = self.db_counters(cr)
        cpu0, wall0 = cpu_seconds(self.listener.pid), time.monotonic()
        broker_cpu0 = cpu_seconds(self.broker.pid)
        load0 = os.getloadavg()[0]
        self.publisher = subprocess.Popen(
            [sys.executable, str(Path(__file__)), "--publish", str(spec_file)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        line = self.publisher.stdout.readline()
        if not line.startswith("BENCH_PUBLISH "):
            raise RuntimeError("the publisher failed")
        published = json.loads(line[len("BENCH_PUBLISH ") :])
        # everything published is counted in iot.throughput once committed
        deadline = time.time() + 120
        while True:
            cr.execute("SELECT COALESCE(sum(messages), 0) FROM iot_throughput")
            counted = cr.fetchone()[0]
            if counted >= published["published"] or time.time() > deadline:
                break
            time.sleep(0.05)
        done = time.time()
        wall = time.monotonic() - wall0
        cpu = cpu_seconds(self.listener.pid) - cpu0
        broker_cpu = cpu_seconds(self.broker.pid) - broker_cpu0
        load1 = os.getloadavg()[0]
        time.sleep(1.5)  # the statistics collector's delay
        commits1, rows1 = self.db_counters(cr)
        cr.execute("SELECT presence_state, count(*) FROM iot_mqtt_device GROUP BY 1")
        presence = dict(cr.fetchall())
        cr.execute("SELECT count(*) FROM iot_device_reading")
        readings = cr.fetchone()[0]
        self.publisher.stdin.close()
        self.publisher.wait(60)
        rc = self.listener.stop()  # SIGTERM: it writes what it holds, exits 0
        text = self.listener.log_text()
        summaries = [
            x.split(": ", 1)[1]
            for x in text.splitlines()
            if "last minute:" in x or "since the last summary:" in x
        ]
        own = [re.search(r"(\d+) transactions, (\d+) rows", x) for x in summaries]
        connection.close()
        return {
            "published": published["published"],
            "publisher_behind_max": published["behind"],
            "publish_seconds": published["seconds"],
            "counted": counted,
            "lag_end": done - published["last_publish"],
            "wall": wall,
            "commits": commits1 - commits0,
            "rows": rows1 - rows0,
            "cpu": cpu,
            "broker_cpu": broker_cpu,
            "load": (load0, load1),
            "presence": presence,
            "readings": readings,
            "listener_rc": rc,
            "stopped_cleanly": rc == 0 and text.rstrip().endswith("stopped"),
            "summaries": summaries,
            "listener_transactions": sum(int(m[1]) for m in own if m),
            "listener_rows": sum(int(m[2]) for m in own if m),
            "errors": [
                x for x in text.splitlines() if " ERROR " in x or " WARNING " in x
            ],
        }

    def cleanup(self):
        try:
            if self.publisher and self.publisher.poll() is None:
                self.publisher.kill()
                self.publisher.wait()
            if self.listener:
                self.listener.stop()
            if self.broker:
                self.broker.stop()
        finally:
            super().cleanup()


def report(args, data):
    per_second = data["wall"]
    lines = [
        f"Listener benchmark: {args.devices} devices x {args.rate} msg/s for "
        f"{args.duration} s through Mosquitto (QoS 1), history "
        f"{'on' if args.history else 'off'}",
        f"machine: {os.cpu_count()} CPUs, {harness.machine()}, mosquitto "
        f"{harness.mosquitto_version()}, Python {sys.version.split()[0]}",
        f"published {data['published']:,} in {data['publish_seconds']:.1f} s "
        f"({data['published'] / data['publish_seconds']:,.0f} msg/s; publisher at "
        f"most {data['publisher_behind_max']:.2f} s behind schedule)",
        f"counted by the listener: {data['counted']:,} "
        f"({data['published'] - data['counted']:,} missing)",
        f"lag at the end (last publish -> all committed): {data['lag_end']:.2f} s "
        f"(goal < 2 s: {'MET' if data['lag_end'] < 2 else 'MISSED'})",
        f"database: {data['commits'] / per_second:.1f} transactions/s, "
        f"{data['rows'] / per_second:,.0f} rows written/s "
        f"(inserts + updates of {', '.join(TABLES)}; over {per_second:.1f} s)",
        f"the listener's own count: {data['listener_transactions']} write "
        f"transactions ({data['listener_transactions'] / per_second:.2f}/s), "
        f"{data['listener_rows']:,} rows "
        f"({data['listener_rows'] / per_second:,.0f}/s; the database's figures "
        "above include the benchmark's own polling)",
        f"listener CPU: {data['cpu']:.1f} s for {data['counted']:,} messages = "
        f"{1000 * data['cpu'] / max(data['counted'], 1) * 1000:.1f} ms per 1,000 "
        f"messages ({100 * data['cpu'] / per_second:.0f}% of one core)",
        f"Mosquitto CPU: {data['broker_cpu']:.1f} s "
        f"({100 * data['broker_cpu'] / per_second:.0f}% of one core); load average "
        f"(1 min) {data['load'][0]:.1f} at the start, {data['load'][1]:.1f} at the end "
        f"on {os.cpu_count()} CPUs",
        f"presence at the end: {data['presence']}, last readings: {data['readings']}",
        f"listener stopped cleanly on SIGTERM: {data['stopped_cleanly']} "
        f"(rc {data['listener_rc']})",
        "listener's own summaries:",
        *(f"  {line}" for line in data["summaries"]),
    ]
    if data["errors"]:
        lines += ["listener warnings/errors:", *data["errors"][:10]]
    return "\n".join(lines)


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--devices", type=int, default=1000)
    parser.add_argument("--rate", type=int, default=10, help="messages/s per device")
    parser.add_argument("--duration", type=int, default=60, help="seconds")
    parser.add_argument("--history", action="store_true", help="history setting on")
    harness.add_common_arguments(parser)
    return parser.parse_args(argv)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--setup"]:
        setup(json.loads(argv[1]), argv[3:])
        return 0
    if argv[:1] == ["--publish"]:
        publish(json.loads(Path(argv[1]).read_text()))
        return 0
    args = parse_args(argv)
    bench = ListenerBench(args)

    def work():
        bench.install()
        data = bench.measure()
        text = report(args, data)
        print(text)
        harness.write_json(args.json, args, data=data)
        return 0 if data["stopped_cleanly"] else 1

    return harness.run_benchmark(work, bench.cleanup)


if __name__ == "__main__":
    sys.exit(main())
