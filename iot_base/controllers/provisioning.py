# License LGPL-3.0 or later (https://www.gnu.org/licenses/lgpl).
"""Device provisioning API, for factory tools and installers.

Authenticated with an Odoo API key (``Authorization: Bearer <key>``) of a
user in the IoT manager group.
"""

import json

from odoo import _, http
from odoo.exceptions import ValidationError
from odoo.http import request

MAX_BODY = 64 * 1024


class IotProvisioningController(http.Controller):
    @http.route(
        "/iot/provision/devices",
        type="http",
        auth="bearer",
        methods=["POST"],
        csrf=False,
        save_session=False,
    )
    def provision_device(self, **_params):
        denied = _check_manager()
        if denied:
            return denied
        httprequest = request.httprequest
        if (httprequest.content_length or 0) > MAX_BODY:
            return _error(_("The request body is too large."), 413)
        try:
            body = json.loads(httprequest.get_data(cache=False).decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            return _error(_("The request body must be a JSON object."))
        if not isinstance(body, dict):
            return _error(_("The request body must be a JSON object."))
        try:
            device, secret, created = request.env["iot.mqtt.device"]._provision(body)
        except ValidationError as exc:
            return _error(exc.args[0])
        return request.make_json_response(
            device._provisioning_reply(secret),
            status=201 if created else 200,
            headers=[("Cache-Control", "no-store")],
        )

    @http.route(
        "/iot/provision/devices/<string:hardware_id>",
        type="http",
        auth="bearer",
        methods=["DELETE"],
        csrf=False,
        save_session=False,
    )
    def revoke_device(self, hardware_id, **_params):
        denied = _check_manager()
        if denied:
            return denied
        device = request.env["iot.mqtt.device"]._find_by_hardware_id(hardware_id)
        if not device:
            return _error(_("No device with this hardware ID."), 404)
        device.action_revoke()
        return request.make_json_response(
            {"hardware_id": device.hardware_id, "revoked": True}
        )


def _check_manager():
    if not request.env.user.has_group("iot_base.iot_base_group_manager"):
        return _error(_("Only IoT managers may provision devices."), 403)
    return None


def _error(message, status=400):
    return request.make_json_response({"error": message}, status=status)
