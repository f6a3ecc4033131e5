# License LGPL-3.0 or later (https://www.gnu.org/licenses/lgpl).
"""What the IoT settings page shows is true and complete (issue 18 point 3):
every number with its unit, every setting the README lists on the page and
every setting of the page in the README's table, the broker token masked and
shown once when generated."""

import re

from lxml import etree

from odoo.tests import HttpCase, TransactionCase, tagged
from odoo.tools.misc import file_path

# a port is a number without a unit
UNITLESS = {"iot_mqtt_port"}


def _readme():
    with open(file_path("iot_base/../README.md")) as readme:
        return readme.read()


def _settings_table(readme):
    """The rows of the README's Settings → IoT table."""
    start = readme.index("| setting | system parameter | default |")
    table = readme[start:].split("\n\n", 1)[0]
    return table.splitlines()[2:]


def _documented(param, readme, rows):
    """Whether the README names the system parameter ``param``: in full, or
    in a row of the settings table as a suffix of another one named in full
    there (`iot_base.mqtt_host`, `_port`)."""
    if f"`{param}`" in readme:
        return True
    for row in rows:
        names = re.findall(r"`([a-z0-9_.]+)`", row)
        for name in names:
            for cut in [m.start() for m in re.finditer("_", name)]:
                if f"`{param[cut:]}`" in row and param.startswith(name[:cut]):
                    return True
    return False


@tagged("post_install", "-at_install")
class TestSettingsPage(TransactionCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        Settings = cls.env["res.config.settings"]
        arch = Settings.get_views([(False, "form")])["views"]["form"]["arch"]
        cls.app = etree.fromstring(arch).xpath("//app[@name='iot_base']")[0]
        cls.fields = Settings._fields

    def _page_fields(self):
        return [
            node
            for node in self.app.iter("field")
            if self.fields[node.get("name")]._module == "iot_base"
        ]

    def test_every_number_has_its_unit(self):
        numbers = [
            node
            for node in self._page_fields()
            if self.fields[node.get("name")].type in ("integer", "float")
            and node.get("name") not in UNITLESS
        ]
        self.assertGreaterEqual(len(numbers), 19)
        for node in numbers:
            with self.subTest(field=node.get("name")):
                unit = node.getnext()
                self.assertIsNotNone(unit)
                self.assertEqual(unit.tag, "span")
                self.assertIn("o_iot_unit", unit.get("class"))
                self.assertTrue(unit.text.strip())

    def test_audit_max_rows_is_on_the_page(self):
        names = {node.get("name") for node in self._page_fields()}
        self.assertIn("iot_audit_max_rows", names)
        field = self.fields["iot_audit_max_rows"]
        self.assertEqual(field.config_parameter, "iot_base.audit_max_rows")
        self.env["res.config.settings"].create({"iot_audit_max_rows": 5000}).execute()
        self.assertEqual(
            self.env["ir.config_parameter"].get_param("iot_base.audit_max_rows"),
            "5000",
        )

    def test_the_readme_table_names_every_setting_of_the_page(self):
        readme = _readme()
        rows = _settings_table(readme)
        params = sorted(
            {
                self.fields[node.get("name")].config_parameter
                for node in self._page_fields()
                if getattr(self.fields[node.get("name")], "config_parameter", None)
            }
        )
        self.assertIn("iot_base.listener_heartbeat_timeout", params)
        missing = [p for p in params if not _documented(p, readme, rows)]
        self.assertFalse(missing, "settings on the page the README does not name")
        # the listener's settings and their units are in the table itself
        table = "\n".join(rows)
        for words in (
            "`iot_base.listener_heartbeat_timeout`",
            "`iot_base.listener_shared_group`",
            "`iot_base.listener_max_payload`",
            "`_history_max_rows_per_day`",
            "8,192 bytes",
            "120 s",
            "200,000 decisions",
        ):
            self.assertIn(words, table)

    def test_shared_group_says_which_brokers_support_it(self):
        (note,) = self.app.xpath(
            "//*[contains(concat(' ', @class, ' '), ' o_iot_shared_group_brokers ')]"
        )
        text = " ".join(note.itertext())
        for broker in ("Mosquitto", "EMQX", "RabbitMQ 3.10 has no shared"):
            self.assertIn(broker, text)
        self.assertIn("RabbitMQ 3.10", self.fields["iot_listener_shared_group"].help)


@tagged("post_install", "-at_install")
class TestSettingsTokenTour(HttpCase):
    def test_generate_token_in_the_browser(self):
        """The page shows the token's end only; Generate a New Token asks
        first (saying what breaks), shows the new token once with a copy
        button, and the page then shows the new end."""
        params = self.env["ir.config_parameter"].sudo()
        old = "old-broker-token-0123456789-WXYZ"
        params.set_param("iot_base.auth_token", old)
        self.start_tour(
            "/odoo/action-iot_base.res_config_settings_action",
            "iot_base_settings_token_tour",
            login="admin",
        )
        new = params.get_param("iot_base.auth_token")
        self.assertNotEqual(new, old)
        self.assertGreaterEqual(len(new), 40)
