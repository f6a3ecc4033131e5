# License LGPL-3.0 or later (https://www.gnu.org/licenses/lgpl).
"""Every screen of the IoT app opens, for an administrator, an IoT manager and
an IoT user: every menu under IoT, every view type of every window action a
menu reaches, every button of the device and credential views that opens a
window. The screens are read from the database when the test runs (menus,
their actions, view_mode, the buttons of the views as each user gets them), so
a new menu, view type or button is covered without a new step; the browser
(static/tests/backend_tours/iot_all_views.js) fails on any client error."""

import itertools
import json
import re
from datetime import timedelta

from lxml import etree

from odoo import fields
from odoo.tests import HttpCase, new_test_user, tagged
from odoo.tools.safe_eval import safe_eval

MODULE = "@iot_base/../tests/backend_tours/iot_all_views"
SUCCESS = "iot all views succeeded"
# the models whose views' buttons are pressed
BUTTON_MODELS = ("iot.mqtt.device", "iot.credentials")
NAME = re.compile(r"\b[a-z_][a-z0-9_]*\b")
SERIAL = itertools.count(1)


@tagged("post_install", "-at_install")
class TestAllViews(HttpCase):
    # the walk may end on a form (a settings page, a record)
    allow_end_on_form = True

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.company = cls.env.ref("base.main_company")
        cls.manager = new_test_user(
            cls.env,
            login="views.iot.manager",
            groups="base.group_user,iot_base.iot_base_group_manager",
        )
        cls.iot_user = new_test_user(
            cls.env,
            login="views.iot.user",
            groups="base.group_user,iot_base.iot_base_group_user",
        )
        # a row in every list: a device with readings, a service credential,
        # the user's own credential, broker decisions, throughput
        cls.device = cls._new_device("view-device-0")
        cls.env["iot.credentials"].create(
            [
                {"username": "views_service", "kind": "service"},
                {"username": "views_user", "kind": "user", "user_id": cls.iot_user.id},
            ]
        )
        now = fields.Datetime.now().replace(second=0, microsecond=0)
        History = cls.env["iot.device.reading.history"].sudo()
        Throughput = cls.env["iot.throughput"].sudo()
        for minutes in range(0, 180, 15):
            at = now - timedelta(minutes=minutes)
            History.create(
                {
                    "device_id": cls.device.id,
                    "company_id": cls.company.id,
                    "topic": "telemetry",
                    "key": "temperature",
                    "value": 20 + minutes / 60,
                    "sampled_at": at,
                }
            )
            Throughput.create(
                {"company_id": cls.company.id, "minute": at, "messages": minutes}
            )
        Log = cls.env["iot.auth.log"].sudo()
        Log._record("auth", "allow", "ok", username=cls.device.username)
        Log._record("auth", "deny", "invalid_credentials", username="nobody")

    @classmethod
    def _new_device(cls, hardware_id):
        device, _secret = cls.env["iot.mqtt.device"]._register_device(
            hardware_id, name=f"Device {hardware_id}"
        )
        return device

    # ------------------------------------------------------------------
    # what to open, read from the database
    # ------------------------------------------------------------------

    def _menu_steps(self, user):
        """Every menu under IoT the user sees, then every view type of its
        window action (a form on a record when the user can read one)."""
        menus = self.env["ir.ui.menu"].with_user(user).load_menus(False)
        root = self.env.ref("iot_base.iot_base_menu_root").id
        self.assertIn(root, menus, f"{user.login} does not see the IoT app")
        steps, todo, url_actions = [], list(menus[root]["children"]), []
        model_views = {}
        while todo:
            menu = menus[todo.pop(0)]
            todo[:0] = menu["children"]
            if not menu["action"]:
                continue
            action_model, action_id = menu["action"].split(",")
            action = self.env[action_model].browse(int(action_id)).sudo()
            label = f"{user.login}: {menu['xmlid'] or menu['name']}"
            if action.type == "ir.actions.act_url":
                # another page than the web client: checked by its URL
                url_actions.append((label, action.url))
                continue
            steps.append({"kind": "menu", "label": label, "menu_id": menu["id"]})
            if action.type != "ir.actions.act_window":
                continue
            view_types = action.view_mode.split(",")
            model_views.setdefault(action.res_model, set()).update(view_types)
            for view_type in view_types:
                step = {
                    "kind": "view",
                    "label": f"{label} ({view_type})",
                    "action_id": action.id,
                    "view_type": view_type,
                }
                if view_type == "form":
                    record = self._any_record(user, action)
                    step["res_id"] = record.id
                steps.append(step)
            steps += self._filter_steps(user, action, label, view_types[0])
        return steps, url_actions, model_views

    def _filter_steps(self, user, action, label, view_type):
        """Every named filter and group-by of the action's search view, each
        applied when the action opens (as search_default_<name> does)."""
        search = (
            self.env[action.res_model]
            .with_user(user)
            .get_views([(action.search_view_id.id, "search")])["views"]["search"]
        )
        return [
            {
                "kind": "view",
                "label": f"{label} ({view_type}, filter {name})",
                "action_id": action.id,
                "view_type": view_type,
                "context": {f"search_default_{name}": 1},
            }
            for name in etree.fromstring(search["arch"]).xpath("//filter/@name")
        ]

    def _any_record(self, user, action):
        Model = self.env[action.res_model].with_user(user)
        if Model._transient:
            return Model.browse()
        domain = safe_eval(action.domain or "[]", {"uid": user.id})
        return Model.search(domain, limit=1)

    def _button_steps(self, user, model_views):
        """Every type=object/action button of the device and credential views
        (as the user gets them: their groups applied), pressed on a fresh
        record in each state where the button shows."""
        steps = []
        for model in BUTTON_MODELS:
            if model not in model_views:
                continue  # no menu of the user's reaches it
            Model = self.env[model].with_user(user)
            views = Model.get_views([(False, vt) for vt in sorted(model_views[model])])
            states = dict(self._record_states(model))
            probes = {state: make(user, probe=True) for state, make in states.items()}
            seen = set()
            for view_type, view in views["views"].items():
                arch = etree.fromstring(view["arch"])
                for button in arch.iter("button"):
                    kind, name = button.get("type"), button.get("name")
                    if kind not in ("object", "action") or (kind, name) in seen:
                        continue
                    seen.add((kind, name))
                    shown = [
                        state
                        for state, probe in probes.items()
                        if self._visible(button, probe)
                    ]
                    self.assertTrue(
                        shown,
                        f"{model} {view_type} button {name} shows on no record "
                        "state this test makes: add one to _record_states",
                    )
                    for state in shown:
                        record = states[state](user)
                        steps.append(
                            {
                                "kind": "button",
                                "label": f"{user.login}: {model} {view_type} "
                                f"button {button.get('string') or name} ({state})",
                                "model": model,
                                "res_id": record.id,
                                "type": kind,
                                "name": name,
                            }
                        )
        return steps

    def _record_states(self, model):
        """(state, maker(user, probe=False)) for the records of a model the
        buttons are pressed on: a fresh record per press (presses revoke)."""

        def device(revoked):
            def make(user, probe=False):
                record = self._new_device(
                    f"view-{'r' if revoked else 'a'}-{user.id}-{next(SERIAL)}"
                    f"{'-probe' if probe else ''}"
                )
                if revoked:
                    record.action_revoke()
                return record.with_user(user)

            return make

        def credential(kind, revoked):
            def make(user, probe=False):
                record = self.env["iot.credentials"].create(
                    {
                        "username": f"view_{kind}_{user.id}_{next(SERIAL)}"
                        f"{'_p' if probe else ''}",
                        "kind": kind,
                        "user_id": user.id if kind == "user" else False,
                    }
                )
                if revoked:
                    record.action_revoke()
                return record.with_user(user)

            return make

        if model == "iot.mqtt.device":
            return [("active", device(False)), ("revoked", device(True))]
        return [
            ("device", credential("device", False)),
            ("user", credential("user", False)),
            ("revoked", credential("device", True)),
        ]

    def _visible(self, node, record):
        """Whether the web client shows a button on the record: its own and
        its ancestors' `invisible` expressions, read on the record."""
        for element in [node, *node.iterancestors()]:
            expression = element.get("invisible")
            if not expression:
                continue
            values = {"context": {}, "uid": record.env.uid}
            for name in set(NAME.findall(expression)) & set(record._fields):
                value = record.with_context(active_test=False)[name]
                field = record._fields[name]
                if field.type == "many2one":
                    value = value.id
                elif field.type in ("one2many", "many2many"):
                    value = value.ids
                values[name] = value
            if safe_eval(expression, values):
                return False
        return True

    # ------------------------------------------------------------------

    def _run_steps(self, user, steps):
        self.browser_js(
            "/odoo",
            f"odoo.loader.modules.get({MODULE!r}).openAllViews({json.dumps(steps)})",
            ready=f"!!(odoo.isReady && odoo.loader.modules.get({MODULE!r}))",
            login=user.login,
            timeout=600,
            success_signal=SUCCESS,
        )

    def _open_everything(self, user):
        steps, url_actions, model_views = self._menu_steps(user)
        steps += self._button_steps(user, model_views)
        self.assertTrue(any(s["kind"] == "view" for s in steps))
        self._run_steps(user, steps)
        self.authenticate(user.login, user.login)
        for label, url in url_actions:
            response = self.url_open(url, allow_redirects=False)
            self.assertEqual(response.status_code, 200, label)
        return steps

    def test_admin_opens_every_view(self):
        steps = self._open_everything(self.env.ref("base.user_admin"))
        labels = [s["label"] for s in steps]
        # the screens of issue 18 are among them
        for expected in (
            "admin: iot_base.iot_throughput_menu (graph)",
            "admin: iot_base.iot_device_reading_history_menu (graph)",
            "admin: iot_base.iot_auth_log_menu (graph)",
            "admin: iot_base.iot_base_menu_settings",
            "admin: iot.mqtt.device form button History (active)",
        ):
            self.assertIn(expected, labels)

    def test_manager_opens_every_view(self):
        steps = self._open_everything(self.manager)
        labels = [s["label"] for s in steps]
        self.assertIn("views.iot.manager: iot_base.iot_throughput_menu (graph)", labels)
        self.assertNotIn("views.iot.manager: iot_base.iot_base_menu_settings", labels)

    def test_user_opens_every_view(self):
        self._open_everything(self.iot_user)

    def test_register_device_in_every_device_view(self):
        """The README's IoT > Devices > Register Device: in the kanban the
        menu opens on, in the list, and on the empty page of both."""
        action = self.env.ref("iot_base.iot_mqtt_device_action")
        self.assertEqual(action.view_mode.split(",")[0], "kanban")
        button = {"selector": ".o_control_panel button", "text": "Register Device"}
        empty = {"selector": ".o_view_nocontent", "text": "Register Device"}
        steps = [
            {
                "kind": "view",
                "label": f"devices ({view_type}{', empty' if empty_page else ''})",
                "action_id": action.id,
                "view_type": view_type,
                "expect": [button, empty] if empty_page else [button],
            }
            for empty_page in (False, True)
            for view_type in ("kanban", "list")
        ]
        self._run_steps(self.manager, steps[:2])
        # no device left: the empty page (the test's transaction is rolled back)
        self.env["iot.mqtt.device"].search([]).action_archive()
        self._run_steps(self.manager, steps[2:])
