# License LGPL-3.0 or later (https://www.gnu.org/licenses/lgpl).
"""Not a test: takes docs/fleet_page.png, the Fleet page with 50 devices in
mixed states, and docs/device_form.png, one of them with its readings and
their history. Not imported by tests/__init__.py; to run it, add
``from . import test_fleet_screenshot`` there and rename the file to
test_fleet_screenshot.py for the run (Odoo loads test_* modules only), then
``FLEET_SCREENSHOT=$PWD/docs/fleet_page.png DEVICE_SCREENSHOT=$PWD/docs/device_form.png
TEST_TAGS=/iot_base:FleetScreenshot make test``."""

import base64
import os
import random
import time
from datetime import timedelta
from unittest.mock import patch

from odoo import api, fields
from odoo.tests import HttpCase, common, tagged

WIDTH, HEIGHT = 1400, 1900


@tagged("post_install", "-at_install")
class FleetScreenshot(HttpCase):
    def _fleet(self):
        rng = random.Random(18)
        company = self.env.ref("base.main_company")
        Fleet = self.env["iot.mqtt.fleet"]
        fleets = Fleet.create(
            [
                {"name": name, "company_id": company.id}
                for name in ("Greenhouse", "Warehouse", "Cold Room")
            ]
        )
        tags = self.env["iot.mqtt.device.tag"].create(
            [{"name": name} for name in ("temperature", "humidity", "door", "pilot")]
        )
        now = fields.Datetime.now()
        states = ["online"] * 30 + ["offline"] * 9 + ["stale"] * 6 + ["unknown"] * 5
        Device = self.env["iot.mqtt.device"]
        for index, state in enumerate(states, start=1):
            fleet = fleets[index % 3]
            device, _secret = Device._register_device(
                f"a4:cf:12:00:00:{index:02x}",
                name=f"{fleet.name} sensor {index:02d}",
                fleet_id=fleet.id,
                firmware_version=rng.choice(["1.4.2", "1.4.2", "1.5.0-rc1", "1.3.9"]),
                tag_ids=[(6, 0, rng.sample(tags.ids, rng.randint(1, 2)))],
            )
            seen = {
                "online": timedelta(seconds=rng.randint(5, 240)),
                "offline": timedelta(minutes=rng.randint(20, 300)),
                "stale": timedelta(minutes=rng.randint(6, 15)),
            }.get(state)
            self.env.cr.execute(
                "UPDATE iot_mqtt_device SET presence_state = %s, last_message_at = %s,"
                " presence_since = %s WHERE id = %s",
                [
                    state,
                    now - seen if seen else None,
                    now - seen if seen else None,
                    device.id,
                ],
            )
            if index in (19, 44):
                device.action_revoke()
        minute = now.replace(second=0, microsecond=0)
        self.env["iot.throughput"].sudo().create(
            [
                {
                    "company_id": company.id,
                    "minute": minute - timedelta(minutes=offset),
                    "messages": (rng.randint(6, 30) if offset else 9)
                    + (120 if 20 <= offset <= 23 else 0),
                    "dropped": 1 if offset == 21 else 0,
                }
                for offset in range(60)
            ]
        )
        Log = self.env["iot.auth.log"].sudo()
        for hours in (1, 1, 2, 5, 5, 5, 5, 9, 14, 22):
            Log._record(
                "auth",
                "deny",
                "invalid_credentials",
                username=f"device_{rng.randint(1000, 9999)}",
                clientid=f"esp32-{rng.randint(100, 999)}",
                peer=f"10.0.3.{rng.randint(2, 250)}",
            )
            self.env.cr.execute(
                "UPDATE iot_auth_log SET create_date = %s WHERE id ="
                " (SELECT max(id) FROM iot_auth_log)",
                [now - timedelta(hours=hours, minutes=rng.randint(0, 59))],
            )
        Log._record("rabbitmq", "deny", "bad_request", peer="10.0.3.77")
        self.env.invalidate_all()

    def _readings(self, device):
        """Last readings and a day of history for ``device``'s form."""
        now = fields.Datetime.now()
        topic = f"{device._topics()['telemetry']}"
        self.env["iot.device.reading"].sudo().create(
            [
                {
                    "device_id": device.id,
                    "company_id": device.company_id.id,
                    "topic": f"{topic}/{key}",
                    "payload": payload,
                    "is_json": is_json,
                    "received_at": now - timedelta(seconds=seconds),
                }
                for key, payload, is_json, seconds in (
                    ("temperature", "21.4", True, 12),
                    ("humidity", "48", True, 12),
                    ("state", '{"door": "closed", "battery": 87}', True, 95),
                )
            ]
        )
        rng = random.Random(4)
        self.env["iot.device.reading.history"].sudo().create(
            [
                {
                    "device_id": device.id,
                    "company_id": device.company_id.id,
                    "topic": f"{topic}/{key}",
                    "key": key,
                    "value": base + rng.uniform(-1.5, 1.5),
                    "sampled_at": now - timedelta(minutes=15 * step),
                }
                for key, base in (("temperature", 21), ("humidity", 48))
                for step in range(96)
            ]
        )

    def _shoot(self, url, target, ready_selectors):
        """Open ``url`` as admin and write its picture to ``target`` once
        every one of ``ready_selectors`` is on the page."""
        browsers = []
        original_init = common.ChromeBrowser.__init__

        def init(chrome, *args, **kwargs):
            original_init(chrome, *args, **kwargs)
            browsers.append(chrome)

        @api.model
        def shoot(model):
            browsers[-1]._websocket_request(
                "Emulation.setDeviceMetricsOverride",
                params={
                    "width": WIDTH,
                    "height": HEIGHT,
                    "deviceScaleFactor": 1,
                    "mobile": False,
                },
            )
            time.sleep(2)  # the charts redraw at the new size
            shot = browsers[-1]._websocket_request(
                "Page.captureScreenshot", params={"format": "png"}, timeout=30
            )
            with open(target, "wb") as png:
                png.write(base64.b64decode(shot["data"]))
            return {}

        ready = " && ".join(
            f"document.querySelector({selector!r})" for selector in ready_selectors
        )
        with (
            patch.object(common.ChromeBrowser, "__init__", init),
            patch.object(
                type(self.env["iot.mqtt.device"]), "get_fleet_dashboard", shoot
            ),
        ):
            self.browser_js(
                url,
                f"""
                (async () => {{
                    const wait = (ms) => new Promise((r) => setTimeout(r, ms));
                    for (let i = 0; i < 100 && !({ready}); i++) {{
                        await wait(100);
                    }}
                    await wait(500);
                    await odoo.__WOWL_DEBUG__.root.env.services.orm.call(
                        "iot.mqtt.device", "get_fleet_dashboard", []);
                    console.log("test successful");
                }})();
                """,
                ready="odoo.isReady",
                login="admin",
                timeout=120,
            )

    def test_screenshot(self):
        self._fleet()
        self._shoot(
            "/odoo/action-iot_base.iot_fleet_dashboard_action",
            os.environ["FLEET_SCREENSHOT"],
            [".o_iot_fleet_last_seen", ".o_iot_fleet_messages_chart"],
        )
        target = os.environ.get("DEVICE_SCREENSHOT")
        if target:
            device = self.env["iot.mqtt.device"].search(
                [("presence_state", "=", "online")], order="id", limit=1
            )
            self._readings(device)
            self._shoot(f"/odoo/iot.mqtt.device/{device.id}", target, [".o_form_view"])
