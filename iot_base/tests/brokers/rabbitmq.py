# License LGPL-3.0 or later (https://www.gnu.org/licenses/lgpl).
"""Private MQTT brokers that authenticate against an Odoo server.

Used by the tests (a throwaway node per test class) and by
``scripts/local_broker.sh`` (a long-running node for ``make run``), so that
RabbitMQ's configuration is written in one place: :func:`rabbitmq_config`.

Plain Python, no Odoo import: scripts/local_broker.sh runs it as
``python3 -m brokers.rabbitmq rabbitmq-start ...`` from ``iot_base/tests``.

The node is fully private: its own node name, ports, data, logs, config,
plugin list and Erlang cookie, all inside one directory, and it listens on
loopback only. It never touches the system RabbitMQ node (5672, /etc/rabbitmq,
/var/lib/rabbitmq); the only shared piece is epmd, Erlang's port mapper,
which every node registers its (unique) name with.
"""

import argparse
import base64
import contextlib
import hashlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request

from . import BrokerError, free_ports, port_open  # noqa: F401 (re-exported)

# Debian's real start script; /usr/sbin/rabbitmq-server is a wrapper that
# switches to the "rabbitmq" user and the system node's directories.
RABBITMQ_SERVER_CANDIDATES = ("/usr/lib/rabbitmq/bin/rabbitmq-server",)
RABBITMQ_PLUGINS = (
    "rabbitmq_mqtt",
    "rabbitmq_web_mqtt",
    "rabbitmq_auth_backend_http",
    "rabbitmq_management",
)
# With token mode (``oauth2=``): the console's tokens are checked by the
# node itself, with the keys of Odoo's /iot/jwks.json.
RABBITMQ_OAUTH2_PLUGIN = "rabbitmq_auth_backend_oauth2"
JWKS_PATH = "/iot/jwks.json"
# The internal user Odoo closes revoked clients' connections with (management
# HTTP API). "/" can never be in an Odoo MQTT username, so Odoo, which
# authorizes every login (see rabbitmq_config), never grants this one a vhost.
MANAGEMENT_USER = "iot_base/odoo"
MANAGEMENT_SECRET_FILE = "management.secret"
# The four rabbitmq_auth_backend_http checks and the routes serving them.
RABBITMQ_AUTH_PATHS = ("user", "vhost", "resource", "topic")
WS_PATH = "/mqtt"
STARTUP_TIMEOUT = 90  # seconds; a cold node boots in ~5-15 s
STOP_TIMEOUT = 30


def find_rabbitmq_server():
    """Path of the rabbitmq-server start script, or raise BrokerError.

    ``IOT_RABBITMQ_SERVER`` overrides it (e.g. a generic-unix tarball's
    ``sbin/rabbitmq-server``).
    """
    override = os.environ.get("IOT_RABBITMQ_SERVER")
    candidates = (override,) if override else RABBITMQ_SERVER_CANDIDATES
    for path in candidates:
        if path and os.access(path, os.X_OK):
            return path
    missing = " or ".join(p for p in candidates if p)
    raise BrokerError(
        f"RabbitMQ is not installed: no executable {missing}. Install Debian's "
        "rabbitmq-server package (apt-get install rabbitmq-server; 3.10 has the "
        "mqtt, web_mqtt and auth_backend_http plugins) or set IOT_RABBITMQ_SERVER "
        "to a rabbitmq-server start script."
    )


