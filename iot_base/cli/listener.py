# License LGPL-3.0 or later (https://www.gnu.org/licenses/lgpl).
"""The listener: MQTT clients (paho-mqtt, one per company) hearing device
status and telemetry, and a loop writing what they heard in batches.

Threads: one per MQTT connection (connects, runs paho's network loop,
reconnects with jittered exponential back-off) and the main one (flushes
at most once per second, follows settings and devices every few seconds,
logs a summary per minute). The MQTT threads never touch the database:
they validate each message and fold it into :class:`Pending` (the last
state per device, the last reading per device and topic, counters), so
memory stays bounded whatever the rate, and a batch the database refused
(restart, failover) is kept and written by the next flush. Messages are
acknowledged (QoS 1) on receipt: what was acknowledged is in memory until
written; a listener killed with SIGKILL loses at most its last second.

No payload and no secret ever reaches a log line.
"""

import contextlib
import logging
import math
import os
import random
import threading
import time
import traceback
from collections import Counter, defaultdict
from datetime import datetime, timedelta, timezone

import paho.mqtt.client as mqtt
import psycopg2
from psycopg2 import InterfaceError, OperationalError

import odoo
from odoo import SUPERUSER_ID, api
from odoo.api import Transaction

from ..models.iot_mqtt_command_request import (
    ANSWER_STATES,
    ID_RE,
    REPLY_SUBTOPIC,
)
from ..tools import payload_json

_logger = logging.getLogger(__name__)

STATUS_WORDS = ("online", "offline", "heartbeat")
# identity keys a JSON payload may carry; naming another device drops it
IDENTITY_KEYS = ("device", "username")
MAX_TOPIC_LEVELS = 8  # below .../telemetry
MAX_TOPIC_LENGTH = 128
MAX_TOPICS_PER_DEVICE = 32
MAX_HISTORY_KEYS = 16
KEEPALIVE = 30
BACKOFF_MIN, BACKOFF_MAX = 1.0, 60.0
EPOCH = datetime(1970, 1, 1)
DROP_REASONS = (
    "layout",
    "unknown",
    "foreign",
    "huge",
    "encoding",
    "payload",
    "topics",
    "command",
)
# command answers (status/reply) held per batch, whatever devices send: per
# device (a device inventing ids fills no memory) and in all
MAX_ANSWERS_PER_DEVICE = 16
MAX_PENDING_ANSWERS = 50000
# an answer naming no request yet is retried this long (seconds): Odoo
# publishes a command before its transaction commits the request
ANSWER_RETRY = 10.0


def utcnow():
    return datetime.now(timezone.utc).replace(tzinfo=None)


def parse_status(text):
    """``online`` / ``offline`` / ``heartbeat`` from a status payload: the
    word itself (any case, blanks around ignored), the same as a JSON
    string, or a JSON object whose ``"status"`` is one of them. Else None."""
    word = text.strip().lower()
    if word in STATUS_WORDS:
        return word
    if not word.startswith(("{", '"')):
        return None
    try:
        value = payload_json.loads(text)
    except ValueError:  # not JSON, or JSON too deep to be a status
        return None
    if isinstance(value, dict):
        value = value.get("status")
    if isinstance(value, str) and value.strip().lower() in STATUS_WORDS:
        return value.strip().lower()
    return None


def _finite(number):
    """``number`` as a float, or None when it is not finite (or an integer
    too large for one)."""
    try:
        number = float(number)
    except OverflowError:
        return None
    return number if math.isfinite(number) else None


def _storable_key(key):
    # (payload_json.loads already refused NUL and lone surrogates)
    return isinstance(key, str) and len(key) <= MAX_TOPIC_LENGTH


def numeric_values(value):
    """{key: float} of a telemetry value worth a history point: a number
    (key ""), or an object's top-level numbers (booleans are not)."""
    if isinstance(value, bool):
        return {}
    if isinstance(value, (int, float)):
        number = _finite(value)
        return {} if number is None else {"": number}
    if not isinstance(value, dict):
        return {}
    points = {}
    for key, item in value.items():
        if isinstance(item, bool) or not isinstance(item, (int, float)):
            continue
        number = _finite(item)
        if number is not None and _storable_key(key):
            points[key] = number
            if len(points) >= MAX_HISTORY_KEYS:
                break
    return points


