# License LGPL-3.0 or later (https://www.gnu.org/licenses/lgpl).
"""Keep the broker token, MQTT secrets and request bodies out of every log.

A broker puts the token in the URL path (``/iot/auth/<token>``), may send
passwords in a query string, and a malformed request can make werkzeug
print a raw line of the body (``Bad request syntax ('password=...')``) or an
exception quote it (``invalid literal for int() with base 16: '...'``).
Filters on a few loggers miss records of other loggers and handlers added
later, so the redaction wraps the log record factory: every record of the
process is cleaned once, when it is created, whoever logs it and wherever
it goes. No Odoo import: this is plain ``logging``.
"""

import logging
import re
from urllib.parse import unquote

REDACTED = "***"
# /iot/<route> under any spelling once decoded: case, repeated slashes,
# percent-encoding; what follows a known route name (token, check, query)
# goes, and so does an unknown first segment (it may be a token).
_IOT_PATH_RE = re.compile(r"(?i)/+iot(?:/+|$)([a-z_]*)")
_ROUTE_NAMES = frozenset({"auth", "acl", "rabbitmq", "app", "provision"})
# public, secret-free paths kept readable (a query or more is still cut)
_PUBLIC_PATH_RE = re.compile(r"(?i)/+iot/+jwks\.json")
# A candidate URL in a message: a run of non-blank characters. Quotes and
# angle brackets do not end it: a token may hold them (``/iot/auth/a'b``), and
# a URL cut at the quote would log what follows it in clear. A quote closing
# the URL in the message is cut with the token (nothing secret is lost).
_WORD_RE = re.compile(r"\S+")
# The request line werkzeug logs for an access, when it is a real one.
_REQUEST_LINE_RE = re.compile(r"[A-Z]{1,20} \S{1,8192} HTTP/\d\.\d")
# http.server's and werkzeug's errors about what a client sent
# (``code %d, message %s``, ``Bad request syntax (%r)``...) quote raw bytes of
# the request, possibly of its body: the message stays, the bytes go.
_WERKZEUG_RAW_ERRORS = ("code %", "Bad request", "Bad HTTP", "Unsupported method")
# odoo.sql_db's "bad query: <statement with its parameters>": a username, a
# secret's clear index, a client's topic; the statement's shape stays.
_SQL_LITERAL_RE = re.compile(r"'(?:[^']|'')*'")
# What ``int(line, 16)`` says about a bad chunk header: the line may be body.
_CHUNK_LINE_RE = re.compile(r"(invalid literal for int\(\) with base 16: ).*")


def _decoded(word):
    """``word`` percent-decoded until it stops changing (bounded)."""
    for _round in range(4):
        decoded = unquote(word)
        if decoded == word:
            break
        word = decoded
    return word


def redact(text):
    """``text`` with every ``/iot/...`` URL cut after its route name."""
    if not isinstance(text, str):
        return text
    text = _CHUNK_LINE_RE.sub(rf"\g<1>{REDACTED}", text)
    if "/" not in text and "%" not in text:
        return text

    def clean(match):
        word = match.group(0)
        decoded = _decoded(word)
        found = _IOT_PATH_RE.search(decoded)
        if not found:
            return word
        public = _PUBLIC_PATH_RE.match(decoded, found.start())
        if public:
            rest = REDACTED if decoded[public.end() :] else ""
            return f"{decoded[: found.start()]}/iot/jwks.json{rest}"
        route = found.group(1).lower()
        route = f"{route}/" if route in _ROUTE_NAMES else ""
        return f"{decoded[: found.start()]}/iot/{route}{REDACTED}"

    return _WORD_RE.sub(clean, text)


def _request_line(value):
    # werkzeug colours access lines with ANSI escapes
    plain = re.sub(r"\x1b\[[0-9;]*m", "", value)
    return plain if _REQUEST_LINE_RE.fullmatch(plain) else "(unparsable request)"


def redact_record(record):
    """Clean ``record`` in place (message and exception text)."""
    try:
        if record.name == "werkzeug" and isinstance(record.msg, str):
            if any(marker in record.msg for marker in _WERKZEUG_RAW_ERRORS):
                record.msg, record.args = (
                    "bad request from a client (raw bytes not logged)",
                    (),
                )
            elif record.args and '"%s"' in record.msg:
                args = list(record.args)
                args[0] = _request_line(str(args[0]))
                record.args = tuple(args)
        elif record.name == "odoo.sql_db" and str(record.msg).startswith("bad query"):
            record.msg = _SQL_LITERAL_RE.sub("'***'", record.getMessage())
            record.args = ()
        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, ()
        if record.exc_info and not record.exc_text:
            record.exc_text = redact(_FORMATTER.formatException(record.exc_info))
    except Exception:  # noqa: BLE001 - logging must never fail a request
        record.msg, record.args = "(log record withheld: could not be redacted)", ()
        record.exc_info = record.exc_text = None
    return record


_FORMATTER = logging.Formatter()


def install():
    """Wrap the process's log record factory once (idempotent)."""
    factory = logging.getLogRecordFactory()
    if getattr(factory, "_iot_redacting", False):
        return

    def redacting_factory(*args, **kwargs):
        return redact_record(factory(*args, **kwargs))

    redacting_factory._iot_redacting = True
    logging.setLogRecordFactory(redacting_factory)
