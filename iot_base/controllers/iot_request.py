# License LGPL-3.0 or later (https://www.gnu.org/licenses/lgpl).
"""How every iot_base route reads a request: the bearer token, a bounded
body, the dispatching every broker route type shares (:class:`BrokerDispatching`)
and the skeleton of every broker route (token, body, decision, "no opinion"
when the database cannot answer)."""

import contextlib
import json
import logging
import re

from psycopg2 import InterfaceError, OperationalError
from werkzeug.datastructures import ImmutableMultiDict
from werkzeug.exceptions import HTTPException, abort

from odoo import http
from odoo.http import request

_logger = logging.getLogger(__name__)

_SURROGATE_RE = re.compile("[\ud800-\udfff]")
# JSON nested deeper than this is not a broker's (EMQX sends flat objects)
MAX_JSON_DEPTH = 32

# why read_body refused a body (provisioning's error codes)
UNSUPPORTED_MEDIA_TYPE = "unsupported_media_type"
LENGTH_REQUIRED = "length_required"
TOO_LARGE = "request_entity_too_large"
UNREADABLE = "unreadable"
NOT_AN_OBJECT = "not_an_object"


def bearer():
    """The value of an ``Authorization: Bearer <value>`` header, or None."""
    header = request.httprequest.headers.get("Authorization", "")
    scheme, _sep, value = header.partition(" ")
    return value.strip() if scheme.lower() == "bearer" else None


def read_body(max_body, *, forms=False):
    """(the body's JSON object, None), or (None, why it was refused).

    A declared length is required, so that an oversized or chunked body is
    refused before anything reads it (werkzeug would read a chunked body to
    its end, unbounded; :func:`_shield_body` keeps Odoo's form parser off
    it too). With ``forms``, a url-encoded form is read too (Odoo has parsed
    it already) and any other content type is tried as JSON.
    """
    httprequest = request.httprequest
    is_form = httprequest.mimetype == "application/x-www-form-urlencoded"
    if not (forms or httprequest.mimetype == "application/json"):
        return None, UNSUPPORTED_MEDIA_TYPE
    if httprequest.headers.get("Transfer-Encoding") or (
        httprequest.content_length is None
    ):
        return None, LENGTH_REQUIRED
    if httprequest.content_length > max_body:
        return None, TOO_LARGE
    if forms and is_form:
        return dict(httprequest.form.items()), None
    try:
        data = httprequest.get_data(cache=False)
    except (OSError, HTTPException):
        return None, UNREADABLE
    try:
        # RecursionError: JSON nested thousands deep
        body = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        body = None
    if not isinstance(body, dict):
        return None, NOT_AN_OBJECT
    return body, None


def read_broker_values(max_body):
    """A broker request's fields (the query string of a GET, else the body),
    or None when unusable.

    Whatever PostgreSQL or the audit trail could not store (NUL, lone
    surrogates) makes the whole request a bad one, answered in protocol.
    """
    if request.httprequest.method == "GET":
        return _clean(dict(request.httprequest.args.items()))
    values, _refused = read_body(max_body, forms=True)
    return None if values is None else _clean(values)


# what brokers send: EMQX's HTTP authenticator and authorizer, RabbitMQ's
# auth_http.http_method
BROKER_METHODS = ("GET", "POST")


# what a broker route receives from Odoo's parameters: its route arguments
# (and ``token``, which a broker may also put in the query string)
BROKER_PARAMS = ("token", "check")