class Pending:
    """What was heard since the last flush, folded (not a row per message)."""

    def __init__(self):
        # device id -> [state or None, state_at, heartbeat_at, message_at]
        self.presence = {}
        # (device id, topic) -> (company id, payload, is_json, received_at)
        self.readings = {}
        # (device id, topic, key, sampled_at) -> (company id, value)
        self.history = {}
        # (company id, minute) -> [messages, dropped]
        self.throughput = {}
        # (device id, command id) -> (company id, state, text, received_at,
        # monotonic time first heard)
        self.answers = {}
        self.answer_counts = Counter()  # device id -> keys in answers
        self.oldest = None  # monotonic time of the oldest message here
        self.count = 0

    def __bool__(self):
        return bool(
            self.presence
            or self.readings
            or self.history
            or self.throughput
            or self.answers
        )

    def note(self, company_id, now, dropped=False):
        key = (company_id, now.replace(second=0, microsecond=0))
        counts = self.throughput.setdefault(key, [0, 0])
        counts[0] += 1
        counts[1] += dropped
        self.count += 1
        if self.oldest is None:
            self.oldest = time.monotonic()

    def status(self, device_id, state, now, live):
        entry = self.presence.setdefault(device_id, [None, None, None, None])
        if state == "heartbeat":
            state = "online"
        if entry[0] != state:
            entry[0], entry[1] = state, now
        if live and state == "online":
            entry[2] = now
            entry[3] = now

    def seen(self, device_id, now):
        entry = self.presence.setdefault(device_id, [None, None, None, None])
        entry[1] = entry[1] or now
        entry[3] = now

    def merge(self, newer):
        """Fold ``newer`` (heard after this) into this one."""
        for device_id, (state, state_at, beat, seen) in newer.presence.items():
            entry = self.presence.setdefault(device_id, [None, None, None, None])
            if state and state != entry[0]:
                entry[0], entry[1] = state, state_at
            entry[1] = entry[1] or state_at
            entry[2] = max(filter(None, (entry[2], beat)), default=None)
            entry[3] = max(filter(None, (entry[3], seen)), default=None)
        self.readings.update(newer.readings)
        self.history.update(newer.history)
        for key, answer in newer.answers.items():
            self.answer(key, answer)
        for key, (messages, dropped) in newer.throughput.items():
            counts = self.throughput.setdefault(key, [0, 0])
            counts[0] += messages
            counts[1] += dropped
        self.count += newer.count
        if self.oldest is None:
            self.oldest = newer.oldest

    def answer(self, key, answer):
        """Keep ``answer`` for ``key``: a final answer (done, failed) is
        never replaced by an acknowledgement. False when full."""
        old = self.answers.get(key)
        if old is None:
            if (
                len(self.answers) >= MAX_PENDING_ANSWERS
                or self.answer_counts[key[0]] >= MAX_ANSWERS_PER_DEVICE
            ):
                return False
            self.answer_counts[key[0]] += 1
        if old is None or old[1] == "acknowledged" or answer[1] != "acknowledged":
            self.answers[key] = answer if old is None else (*answer[:4], old[4])
        return True

    def batch(self):
        return {
            "presence": [
                (device_id, *entry) for device_id, entry in self.presence.items()
            ],
            "readings": [
                (device_id, company_id, topic, payload, is_json, received_at)
                for (device_id, topic), (
                    company_id,
                    payload,
                    is_json,
                    received_at,
                ) in self.readings.items()
            ],
            "history": [
                (device_id, company_id, topic, key, value, sampled_at)
                for (device_id, topic, key, sampled_at), (
                    company_id,
                    value,
                ) in self.history.items()
            ],
            "throughput": [
                (company_id, minute, messages, dropped)
                for (company_id, minute), (messages, dropped) in self.throughput.items()
            ],
            "answers": [
                (device_id, company_id, command_id, state, text, received_at)
                for (device_id, command_id), (
                    company_id,
                    state,
                    text,
                    received_at,
                    _first,
                ) in self.answers.items()
            ],
        }


