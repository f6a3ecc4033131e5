# License LGPL-3.0 or later (https://www.gnu.org/licenses/lgpl).
"""Acknowledged commands (iot.mqtt.command.request): Odoo publishes them on a
real Mosquitto, paho devices answer on their ``status/reply`` topic, the
listener (in a thread, on the test cursor) records the answers."""

import json
import time
from unittest.mock import patch

from odoo import SUPERUSER_ID, api
from odoo.exceptions import AccessError, UserError, ValidationError
from odoo.modules.registry import Registry
from odoo.tests import (
    BaseCase,
    HttpCase,
    TransactionCase,
    get_db_name,
    new_test_user,
    tagged,
)
from odoo.tools import mute_logger

from odoo.addons.iot_base.cli import listener as listener_module
from odoo.addons.iot_base.models import iot_listener
from odoo.addons.iot_base.models import iot_mqtt_command_request as requests_module

from .common import start_publisher_mosquitto
from .listener_common import (
    SLOW_WAIT,
    CommittedListenerMixin,
    ListenerMixin,
    RegistryListener,
)
from .test_all_views import MODULE, SUCCESS


class Responder:
    """A paho device that answers every command it gets: ``states`` (in
    order) on the ``reply_to`` of the command, with ``id`` (or ``forge_id``
    when set: another device's command)."""

    def __init__(self, case, client, states=("acknowledged", "done")):
        self.case, self.client, self.states = case, client, states
        self.received = []
        self.forge_id = None
        self.subacks = []
        client.on_message = self._on_message
        client.on_subscribe = lambda _c, _u, _m, codes, _p: self.subacks.append(codes)
        client.subscribe(f"{client.status_topic.rsplit('/', 1)[0]}/commands/#", qos=1)
        case._wait(lambda: self.subacks, "the device's SUBACK", SLOW_WAIT)
        case.assertFalse(any(code.is_failure for code in self.subacks[0]))

    def _on_message(self, client, _userdata, message):
        body = json.loads(message.payload)
        self.received.append((message.topic, body))
        for state in self.states:
            answer = {
                "id": self.forge_id or body["id"],
                "state": state,
                "result": {"uptime": 42} if state == "done" else None,
            }
            client.publish(body["reply_to"], json.dumps(answer), qos=1)


