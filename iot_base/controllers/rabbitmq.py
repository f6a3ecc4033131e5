# License LGPL-3.0 or later (https://www.gnu.org/licenses/lgpl).
"""Endpoints of RabbitMQ 3.10's ``rabbitmq_auth_backend_http``.

rabbitmq.conf (``auth_http.http_method = post`` keeps passwords out of URLs)::

    auth_backends.1 = http
    auth_http.http_method = post
    auth_http.user_path = https://odoo.example.com/iot/rabbitmq/<token>/user
    auth_http.vhost_path = https://odoo.example.com/iot/rabbitmq/<token>/vhost
    auth_http.resource_path = https://odoo.example.com/iot/rabbitmq/<token>/resource
    auth_http.topic_path = https://odoo.example.com/iot/rabbitmq/<token>/topic

The decisions live on ``iot.broker`` (models/iot_broker.py).
"""

import logging

from psycopg2 import InterfaceError, OperationalError

from odoo import http
from odoo.http import request

from .auth import MAX_BODY, _bearer, _read_values, _rollback

_logger = logging.getLogger(__name__)

CHECKS = "any(user,vhost,resource,topic)"
DENY = "deny"


def _rabbitmq_reply(kind):
    """RabbitMQ's answers when the route cannot decide (models/ir_http.py):
    any status but 200/201 is an error RabbitMQ treats as a deny."""
    return _text(DENY, status=503 if kind == "unavailable" else 200)


class IotRabbitmqController(http.Controller):
    @http.route(
        [
            f"/iot/rabbitmq/<{CHECKS}:check>",
            f"/iot/rabbitmq/<string:token>/<{CHECKS}:check>",
        ],
        type="http",
        auth="none",
        methods=["GET", "POST"],
        csrf=False,
        save_session=False,
        readonly=False,  # the audit log is written on GET too
        max_content_length=MAX_BODY,
        iot_broker_reply=_rabbitmq_reply,
    )
    def iot_rabbitmq(self, check, token=None):
        if not (request.db and "iot.broker" in request.env):
            # iot_base loaded server-wide, no usable database: see auth.py
            return _rabbitmq_reply("unavailable")
        broker = request.env["iot.broker"].sudo()
        try:
            peer = request.httprequest.remote_addr or ""
            if not broker._check_token([token, _bearer()]):
                _logger.warning(
                    "RabbitMQ %s request from %s refused: wrong or missing token",
                    check,
                    peer,
                )
                broker._refuse("rabbitmq", "bad_token", peer=peer)
                return _text(DENY)
            values = _read_values()
            if values is None:
                broker._refuse("rabbitmq", "bad_request", peer=peer)
                return _text(DENY)
            # the vhost check names the client's address; the others don't
            if isinstance(values.get("ip"), str) and values["ip"]:
                peer = values["ip"]
            return _text(broker._rabbitmq_decide(check, values, peer))
        except (OperationalError, InterfaceError) as exc:
            # never replayed: see controllers/auth.py
            _rollback()
            _logger.warning(
                "RabbitMQ %s request: database unavailable (%s)",
                check,
                type(exc).__name__,
            )
            return _rabbitmq_reply("unavailable")


def _text(answer, status=200):
    return request.make_response(
        answer,
        headers=[
            ("Content-Type", "text/plain; charset=utf-8"),
            ("Cache-Control", "no-store"),
        ],
        status=status,
    )
