# License LGPL-3.0 or later (https://www.gnu.org/licenses/lgpl).
"""The public keys of the console's tokens, for brokers that verify them."""

from odoo import http
from odoo.http import request

from ..models.iot_jwt_key import JWKS_MAX_AGE


class IotJwksController(http.Controller):
    # every method routed here, so that a wrong one gets a JSON 405 rather
    # than Odoo's HTML page; a query string is ignored (the set is public)
    @http.route(
        "/iot/jwks.json",
        type="http",
        auth="none",
        methods=None,
        csrf=False,
        save_session=False,
        readonly=True,
    )
    def iot_jwks(self, **_kw):
        method = request.httprequest.method
        if method not in ("GET", "HEAD"):
            return request.make_json_response(
                {"error": "Method not allowed: use GET.", "code": "method_not_allowed"},
                status=405,
                headers=[("Allow", "GET, HEAD"), ("Cache-Control", "no-store")],
            )
        if not (request.db and "iot.jwt.key" in request.env):
            return request.make_json_response(
                {"error": "No database.", "code": "unavailable"},
                status=503,
                headers=[("Cache-Control", "no-store")],
            )
        return request.make_json_response(
            request.env["iot.jwt.key"].sudo()._published_jwks(),
            headers=[
                ("Cache-Control", f"public, max-age={JWKS_MAX_AGE}"),
            ],
        )
