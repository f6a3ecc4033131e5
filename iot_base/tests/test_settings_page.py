# License LGPL-3.0 or later (https://www.gnu.org/licenses/lgpl).
"""What the IoT settings page shows is true (issue 18 point 3): the broker
token masked and shown once when generated."""

from odoo.tests import HttpCase, tagged


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