class BrokerDispatching:
    """What every broker route type adds to :class:`odoo.http.Dispatcher`
    (mixed in before it: ``class X(BrokerDispatching, http.Dispatcher)``
    with a ``routing_type`` and :meth:`reply`).

    Broker routes answer in their protocol, whatever arrives. Odoo's
    ``http`` dispatcher parses a request's form and hands every query and
    form field to the endpoint as a keyword argument before the controller
    runs; a broken body (truncated, badly chunked) or a field named
    ``self`` would fail there with a 500 HTML page and a traceback. Here
    the body is shielded, the endpoint gets only its route arguments, and
    any error is answered with the protocol's deny (or its "no opinion"
    when the database cannot answer): never Odoo's HTML page.
    """

    @classmethod
    def is_compatible_with(cls, request):
        # brokers send forms, JSON or nothing: the route reads what it takes
        return True

    def reply(self, kind):
        """The protocol's answer when the route cannot decide: ``kind`` is
        ``"deny"`` or ``"unavailable"`` (the database cannot answer)."""
        raise NotImplementedError

    def pre_dispatch(self, rule, args):
        result = super().pre_dispatch(rule, args)
        self.request.session.can_save = False
        if self.request.db:
            try:
                # a lock or a slow query must end well inside the broker's
                # timeout, and must not reach service.model.retrying, whose
                # replays would multiply the wait. (ir.http._pre_dispatch
                # has read one cached setting before this point.)
                self.request.env["iot.broker"].sudo()._limit_waits()
            except (OperationalError, InterfaceError) as exc:
                _logger.warning(
                    "MQTT broker request: database unavailable (%s)",
                    type(exc).__name__,
                )
                abort(self.reply("unavailable"))
        _shield_body()
        return result

    def dispatch(self, endpoint, args):
        params = dict(self.request.get_http_params(), **args)
        self.request.params = {
            key: value for key, value in params.items() if key in BROKER_PARAMS
        }
        return endpoint(**self.request.params)

    def handle_error(self, exc):
        if isinstance(exc, (OperationalError, InterfaceError)):
            return self.reply("unavailable")
        # bad input is refused where it is read, so this is a bug: Odoo
        # logs it, and the broker still gets a deny, never an HTML page
        return self.reply("deny")


def broker_route(routes, route_type, max_body, readonly=False):
    """``@http.route`` of a broker callback: no session, no CSRF, any method
    (a wrong one is refused in protocol by :func:`answer_broker`), a bounded
    body, dispatched by ``route_type`` (a :class:`BrokerDispatching`)."""
    return http.route(
        routes,
        type=route_type,
        auth="none",
        methods=None,
        csrf=False,
        save_session=False,
        readonly=readonly,
        max_content_length=max_body,
    )


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


def answer_broker(model, label, logger, endpoint, token, max_body, decide):
    """Serve one broker callback; any other method than a broker's gets
    the protocol's deny (not Odoo's HTML 405), before anything is read.

    :param model: the protocol's model (``iot.broker.emqx``...)
    :param label: names the request in log lines
    :param endpoint: names it in the audit trail (``iot.auth.log``)
    :param decide: ``(broker, values, remote address) -> response``
    """
    reply = request.dispatcher.reply
    if request.httprequest.method not in BROKER_METHODS:
        return reply("deny")
    if not (request.db and model in request.env):
        # only when iot_base is loaded as a server-wide module: no usable
        # database, or one without iot_base
        return reply("unavailable")
    broker = request.env[model].sudo()
    try:
        remote = request.httprequest.remote_addr or ""
        if not broker._check_token([token, bearer()]):
            logger.warning(
                "%s request from %s refused: wrong or missing broker token",
                label,
                remote,
            )
            broker._refuse(endpoint, "bad_token", peer=remote)
            return reply("deny")
        values = read_broker_values(max_body)
        if values is None:
            broker._refuse(endpoint, "bad_request", peer=remote)
            return reply("deny")
        return decide(broker, values, remote)
    except (OperationalError, InterfaceError) as exc:
        # the database cannot answer in time: "no opinion", never an allow,
        # and never replayed (service.model.retrying would multiply the
        # wait past EMQX's 5 s); leave the failed transaction, which Odoo
        # would otherwise commit
        with contextlib.suppress(OperationalError, InterfaceError):
            request.env.cr.rollback()
        logger.warning(
            "%s request: database unavailable (%s)", label, type(exc).__name__
        )
        return reply("unavailable")


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
