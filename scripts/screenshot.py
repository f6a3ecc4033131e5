#!/usr/bin/env python3
"""`make screenshot`: docs/iot_app.png, the MQTT console showing live messages.

Needs `make run` (Odoo and its local MQTT broker). Logs in, opens /iot/app in
headless Chromium, subscribes from the page, publishes a few JSON and text
messages with paho-mqtt (as the same user, with a session secret of its
own), publishes one from the page, and saves the screenshot.

    python3 scripts/screenshot.py [--url http://localhost:8069] [--db iot]
        [--login admin] [--password admin] [--out docs/iot_app.png]

(IOT_URL or IOT_HTTP_PORT, and IOT_DB, as for `make run`, set the defaults.)

Chromium is driven over the DevTools protocol (websocket-client, which
Odoo's browser tests need too); no other dependency than Odoo's own.
"""

import argparse
import base64
import contextlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.parse

import paho.mqtt.client as mqtt
import requests
import websocket

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--hide-scrollbars",
    "--force-device-scale-factor=1",
]
WIDTH, HEIGHT = 1440, 1040
TIMEOUT = 30
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FAILED_PNG = os.path.join(tempfile.gettempdir(), "iot_app_screenshot_failed.png")


def fail(message):
    print(f"screenshot: {message}", file=sys.stderr)
    sys.exit(1)


def find_chromium():
    for name in (
        "chromium",
        "chromium-browser",
        "google-chrome",
        "google-chrome-stable",
    ):
        path = shutil.which(name)
        if path:
            return path
    fail("no Chromium found (Debian: apt-get install chromium)")


def free_port():
    """A free loopback port, from the tests' broker helper (plain Python)."""
    sys.path.insert(0, os.path.join(REPO_ROOT, "iot_base", "tests"))
    try:
        brokers = importlib.import_module("brokers")
    finally:
        sys.path.pop(0)
    return brokers.free_ports(1)[0]


class DevTools:
    """The smallest DevTools-protocol client: send a command, wait for its answer."""

    def __init__(self, ws_url):
        self.ws = websocket.create_connection(
            ws_url, timeout=TIMEOUT, suppress_origin=True
        )
        self.next_id = 0

    def call(self, method, **params):
        self.next_id += 1
        self.ws.send(
            json.dumps({"id": self.next_id, "method": method, "params": params})
        )
        while True:
            message = json.loads(self.ws.recv())
            if message.get("id") == self.next_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})

    def evaluate(self, expression):
        result = self.call(
            "Runtime.evaluate",
            expression=expression,
            awaitPromise=True,
            returnByValue=True,
        )
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression[:80]}...: {result['exceptionDetails']}")
        return result["result"].get("value")

    def screenshot(self):
        return base64.b64decode(
            self.call("Page.captureScreenshot", format="png")["data"]
        )

    def wait_for(self, expression, what, timeout=TIMEOUT):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(RuntimeError):
                if self.evaluate(f"!!({expression})"):
                    return
            time.sleep(0.2)
        with open(FAILED_PNG, "wb") as handle:
            handle.write(self.screenshot())
        fail(f"timed out waiting for {what} (page as it was: {FAILED_PNG})")


