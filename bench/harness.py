# License LGPL-3.0 or later (https://www.gnu.org/licenses/lgpl).
"""What every benchmark needs around the code it measures: a throwaway
database with a snapshot of iot_base installed, Odoo (a script inside it, or
a prefork server on free loopback ports), the brokers the tests start, and a
keep-alive HTTP/1.1 client. Plain Python until Odoo itself is needed; the
API is described in bench/README.md ("The harness")."""

import contextlib
import importlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
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
    """The addon's plain-Python test helper ``iot_base/tests/<name>.py``
    (``brokers``: RabbitMQ; ``mosquitto_broker``), without importing Odoo or
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


class OdooServer:
    """A prefork Odoo on free loopback ports; :meth:`stop` ends its whole
    process group."""

    def __init__(self, opts, log, label="odoo"):
        self.label = label
        self.host = "127.0.0.1"
        self.port, self.gevent_port = free_ports(2)
        self.log = Path(log)
        self.base_opts = list(opts)
        self.proc = None
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
        self.proc = subprocess.Popen(  # noqa: S603 - fixed argv
            odoo_command(
                *self.opts(),
                f"--workers={workers}",
                "--limit-request=100000000",
                f"--logfile={self.log}",
            ),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=odoo_env(),
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while not ready():
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"Odoo [{self.label}] exited early:\n{self.log_tail()}"
                )
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"Odoo [{self.label}] did not answer:\n{self.log_tail()}"
                )
            time.sleep(0.5)
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

    def stop(self):
        if self.proc is None or self.proc.poll() is not None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
        except ProcessLookupError:
            pass

    def log_size(self):
        try:
            return self.log.stat().st_size
        except OSError:
            return 0

    def log_tail(self, size=3000):
        try:
            return self.log.read_text()[-size:]
        except OSError:
            return "(no log)"


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


def machine():
    """The CPU model, for reports."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return "unknown CPU"
