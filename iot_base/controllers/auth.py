# License LGPL-3.0 or later (https://www.gnu.org/licenses/lgpl).
"""Endpoints a broker calls: EMQX 5 HTTP authentication and authorization."""

import json
import logging
import re

from psycopg2 import InterfaceError, OperationalError

from odoo import http
from odoo.http import request

_logger = logging.getLogger(__name__)

# EMQX's bodies are a few hundred bytes; anything much bigger is not EMQX.
MAX_BODY = 16 * 1024
DENY = {"result": "deny"}
# the broker token, when a broker puts it in the URL path
TOKEN_IN_PATH_RE = re.compile(
    r"(/iot/(?:auth|acl)/)[^/\s?\"]+|(/iot/rabbitmq/)[^/\s?\"]+(?=/)"
)
# and a password, when a broker uses the GET variant
PASSWORD_IN_QUERY_RE = re.compile(r"(/iot/\S*[?&]password=)[^&\s\"]*")


class _RedactBrokerToken(logging.Filter):
    """Keep the broker token out of the HTTP access log (``werkzeug``)."""

    def filter(self, record):
        message = record.getMessage()
        if "/iot/" in message:
            redacted = TOKEN_IN_PATH_RE.sub(
                lambda m: (m.group(1) or m.group(2)) + "***", message
            )
            redacted = PASSWORD_IN_QUERY_RE.sub(r"\1***", redacted)
            if redacted != message:
                record.msg, record.args = redacted, ()
        return True


logging.getLogger("werkzeug").addFilter(_RedactBrokerToken())


class IotBrokerController(http.Controller):
    @http.route(
        ["/iot/auth", "/iot/auth/<string:token>"],
        type="http",
        auth="none",
        methods=["GET", "POST"],
        csrf=False,
        save_session=False,
        readonly=False,
    )
    def iot_auth(self, token=None, **_params):
        return self._answer("auth", token)

    @http.route(
        ["/iot/acl", "/iot/acl/<string:token>"],
        type="http",
        auth="none",
        methods=["GET", "POST"],
        csrf=False,
        save_session=False,
        readonly=False,
    )
    def iot_acl(self, token=None, **_params):
        return self._answer("acl", token)

    def _answer(self, endpoint, token):
        broker = request.env["iot.broker"].sudo()
        try:
            peer = request.httprequest.remote_addr or ""
            if not broker._check_token([token, _bearer()]):
                _logger.warning(
                    "MQTT %s request from %s refused: wrong or missing broker token",
                    endpoint,
                    peer,
                )
                return _json(broker._refuse(endpoint, "bad_token", peer=peer))
            values = _read_values()
            if values is None:
                return _json(broker._refuse(endpoint, "bad_request", peer=peer))
            peerhost = values.get("peerhost")
            if isinstance(peerhost, str) and peerhost:
                peer = peerhost
            if endpoint == "auth":
                return _json(broker._emqx_authenticate(values, peer))
            return _json(broker._emqx_authorize(values, peer))
        except (OperationalError, InterfaceError):
            # the database cannot answer: "no opinion", never an allow
            _logger.exception("MQTT %s request: database unavailable", endpoint)
            return _json({"result": "ignore"}, status=503)


def _bearer():
    header = request.httprequest.headers.get("Authorization", "")
    scheme, _sep, value = header.partition(" ")
    return value.strip() if scheme.lower() == "bearer" else None


def _read_values():
    """The request's fields as a dict, or None when the body is unusable.

    EMQX renders a JSON body from its template (every value a string); a
    form-encoded body and the GET variant (query string) are accepted too.
    """
    httprequest = request.httprequest
    if httprequest.method == "GET":
        return dict(httprequest.args.items())
    # a declared length is required (EMQX always sends one), so that an
    # oversized body is refused before anything reads it
    if httprequest.content_length is None or httprequest.content_length > MAX_BODY:
        return None
    if httprequest.mimetype == "application/x-www-form-urlencoded":
        # Odoo has parsed the form already, before dispatching
        return dict(httprequest.form.items())
    body = httprequest.get_data(cache=False)
    try:
        values = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return None
    return values if isinstance(values, dict) else None


def _json(data, status=200):
    return request.make_json_response(
        data, status=status, headers=[("Cache-Control", "no-store")]
    )
