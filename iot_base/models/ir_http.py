# License LGPL-3.0 or later (https://www.gnu.org/licenses/lgpl).
"""Paths under a broker's prefix that no route matches answer in that
broker's protocol.

What a broker route does once matched (its body shielded, its answers on
error) is its route type's dispatcher (controllers/iot_request.py
``BrokerDispatching``, ``type="iot_emqx"`` / ``"iot_rabbitmq"``, and
``"iot_provisioning"``); matching is ir.http's, so the fallback for a path
no route matches stays here.
"""

from werkzeug.exceptions import NotFound
from werkzeug.routing import RequestRedirect

from odoo import models

PROVISIONING_PREFIX = "/iot/provision"
# the routes of paths no route matches (controllers/emqx/auth.py and
# controllers/rabbitmq/auth.py)
EMQX_NOT_FOUND = "/iot/emqx/not_found"
RABBITMQ_NOT_FOUND = "/iot/rabbitmq/not_found"
# /iot/<segment>/... (any case) that no route matches -> the path whose route
# answers in that protocol: EMQX's deny, RabbitMQ's deny, the provisioning
# API's JSON 404. Paths are matched as written (werkzeug is case-sensitive):
# /IOT/Auth is never served, only refused in the protocol's own form.
PROTOCOL_FALLBACKS = {
    "auth": EMQX_NOT_FOUND,
    "acl": EMQX_NOT_FOUND,
    "emqx": EMQX_NOT_FOUND,
    "rabbitmq": RABBITMQ_NOT_FOUND,
    "provision": PROVISIONING_PREFIX,
}


class IrHttp(models.AbstractModel):
    _inherit = "ir.http"

    @classmethod
    def _match(cls, path_info):
        """Paths under a broker's or the provisioning API's prefix that no
        route matches (another case, an extra segment, a newline in a
        segment, a ``//`` werkzeug would redirect) are answered in that
        protocol (:data:`PROTOCOL_FALLBACKS`), not with Odoo's HTML page or
        redirect."""
        try:
            return super()._match(path_info)
        except (NotFound, RequestRedirect):
            fallback = _protocol_fallback(path_info)
            if not fallback:
                raise
            return super()._match(fallback)


def _protocol_fallback(path_info):
    """The fallback path of :data:`PROTOCOL_FALLBACKS` for ``path_info``, or None."""
    segments = path_info.split("/")
    if len(segments) < 3 or segments[0] or segments[1].lower() != "iot":
        return None
    return PROTOCOL_FALLBACKS.get(segments[2].lower())