class Connection:
    """One company's MQTT connection, in its own thread."""

    def __init__(self, listener, company_id, namespace, login):
        self.listener = listener
        self.company_id = company_id
        self.namespace = namespace
        self.login = login
        self.client = None
        self.connected = False
        # the broker acknowledged every filter of the last connection
        self.subscribed = False
        self.refused = None
        self.connects = 0
        self._stop = threading.Event()
        self._restart = threading.Event()
        self.thread = threading.Thread(
            target=self._run, name=f"iot-listen-{company_id}", daemon=True
        )

    def start(self):
        self.thread.start()

    def stop(self):
        self._stop.set()
        self._disconnect()

    def restart(self, namespace=None, login=None):
        """Reconnect with new settings (the thread picks them up)."""
        self.namespace = namespace or self.namespace
        self.login = login or self.login
        self._restart.set()
        self._disconnect()

    def join(self, timeout):
        self.thread.join(timeout)

    def _disconnect(self):
        client = self.client
        if client is not None:
            with contextlib.suppress(Exception):  # already closed
                client.disconnect()

    def filters(self):
        group = self.listener.settings["shared_group"]
        prefix = f"$share/{group}/" if group else ""
        return [
            (f"{prefix}{self.namespace}/devices/+/status/#", 1),
            (f"{prefix}{self.namespace}/devices/+/telemetry/#", 1),
        ]

    def _run(self):
        attempt = 0
        while not self._stop.is_set():
            self._restart.clear()
            settings, login = self.listener.settings, self.login
            client = mqtt.Client(
                mqtt.CallbackAPIVersion.VERSION2,
                client_id=login["client_id"],
                clean_session=True,
                reconnect_on_failure=False,
            )
            client.username_pw_set(login["username"], login["password"])
            client.on_connect = self._on_connect
            client.on_disconnect = self._on_disconnect
            client.on_message = self._on_message
            client.on_subscribe = self._on_subscribe
            client.connect_timeout = settings["timeout"]
            if settings["tls"]:
                client.tls_set()
            self.refused = None
            try:
                client.connect(settings["host"], settings["port"], keepalive=KEEPALIVE)
            except (OSError, ValueError) as exc:
                _logger.info(
                    "company %s: cannot reach %s:%s (%s)",
                    self.company_id,
                    settings["host"],
                    settings["port"],
                    exc.__class__.__name__,
                )
            else:
                self.client = client
                if not self._stop.is_set():
                    client.loop_forever()
                self.client = None
                with contextlib.suppress(Exception):
                    client.socket() and client.socket().close()
            if self.connects and self.refused is None:
                attempt = 0  # it worked: start the back-off again
                self.connects = 0
            if self.refused is not None:
                self.listener.login_refused(self)
            if self._stop.is_set():
                break
            if self._restart.is_set():
                continue
            delay = min(BACKOFF_MAX, BACKOFF_MIN * 2**attempt)
            delay *= random.uniform(0.5, 1.0)  # noqa: S311 - jitter, not a secret
            attempt = min(attempt + 1, 16)
            self._stop.wait(delay)

    def _on_connect(self, client, _userdata, _flags, reason_code, _properties):
        if reason_code.is_failure:
            self.refused = str(reason_code)
            _logger.info(
                "company %s: broker refused the listener: %s",
                self.company_id,
                reason_code,
            )
            client.disconnect()
            return
        self.connected = True
        self.subscribed = False
        self.connects += 1
        client.subscribe(self.filters())
        _logger.info("company %s: connected, subscribing", self.company_id)

    def _on_disconnect(self, _client, _userdata, _flags, reason_code, _properties):
        if self.connected:
            _logger.info("company %s: disconnected (%s)", self.company_id, reason_code)
        self.connected = False
        self.subscribed = False

    def _on_subscribe(self, _client, _userdata, _mid, reason_codes, _properties):
        refused = [str(code) for code in reason_codes if code.is_failure]
        self.subscribed = not refused
        if self.subscribed:
            _logger.info("company %s: connected, subscribed", self.company_id)
        else:
            # connected but deaf: presence and readings would silently stop
            _logger.warning(
                "company %s: the broker refused the listener's subscriptions (%s):"
                " check that the rules of its login allow reading the devices' topics",
                self.company_id,
                ", ".join(refused),
            )

    def _on_message(self, _client, _userdata, message):
        try:
            self.listener.handle(self, message.topic, message.payload, message.retain)
        except Exception as exc:  # never let one message end this connection's thread
            self.listener.message_failed(self.company_id, exc)


