# License LGPL-3.0 or later (https://www.gnu.org/licenses/lgpl).
"""Zero-touch provisioning: ``POST /iot/provision/claim``.

A device at first boot sends its hardware ID and the claim secret flashed at
the factory (no session, no API key) and gets its own identity and the
broker details of the provisioning API. Every answer is JSON, errors
included: ``{"error": <sentence>, "code": <word>}``.
"""

from odoo import _, http
from odoo.http import request

from ..models.iot_provisioning_claim import ClaimRefused
from . import iot_request
from .provisioning import _check_method, _error, _read_json_object


class IotProvisioningClaimController(http.Controller):
    @http.route(
        "/iot/provision/claim",
        type="iot_provisioning",
        auth="none",
        csrf=False,
        save_session=False,
        readonly=False,
    )
    def provision_claim(self, **_params):
        denied = _check_method("POST")
        if denied:
            return denied
        body, refused = _read_json_object()
        if refused:
            return refused
        # NUL and lone surrogates cannot be stored, not even in the audit
        # trail; nesting is bounded there too
        if iot_request._clean(body) is None:
            return _error(
                _("The request body holds characters that cannot be stored."),
                400,
                "bad_request",
            )
        peer = request.httprequest.remote_addr or ""
        try:
            device, secret, created = (
                request.env["iot.provisioning.claim"].sudo()._claim(body, peer)
            )
        except ClaimRefused as exc:
            headers = [("Retry-After", str(exc.retry_after))] if exc.retry_after else []
            return _error(exc.args[0], exc.status, exc.code, headers=headers)
        return request.make_json_response(
            device._provisioning_reply(secret),
            status=201 if created else 200,
            headers=[("Cache-Control", "no-store")],
        )