def rabbitmq_config(
    odoo_base_url,
    token,
    mqtt_port,
    ws_port,
    amqp_port,
    vhost="/",
    ws_path=WS_PATH,
    *,
    management_port,
    management_password,
    oauth2=None,
):
    """The ``rabbitmq.conf`` (sysctl format) of a node whose only
    authorization backend is Odoo.

    ``oauth2``: None, or a dict (``resource_server_id``, optional
    ``jwks_url``, default Odoo's /iot/jwks.json) for token mode: the OAuth 2
    backend comes before the HTTP one, so a console token is verified by the
    node without calling Odoo (a device's secret is no JWT: the OAuth 2
    backend refuses it and the HTTP backend asks Odoo, as before). A token
    with an unknown ``kid`` makes the node fetch the JWKS at once.

    POST, not GET: with GET, RabbitMQ 3.10 puts the MQTT password in the
    query string, and so in every access log on the way. The token has to be
    in the URL: the 3.10 HTTP backend cannot send headers.

    The management API listens on loopback (``management_port``) for Odoo's
    :data:`MANAGEMENT_USER` (created at first boot instead of ``guest``).
    That user is internal, so the internal backend comes first; 3.10 cannot
    authenticate internally and authorize through Odoo (``authz = http``
    asks Odoo's user check again), so the node must hold no internal user
    with a permission: :meth:`RabbitMQBroker._ensure_management_user`
    clears the management user's and deletes ``guest``, leaving MQTT and
    AMQP logins to Odoo alone.
    """
    base = odoo_base_url.rstrip("/")
    # 3.10 knows no short name for the OAuth 2 backend: its module name
    chain = ["internal", "http"]
    if oauth2:
        chain.insert(1, "rabbit_auth_backend_oauth2")
    backends = [
        *(f"auth_backends.{i} = {name}" for i, name in enumerate(chain, 1)),
        "management.tcp.ip = 127.0.0.1",
        f"management.tcp.port = {management_port}",
        f"default_user = {MANAGEMENT_USER}",
        f"default_pass = {management_password}",
        "default_user_tags.administrator = true",
    ]
    lines = [
        "# Generated by iot_base (tests/brokers/rabbitmq.py). Has the broker token:",
        "# keep this file private.",
        # AMQP too, on loopback only (its clients go through Odoo as well)
        f"listeners.tcp.1 = 127.0.0.1:{amqp_port}",
        *backends,
        "auth_http.http_method = post",
        *(
            f"auth_http.{name}_path = {base}/iot/rabbitmq/{token}/{name}"
            for name in RABBITMQ_AUTH_PATHS
        ),
        "auth_http.connection_timeout = 5000",
        "auth_http.request_timeout = 15000",
        f"mqtt.listeners.tcp.1 = 127.0.0.1:{mqtt_port}",
        "mqtt.allow_anonymous = false",
        f"mqtt.vhost = {vhost}",
        "mqtt.exchange = amq.topic",
        f"web_mqtt.tcp.listener = 127.0.0.1:{ws_port}",
        f"web_mqtt.ws_path = {ws_path}",
        "log.console = false",
        "log.file.level = info",
    ]
    if oauth2:
        # jwks_url and algorithms: rabbitmq_advanced_config
        lines.append(f"auth_oauth2.resource_server_id = {oauth2['resource_server_id']}")
    return "\n".join(lines) + "\n"


def rabbitmq_advanced_config(odoo_base_url, oauth2=None):
    """The ``advanced.config`` (Erlang terms) of a node: with ``oauth2``,
    the OAuth 2 backend's ``key_config``. 3.10's rabbitmq.conf refuses a
    ``jwks_url`` that is not https; the node's Odoo here is plain HTTP on
    loopback, which advanced.config accepts (a production Odoo is behind
    https: ``auth_oauth2.jwks_url = https://.../iot/jwks.json`` in
    rabbitmq.conf does the same). Only ES256 signatures are accepted."""
    if not oauth2:
        return "[].\n"
    if oauth2.get("hs256"):
        return _hs256_advanced_config(**oauth2["hs256"])
    if oauth2.get("signing_keys"):
        return _static_keys_advanced_config(oauth2["signing_keys"])
    url = oauth2.get("jwks_url") or odoo_base_url.rstrip("/") + JWKS_PATH
    if not all(c.isprintable() and c not in '"\\' for c in url):
        raise BrokerError(f"unusable JWKS URL {url!r}")
    return (
        "[{rabbitmq_auth_backend_oauth2, [{key_config, [\n"
        f'    {{jwks_url, "{url}"}},\n'
        '    {algorithms, [<<"ES256">>]}\n'
        "]}]}].\n"
    )


