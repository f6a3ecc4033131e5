# License LGPL-3.0 or later (https://www.gnu.org/licenses/lgpl).
"""The MQTT console: a standalone page and the route that renews its secret."""

from odoo import _, http
from odoo.exceptions import UserError
from odoo.http import request

# The page and the config embed a session secret: never kept by a cache; and
# the page's buttons are not for other sites to frame (clickjacking).
NO_STORE = [("Cache-Control", "no-store")]
PAGE_HEADERS = [*NO_STORE, ("X-Frame-Options", "SAMEORIGIN")]


class IotAppController(http.Controller):
    @http.route("/iot/app", type="http", auth="user", methods=["GET"], readonly=False)
    def iot_app(self, **_kw):
        user = request.env.user
        if not user.has_group("iot_base.iot_base_group_user"):
            return request.render(
                "iot_base.iot_app_no_access", status=403, headers=PAGE_HEADERS
            )
        return request.render(
            "iot_base.iot_app_page",
            {
                "mqtt_config": request.env["iot.app"]._page_config(),
                "session_info": request.env["ir.http"].session_info(),
            },
            headers=PAGE_HEADERS,
        )

    @http.route(
        "/iot/app/config", type="json", auth="user", methods=["POST"], readonly=False
    )
    def iot_app_config(self, client_id=None, **unknown):
        """A fresh config (new session secret, or token) for an open page.

        Raises AccessError for users who lost the IoT group: the page then
        stops reconnecting and says so. Unknown parameters are a clear JSON
        error, not silently dropped.
        """
        request.future_response.headers.set("Cache-Control", "no-store")
        if unknown:
            raise UserError(
                _(
                    "Unknown parameter(s) %(names)s: only client_id is accepted.",
                    names=", ".join(sorted(unknown))[:200],
                )
            )
        return request.env["iot.app"]._page_config(client_id=client_id)
