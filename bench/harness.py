# License LGPL-3.0 or later (https://www.gnu.org/licenses/lgpl).
"""What every benchmark needs around the code it measures: a throwaway
database with a snapshot of iot_base installed, Odoo (a script inside it, or
a prefork server on free loopback ports), the brokers the tests start, and a
keep-alive HTTP/1.1 client. Plain Python until Odoo itself is needed; the
API is described in bench/README.md ("The harness")."""

import base64
import contextlib
import hashlib
import importlib
import json
import os
import secrets
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import types
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
ADDON_DIR = REPO_ROOT / "iot_base"
# a script file, not `python -c`: the prefork master re-executes sys.argv[0]
# to start its gevent process
LAUNCHER = BENCH_DIR / "odoo_launcher.py"
_HELPERS = "iot_base_test_helpers"


def say(*args):
    """Progress, on stderr (stdout is for results)."""
    print(*args, file=sys.stderr, flush=True)


def run_benchmark(work, cleanup):
    """``work()``'s exit status, ``cleanup()`` run whatever happens (an
    error, Ctrl-C, SIGTERM): 130 when interrupted, 1 on an error."""

    def interrupted(signum, _frame):
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, interrupted)
    try:
        return work()
    except KeyboardInterrupt:
        say("interrupted")
        return 130
    except Exception as exc:  # noqa: BLE001 - reported, then cleaned up
        say(f"benchmark failed: {exc}")
        return 1
    finally:
        cleanup()


# ---------------------------------------------------------------------------
# Brokers and ports: the tests' own helpers
# ---------------------------------------------------------------------------


def test_helper(name):
    """The addon's plain-Python test helper ``iot_base/tests/<name>``
    (``brokers``: ports; ``brokers.rabbitmq``; ``brokers.mosquitto``), without
    importing Odoo or
    the test suite: benchmarks start brokers the way the tests do."""
    if _HELPERS not in sys.modules:
        package = types.ModuleType(_HELPERS)
        package.__path__ = [str(ADDON_DIR / "tests")]
        sys.modules[_HELPERS] = package
    return importlib.import_module(f"{_HELPERS}.{name}")


def free_ports(count):
    """``count`` distinct TCP ports free on loopback right now."""
    return test_helper("brokers").free_ports(count)


# ---------------------------------------------------------------------------
# PostgreSQL
# ---------------------------------------------------------------------------


def add_db_arguments(parser):
    """``--db-host``, ``--db-port``, ``--db-user``, ``--db-password``,
    defaulting to ``DB_HOST``... as for scripts/*.sh (then libpq's)."""
    for name in ("host", "port", "user", "password"):
        parser.add_argument(
            f"--db-{name}", default=os.environ.get(f"DB_{name.upper()}")
        )


def add_common_arguments(parser):
    """``--addon-dir`` (the iot_base to measure), the ``--db-*`` options,
    ``--json FILE`` and ``--keep-db``: what every benchmark takes."""
    parser.add_argument(
        "--addon-dir",
        default=str(ADDON_DIR),
        help="the iot_base to measure (copied at the start)",
    )
    add_db_arguments(parser)
    parser.add_argument("--json", help="also write the numbers to this file")
    parser.add_argument(
        "--keep-db",
        action="store_true",
        help="debug: keep the database and the temporary folder (names printed)",
    )


class Postgres:
    """How to reach PostgreSQL, for Odoo and for the command-line tools."""

    def __init__(self, host=None, port=None, user=None, password=None):
        self.host, self.port, self.user, self.password = host, port, user, password

    @classmethod
    def from_args(cls, args):
        return cls(args.db_host, args.db_port, args.db_user, args.db_password)

    def odoo_opts(self):
        pairs = (
            ("--db_host", self.host),
            ("--db_port", self.port),
            ("--db_user", self.user),
            ("--db_password", self.password),
        )
        return [f"{flag}={value}" for flag, value in pairs if value]

    def cli_opts(self):
        pairs = (("-h", self.host), ("-p", self.port), ("-U", self.user))
        return [x for flag, value in pairs if value for x in (flag, str(value))]

    def cli_env(self):
        env = dict(os.environ)
        if self.password:
            env["PGPASSWORD"] = self.password
        return env

    def connect(self, db):
        import psycopg2  # noqa: PLC0415 - Odoo's own dependency

        kwargs = {"dbname": db}
        for key in ("host", "port", "user", "password"):
            if getattr(self, key):
                kwargs[key] = getattr(self, key)
        return psycopg2.connect(**kwargs)

    def copy(self, template, db):
        """``createdb -T``: nobody may be connected to ``template``."""
        out = subprocess.run(
            ["createdb", *self.cli_opts(), "-T", template, db],
            env=self.cli_env(),
            capture_output=True,
            text=True,
            check=False,
        )
        if out.returncode:
            raise RuntimeError(f"cannot copy the database: {out.stderr.strip()}")

    def drop(self, db):
        """Drop ``db`` if it exists (connections closed); False on failure."""
        cmd = ["dropdb", *self.cli_opts(), "--if-exists", "--force", db]
        return subprocess.call(cmd, env=self.cli_env()) == 0