class Listener:
    """``Listener(dbname).run()`` until :meth:`stop` (SIGTERM)."""

    flush_interval = 1.0  # at most one transaction per second
    reload_interval = 10.0  # settings and devices
    reload_min_gap = 2.0  # when an unknown device is heard
    idle_flush_interval = 5.0  # the stale sweep when nothing is heard
    summary_interval = 60.0
    failure_log_interval = 60.0  # one line about unreadable messages at most

    def __init__(self, dbname, on_flush=None):
        self.dbname = dbname
        self.on_flush = on_flush  # called with the presence changes (tests)
        self.settings = None
        self.devices = {}
        self.topics = {}
        self.connections = {}
        self.logins = {}
        self.pending = Pending()
        self.failed = None  # a batch the database refused, retried first
        # history keys heard per (device, topic): at most MAX_HISTORY_KEYS
        # each, whatever a device sends over time
        self.history_keys = defaultdict(set)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._want_reload = False
        self.stats = Counter()
        self.total = Counter()
        self.last_lag = 0.0
        self.db_down_since = None
        self.failures = 0  # unreadable messages not logged yet
        self.failure_logged_at = None

    # -- database --------------------------------------------------------

    def _registry(self):
        return odoo.modules.registry.Registry(self.dbname)

    @contextlib.contextmanager
    def _env(self):
        """One transaction, as superuser. Odoo's caches are per process:
        first what other processes changed is dropped here (a setting
        written by the server, e.g. the payload limit; a changed cache asks
        for a reload of the settings), and after the commit what this one
        changed is signalled to them (the server's cached topic rules, when
        a listener credential joins them)."""
        registry = self._registry()
        try:
            with registry.cursor() as cr:
                seen = (registry.registry_sequence, dict(registry.cache_sequences))
                registry = registry.check_signaling(cr)
                if seen != (registry.registry_sequence, registry.cache_sequences):
                    self._want_reload = True
                if getattr(cr, "transaction", None) is None:
                    # the registry at hand: no second look-up by name (and its lock)
                    cr.transaction = Transaction(registry)
                yield api.Environment(cr, SUPERUSER_ID, {})
        except BaseException:
            # rolled back: forget what this process cached meanwhile; the
            # names stay flagged (a commit before may not be signalled yet)
            if registry.cache_invalidated:
                registry.clear_cache(*sorted(registry.cache_invalidated))
            raise
        # the database gone right after the commit: signalled after the next
        with contextlib.suppress(OperationalError, InterfaceError):
            registry.signal_changes()

    def _load(self, env):
        """Settings, devices and logins; connections follow them."""
        listener = env["iot.listener"]
        listener._check_can_listen()
        settings = listener._listener_settings()
        devices, _states = listener._listener_devices()
        known = listener._listener_topics()
        topics = Counter(device_id for device_id, _topic in known)
        companies = {c.id: c for c in listener._listener_companies()}
        logins = {}
        for company_id, company in companies.items():
            login = listener._listener_login(company, self.logins.get(company_id))
            if login:
                logins[company_id] = (company.iot_mqtt_namespace, login)
        return settings, devices, (topics, known), logins

    def _apply(self, settings, devices, topics, logins):
        old = self.settings
        self.settings = settings
        changed = sorted(k for k in settings if old and old.get(k) != settings[k])
        if changed:
            _logger.info("settings changed: %s", ", ".join(changed))
        self.devices = devices
        with self._lock:
            self.topic_counts, self.known_topics = topics
        reconnect_all = old is not None and any(
            old[key] != settings[key]
            for key in ("host", "port", "tls", "shared_group", "mosquitto")
        )
        for company_id in list(self.connections):
            if company_id not in logins:
                self.connections.pop(company_id).stop()
        for company_id, (namespace, login) in logins.items():
            self.logins[company_id] = login
            connection = self.connections.get(company_id)
            if connection is None:
                connection = Connection(self, company_id, namespace, login)
                self.connections[company_id] = connection
                connection.start()
            elif (
                reconnect_all
                or connection.namespace != namespace
                or connection.login is not login
            ):
                connection.restart(namespace, login)

    def login_refused(self, connection):
        """The broker refused a login: the next reload checks it (and
        issues a new secret when it is no longer valid)."""
        self._want_reload = True

    # -- messages (MQTT threads) ------------------------------------------

    def handle(self, connection, topic, payload, retained):
        now = utcnow()
        reason = self._fold(connection, topic, payload, retained, now)
        self.count_drop(connection.company_id, reason, now)

    def count_drop(self, company_id, reason, now=None):
        """Count one message of ``company_id``, dropped for ``reason``
        (None: kept)."""
        with self._lock:
            self.pending.note(company_id, now or utcnow(), dropped=reason is not None)
            self.stats["messages"] += 1
            if reason:
                self.stats[f"dropped_{reason}"] += 1

    def message_failed(self, company_id, exc):
        """A message ``handle`` could not read (a bug): dropped, counted, and
        logged once per ``failure_log_interval`` with how many there were,
        never a traceback (or a payload) per message."""
        self.count_drop(company_id, "payload")
        now = time.monotonic()
        with self._lock:
            self.failures += 1
            if (
                self.failure_logged_at is not None
                and now - self.failure_logged_at < self.failure_log_interval
            ):
                return
            count, self.failures = self.failures, 0
            self.failure_logged_at = now
        frames = traceback.extract_tb(exc.__traceback__)
        where = frames[-1] if frames else None
        _logger.warning(
            "%d message(s) could not be read and were dropped since the last such"
            " line (company %s, %s at %s:%s); next such line in %d s at the earliest",
            count,
            company_id,
            type(exc).__name__,
            os.path.basename(where.filename) if where else "?",
            where.lineno if where else "?",
            self.failure_log_interval,
        )

    def _fold(self, connection, topic, payload, retained, now):
        """Fold one message into the pending batch; the drop reason or None."""
        levels = topic.split("/")
        if (
            len(levels) < 4
            or levels[0] != connection.namespace
            or levels[1] != "devices"
        ):
            return "layout"
        device = self.devices.get(levels[2])
        if device is None:
            self._want_reload = True
            return "unknown"
        device_id, company_id = device
        if company_id != connection.company_id:
            return "foreign"
        if len(payload) > self.settings["max_payload"]:
            return "huge"
        try:
            text = payload.decode("utf-8")
        except UnicodeDecodeError:
            return "encoding"
        if "\x00" in text:  # PostgreSQL text cannot hold it
            return "encoding"
        kind = levels[3]
        if kind == "status":
            if len(levels) == 5 and levels[4] == REPLY_SUBTOPIC:
                return self._fold_answer(levels[2], device, text, retained, now)
            if len(levels) != 4:
                return "layout"
            state = parse_status(text)
            if state is None:
                return "payload"
            with self._lock:
                self.pending.status(device_id, state, now, live=not retained)
            return None
        if kind != "telemetry":
            return "layout"
        sub = "/".join(levels[4:])
        if len(levels) - 4 > MAX_TOPIC_LEVELS or len(sub) > MAX_TOPIC_LENGTH:
            return "layout"
        try:
            value, is_json = payload_json.loads(text), True
        except payload_json.UnsafeJson:
            return "payload"  # no page could show it
        except ValueError:
            value, is_json = None, False  # text
        if isinstance(value, dict):
            for key in IDENTITY_KEYS:
                claimed = value.get(key)
                if (
                    claimed != levels[2]
                    and isinstance(claimed, str)
                    and (claimed in self.devices)
                ):
                    return "foreign"
        history = self.settings["history"] and numeric_values(value)
        with self._lock:
            if (device_id, sub) not in self.known_topics:
                if self.topic_counts[device_id] >= MAX_TOPICS_PER_DEVICE:
                    return "topics"
                self.known_topics.add((device_id, sub))
                self.topic_counts[device_id] += 1
            self.pending.readings[(device_id, sub)] = (company_id, text, is_json, now)
            if history:
                interval = self.settings["history_interval"]
                epoch = int((now - EPOCH).total_seconds())
                bucket = EPOCH + timedelta(seconds=epoch - epoch % interval)
                keys = self.history_keys[(device_id, sub)]
                for key, number in history.items():
                    if key not in keys:
                        if len(keys) >= MAX_HISTORY_KEYS:
                            continue
                        keys.add(key)
                    self.pending.history[(device_id, sub, key, bucket)] = (
                        company_id,
                        number,
                    )
            if not retained:
                self.pending.seen(device_id, now)
        return None

    def _fold_answer(self, username, device, text, retained, now):
        """A device's answer to a command (``status/reply``): a JSON object
        with the command's ``id`` and a ``state``; kept as the text received.
        Which request it answers is decided in the database, by id *and*
        device."""
        device_id, company_id = device
        try:
            value = payload_json.loads(text)
        except ValueError:  # not JSON, too deep, a lone surrogate
            return "payload"
        if not isinstance(value, dict):
            return "payload"
        command_id, state = value.get("id"), value.get("state")
        if (
            not isinstance(command_id, str)
            or not ID_RE.fullmatch(command_id)
            or state not in ANSWER_STATES
        ):
            return "payload"
        for key in IDENTITY_KEYS:
            claimed = value.get(key)
            if claimed != username and isinstance(claimed, str):
                return "foreign"
        with self._lock:
            kept = self.pending.answer(
                (device_id, command_id),
                (company_id, state, text, now, time.monotonic()),
            )
            if not kept:
                return "command"
            if not retained:
                self.pending.seen(device_id, now)
        return None

    def count_late_drops(self, company_id, count, reason="command"):
        """``count`` messages of ``company_id`` already counted as kept turn
        out dropped (an answer the database refused)."""
        now = utcnow()
        with self._lock:
            key = (company_id, now.replace(second=0, microsecond=0))
            self.pending.throughput.setdefault(key, [0, 0])[1] += count
            self.stats[f"dropped_{reason}"] += count

    def _after_answers(self, pending, unknown, refused):
        """Answers naming no request yet are retried until ANSWER_RETRY
        after they were heard; the others and the refused are dropped."""
        drops = Counter(row[1] for row in refused)
        now = time.monotonic()
        with self._lock:
            for row in unknown:
                key = (row[0], row[2])
                answer = pending.answers.get(key)
                if answer and now - answer[4] < ANSWER_RETRY:
                    if self.pending.answer(key, answer):
                        continue
                drops[row[1]] += 1
        for company_id, count in drops.items():
            self.count_late_drops(company_id, count)

    # -- main loop ---------------------------------------------------------

    def start(self):
        """Load everything and connect; raises UserError (neutralized
        database) or a database error: the caller does not start then."""
        with self._env() as env:
            loaded = self._load(env)
        self._apply(*loaded)
        self.last_reload = time.monotonic()

    def stop(self):
        self._stop.set()

    def run(self):
        if self.settings is None:  # not started yet
            self.start()
        _logger.info(
            "listening for %d compan%s, %d devices",
            len(self.connections),
            "y" if len(self.connections) == 1 else "ies",
            len(self.devices),
        )
        last_tick = last_flush = last_summary = time.monotonic()
        try:
            while not self._stop.is_set():
                # one tick per interval, flush or not (an idle listener sleeps)
                self._stop.wait(
                    max(0.0, last_tick + self.flush_interval - time.monotonic())
                )
                now = last_tick = time.monotonic()
                due_reload = now - self.last_reload >= self.reload_interval or (
                    self._want_reload and now - self.last_reload >= self.reload_min_gap
                )
                if (
                    self.pending
                    or self.failed
                    or due_reload
                    or now - last_flush >= self.idle_flush_interval
                ):
                    last_flush = now
                    self.flush(reload=due_reload)
                if now - last_summary >= self.summary_interval:
                    last_summary = now
                    self.log_summary()
        finally:
            self.shutdown()

    def flush(self, reload=False):
        """One transaction: the pending batch (and the one that failed
        before, if any), the stale sweep, the bus notifications; then, when
        due, the settings and devices. Returns the presence changes."""
        with self._lock:
            pending, self.pending = self.pending, Pending()
        if self.failed is not None:
            self.failed.merge(pending)
            pending, self.failed = self.failed, None
        changes = []
        batch = pending.batch()
        try:
            with self._env() as env:
                changes = env["iot.listener"]._listener_write(
                    batch, self.settings["heartbeat_timeout"]
                )
                requests = env["iot.mqtt.command.request"]
                _written, unknown, refused = requests._listener_write_answers(
                    batch["answers"]
                )
                requests._mark_timed_out()
                loaded = None
                if reload:
                    self._want_reload = False
                    loaded = self._load(env)
            if loaded:
                self.last_reload = time.monotonic()
                self._apply(*loaded)
        except (OperationalError, InterfaceError) as exc:
            # the database went away: keep the batch, write it when back
            self.failed = pending
            if self.db_down_since is None:
                self.db_down_since = time.monotonic()
                _logger.warning(
                    "database unavailable, keeping %d message(s) in memory: %s",
                    pending.count,
                    exc.__class__.__name__,
                )
            return []
        except (psycopg2.Error, ValueError) as exc:
            # not an outage: this batch cannot be written (a bug, a schema
            # change, a value psycopg2 cannot send); drop it rather than
            # retry it forever
            _logger.warning(
                "dropped a batch of %d message(s) the database refused: %s",
                pending.count,
                exc.__class__.__name__,
            )
            self._want_reload = True
            return []
        self._after_answers(pending, unknown, refused)
        if self.db_down_since is not None:
            _logger.info(
                "database back after %.1f s", time.monotonic() - self.db_down_since
            )
            self.db_down_since = None
        if pending.oldest is not None:
            self.last_lag = time.monotonic() - pending.oldest
            self.stats["max_lag_ms"] = max(
                self.stats["max_lag_ms"], int(self.last_lag * 1000)
            )
        self.stats["transactions"] += 1
        self.stats["rows"] += sum(len(rows) for rows in batch.values())
        if self.on_flush:
            self.on_flush(changes)
        return changes

    def log_summary(self, period="last minute"):
        with self._lock:
            stats, self.stats = self.stats, Counter()
        self.total.update(stats)
        dropped = {
            reason: stats[f"dropped_{reason}"]
            for reason in DROP_REASONS
            if stats[f"dropped_{reason}"]
        }
        _logger.info(
            "%s: %d messages, %d dropped%s, %d devices known, "
            "%d/%d connections up and subscribed, %d transactions, %d rows,"
            " lag max %.2f s",
            period,
            stats["messages"],
            sum(dropped.values()),
            f" ({', '.join(f'{k} {v}' for k, v in dropped.items())})"
            if dropped
            else "",
            len(self.devices),
            sum(c.connected and c.subscribed for c in self.connections.values()),
            len(self.connections),
            stats["transactions"],
            stats["rows"],
            stats["max_lag_ms"] / 1000,
        )
        return stats

    def shutdown(self):
        for connection in self.connections.values():
            connection.stop()
        for connection in self.connections.values():
            connection.join(5)
        if self.pending or self.failed:
            with contextlib.suppress(OperationalError, InterfaceError):
                self.flush()
        self.log_summary("since the last summary")
        _logger.info("stopped")
