# License LGPL-3.0 or later (https://www.gnu.org/licenses/lgpl).
from odoo.tests import HttpCase, tagged


@tagged("post_install", "-at_install")
class TestSettingsTour(HttpCase):
    def test_settings_page(self):
        """The settings page opens on its own IoT app, with a broker store
        enabled (its last run is computed when the page reads every field)."""
        params = self.env["ir.config_parameter"].sudo()
        params.set_param("iot_base.mqtt_port", "18830")
        params.set_param("iot_base.rabbitmq_store_enabled", "True")
        self.start_tour(
            "/odoo/action-iot_base.res_config_settings_action",
            "iot_base_settings_tour",
            login="admin",
        )
