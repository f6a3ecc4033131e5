# License LGPL-3.0 or later (https://www.gnu.org/licenses/lgpl).
"""Endpoints of RabbitMQ 3.10's ``rabbitmq_auth_backend_http``.

rabbitmq.conf (``auth_http.http_method = post`` keeps passwords out of URLs)::

    auth_backends.1 = http
    auth_http.http_method = post
    auth_http.user_path = https://odoo.example.com/iot/rabbitmq/<token>/user
    auth_http.vhost_path = https://odoo.example.com/iot/rabbitmq/<token>/vhost
    auth_http.resource_path = https://odoo.example.com/iot/rabbitmq/<token>/resource
    auth_http.topic_path = https://odoo.example.com/iot/rabbitmq/<token>/topic

The decisions live in models/rabbitmq/iot_broker_rabbitmq.py.
"""

import logging

from odoo import http
from odoo.http import request

from ...models.ir_http import RABBITMQ_NOT_FOUND
from ..iot_request import BrokerDispatching, answer_broker, broker_route

_logger = logging.getLogger(__name__)

CHECKS = "any(user,vhost,resource,topic)"
DENY = "deny"
# RabbitMQ's form bodies are a few hundred bytes, like EMQX's
MAX_BODY = 16 * 1024


class RabbitmqDispatcher(BrokerDispatching, http.Dispatcher):
    """``type="iot_rabbitmq"``: the routes of RabbitMQ's HTTP auth backend
    (controllers/iot_request.py ``BrokerDispatching``)."""

    routing_type = "iot_rabbitmq"

    def reply(self, kind):
        """RabbitMQ's answers when the route cannot decide: any status but
        200/201 is an error RabbitMQ treats as a deny."""
        return _text(DENY, status=503 if kind == "unavailable" else 200)


class IotRabbitmqController(http.Controller):
    @broker_route(
        [
            f"/iot/rabbitmq/<{CHECKS}:check>",
            f"/iot/rabbitmq/<string:token>/<{CHECKS}:check>",
        ],
        RabbitmqDispatcher.routing_type,
        MAX_BODY,  # read-write: the audit log is written on GET too
    )
    def iot_rabbitmq(self, check, token=None):
        def decide(broker, values, peer):
            # the vhost check names the client's address; the others don't
            if isinstance(values.get("ip"), str) and values["ip"]:
                peer = values["ip"]
            return _text(broker._rabbitmq_decide(check, values, peer))

        return answer_broker(
            "iot.broker.rabbitmq",
            f"RabbitMQ {check}",
            _logger,
            "rabbitmq",
            token,
            MAX_BODY,
            decide,
        )

    @broker_route(
        RABBITMQ_NOT_FOUND, RabbitmqDispatcher.routing_type, MAX_BODY, readonly=True
    )
    def iot_rabbitmq_not_found(self, **_ignored):
        """What a path under /iot/rabbitmq that no route matches (another
        case, an extra segment) gets (models/ir_http.py): a deny."""
        return _text(DENY)


def _text(answer, status=200):
    return request.make_response(
        answer,
        headers=[
            ("Content-Type", "text/plain; charset=utf-8"),
            ("Cache-Control", "no-store"),
        ],
        status=status,
    )
