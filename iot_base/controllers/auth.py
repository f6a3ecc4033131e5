# License LGPL-3.0 or later (https://www.gnu.org/licenses/lgpl).
"""Endpoints a broker calls: EMQX 5 HTTP authentication and authorization."""

import contextlib
import json
import logging
import re

from psycopg2 import InterfaceError, OperationalError
from werkzeug.exceptions import HTTPException

from odoo import http
from odoo.http import request

from ..tools import log_redaction

_logger = logging.getLogger(__name__)

_SURROGATE_RE = re.compile("[\ud800-\udfff]")

# EMQX's bodies are a few hundred bytes; anything much bigger is not EMQX.
MAX_BODY = 16 * 1024
DENY = {"result": "deny"}
# JSON nested deeper than this is not a broker's (EMQX sends flat objects)
MAX_JSON_DEPTH = 32

log_redaction.install()


def _emqx_reply(kind):
    """EMQX's answers when the route cannot decide (see models/ir_http.py):
    a deny, or "no opinion" (any status but 200) when the database is down."""
    if kind == "unavailable":
        return _json({"result": "ignore"}, status=503)
    return _json(DENY)


class IotBrokerController(http.Controller):
    @http.route(
        ["/iot/auth", "/iot/auth/<string:token>"],
        type="http",
        auth="none",
        methods=["GET", "POST"],
        csrf=False,
        save_session=False,
        readonly=False,
        max_content_length=MAX_BODY,
        iot_broker_reply=_emqx_reply,
    )
    def iot_auth(self, token=None):
        return self._answer("auth", token)

    @http.route(
        ["/iot/acl", "/iot/acl/<string:token>"],
        type="http",
        auth="none",
        methods=["GET", "POST"],
        csrf=False,
        save_session=False,
        readonly=False,
        max_content_length=MAX_BODY,
        iot_broker_reply=_emqx_reply,
    )
    def iot_acl(self, token=None):
        return self._answer("acl", token)

    def _answer(self, endpoint, token):
        if not (request.db and "iot.broker" in request.env):
            # only when iot_base is loaded as a server-wide module: no
            # usable database, or one without iot_base
            return _emqx_reply("unavailable")
        broker = request.env["iot.broker"].sudo()
        try:
            remote = request.httprequest.remote_addr or ""
            if not broker._check_token([token, _bearer()]):
                _logger.warning(
                    "MQTT %s request from %s refused: wrong or missing broker token",
                    endpoint,
                    remote,
                )
                return _json(broker._refuse(endpoint, "bad_token", peer=remote))
            values = _read_values()
            if values is None:
                return _json(broker._refuse(endpoint, "bad_request", peer=remote))
            # the client's address, only as EMQX reports it (``${peerhost}``):
            # the connection's own address is the broker's, shared by every
            # client, and must never be throttled
            peerhost = values.get("peerhost")
            peer = peerhost if isinstance(peerhost, str) else ""
            if endpoint == "auth":
                return _json(broker._emqx_authenticate(values, peer))
            return _json(broker._emqx_authorize(values, peer))
        except (OperationalError, InterfaceError) as exc:
            # the database cannot answer in time: "no opinion", never an
            # allow, and never replayed (service.model.retrying would
            # multiply the wait past EMQX's 5 s)
            _rollback()
            _logger.warning(
                "MQTT %s request: database unavailable (%s)",
                endpoint,
                type(exc).__name__,
            )
            return _emqx_reply("unavailable")


def _rollback():
    """Leave the failed transaction (Odoo would otherwise commit after it)."""
    with contextlib.suppress(OperationalError, InterfaceError):
        request.env.cr.rollback()


def _bearer():
    header = request.httprequest.headers.get("Authorization", "")
    scheme, _sep, value = header.partition(" ")
    return value.strip() if scheme.lower() == "bearer" else None


def _read_values():
    """The request's fields as a dict of clean strings (and other JSON
    values), or None when the body is unusable.

    EMQX renders a JSON body from its template (every value a string); a
    form-encoded body and the GET variant (query string) are accepted too.
    Whatever PostgreSQL or the audit trail could not store (NUL, lone
    surrogates) makes the whole request a bad one, answered in protocol.
    """
    httprequest = request.httprequest
    if httprequest.method == "GET":
        return _clean(dict(httprequest.args.items()))
    # a declared length is required (EMQX always sends one), so that an
    # oversized or chunked body is refused before anything reads it (see
    # models/ir_http.py: Odoo's form parser does not read it either)
    if (
        httprequest.headers.get("Transfer-Encoding")
        or httprequest.content_length is None
        or httprequest.content_length > MAX_BODY
    ):
        return None
    if httprequest.mimetype == "application/x-www-form-urlencoded":
        # Odoo has parsed the form already, before dispatching
        return _clean(dict(httprequest.form.items()))
    try:
        body = httprequest.get_data(cache=False)
        values = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError, HTTPException):
        # RecursionError: JSON nested thousands deep
        return None
    return _clean(values) if isinstance(values, dict) else None


def _clean(values):
    """``values`` if every key and string in it can be stored, else None."""
    stack = [(values, 0)]
    while stack:
        value, depth = stack.pop()
        if depth > MAX_JSON_DEPTH:
            return None
        if isinstance(value, str):
            if "\x00" in value or _SURROGATE_RE.search(value):
                return None
        elif isinstance(value, dict):
            stack.extend((item, depth + 1) for pair in value.items() for item in pair)
        elif isinstance(value, list):
            stack.extend((item, depth + 1) for item in value)
    return values


def _json(data, status=200):
    return request.make_json_response(
        data, status=status, headers=[("Cache-Control", "no-store")]
    )