# ---------------------------------------------------------------------------
# Odoo
# ---------------------------------------------------------------------------


def odoo_base_addons():
    import odoo  # noqa: PLC0415 - only to find Odoo's own addons

    return Path(odoo.__file__).parent / "addons"


def snapshot_addons(dest, addon_dir=ADDON_DIR, extra=()):
    """Copy ``addon_dir`` (without its tests) into ``dest`` as ``iot_base``,
    so that edits made during the run do not leak into it; returns the
    addons path: Odoo's, the snapshot, then ``extra`` folders."""
    dest = Path(dest)
    dest.mkdir(parents=True)
    shutil.copytree(
        Path(addon_dir).resolve(),
        dest / "iot_base",
        ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "tests"),
    )
    return ",".join([str(odoo_base_addons()), str(dest), *map(str, extra)])


def odoo_opts(addons_path, db, data_dir, pg):
    """Odoo's options for a benchmark database: no cron, no demo data."""
    return [
        f"--addons-path={addons_path}",
        *pg.odoo_opts(),
        # -d without --db-filter: Odoo serves that database without listing
        # pg_database on every request
        "-d",
        db,
        f"--data-dir={data_dir}",
        "--max-cron-threads=0",
        "--without-demo=all",
    ]


def odoo_env():
    env = dict(os.environ, TZ="UTC")
    env.pop("ODOO_HTTP_SOCKET_TIMEOUT", None)
    return env


def odoo_command(*args):
    """``odoo-bin`` with ``args``, for the importable ``odoo`` package."""
    return [sys.executable, str(LAUNCHER), *args]


def install(opts, modules, log_path):
    """Install ``modules`` (a comma-separated string) with Odoo options
    ``opts``; raises with the log's end when anything went wrong."""
    with open(log_path, "w") as log:
        rc = subprocess.call(
            odoo_command(
                *opts,
                "-i",
                modules,
                "--stop-after-init",
                "--workers=0",
                "--log-level=warn",
            ),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=odoo_env(),
        )
    text = Path(log_path).read_text()
    if rc != 0 or " ERROR " in text or " CRITICAL " in text:
        raise RuntimeError(f"installing {modules} failed (rc={rc}):\n{text[-3000:]}")


def run_in_odoo(script, args, marker, show_stderr=False):
    """Run ``python3 script *args`` (a script that opens Odoo's registry
    itself) and return the JSON it prints on its ``<marker> {...}`` line."""
    out = subprocess.run(
        [sys.executable, str(script), *args],
        capture_output=True,
        text=True,
        env=odoo_env(),
        stdin=subprocess.DEVNULL,
        check=False,
    )
    if show_stderr:
        sys.stderr.write(out.stderr)
    line = next(
        (x for x in out.stdout.splitlines() if x.startswith(marker + " ")), None
    )
    if out.returncode != 0 or line is None:
        raise RuntimeError(
            f"{Path(script).name} failed (rc={out.returncode}):\n"
            f"{out.stdout[-2000:]}\n{out.stderr[-3000:]}"
        )
    return json.loads(line[len(marker) + 1 :])


