# License LGPL-3.0 or later (https://www.gnu.org/licenses/lgpl).
"""The MQTT console: a standalone page and the route that renews its secret."""

from odoo import _, http
from odoo.exceptions import AccessError, UserError
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
        # a GET writes nothing (a cross-site link is a GET with the user's
        # cookie): the page's password comes from its POST below
        return request.render(
            "iot_base.iot_app_page",
            {
                "mqtt_config": request.env["iot.app"]._page_config(issue=False),
                "session_info": request.env["ir.http"].session_info(),
            },
            headers=PAGE_HEADERS,
        )

    @http.route(
        "/iot/app/config", type="json", auth="user", methods=["POST"], readonly=False
    )
    def iot_app_config(self, client_id=None, **unknown):
        """A fresh config (new session secret, or token) for an open page.

        Raises AccessError for users who lost the IoT group, and for a
        request another site made (the page then stops reconnecting and
        says so). Unknown parameters are a clear JSON error, not silently
        dropped.
        """
        request.future_response.headers.set("Cache-Control", "no-store")
        if not _same_origin():
            raise AccessError(_("Only the MQTT console's own page may ask for this."))
        if unknown:
            raise UserError(
                _(
                    "Unknown parameter(s) %(names)s: only client_id is accepted.",
                    names=", ".join(sorted(unknown))[:200],
                )
            )
        return request.env["iot.app"]._page_config(client_id=client_id)


def _same_origin():
    """Whether the request comes from this Odoo's own pages.

    Browsers name the requesting site (``Sec-Fetch-Site``) and origin
    (``Origin``) of every POST made by a script; a cross-site one is refused.
    JSON routes accept only a JSON content type (odoo.http), which no other
    site can send without a CORS preflight that Odoo never grants. A client
    that sends neither header is no browser page of another site.
    """
    headers = request.httprequest.headers
    site = headers.get("Sec-Fetch-Site")
    if site is not None and site != "same-origin":
        return False
    origin = headers.get("Origin")
    return origin is None or origin == request.httprequest.host_url.rstrip("/")