def _static_keys_advanced_config(keys):
    """key_config with the ES256 public keys of Odoo's /iot/jwks.json
    written into the node (``{kid: jwk}``) and no ``jwks_url``: a token with
    a kid not among them is refused by the node alone (3.10's
    ``uaa_jwt:get_jwk`` fetches keys only when a jwks_url is set), at the
    price of reconfiguring the node at each key rotation."""
    entries = []
    for kid, jwk in keys.items():
        values = (kid, jwk["x"], jwk["y"])
        if not all(v and all(c.isalnum() or c in "-_" for c in v) for v in values):
            raise BrokerError(f"unusable key {kid!r}")
        entries.append(
            f'<<"{kid}">> => {{map, #{{<<"kty">> => <<"EC">>, <<"crv">> => '
            f'<<"P-256">>, <<"alg">> => <<"ES256">>, <<"x">> => <<"{jwk["x"]}">>, '
            f'<<"y">> => <<"{jwk["y"]}">>}}}}'
        )
    return (
        "[{rabbitmq_auth_backend_oauth2, [{key_config, [\n"
        f"    {{signing_keys, #{{{', '.join(entries)}}}}},\n"
        '    {algorithms, [<<"ES256">>]}\n'
        "]}]}].\n"
    )


def _hs256_advanced_config(kid, secret):
    """key_config for an HS256 secret shared with Odoo (3.10 takes symmetric
    keys only from advanced.config): the key, as a JWK of kty oct, is the
    only one, and the default for tokens without a kid."""
    if not (kid and all(c.isalnum() or c in "-_" for c in kid)):
        raise BrokerError(f"unusable key id {kid!r}")
    k = base64.urlsafe_b64encode(secret.encode()).rstrip(b"=").decode()
    return (
        "[{rabbitmq_auth_backend_oauth2, [{key_config, [\n"
        f'    {{default_key, <<"{kid}">>}},\n'
        f'    {{signing_keys, #{{<<"{kid}">> => {{map, #{{<<"kty">> => <<"oct">>, '
        f'<<"alg">> => <<"HS256">>, <<"k">> => <<"{k}">>}}}}}}}},\n'
        '    {algorithms, [<<"HS256">>]}\n'
        "]}]}].\n"
    )