class Workspace:
    """What most benchmarks start from: a temporary folder, a snapshot of
    ``args.addon_dir`` and one throwaway database named ``<prefix>_<pid>``
    (created by :meth:`install`, dropped by :meth:`cleanup` unless
    ``args.keep_db``). ``args`` has ``addon_dir``, the ``--db-*`` options
    and optionally ``keep_db``."""

    def __init__(self, args, prefix, extra_addons=()):
        self.args = args
        self.tmp = Path(tempfile.mkdtemp(prefix=prefix + "_"))
        self.db = f"{prefix}_{os.getpid()}"
        self.db_created = False
        self.pg = Postgres.from_args(args)
        self.addons_path = snapshot_addons(
            self.tmp / "addons", args.addon_dir, extra=extra_addons
        )

    def odoo_opts(self):
        return odoo_opts(self.addons_path, self.db, self.tmp / "data", self.pg)

    def install(self, modules="iot_base"):
        say(f"== installing {modules} into throwaway database {self.db}")
        t0 = time.monotonic()
        self.db_created = True
        install(self.odoo_opts(), modules, self.tmp / "install.log")
        say(f"   installed in {time.monotonic() - t0:.0f} s")

    def run_in_odoo(self, script, args, marker, show_stderr=False):
        """:func:`run_in_odoo` with ``args``, then this database's options."""
        return run_in_odoo(
            script,
            [*args, "--", *self.odoo_opts(), "--log-level=warn"],
            marker,
            show_stderr,
        )

    def cleanup(self):
        if self.db_created and getattr(self.args, "keep_db", False):
            say(f"database {self.db} and {self.tmp} kept")
            return
        try:
            if self.db_created and not self.pg.drop(self.db):
                say(f"warning: could not drop database {self.db}")
        finally:
            shutil.rmtree(self.tmp, ignore_errors=True)


