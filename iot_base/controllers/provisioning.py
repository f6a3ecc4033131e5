# License LGPL-3.0 or later (https://www.gnu.org/licenses/lgpl).
"""Device provisioning API, for factory tools and installers.

Authenticated with an Odoo API key (``Authorization: Bearer <key>``) of a
user in the IoT manager group; devices land in that user's current company.
Every answer is JSON, errors included: ``{"error": <sentence>, "code": <word>}``.
"""

import re

import werkzeug.exceptions

from odoo import _, http
from odoo.exceptions import AccessError, UserError, ValidationError
from odoo.http import request

from ..models.iot_mqtt_device import ProvisioningConflict
from . import iot_request

MAX_BODY = 64 * 1024
# an Odoo API key is 40 hex digits: anything but printable ASCII is no key
API_KEY_RE = re.compile(r"[!-~]{1,256}")


class IotProvisioningDispatcher(http.Dispatcher):
    """Dispatcher of ``type="iot_provisioning"`` routes.

    Odoo's ``http`` dispatcher parses form and multipart bodies (up to
    128 MB) before the endpoint runs and answers its own errors with HTML
    pages; here the endpoint reads the body itself, bounded and JSON only,
    and whatever Odoo raises around it is answered in JSON too.
    """

    routing_type = "iot_provisioning"

    @classmethod
    def is_compatible_with(cls, request):
        return True

    def dispatch(self, endpoint, args):
        self.request.params = args
        # only reachable when iot_base is loaded server-wide (--load)
        if not self.request.db:
            return _error("No database is selected.", 503, "no_database")
        return self.request.registry["ir.http"]._dispatch(endpoint)

    def handle_error(self, exc):
        if isinstance(exc, werkzeug.exceptions.HTTPException) and exc.code:
            code = re.sub(r"\W+", "_", exc.name.lower())
            return _error(exc.name, exc.code, code)
        # Odoo has logged it; the client learns nothing of the internals
        return _error("The request could not be handled.", 500, "internal_error")


class IotProvisioningController(http.Controller):
    @http.route(
        ["/iot/provision", "/iot/provision/<path:_rest>"],
        type="iot_provisioning",
        auth="none",
        csrf=False,
        save_session=False,
    )
    def provision_not_found(self, **_params):
        return _error(_("No such provisioning resource."), 404, "not_found")

    @http.route(
        "/iot/provision/devices",
        type="iot_provisioning",
        auth="none",
        csrf=False,
        save_session=False,
        readonly=False,
    )
    def provision_device(self, **_params):
        denied = _check_method("POST") or _authenticate_manager() or _rate_limit()
        if denied:
            return denied
        body, refused = _read_json_object()
        if refused:
            return refused
        try:
            device, secret, created = request.env["iot.mqtt.device"]._provision(body)
        except ProvisioningConflict as exc:
            return _error(exc.args[0], 409, exc.code)
        except ValidationError as exc:
            return _error(exc.args[0], 400, "invalid")
        except AccessError as exc:
            return _error(exc.args[0], 403, "forbidden")
        except UserError as exc:
            return _error(exc.args[0], 422, "refused")
        return request.make_json_response(
            device._provisioning_reply(secret),
            status=201 if created else 200,
            headers=[("Cache-Control", "no-store")],
        )

    @http.route(
        "/iot/provision/devices/<string:hardware_id>",
        type="iot_provisioning",
        auth="none",
        csrf=False,
        save_session=False,
        readonly=False,
    )
    def revoke_device(self, hardware_id, **_params):
        denied = _check_method("DELETE") or _authenticate_manager()
        if denied:
            return denied
        device = request.env["iot.mqtt.device"]._find_by_hardware_id(hardware_id)
        if not device:
            return _error(_("No device with this hardware ID."), 404, "not_found")
        device.action_revoke()
        return request.make_json_response(
            {"hardware_id": device.hardware_id, "revoked": True}
        )


def _check_method(allowed):
    if request.httprequest.method != allowed:
        return _error(
            _("Use %(method)s here.", method=allowed),
            405,
            "method_not_allowed",
            headers=[("Allow", allowed)],
        )
    return None


def _authenticate_manager():
    """Become the user of the request's API key, an IoT manager; or the
    401/403 answer. Checked here, not by ``auth="bearer"``, whose failures
    Odoo answers with HTML pages."""
    key = iot_request.bearer()
    uid = (
        key
        and API_KEY_RE.fullmatch(key)
        and request.env["res.users.apikeys"]._check_credentials(scope="rpc", key=key)
    )
    if not uid:
        return _error(
            _("A valid Odoo API key is required: Authorization: Bearer <key>."),
            401,
            "unauthorized",
            headers=[("WWW-Authenticate", "Bearer")],
        )
    request.update_env(user=uid)
    if not request.env.user.has_group("iot_base.iot_base_group_manager"):
        return _error(_("Only IoT managers may provision devices."), 403, "forbidden")
    return None


def _rate_limit():
    """None, or the 429 answer when the request's API key has made its
    registrations of the minute (models/iot_auth_throttle.py)."""
    wait = (
        request.env["iot.auth.throttle"].sudo()._provisioning_wait(iot_request.bearer())
    )
    if not wait:
        return None
    return _error(
        _(
            "Too many registrations with this API key: retry in %(seconds)s s.",
            seconds=wait,
        ),
        429,
        "too_many_requests",
        headers=[("Retry-After", str(wait))],
    )


def _read_json_object():
    """(the request body's JSON object, None), or (None, the error answer)."""
    body, refused = iot_request.read_body(MAX_BODY)
    if not refused:
        return body, None
    message, status = {
        iot_request.UNSUPPORTED_MEDIA_TYPE: (
            _("The request body must be JSON (Content-Type: application/json)."),
            415,
        ),
        iot_request.LENGTH_REQUIRED: (
            _("Send the request body with a Content-Length."),
            411,
        ),
        iot_request.TOO_LARGE: (_("The request body is too large."), 413),
        iot_request.UNREADABLE: (_("The request body could not be read."), 400),
        iot_request.NOT_AN_OBJECT: (_("The request body must be a JSON object."), 400),
    }[refused]
    return None, _error(message, status, "bad_request" if status == 400 else refused)


def _error(message, status, code, headers=()):
    return request.make_json_response(
        {"error": message, "code": code},
        status=status,
        headers=[("Cache-Control", "no-store"), *headers],
    )
