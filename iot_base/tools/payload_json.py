# License LGPL-3.0 or later (https://www.gnu.org/licenses/lgpl).
"""Reading a device's JSON payload: the one place (the listener parses each
message with it once, the device form renders what it kept with it)."""

import json
import re

# deeper than this is no telemetry, and recursing over it (Python's json,
# a renderer) must stay far from the interpreter's recursion limit
MAX_DEPTH = 32
# what a string decoded from JSON may hold that UTF-8 (an HTTP answer) or
# PostgreSQL text cannot: lone surrogates (``\ud800``) and NUL (``\u0000``)
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
# the JSON escapes that decode to one of them (raw ones never reach here:
# the text is valid UTF-8 without NUL)
_SUSPECT_ESCAPE = re.compile(r"\\u(?:0000|[dD][89a-fA-F])")


class UnsafeJson(ValueError):
    """JSON deeper than MAX_DEPTH, or with a string UTF-8 cannot encode."""


def loads(text):
    """The JSON value of ``text``; ValueError when it is not JSON,
    UnsafeJson when it is JSON no page can show (too deep, a lone surrogate
    or a NUL in a key or a string)."""
    try:
        value = json.loads(text)
    except RecursionError as exc:
        raise UnsafeJson("too deep") from exc
    # the walks below run only when a cheap look at the text says they may
    # find something (most telemetry is a small flat object)
    if text.count("[") + text.count("{") > MAX_DEPTH and depth(value) > MAX_DEPTH:
        raise UnsafeJson("too deep")
    if _SUSPECT_ESCAPE.search(text) and not _storable(value):
        raise UnsafeJson("unencodable string")
    return value


def depth(value):
    """How deep arrays and objects nest in ``value`` (0 for a scalar),
    without recursion; stops counting past MAX_DEPTH."""
    deepest, stack = 0, [(value, 0)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict):
            children = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        level += 1
        if level > deepest:
            deepest = level
            if deepest > MAX_DEPTH:
                return deepest
        stack.extend((child, level) for child in children)
    return deepest


def _storable(value):
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if _UNSTORABLE.search(item):
                return False
        elif isinstance(item, dict):
            for key, child in item.items():
                if _UNSTORABLE.search(key):
                    return False
                stack.append(child)
        elif isinstance(item, list):
            stack.extend(item)
    return True