class OdooProcess:
    """``odoo-bin [command] opts`` in its own process group, logging to
    ``log`` (e.g. ``command="iot-listen"``); :meth:`stop` ends the group."""

    def __init__(self, opts, log, label="odoo", command=None):
        self.label = label
        self.command = command
        self.log = Path(log)
        self.base_opts = list(opts)
        self.proc = None

    def opts(self):
        return list(self.base_opts)

    def argv(self, extra=()):
        opts = [*self.opts(), *extra, f"--logfile={self.log}"]
        if self.command is None:
            return odoo_command(*opts)
        # a command of an addon: Odoo finds it with --addons-path given first
        first = [o for o in opts if o.startswith("--addons-path=")]
        rest = [o for o in opts if not o.startswith("--addons-path=")]
        return odoo_command(*first, self.command, *rest)

    def start(self, extra=(), ready=None, timeout=120):
        """Start with options ``extra`` added; wait until ``ready()`` is
        true (never None: until it runs)."""
        self.proc = subprocess.Popen(  # noqa: S603 - fixed argv
            self.argv(extra),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=odoo_env(),
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while ready is not None and not ready():
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"Odoo [{self.label}] exited early:\n{self.log_tail()}"
                )
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"Odoo [{self.label}] was not ready in {timeout} s:\n"
                    f"{self.log_tail()}"
                )
            time.sleep(0.2)

    @property
    def pid(self):
        return self.proc.pid if self.proc else None

    def stop(self, timeout=30):
        """SIGTERM to the process group, SIGKILL after ``timeout`` s; the
        process's exit status (None if it was never started)."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
            except ProcessLookupError:
                pass
        return self.proc.wait()

    def log_text(self):
        try:
            return self.log.read_text(errors="replace")
        except OSError:
            return ""

    def log_size(self):
        try:
            return self.log.stat().st_size
        except OSError:
            return 0

    def log_tail(self, size=3000):
        return self.log_text()[-size:] or "(no log)"


class OdooServer(OdooProcess):
    """A prefork Odoo on free loopback ports; :meth:`stop` ends its whole
    process group."""

    def __init__(self, opts, log, label="odoo"):
        super().__init__(opts, log, label)
        self.host = "127.0.0.1"
        self.port, self.gevent_port = free_ports(2)
        self.pids = []

    def opts(self):
        return [
            *self.base_opts,
            f"--http-interface={self.host}",
            f"--http-port={self.port}",
            f"--gevent-port={self.gevent_port}",
        ]

    def start(self, workers, ready, timeout=120):
        """Start ``--workers=workers`` and wait until ``ready()`` is true
        (e.g. a route answers) and every worker is up."""
        say(
            f"== starting Odoo [{self.label}]: --workers={workers} "
            f"--max-cron-threads=0 on {self.host}:{self.port}"
        )
        super().start(
            [f"--workers={workers}", "--limit-request=100000000"], ready, timeout
        )
        deadline = time.monotonic() + 30
        while len(self.pids) < workers and time.monotonic() < deadline:
            self.pids = self.worker_pids()
            time.sleep(0.2)
        say(f"   HTTP workers: {self.pids}")

    def worker_pids(self):
        """The master's children, except its gevent process."""
        pids = []
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit():
                continue
            try:
                stat = (proc / "stat").read_text()
                argv = (proc / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            if ppid == self.proc.pid and b"gevent" not in argv:
                pids.append(int(proc.name))
        return sorted(pids)


# ---------------------------------------------------------------------------
# HTTP/1.1 client: what a broker's connection pool does
# ---------------------------------------------------------------------------


def http_request(host, port, method, path, body=b"", headers=()):
    """The raw bytes of one request with ``headers`` (name, value) pairs."""
    head = [f"{method} {path} HTTP/1.1", f"host: {host}:{port}"]
    head += [f"{name}: {value}" for name, value in headers]
    head.append(f"content-length: {len(body)}")
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


class Connection:
    """A minimal HTTP/1.1 client connection: keeps its socket as long as the
    server allows, reconnects when the server closes it."""

    def __init__(self, host, port):
        self.addr = (host, port)
        self.sock = None
        self.connects = 0

    def close(self):
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    def request(self, raw):
        """Send ``raw``, return (status, body). Retries once when a kept-alive
        socket turns out to be closed by the server."""
        for attempt in (0, 1):
            fresh = self.sock is None
            if fresh:
                self.sock = socket.create_connection(self.addr, timeout=30)
                self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                self.connects += 1
            try:
                self.sock.sendall(raw)
                return self._read()
            except (TimeoutError, ConnectionError, EOFError):
                self.close()
                if fresh or attempt:
                    raise
        raise AssertionError("unreachable")

    def _read(self):
        sock = self.sock
        buf = b""
        while b"\r\n\r\n" not in buf:
            chunk = sock.recv(65536)
            if not chunk:
                raise EOFError("connection closed before the response")
            buf += chunk
        head, _sep, body = buf.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        version, status = lines[0].split(" ", 2)[:2]
        headers = {}
        for line in lines[1:]:
            name, _sep, value = line.partition(":")
            headers[name.strip().lower()] = value.strip().lower()
        length = int(headers.get("content-length", "-1"))
        if length < 0:
            raise EOFError("response without content-length")
        while len(body) < length:
            chunk = sock.recv(65536)
            if not chunk:
                raise EOFError("connection closed inside the body")
            body += chunk
        connection = headers.get("connection", "")
        if connection == "close" or (
            version == "HTTP/1.0" and connection != "keep-alive"
        ):
            self.close()
        return int(status), body


# ---------------------------------------------------------------------------
# MQTT 3.1.1 on raw sockets: no client library in a measured loop
# ---------------------------------------------------------------------------


def mqtt_string(text):
    data = text.encode()
    return struct.pack("!H", len(data)) + data


def mqtt_packet(header, body):
    """A control packet: ``header`` byte, remaining length, ``body``."""
    length, encoded = len(body), bytearray()
    while True:
        byte, length = length % 128, length // 128
        encoded.append(byte | (0x80 if length else 0))
        if not length:
            break
    return bytes([header]) + bytes(encoded) + body


def mqtt_connect_packet(client_id, username, password, keepalive=0, will=None):
    """CONNECT with a clean session; ``will`` = (topic, payload): a Last Will
    at QoS 1, retained."""
    flags = 0x80 | 0x40 | 0x02  # username, password, clean session
    payload = mqtt_string(client_id)
    if will:
        flags |= 0x04 | 0x08 | 0x20  # will, QoS 1, retained
        payload += mqtt_string(will[0]) + mqtt_string(will[1])
    payload += mqtt_string(username) + mqtt_string(password)
    variable = mqtt_string("MQTT") + bytes([4, flags]) + struct.pack("!H", keepalive)
    return mqtt_packet(0x10, variable + payload)


def mqtt_publish_packet(topic, payload, packet_id, retain=False):
    """PUBLISH at QoS 1 (``payload``: bytes)."""
    header = 0x30 | 0x02 | (0x01 if retain else 0)
    return mqtt_packet(
        header, mqtt_string(topic) + struct.pack("!H", packet_id) + payload
    )


def mqtt_connect(host, port, username, password, timeout=10.0, keep=False):
    """CONNACK return code (0 = accepted, 255 = closed before it); with
    ``keep``, (code, the open socket or None)."""
    sock = socket.create_connection((host, port), timeout=timeout)
    try:
        client_id = f"b{secrets.token_hex(6)}"
        sock.sendall(mqtt_connect_packet(client_id, username, password))
        data = b""
        while len(data) < 4:
            chunk = sock.recv(4 - len(data))
            if not chunk:
                return (255, None) if keep else 255
            data += chunk
        code = data[3]
        if keep and code == 0:
            result, sock = (code, sock), None
            return result
        return (code, None) if keep else code
    finally:
        if sock is not None:
            sock.close()


def wait_accepted(host, port, username, password, timeout=30.0):
    """Seconds until a CONNECT of ``username`` is accepted."""
    start = time.monotonic()
    while True:
        try:
            if mqtt_connect(host, port, username, password) == 0:
                return time.monotonic() - start
        except OSError:
            pass
        if time.monotonic() - start > timeout:
            raise RuntimeError(f"{username} still refused after {timeout} s")
        time.sleep(0.002)


# ---------------------------------------------------------------------------
# Inside Odoo: in a script that run_in_odoo runs
# ---------------------------------------------------------------------------


def open_registry(odoo_args):
    """Parse Odoo's options ``odoo_args`` (the ones run_in_odoo passes) and
    return the registry of their database (imports the addons)."""
    os.environ["TZ"] = "UTC"
    import odoo  # noqa: PLC0415 - only inside Odoo

    odoo.tools.config.parse_config(list(odoo_args))
    return odoo.modules.registry.Registry(odoo.tools.config["db_name"])


def superuser_env(cr):
    """An environment of the superuser on cursor ``cr``."""
    from odoo import SUPERUSER_ID, api  # noqa: PLC0415 - only inside Odoo

    return api.Environment(cr, SUPERUSER_ID, {})


def _ab64(raw):
    return base64.b64encode(raw).decode().replace("+", ".").rstrip("=")


def stored_secret():
    """(secret, index, hash) like iot_base.tools.secret_hash.new_secret, with
    hashlib directly (same format, faster to make 100,000 of them)."""
    secret = secrets.token_hex(20)
    salt = os.urandom(12)
    key = hashlib.pbkdf2_hmac("sha512", secret.encode(), salt, 1, 64)
    return secret, secret[:8], f"$pbkdf2-sha512$1${_ab64(salt)}${_ab64(key)}"


def insert_devices(cr, env, names):
    """Device credentials of the main company with one long-lived secret
    each, by SQL (no after-commit sync); returns {username: secret}."""
    from psycopg2.extras import execute_values  # noqa: PLC0415

    company = env.ref("base.main_company").id
    returned = execute_values(
        cr._obj,
        """
        INSERT INTO iot_credentials (username, kind, company_id, active, is_superuser,
            create_uid, create_date, write_uid, write_date)
        VALUES %s RETURNING id, username
        """,
        [(name, "device", company, True, False, 1, 1) for name in names],
        template="(%s, %s, %s, %s, %s, %s, (now() at time zone 'utc'), %s, "
        "(now() at time zone 'utc'))",
        page_size=10000,
        fetch=True,
    )
    ids = {username: cid for cid, username in returned}
    rows, clear = [], {}
    for name in names:
        secret, index, hash_ = stored_secret()
        clear[name] = secret
        rows.append((ids[name], "long_lived", index, hash_))
    execute_values(
        cr._obj,
        "INSERT INTO iot_credentials_secret (credential_id, secret_type, index, hash) "
        "VALUES %s",
        rows,
        page_size=10000,
    )
    return clear


# ---------------------------------------------------------------------------
# Measuring
# ---------------------------------------------------------------------------


def cpu_seconds(*pids):
    """User + system CPU seconds of these processes so far (gone ones: 0)."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / os.sysconf("SC_CLK_TCK")


def write_json(path, args, **data):
    """With ``--json path``: ``{"args": vars(args), **data}`` into that file."""
    if path:
        payload = {"args": vars(args), **data}
        Path(path).write_text(json.dumps(payload, indent=1, default=str))


def mosquitto_version():
    try:
        out = subprocess.run(
            ["/usr/sbin/mosquitto", "-h"], capture_output=True, text=True, check=False
        )
        return out.stdout.split("\n", 1)[0].split()[-1]
    except (OSError, IndexError):
        return "missing"


def machine():
    """The CPU model, for reports."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return "unknown CPU"