@tagged("post_install", "-at_install")
class TestCommandRequestMosquitto(ListenerMixin, TransactionCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.registry.enter_test_mode(cls.cr)
        cls.addClassCleanup(cls.registry.leave_test_mode)
        cls._sync_stores_at_once()
        cls.broker = start_publisher_mosquitto(cls)
        cls.mqtt_port = cls.broker.port
        params = cls.env["ir.config_parameter"].sudo()
        params.set_param("iot_base.mqtt_timeout", "5")
        params.set_param(iot_listener.MAX_PAYLOAD_PARAM, "1024")
        cls.company = cls.env.ref("base.main_company")
        cls.ns = cls.company.iot_mqtt_namespace
        Device = cls.env["iot.mqtt.device"]
        cls.fleet = cls.env["iot.mqtt.fleet"].create({"name": "Command Pumps"})
        cls.pump, cls.pump_secret = Device._register_device(
            "cmd-pump-1", fleet_id=cls.fleet.id
        )
        cls.valve, cls.valve_secret = Device._register_device(
            "cmd-valve-1", fleet_id=cls.fleet.id
        )
        result = cls.env["iot.mosquitto.sync"]._sync(force=True)
        assert result["ok"], result

    def _send(self, devices, command="reboot", payload=None, timeout=30):
        with self.registry.test_lock:
            requests = devices._send_command(command, payload or {"delay": 5}, timeout)
            # read now, under the lock: the listener thread shares the cursor
            requests.read(["name", "company_id", "state", "sent_at", "device_id"])
            # what the listener reads on its own cursor (a commit in production)
            self.env.flush_all()
            return requests

    def _state(self, request):
        return self._query(
            "SELECT state, answer, answered_at FROM iot_mqtt_command_request"
            " WHERE id = %s",
            [request.id],
        )[0]

    def _reply_topic(self, device):
        return f"{device._topics()['status']}/reply"

    def _drops(self, listener, reason):
        with listener._lock:
            return listener.stats[f"dropped_{reason}"]

    def test_command_acknowledged_and_done(self):
        self._start_listener()
        device = self._device_client(self.pump.username, self.pump_secret, will=False)
        responder = Responder(self, device)
        request = self._send(self.pump, payload={"delay": 5})
        self.assertEqual(len(request), 1)
        self.assertRegex(request.name, r"^[0-9a-f]{32}$")
        self.assertEqual(request.company_id, self.company)
        self._wait(lambda: self._state(request)[0] == "done", "the command done")
        state, answer, answered_at = self._state(request)
        self.assertTrue(answered_at)
        self.assertEqual(
            json.loads(answer),
            {"id": request.name, "state": "done", "result": {"uptime": 42}},
        )
        # what the device got: the envelope, on its command topic
        (topic, body), *_rest = responder.received
        self.assertEqual(topic, f"{self.pump._topics()['commands']}/reboot")
        self.assertEqual(
            body,
            {
                "id": request.name,
                "command": "reboot",
                "payload": {"delay": 5},
                "timeout": 30,
                "reply_to": self._reply_topic(self.pump),
            },
        )

    def test_acknowledged_only_then_timed_out(self):
        listener = self._start_listener()
        device = self._device_client(self.pump.username, self.pump_secret, will=False)
        Responder(self, device, states=("acknowledged",))
        # (sent_at is stored to the second: at least 2 s before the sweep)
        request = self._send(self.pump, timeout=3)
        self._wait(lambda: self._state(request)[0] == "acknowledged", "acknowledged")
        # no final answer within the timeout: the listener's sweep
        self._wait(
            lambda: self._state(request)[0] == "timed_out", "timed out", SLOW_WAIT
        )
        # a late answer changes nothing, and is counted as dropped
        self._publish(
            device,
            self._reply_topic(self.pump),
            json.dumps({"id": request.name, "state": "done"}),
        )
        self._wait(lambda: self._drops(listener, "command") >= 1, "the late answer")
        self.assertEqual(self._state(request)[0], "timed_out")

    def test_silent_device_times_out_by_cron(self):
        request = self._send(self.valve, timeout=1)
        self.assertEqual(request.state, "sent")
        self.assertTrue(request.sent_at)
        time.sleep(1.2)
        self.env["iot.mqtt.command.request"]._cron_sweep()
        self.assertEqual(request.state, "timed_out")
        self.assertFalse(request.answer)

    def test_forged_answers_are_ignored_and_counted(self):
        listener = self._start_listener()
        pump = self._device_client(self.pump.username, self.pump_secret, will=False)
        valve = self._device_client(self.valve.username, self.valve_secret, will=False)
        Responder(self, pump, states=())  # hears, never answers
        request = self._send(self.pump)
        forged = json.dumps({"id": request.name, "state": "done", "result": "pwned"})
        # another device of the company, on its own reply topic
        self._publish(valve, self._reply_topic(self.valve), forged)
        # (another company's device: TestCommandRequestAccess, in the database)
        # the right id, naming another device in the answer
        self._publish(
            pump,
            self._reply_topic(self.pump),
            json.dumps(
                {"id": request.name, "state": "done", "device": self.valve.username}
            ),
        )
        self._wait(lambda: self._drops(listener, "command") >= 1, "the forged answer")
        self._wait(lambda: self._drops(listener, "foreign") >= 1, "the impostor")
        self.assertEqual(self._state(request)[:2], ("sent", None))
        # the device itself: done
        self._publish(
            pump,
            self._reply_topic(self.pump),
            json.dumps({"id": request.name, "state": "failed", "result": "no disk"}),
        )
        self._wait(lambda: self._state(request)[0] == "failed", "the true answer")
        self.assertIn("no disk", self._state(request)[1])
        self.assertEqual(self._throughput(self.company)[1], 2)

    def test_bad_answers_are_dropped_and_counted(self):
        listener = self._start_listener()
        pump = self._device_client(self.pump.username, self.pump_secret, will=False)
        request = self._send(self.pump)
        topic = self._reply_topic(self.pump)
        bad = [
            b"not json",
            b"\xff\xfe",
            b"[1, 2]",
            b'"done"',
            json.dumps({"state": "done"}).encode(),
            json.dumps({"id": request.name.upper(), "state": "done"}).encode(),
            json.dumps({"id": request.name + "0", "state": "done"}).encode(),
            json.dumps({"id": 12, "state": "done"}).encode(),
            json.dumps({"id": request.name, "state": "timed_out"}).encode(),
            json.dumps({"id": request.name, "state": ["done"]}).encode(),
            b'{"id": "' + request.name.encode() + b'", "x": ' + b"[" * 40 + b"]" * 40,
            b"x" * 2048,  # above the listener's payload limit
        ]
        for payload in bad:
            self._publish(pump, topic, payload)
        # a deeper level under status/reply is outside the layout
        self._publish(
            pump, f"{topic}/x", json.dumps({"id": request.name, "state": "done"})
        )
        self._wait(
            lambda: (
                sum(
                    self._drops(listener, reason)
                    for reason in ("payload", "encoding", "huge", "layout")
                )
                >= len(bad) + 1
            ),
            "every bad answer dropped",
        )
        self.assertEqual(self._state(request)[0], "sent")
        # the listener goes on: a good answer is recorded
        self._publish(pump, topic, json.dumps({"id": request.name, "state": "done"}))
        self._wait(lambda: self._state(request)[0] == "done", "the good answer")

    def test_unknown_id_is_retried_then_dropped(self):
        listener = self._start_listener()
        pump = self._device_client(self.pump.username, self.pump_secret, will=False)
        with patch.object(listener_module, "ANSWER_RETRY", 1.5):
            self._publish(
                pump,
                self._reply_topic(self.pump),
                json.dumps({"id": "0" * 32, "state": "done"}),
            )
            time.sleep(0.8)
            # still held (Odoo may not have committed the request yet)
            self.assertEqual(self._drops(listener, "command"), 0)
            self._wait(
                lambda: self._drops(listener, "command") == 1, "dropped", SLOW_WAIT
            )
        with listener._lock:
            self.assertFalse(listener.pending.answers)

    def test_fleet_wizard_one_request_per_device(self):
        self._start_listener()
        clients = {
            device: self._device_client(device.username, secret, will=False)
            for device, secret in (
                (self.pump, self.pump_secret),
                (self.valve, self.valve_secret),
            )
        }
        responders = {device: Responder(self, c) for device, c in clients.items()}
        with self.registry.test_lock:
            wizard = self.env["iot.mqtt.command"].create(
                {
                    "fleet_id": self.fleet.id,
                    "command": "update",
                    "payload": '{"v": "2.1"}',
                    "acknowledged": True,
                    "timeout": 20,
                }
            )
            action = wizard.action_send()
            self.env.flush_all()
            requests = self.env["iot.mqtt.command.request"].search(action["domain"])
            self.assertEqual(requests.device_id, self.pump | self.valve)
            names = {r.device_id: r.name for r in requests}
        self.assertEqual(action["res_model"], "iot.mqtt.command.request")
        self.assertEqual(len(set(names.values())), 2)
        for request in requests:
            self._wait(lambda r=request: self._state(r)[0] == "done", "done")
        for device, responder in responders.items():
            self.assertEqual(len(responder.received), 1)
            self.assertEqual(responder.received[0][1]["payload"], {"v": "2.1"})
            self.assertEqual(responder.received[0][1]["id"], names[device])


@tagged("post_install", "-at_install")
class TestCommandRequestCommitted(CommittedListenerMixin, BaseCase):
    """On committed transactions, as in production: Odoo publishes a command
    before its transaction commits the request, and a fast device answers
    before the commit; the listener keeps the answer and records it once
    the request is committed."""

    def setUp(self):
        super().setUp()
        self.registry = Registry(get_db_name())
        self._setup_committed()

    def test_answer_before_the_commit_is_recorded_after_it(self):
        listener = self._start_listener(listener=RegistryListener(self.registry))
        device = self._device_client(self.username, self.secret, will=False)
        publisher = self.registry["iot.mqtt.client"]
        with (
            patch.object(publisher, "_publish", lambda _self, messages: len(messages)),
            self.registry.cursor() as cr,
        ):
            env = api.Environment(cr, SUPERUSER_ID, {})
            request = (
                env["iot.mqtt.device"]
                .browse(self.device_id)
                ._send_command("reboot", {}, 60)
            )
            request_id, name = request.id, request.name
            env.flush_all()
            # the device answers at once; the sender has not committed
            self._publish(
                device,
                f"{self.ns}/devices/{self.username}/status/reply",
                json.dumps({"id": name, "state": "done", "result": "ok"}),
            )

            def held():
                with listener._lock:
                    return listener.pending.answers and listener.stats["transactions"]

            self._wait(held, "the answer held after a flush", SLOW_WAIT)
            time.sleep(1.2)  # another flush or so: still held, not dropped
            with listener._lock:
                self.assertEqual(listener.stats["dropped_command"], 0)
                self.assertEqual(len(listener.pending.answers), 1)
        # committed: the next flush writes it
        self._wait(
            lambda: (
                self._query(
                    "SELECT state, answer FROM iot_mqtt_command_request WHERE id = %s",
                    [request_id],
                )[0][0]
                == "done"
            ),
            "the answer recorded",
            SLOW_WAIT,
        )
        with listener._lock:
            self.assertEqual(listener.stats["dropped_command"], 0)


@tagged("post_install", "-at_install")
class TestCommandRequestAccess(TransactionCase):
    """Who sees and sends commands; the publisher is recorded, not run."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.published = []
        cls.startClassPatcher(
            patch.object(
                type(cls.env["iot.mqtt.client"]),
                "_publish",
                lambda self, messages: cls.published.extend(messages) or len(messages),
            )
        )
        cls.company_a = cls.env.ref("base.main_company")
        cls.company_b = cls.env["res.company"].create({"name": "Commands B"})
        Device = cls.env["iot.mqtt.device"]
        cls.device_a, _secret = Device._register_device("acc-cmd-a")
        cls.device_b, _secret = Device.with_company(cls.company_b)._register_device(
            "acc-cmd-b", company=cls.company_b
        )
        cls.manager_a = new_test_user(
            cls.env,
            login="cmd.manager.a",
            groups="base.group_user,iot_base.iot_base_group_manager",
            company_id=cls.company_a.id,
            company_ids=[(6, 0, cls.company_a.ids)],
        )
        cls.iot_user = new_test_user(
            cls.env,
            login="cmd.iot.user",
            groups="base.group_user,iot_base.iot_base_group_user",
        )
        cls.request_b = cls.device_b._send_command("ping")

    def test_manager_sends_and_sees_own_company_only(self):
        Request = self.env["iot.mqtt.command.request"].with_user(self.manager_a)
        request = self.device_a.with_user(self.manager_a)._send_command(
            "ping", {"n": 1}, 10
        )
        self.assertEqual(request.state, "sent")
        self.assertEqual(Request.search([]), request)
        with self.assertRaises(AccessError):
            self.request_b.with_user(self.manager_a).read(["state"])
        with self.assertRaises(AccessError):
            self.device_b.with_user(self.manager_a)._send_command("ping")
        # RPC: the ids
        ids = self.device_a.with_user(self.manager_a).send_command("ping")
        self.assertEqual(len(ids), 1)
        self.assertEqual(Request.browse(ids).device_id, self.device_a)

    def test_nobody_writes_a_state_or_an_answer(self):
        request = self.device_a._send_command("ping")
        for user in (self.manager_a, self.iot_user):
            with self.assertRaises(AccessError):
                request.with_user(user).write({"state": "done", "answer": "x"})
            with self.assertRaises(AccessError):
                self.env["iot.mqtt.command.request"].with_user(user).create(
                    {"device_id": self.device_a.id, "command": "x"}
                )
            with self.assertRaises(AccessError):
                request.with_user(user).unlink()
        with self.assertRaises(AccessError):
            request.with_user(self.iot_user).read(["state"])
        with self.assertRaises(AccessError):
            self.device_a.with_user(self.iot_user)._send_command("ping")

    def test_bounds(self):
        with self.assertRaises(ValidationError):
            self.device_a._send_command("two/levels")
        with self.assertRaises(ValidationError):
            self.device_a._send_command("big", {"x": "a" * 9000})
        self.env["ir.config_parameter"].sudo().set_param(
            requests_module.MAX_TIMEOUT_PARAM, "60"
        )
        with self.assertRaises(ValidationError):
            self.device_a._send_command("slow", {}, 61)
        self.device_a.action_revoke()
        with self.assertRaises(UserError):
            self.device_a._send_command("ping")

    def test_answer_matching_in_the_database(self):
        request_a = self.device_a._send_command("ping")
        Request = self.env["iot.mqtt.command.request"]
        now = request_a.sent_at
        a, b = self.company_a.id, self.company_b.id
        written, unknown, refused = Request._listener_write_answers(
            [
                # B's device with A's id, and A's device claiming company B
                (self.device_b.id, b, request_a.name, "done", "{}", now),
                (self.device_a.id, b, request_a.name, "done", "{}", now),
                (self.device_a.id, a, "f" * 32, "done", "{}", now),
                (self.device_a.id, a, request_a.name, "acknowledged", "ack", now),
                (self.device_a.id, a, request_a.name, "done", "fin", now),
            ]
        )
        self.assertEqual(len(written), 2)
        self.assertEqual([row[2] for row in unknown], ["f" * 32])
        self.assertEqual(len(refused), 2)
        self.assertEqual((request_a.state, request_a.answer), ("done", "fin"))
        # final: nothing moves it any more
        written, _unknown, refused = Request._listener_write_answers(
            [(self.device_a.id, a, request_a.name, "failed", "late", now)]
        )
        self.assertFalse(written)
        self.assertEqual((request_a.state, request_a.answer), ("done", "fin"))

    def test_pending_answers_bounded_per_device(self):
        """A device inventing ids fills at most MAX_ANSWERS_PER_DEVICE slots
        of a batch; another device still gets its answer in; a final answer
        is never replaced by a later acknowledgement."""
        pending = listener_module.Pending()
        cap = listener_module.MAX_ANSWERS_PER_DEVICE
        kept = [
            pending.answer((1, f"{n:032x}"), (1, "done", "{}", None, 0.0))
            for n in range(cap + 5)
        ]
        self.assertEqual(kept, [True] * cap + [False] * 5)
        self.assertTrue(pending.answer((2, "a" * 32), (1, "done", "fin", None, 0.0)))
        pending.answer((2, "a" * 32), (1, "acknowledged", "ack", None, 1.0))
        self.assertEqual(pending.answers[(2, "a" * 32)][1:3], ("done", "fin"))
        self.assertEqual(len(pending.batch()["answers"]), cap + 1)

    def test_fire_and_forget_wizard_unchanged(self):
        self.published.clear()
        wizard = self.env["iot.mqtt.command"].create(
            {"device_ids": [(6, 0, self.device_a.ids)], "command": "reboot"}
        )
        wizard.action_send()
        self.assertEqual(self.published[-1][1], "{}")
        self.assertFalse(
            self.env["iot.mqtt.command.request"].search(
                [("device_id", "=", self.device_a.id)]
            )
        )


@tagged("post_install", "-at_install")
class TestCommandRequestViews(HttpCase):
    """The Commands menu (list, form on a record, each filter) and the
    device form's Commands page, in the browser, as a manager and admin."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.startClassPatcher(
            patch.object(
                type(cls.env["iot.mqtt.client"]),
                "_publish",
                lambda self, messages: len(messages),
            )
        )
        cls.manager = new_test_user(
            cls.env,
            login="cmd.views.manager",
            groups="base.group_user,iot_base.iot_base_group_manager",
        )
        cls.device, _secret = cls.env["iot.mqtt.device"]._register_device(
            "views-cmd-1", name="Views Command Device"
        )
        cls.request = cls.device._send_command("reboot", {"delay": 1})
        cls.env["iot.mqtt.command.request"]._listener_write_answers(
            [
                (
                    cls.device.id,
                    cls.device.company_id.id,
                    cls.request.name,
                    "done",
                    '{"id": "x", "state": "done", "result": "<b>not html</b>"}',
                    cls.request.sent_at,
                )
            ]
        )

    def _steps(self, user):
        action = self.env.ref("iot_base.iot_mqtt_command_request_action")
        menu = self.env.ref("iot_base.iot_mqtt_command_request_menu")
        device_action = self.env.ref("iot_base.iot_mqtt_device_action")
        label = f"{user.login}: commands"
        steps = [
            {"kind": "menu", "label": label, "menu_id": menu.id},
            {
                "kind": "view",
                "label": f"{label} (list)",
                "action_id": action.id,
                "view_type": "list",
            },
            {
                "kind": "view",
                "label": f"{label} (form)",
                "action_id": action.id,
                "view_type": "form",
                "res_id": self.request.id,
            },
            {
                "kind": "view",
                "label": f"{user.login}: device form with its commands",
                "action_id": device_action.id,
                "view_type": "form",
                "res_id": self.device.id,
            },
        ]
        for name in ("pending", "done", "unsuccessful", "group_state", "group_device"):
            steps.append(
                {
                    "kind": "view",
                    "label": f"{label} (list, filter {name})",
                    "action_id": action.id,
                    "view_type": "list",
                    "context": {f"search_default_{name}": 1},
                }
            )
        return steps

    def _call_kw(self, method, args):
        return self.make_jsonrpc_request(
            f"/web/dataset/call_kw/iot.mqtt.device/{method}",
            {"model": "iot.mqtt.device", "method": method, "args": args, "kwargs": {}},
        )

    def test_send_command_over_rpc(self):
        self.authenticate(self.manager.login, self.manager.login)
        ids = self._call_kw("send_command", [self.device.ids, "ping", {"n": 1}, 10])
        self.assertEqual(len(ids), 1)
        request = self.env["iot.mqtt.command.request"].browse(ids)
        self.assertEqual(
            (request.device_id, request.state, request.timeout),
            (self.device, "sent", 10),
        )
        iot_user = new_test_user(
            self.env,
            login="cmd.views.user",
            groups="base.group_user,iot_base.iot_base_group_user",
        )
        self.authenticate(iot_user.login, iot_user.login)
        with mute_logger("odoo.http"), self.assertRaises(Exception) as caught:
            self._call_kw("send_command", [self.device.ids, "ping"])
        self.assertIn("AccessError", str(caught.exception))

    def test_views_open(self):
        for user in (self.manager, self.env.ref("base.user_admin")):
            # what the browser reads: the device form has the commands page
            arch = (
                self.env["iot.mqtt.device"]
                .with_user(user)
                .get_views([(False, "form")])["views"]["form"]["arch"]
            )
            self.assertIn('name="command_request_ids"', arch)
            self.browser_js(
                "/odoo",
                f"odoo.loader.modules.get({MODULE!r})"
                f".openAllViews({json.dumps(self._steps(user))})",
                ready=f"!!(odoo.isReady && odoo.loader.modules.get({MODULE!r}))",
                login=user.login,
                timeout=300,
                success_signal=SUCCESS,
            )