class RabbitMQBroker:
    """A private RabbitMQ 3.10 node with MQTT (TCP and WebSocket) whose users
    are Odoo's ``iot.credentials``, through ``/iot/rabbitmq/<token>/...``.

    Use as a context manager, or call :meth:`start` and :meth:`stop`
    (``stop`` is safe to call twice, and after a failed ``start``)::

        with RabbitMQBroker(self.base_url(), token) as broker:
            client.connect("127.0.0.1", broker.mqtt_port)

    ``base_dir``: where the node keeps its files; by default a temporary
    directory removed by :meth:`stop`. With a given directory (the local
    node of ``make run``) nothing is removed, so durable sessions survive.
    The node runs in its own session: it outlives this Python process
    unless :meth:`stop` is called.
    """

    def __init__(
        self,
        odoo_base_url,
        token,
        ws_port=None,
        mqtt_port=None,
        base_dir=None,
        vhost="/",
        management_port=None,
        oauth2=None,
    ):
        self.oauth2 = oauth2
        self.odoo_base_url = odoo_base_url
        self.token = token
        self.ws_port = ws_port
        self.mqtt_port = mqtt_port
        self.amqp_port = None
        self.management_port = management_port
        self.management_password = None
        self.vhost = vhost
        self.base_dir = base_dir
        self._own_dir = base_dir is None
        self.process = None
        self.log_path = None

    @property
    def ws_url(self):
        return f"ws://127.0.0.1:{self.ws_port}{WS_PATH}"

    @property
    def management_url(self):
        return f"http://127.0.0.1:{self.management_port}"

    @property
    def management_user(self):
        return MANAGEMENT_USER

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.stop()

    def start(self, timeout=STARTUP_TIMEOUT):
        server = find_rabbitmq_server()
        try:
            self._start(server, timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self, server, timeout):
        if self._own_dir:
            self.base_dir = tempfile.mkdtemp(prefix="iot_rabbitmq_")
        os.makedirs(self.base_dir, mode=0o700, exist_ok=True)
        wanted = [self.mqtt_port, self.ws_port, self.management_port]
        for port in wanted:
            if port and port_open(port):
                raise BrokerError(f"port {port} is already in use on 127.0.0.1")
        spare = iter(free_ports(5))
        self.mqtt_port = self.mqtt_port or next(spare)
        self.ws_port = self.ws_port or next(spare)
        self.amqp_port = next(spare)
        self.management_port = self.management_port or next(spare)
        self.management_password = self._management_secret()
        dist_port = next(spare)
        env = self._environment(dist_port)
        self.log_path = os.path.join(self.base_dir, "server.out")
        with open(self.log_path, "wb") as out:
            self.process = subprocess.Popen(  # noqa: S603 - fixed argv, no shell
                [server],
                env=env,
                cwd=self.base_dir,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                # own process group: stop() ends the node and its helpers
                # (erl_child_setup, inet_gethost...) and nothing else
                start_new_session=True,
            )
        with open(os.path.join(self.base_dir, "node.pid"), "w") as pid_file:
            pid_file.write(str(self.process.pid))
        self._wait_ready(timeout)
        self._ensure_management_user()

    def _management_secret(self):
        """The management user's password: new for a throwaway node, kept
        (private file) for a kept one, whose users outlive a restart."""
        path = os.path.join(self.base_dir, MANAGEMENT_SECRET_FILE)
        if not self._own_dir:
            with contextlib.suppress(OSError), open(path) as handle:
                secret = handle.read().strip()
                if secret:
                    return secret
        secret = secrets.token_urlsafe(24)
        _write_private(path, secret + "\n")
        return secret

    def management_request(self, method, path, body=None, auth=None):
        """(status, decoded JSON or None) of a management API call."""
        user, password = auth or (MANAGEMENT_USER, self.management_password)
        basic = base64.b64encode(f"{user}:{password}".encode()).decode()
        request = urllib.request.Request(
            self.management_url + path,
            method=method,
            data=json.dumps(body).encode() if body is not None else None,
            headers={
                "Authorization": f"Basic {basic}",
                "Content-Type": "application/json",
            },
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
                status, data = response.status, response.read()
        except urllib.error.HTTPError as exc:
            status, data = exc.code, exc.read()
        try:
            return status, json.loads(data) if data else None
        except ValueError:
            return status, None

    def _ensure_management_user(self):
        """Odoo's management user exists with our password, ``guest`` does
        not. A fresh node has it from ``default_user``; a node created before
        the management API was configured still has ``guest``/``guest``."""
        quoted_user = urllib.parse.quote(MANAGEMENT_USER, safe="")
        user_path = f"/api/users/{quoted_user}"
        if self.management_request("GET", "/api/whoami")[0] != 200:
            status, _body = self.management_request(
                "PUT",
                user_path,
                {"password": self.management_password, "tags": "administrator"},
                auth=("guest", "guest"),
            )
            if status not in (201, 204):
                raise BrokerError(
                    f"cannot create the management user (HTTP {status}):\n"
                    f"{self.log_tail()}"
                )
        status, _body = self.management_request("DELETE", "/api/users/guest")
        if status not in (204, 404):
            raise BrokerError(f"cannot delete the guest user (HTTP {status})")
        # no vhost for the management user: it cannot open an MQTT session
        _status, permissions = self.management_request(
            "GET", user_path + "/permissions"
        )
        for permission in permissions or ():
            vhost = urllib.parse.quote(permission["vhost"], safe="")
            self.management_request("DELETE", f"/api/permissions/{vhost}/{quoted_user}")

    def _environment(self, dist_port):
        base = self.base_dir
        config = os.path.join(base, "rabbitmq.conf")
        _write_private(
            config,
            rabbitmq_config(
                self.odoo_base_url,
                self.token,
                self.mqtt_port,
                self.ws_port,
                self.amqp_port,
                vhost=self.vhost,
                management_port=self.management_port,
                management_password=self.management_password,
                oauth2=self.oauth2,
            ),
        )
        _write_private(
            os.path.join(base, "advanced.config"),
            rabbitmq_advanced_config(self.odoo_base_url, self.oauth2),
        )
        plugins = RABBITMQ_PLUGINS + ((RABBITMQ_OAUTH2_PLUGIN,) if self.oauth2 else ())
        _write_private(
            os.path.join(base, "enabled_plugins"),
            f"[{','.join(plugins)}].\n",
        )
        _write_private(os.path.join(base, "rabbitmq-env.conf"), "")
        # Erlang reads (and would create) $HOME/.erlang.cookie: give the node
        # its own random one, readable by its owner only, as Erlang demands.
        cookie = os.path.join(base, ".erlang.cookie")
        if not os.path.exists(cookie):
            _write_private(cookie, secrets.token_hex(20), mode=0o400)
        os.makedirs(os.path.join(base, "conf.d"), exist_ok=True)
        env = {
            key: value
            for key, value in os.environ.items()
            # nothing of an outer RabbitMQ/Erlang setup may leak in
            if not key.startswith(("RABBITMQ_", "ERL_"))
        }
        env.update(
            HOME=base,
            RABBITMQ_NODENAME=self._node_name(),
            RABBITMQ_USE_LONGNAME="false",
            RABBITMQ_NODE_IP_ADDRESS="127.0.0.1",
            RABBITMQ_NODE_PORT=str(self.amqp_port),
            RABBITMQ_DIST_PORT=str(dist_port),
            RABBITMQ_CONF_ENV_FILE=os.path.join(base, "rabbitmq-env.conf"),
            RABBITMQ_CONFIG_FILE=config,
            RABBITMQ_CONFIG_FILES=os.path.join(base, "conf.d"),
            RABBITMQ_ADVANCED_CONFIG_FILE=os.path.join(base, "advanced.config"),
            RABBITMQ_ENABLED_PLUGINS_FILE=os.path.join(base, "enabled_plugins"),
            RABBITMQ_MNESIA_BASE=os.path.join(base, "mnesia"),
            RABBITMQ_LOG_BASE=os.path.join(base, "log"),
            # epmd, if this node has to start it, and distribution: loopback
            ERL_EPMD_ADDRESS="127.0.0.1",
            RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS=(
                "-kernel inet_dist_use_interface {127,0,0,1}"
            ),
        )
        return env

    def _node_name(self):
        """Unique on this host (epmd knows every node by name); stable for a
        kept directory, whose data (durable MQTT sessions) is per node name."""
        if self._own_dir:
            tag = f"{os.getpid()}_{secrets.token_hex(3)}"
        else:
            path = os.path.realpath(self.base_dir).encode()
            tag = hashlib.sha1(path).hexdigest()[:10]
        return f"iot_{tag}@localhost"

    def _wait_ready(self, timeout):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise BrokerError(
                    f"RabbitMQ exited with status {self.process.returncode} "
                    f"while starting:\n{self.log_tail()}"
                )
            # the banner line comes once every plugin (and so the HTTP
            # auth backend) is up; the ports prove the listeners are
            if (
                b"Starting broker... completed" in _read_bytes(self.log_path)
                and port_open(self.mqtt_port)
                and port_open(self.ws_port)
                and port_open(self.management_port)
            ):
                return
            time.sleep(0.2)
        raise BrokerError(
            f"RabbitMQ did not open ports {self.mqtt_port} (MQTT) and {self.ws_port} "
            f"(WebSocket) within {timeout} s:\n{self.log_tail()}"
        )

    def log_tail(self, lines=40):
        """The end of the node's output and log, for error messages."""
        texts = []
        log_dir = os.path.join(self.base_dir or "", "log")
        paths = [self.log_path] + (
            sorted(os.path.join(log_dir, n) for n in os.listdir(log_dir))
            if os.path.isdir(log_dir)
            else []
        )
        for path in paths:
            if path and os.path.isfile(path):
                with open(path, errors="replace") as handle:
                    tail = handle.read().splitlines()[-lines:]
                texts.append(f"--- {path}\n" + "\n".join(tail))
        return "\n".join(texts) or "(no output)"

    def stop(self, timeout=STOP_TIMEOUT):
        """Stop the node (SIGTERM makes Erlang shut down cleanly; SIGKILL
        after ``timeout``) and remove its directory if we created it."""
        if self.process is not None:
            stop_process_group(self.process.pid, timeout, self.process)
            self.process = None
        if self._own_dir and self.base_dir:
            shutil.rmtree(self.base_dir, ignore_errors=True)
            self.base_dir = None


def stop_process_group(pid, timeout=STOP_TIMEOUT, process=None):
    """End the node ``pid`` (a process group leader we started), then
    whatever is left of its group."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and _alive(pid, process):
        time.sleep(0.2)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)
    if process is not None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=5)


def _alive(pid, process=None):
    if process is not None:
        return process.poll() is None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _is_node_of(pid, base_dir):
    """Is ``pid`` still the node started in ``base_dir``? (A stale pid file
    may name an unrelated process after a reboot: never signal that.)"""
    marker = b"\0HOME=" + os.path.realpath(base_dir).encode() + b"\0"
    with contextlib.suppress(OSError), open(f"/proc/{pid}/environ", "rb") as environ:
        return marker in b"\0" + environ.read() + b"\0"
    return False


def _read_bytes(path):
    with contextlib.suppress(OSError), open(path, "rb") as handle:
        return handle.read()
    return b""


def _write_private(path, text, mode=0o600):
    with contextlib.suppress(FileNotFoundError):
        os.chmod(path, 0o600)  # an old read-only cookie
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    os.chmod(path, mode)


# ----------------------------------------------------------------------
# Command line, for scripts/local_broker.sh
# ----------------------------------------------------------------------


def _read_pid(base_dir):
    with (
        contextlib.suppress(OSError, ValueError),
        open(os.path.join(base_dir, "node.pid")) as f,
    ):
        return int(f.read().strip())
    return None


def node_matches(
    base_dir, odoo_url, token, *, mqtt_port, ws_port, management_port, oauth2=None
):
    """Was the node of ``base_dir`` configured for this Odoo, broker token
    and ports? (Its ``rabbitmq.conf``, written before it started, says.)
    ``oauth2``: None (not compared), "" (no token mode) or the resource
    server id of token mode."""
    settings = {}
    with (
        contextlib.suppress(OSError),
        open(os.path.join(base_dir, "rabbitmq.conf")) as conf,
    ):
        for line in conf:
            key, sep, value = line.partition("=")
            if sep and not key.lstrip().startswith("#"):
                settings[key.strip()] = value.strip()
    base = odoo_url.rstrip("/")
    wanted = {
        f"auth_http.{name}_path": f"{base}/iot/rabbitmq/{token}/{name}"
        for name in RABBITMQ_AUTH_PATHS
    }
    wanted.update(
        {
            "mqtt.listeners.tcp.1": f"127.0.0.1:{mqtt_port}",
            "web_mqtt.tcp.listener": f"127.0.0.1:{ws_port}",
            "management.tcp.port": str(management_port),
        }
    )
    if oauth2 is not None:
        wanted["auth_oauth2.resource_server_id"] = oauth2 or None
    return all(settings.get(key) == value for key, value in wanted.items())


def _say(text, stream=sys.stdout):
    stream.write(text + "\n")


def main(argv=None):
    parser = argparse.ArgumentParser(description="Private RabbitMQ node for iot_base.")
    parser.add_argument(
        "command", choices=["rabbitmq-start", "rabbitmq-stop", "rabbitmq-status"]
    )
    parser.add_argument("--dir", required=True, help="the node's directory (kept)")
    parser.add_argument("--odoo-url", default="http://127.0.0.1:8069")
    parser.add_argument("--mqtt-port", type=int, default=1884)
    parser.add_argument("--ws-port", type=int, default=8083)
    parser.add_argument("--management-port", type=int, default=15673)
    parser.add_argument(
        "--oauth2",
        default="",
        metavar="RESOURCE_SERVER_ID",
        help="console token mode: the OAuth 2 backend verifies Odoo's tokens "
        "(keys from <odoo-url>/iot/jwks.json) before the HTTP backend",
    )
    args = parser.parse_args(argv)
    if args.oauth2 and not (
        len(args.oauth2) <= 64 and all(c.isalnum() or c in "-_" for c in args.oauth2)
    ):
        _say(f"--oauth2 {args.oauth2!r}: letters, digits, - and _ only", sys.stderr)
        return 2
    args.dir = os.path.realpath(args.dir)
    pid = _read_pid(args.dir)
    running = bool(pid) and _alive(pid) and _is_node_of(pid, args.dir)
    if args.command == "rabbitmq-status":
        _say(f"running (pid {pid})" if running else "stopped")
        return 0 if running else 3
    if args.command == "rabbitmq-stop":
        if running:
            stop_process_group(pid)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.path.join(args.dir, "node.pid"))
        _say("stopped")
        return 0
    # the token comes through the environment: argv is visible to every user
    token = os.environ.get("IOT_BROKER_TOKEN", "")
    if running:
        if not token or node_matches(
            args.dir,
            args.odoo_url,
            token,
            mqtt_port=args.mqtt_port,
            ws_port=args.ws_port,
            management_port=args.management_port,
            oauth2=args.oauth2,
        ):
            _say(f"already running (pid {pid})")
            return 0
        # a new broker token (Settings > IoT > Generate), another Odoo or
        # other ports: the node would refuse every login, so it follows
        _say(f"running (pid {pid}) for another broker token or settings: restarting")
        stop_process_group(pid)
    if not token:
        _say(
            "IOT_BROKER_TOKEN is empty: the broker token of Odoo is needed", sys.stderr
        )
        return 2
    broker = RabbitMQBroker(
        args.odoo_url,
        token,
        ws_port=args.ws_port,
        mqtt_port=args.mqtt_port,
        base_dir=args.dir,
        management_port=args.management_port,
        oauth2={"resource_server_id": args.oauth2} if args.oauth2 else None,
    )
    try:
        broker.start()  # stops the node itself when it fails
    except BrokerError as exc:
        _say(str(exc), sys.stderr)
        return 1
    _say(
        f"RabbitMQ running (pid {broker.process.pid}): MQTT 127.0.0.1:"
        f"{broker.mqtt_port}, WebSocket {broker.ws_url}, management API "
        f"{broker.management_url} (user {MANAGEMENT_USER}, password in "
        f"{args.dir}/{MANAGEMENT_SECRET_FILE}), logs in {args.dir}/log"
        + (
            f"; console tokens verified with {args.odoo_url.rstrip('/')}{JWKS_PATH}"
            f" (resource server {args.oauth2})"
            if args.oauth2
            else ""
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
