# License LGPL-3.0 or later (https://www.gnu.org/licenses/lgpl).
"""Endpoints a broker calls: EMQX 5 HTTP authentication and authorization
(decisions in models/emqx/iot_broker_emqx.py)."""

import logging

from odoo import http
from odoo.http import request

from ...models.ir_http import EMQX_NOT_FOUND
from ...tools import log_redaction
from ..iot_request import BrokerDispatching, answer_broker, broker_route

_logger = logging.getLogger(__name__)

# EMQX's bodies are a few hundred bytes; anything much bigger is not EMQX.
MAX_BODY = 16 * 1024
DENY = {"result": "deny"}

log_redaction.install()


class EmqxDispatcher(BrokerDispatching, http.Dispatcher):
    """``type="iot_emqx"``: the routes EMQX's HTTP authenticator and
    authorizer call (controllers/iot_request.py ``BrokerDispatching``)."""

    routing_type = "iot_emqx"

    def reply(self, kind):
        """EMQX's answers when the route cannot decide: a deny, or "no
        opinion" (any status but 200) when the database is down."""
        if kind == "unavailable":
            return _json({"result": "ignore"}, status=503)
        return _json(DENY)


class IotBrokerController(http.Controller):
    @broker_route(
        ["/iot/auth", "/iot/auth/<string:token>"],
        EmqxDispatcher.routing_type,
        MAX_BODY,
    )
    def iot_auth(self, token=None):
        return self._answer("auth", token)

    @broker_route(
        ["/iot/acl", "/iot/acl/<string:token>"],
        EmqxDispatcher.routing_type,
        MAX_BODY,
    )
    def iot_acl(self, token=None):
        return self._answer("acl", token)

    @broker_route(EMQX_NOT_FOUND, EmqxDispatcher.routing_type, MAX_BODY, readonly=True)
    def iot_emqx_not_found(self, **_ignored):
        """What a path under /iot/auth or /iot/acl that no route matches
        (another case, an extra segment) gets (models/ir_http.py): EMQX's
        deny, never Odoo's HTML 404, which EMQX reads as "no opinion"."""
        return request.dispatcher.reply("deny")

    def _answer(self, endpoint, token):
        def decide(broker, values, _remote):
            # the client's address, only as EMQX reports it (``${peerhost}``):
            # the connection's own address is the broker's, shared by every
            # client, and must never be throttled
            peerhost = values.get("peerhost")
            peer = peerhost if isinstance(peerhost, str) else ""
            if endpoint == "auth":
                return _json(broker._emqx_authenticate(values, peer))
            return _json(broker._emqx_authorize(values, peer))

        return answer_broker(
            "iot.broker.emqx",
            f"MQTT {endpoint}",
            _logger,
            endpoint,
            token,
            MAX_BODY,
            decide,
        )


def _json(data, status=200):
    return request.make_json_response(
        data, status=status, headers=[("Cache-Control", "no-store")]
    )
