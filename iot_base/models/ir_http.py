# License LGPL-3.0 or later (https://www.gnu.org/licenses/lgpl).
"""Broker routes answer in their protocol, whatever arrives.

Odoo parses a request's form and hands every query and form field to the
endpoint as a keyword argument before the controller runs; a broken body
(truncated, badly chunked) or a field named ``self`` would fail there with a
500 HTML page and a traceback. Routes declaring ``iot_broker_reply`` (a
function of ``"deny"`` or ``"unavailable"`` returning the protocol's
answer) get their body shielded, only their route arguments, and that
answer for any error: never Odoo's HTML page.
"""

import logging

from psycopg2 import InterfaceError, OperationalError
from werkzeug.datastructures import ImmutableMultiDict
from werkzeug.exceptions import HTTPException, NotFound, abort
from werkzeug.routing import RequestRedirect

from odoo import models
from odoo.http import request

_logger = logging.getLogger(__name__)

# what a broker route receives from Odoo's parameters: its route arguments
# (and ``token``, which a broker may also put in the query string)
BROKER_PARAMS = ("token", "check")
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

    @classmethod
    def _pre_dispatch(cls, rule, args):
        reply = rule.endpoint.routing.get("iot_broker_reply")
        if not reply:
            return super()._pre_dispatch(rule, args)
        request.iot_broker_reply = reply
        request.session.can_save = False
        try:
            # before any query of this transaction, Odoo's included: a lock
            # or a slow query must end well inside the broker's timeout, and
            # must not reach service.model.retrying, whose replays would
            # multiply the wait
            request.env["iot.broker"].sudo()._limit_waits()
            super()._pre_dispatch(rule, args)
        except (OperationalError, InterfaceError) as exc:
            _logger.warning(
                "MQTT broker request: database unavailable (%s)",
                type(exc).__name__,
            )
            abort(reply("unavailable"))
        _shield_body()

    @classmethod
    def _dispatch(cls, endpoint):
        if endpoint.routing.get("iot_broker_reply"):
            return endpoint(
                **{
                    key: value
                    for key, value in request.params.items()
                    if key in BROKER_PARAMS
                }
            )
        return super()._dispatch(endpoint)

    @classmethod
    def _handle_error(cls, exception):
        reply = getattr(request, "iot_broker_reply", None)
        if reply:
            # bad input is refused where it is read, so this is a bug: Odoo
            # logs it, and the broker still gets a deny, never an HTML page
            return reply("deny")
        return super()._handle_error(exception)


def _protocol_fallback(path_info):
    """The fallback path of :data:`PROTOCOL_FALLBACKS` for ``path_info``, or None."""
    segments = path_info.split("/")
    if len(segments) < 3 or segments[0] or segments[1].lower() != "iot":
        return None
    return PROTOCOL_FALLBACKS.get(segments[2].lower())


def _shield_body():
    """Let Odoo's form parser see only a body that can be read safely.

    Brokers always declare the length of a small body: a chunked body, an
    undeclared or oversized one is never read (the route refuses it); a
    declared one that cannot be parsed (truncated, malformed) reads as
    empty instead of failing before the route runs.
    """
    httprequest = request.httprequest
    length = httprequest.content_length
    unreadable = bool(httprequest.headers.get("Transfer-Encoding")) or (
        length is not None and length > (httprequest.max_content_length or 0)
    )
    if not unreadable:
        try:
            # parsed (and cached) here, where a failure is caught
            if httprequest.form is not None:
                return
        except (OSError, ValueError, HTTPException) as exc:
            _logger.info("MQTT broker request with an unreadable body: %s", exc)
    httprequest.form = ImmutableMultiDict()
    httprequest.files = ImmutableMultiDict()