@contextlib.contextmanager
def chromium():
    profile = tempfile.mkdtemp(prefix="iot_screenshot_")
    port = free_port()
    process = subprocess.Popen(  # noqa: S603 - fixed argv
        [
            find_chromium(),
            *CHROMIUM_FLAGS,
            f"--remote-debugging-port={port}",
            f"--user-data-dir={profile}",
            f"--window-size={WIDTH},{HEIGHT}",
            "about:blank",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + TIMEOUT
        while True:
            try:
                targets = requests.get(
                    f"http://127.0.0.1:{port}/json/list", timeout=2
                ).json()
                page = next(t for t in targets if t["type"] == "page")
                break
            except (requests.RequestException, StopIteration, ValueError):
                if time.monotonic() > deadline or process.poll() is not None:
                    fail("Chromium did not start")
                time.sleep(0.2)
        yield DevTools(page["webSocketDebuggerUrl"])
    finally:
        process.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=10)
        shutil.rmtree(profile, ignore_errors=True)


def login(base_url, db, user, password):
    session = requests.Session()
    reply = session.post(
        f"{base_url}/web/session/authenticate",
        json={
            "jsonrpc": "2.0",
            "method": "call",
            "params": {"db": db, "login": user, "password": password},
        },
        timeout=TIMEOUT,
    )
    reply.raise_for_status()
    if reply.json().get("error") or not session.cookies.get("session_id"):
        fail(
            f"cannot log in to {base_url} (database {db}) as {user}: "
            "is `make run` serving?"
        )
    return session


def console_config(session, base_url):
    """A config of the console, with a session secret for paho."""
    reply = session.post(
        f"{base_url}/iot/app/config",
        json={"jsonrpc": "2.0", "method": "call", "params": {}},
        timeout=TIMEOUT,
    ).json()
    if "error" in reply:
        fail(f"/iot/app/config: {reply['error'].get('message')}")
    return reply["result"]


def paho_client(config):
    broker = urllib.parse.urlsplit(config["broker_url"])
    client = mqtt.Client(
        mqtt.CallbackAPIVersion.VERSION2,
        client_id=config["client_id"],  # one the credential owns
        transport="websockets",
    )
    client.ws_set_options(path=broker.path or "/")
    if broker.scheme == "wss":
        client.tls_set()
    client.username_pw_set(
        config["credentials"]["username"], config["credentials"]["password"]
    )
    client.connect(
        broker.hostname, broker.port or (443 if broker.scheme == "wss" else 80)
    )
    client.loop_start()
    return client


def set_field(selector, value):
    """JS typing `value` into an input as a user does (t-model listens to input)."""
    return (
        f"(() => {{ const el = document.querySelector({json.dumps(selector)});"
        f" el.value = {json.dumps(value)};"
        " el.dispatchEvent(new Event('input', {bubbles: true}));"
        " el.dispatchEvent(new Event('change', {bubbles: true})); return true; })()"
    )


def click(selector):
    return f"(document.querySelector({json.dumps(selector)}).click(), true)"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    port = os.environ.get("IOT_HTTP_PORT", "8069")  # as `make run`
    parser.add_argument(
        "--url", default=os.environ.get("IOT_URL", f"http://localhost:{port}")
    )
    parser.add_argument("--db", default=os.environ.get("IOT_DB", "iot"))
    parser.add_argument("--login", default="admin")
    parser.add_argument("--password", default="admin")
    parser.add_argument("--out", default="docs/iot_app.png")
    args = parser.parse_args()
    base_url = args.url.rstrip("/")

    session = login(base_url, args.db, args.login, args.password)
    config = console_config(session, base_url)
    ns = config["namespace"]
    telemetry, status = f"{ns}/devices/+/telemetry/#", f"{ns}/devices/+/status/#"

    with chromium() as page:
        page.call(
            "Emulation.setDeviceMetricsOverride",
            width=WIDTH,
            height=HEIGHT,
            deviceScaleFactor=1,
            mobile=False,
        )
        host = urllib.parse.urlsplit(base_url).hostname
        page.call("Network.enable")
        page.call(
            "Network.setCookie",
            name="session_id",
            value=session.cookies["session_id"],
            domain=host,
            path="/",
            httpOnly=True,
        )
        page.call("Page.enable")
        page.call("Page.navigate", url=f"{base_url}/iot/app")
        page.wait_for("document.querySelector('.o_mqtt_status')", "the console to load")
        page.wait_for(
            "document.querySelector('.o_mqtt_status').dataset.status === 'connected'",
            f"the console to connect to {config['broker_url']} "
            "(is the broker of `make run` up?)",
        )
        client = paho_client(config)
        try:
            for topic_filter, qos in ((telemetry, "1"), (status, "0")):
                for action in (
                    set_field("#o_mqtt_filter", topic_filter),
                    set_field(".o_mqtt_subscribe_form select", qos),
                    click(".o_mqtt_subscribe"),
                ):
                    page.evaluate(action)
                    time.sleep(0.2)  # a user's pace: the page renders in between
                row = f".o_mqtt_subscription[data-filter={json.dumps(topic_filter)}]"
                page.wait_for(
                    f"document.querySelector({json.dumps(row)})?.dataset.status"
                    " === 'active'",
                    f"the subscription to {topic_filter}",
                )
            messages = [
                (f"{ns}/devices/boiler-room/status", "online"),
                (
                    f"{ns}/devices/thermo-01/telemetry/climate",
                    json.dumps({"temperature": 21.4, "humidity": 48, "battery": 0.93}),
                ),
                (
                    f"{ns}/devices/pump-07/telemetry/flow",
                    json.dumps(
                        {
                            "flow_l_min": 12.8,
                            "pressure_bar": 2.1,
                            "alarms": [],
                            "firmware": "2.4.1",
                        }
                    ),
                ),
                (f"{ns}/devices/thermo-02/status", "battery low"),
                (
                    f"{ns}/devices/thermo-01/telemetry/climate",
                    json.dumps({"temperature": 21.6, "humidity": 47, "battery": 0.93}),
                ),
            ]
            for topic, payload in messages:
                client.publish(topic, payload, qos=1).wait_for_publish(TIMEOUT)
                time.sleep(0.3)
        finally:
            client.loop_stop()
            client.disconnect()
        # and one from the page itself
        page.evaluate(
            set_field("#o_mqtt_publish_topic", f"{ns}/devices/pump-07/telemetry/flow")
        )
        time.sleep(0.2)
        page.evaluate(
            set_field(
                "#o_mqtt_publish_payload",
                json.dumps({"flow_l_min": 0, "note": "maintenance"}, indent=2),
            )
        )
        time.sleep(0.2)
        page.evaluate(click(".o_mqtt_publish_button"))
        page.wait_for(
            "document.querySelectorAll('.o_mqtt_message').length"
            f" >= {len(messages) + 1}",
            "the messages to show up",
        )
        page.evaluate("document.activeElement.blur(), true")
        time.sleep(0.5)
        png = page.screenshot()

    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "wb") as handle:
        handle.write(png)
    print(f"screenshot: wrote {args.out} ({len(png)} bytes)")


if __name__ == "__main__":
    main()
