# License LGPL-3.0 or later (https://www.gnu.org/licenses/lgpl).
"""What EMQX 5.8.9 does with a JWT password, ported from its source for the
tests (not from iot_base's signing code):

- apps/emqx_auth_jwt/src/emqx_authn_jwks_client.erl: the JWKS endpoint's
  body is read by ``jose_jwk:from``: a JWK *Set* (``{"keys": [...]}``);
  anything unreadable keeps the previous set (the HTTP status is not read);
- apps/emqx_auth_jwt/src/emqx_authn_jwt.erl: ``jose_jws:verify`` with each
  key of the set in turn (the token's ``alg``, no ``kid`` lookup);
  ``exp``/``nbf`` converted from numeric strings, checked only when present
  (``Now < exp``, ``nbf =< Now``); each ``verify_claims`` entry must be
  present and exactly equal to its rendered template; then ``is_superuser``,
  ``client_attrs`` (``iolist_to_binary`` of each value: a number crashes),
  ``expire_at`` (``erlang:convert_time_unit(Exp, second, millisecond)``:
  a float crashes) and the ``acl`` claim compiled by
  apps/emqx_auth/src/emqx_authz/emqx_authz_rule_raw.erl (a bad rule refuses);
- apps/emqx_auth/src/emqx_authz/sources/emqx_authz_client_info.erl and
  emqx_authz_rule.erl: the ACL denies everything once ``exp`` (an integer)
  has passed, else first match wins; no match falls through (``nomatch``);
- apps/emqx/src/emqx_topic.erl ``match/2``: applied to the *requested*
  topic or filter, word by word.
"""

import base64
import json
import re
import time

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

_EC = {
    "ES256": ("P-256", ec.SECP256R1, hashes.SHA256, 32),
    "ES384": ("P-384", ec.SECP384R1, hashes.SHA384, 48),
}
_RSA = {"RS256": hashes.SHA256, "RS384": hashes.SHA384, "RS512": hashes.SHA512}
_RESTRICTED_STR = re.compile(r"^[A-Za-z0-9]+[A-Za-z0-9\-_]*$")
_TEMPLATE_VAR = re.compile(r"\$\{([^}]*)\}")
DEFAULT_QOS = (0, 1, 2)


class Refused(Exception):
    """The authenticator answers ``{error, bad_username_or_password}``."""


class Ignored(Exception):
    """The authenticator answers ``ignore`` (e.g. no key verifies)."""


class Crashed(Exception):
    """An Erlang exception outside the authenticator's try: refused."""


def _b64d(text):
    if not isinstance(text, str) or not re.fullmatch(r"[A-Za-z0-9_-]*", text):
        raise ValueError("not base64url")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _int(text):
    return int.from_bytes(_b64d(text), "big")


def read_jwks(body):
    """The keys ``jose_jwk:from`` makes of the endpoint's body, or ValueError."""
    data = json.loads(body)
    if not (isinstance(data, dict) and isinstance(data.get("keys"), list)):
        raise ValueError("not a JWK Set")
    keys = []
    for jwk in data["keys"]:
        if jwk.get("kty") == "EC":
            curve = {name: cls for name, cls, _h, _s in _EC.values()}[jwk["crv"]]
            keys.append(
                ec.EllipticCurvePublicNumbers(
                    _int(jwk["x"]), _int(jwk["y"]), curve()
                ).public_key()
            )
        elif jwk.get("kty") == "RSA":
            keys.append(
                rsa.RSAPublicNumbers(_int(jwk["e"]), _int(jwk["n"])).public_key()
            )
        else:
            raise ValueError(f"unsupported key {jwk.get('kty')}")
    return keys


def _jws_verify(key, token):
    """``jose_jws:verify(JWK, JWT)``: (True, payload) or (False, None);
    raises on a malformed token (EMQX catches it and tries the next key)."""
    parts = token.split(".")
    if len(parts) != 3:
        raise ValueError("not a compact JWS")
    header = json.loads(_b64d(parts[0]))
    alg = header.get("alg")
    signing_input = f"{parts[0]}.{parts[1]}".encode("ascii")
    signature = _b64d(parts[2])
    try:
        if alg in _EC and isinstance(key, ec.EllipticCurvePublicKey):
            _crv, curve, digest, size = _EC[alg]
            if not isinstance(key.curve, curve) or len(signature) != 2 * size:
                return False, None
            der = encode_dss_signature(
                int.from_bytes(signature[:size], "big"),
                int.from_bytes(signature[size:], "big"),
            )
            key.verify(der, signing_input, ec.ECDSA(digest()))
        elif alg in _RSA and isinstance(key, rsa.RSAPublicKey):
            key.verify(signature, signing_input, padding.PKCS1v15(), _RSA[alg]())
        else:
            # "none" is refused by jose's defaults; a key of another type
            # cannot verify this alg
            raise ValueError(f"alg {alg} with {type(key).__name__}")
    except InvalidSignature:
        return False, None
    return True, _b64d(parts[1])


def _to_num(value):
    """``try_convert_to_num``: numbers stay, numeric strings convert."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        if re.fullmatch(r"[+-]?\d+", value):
            return int(value)
        try:
            return float(value)
        except ValueError:
            return value
    return value


def _is_number(value):
    return isinstance(value, int | float) and not isinstance(value, bool)


def _render(template, variables):
    return _TEMPLATE_VAR.sub(lambda m: variables.get(m.group(1), m.group(0)), template)


def authenticate(token, keys, username, clientid, verify_claims=None, now=None):
    """EMQX's JWT authenticator with ``use_jwks = true``,
    ``disconnect_after_expire = true``, ``acl_claim_name = "acl"``.

    :param verify_claims: {claim: template}; default the one the README
        gives: ``username = "${username}", clientid = "${clientid}"``
    :return: the auth data EMQX keeps: ``expire_at`` (ms), ``is_superuser``,
        ``client_attrs``, ``acl`` ({"rules", "expire"})
    """
    now = int(time.time()) if now is None else now
    if verify_claims is None:
        verify_claims = {"username": "${username}", "clientid": "${clientid}"}
    variables = {"username": username, "clientid": clientid}
    expected = {name: _render(t, variables) for name, t in verify_claims.items()}
    claims = None
    for key in keys:
        try:
            ok, payload = _jws_verify(key, token)
        except (ValueError, KeyError, TypeError, UnicodeDecodeError):
            continue
        if ok:
            claims = json.loads(payload)
            break
    if claims is None:
        raise Ignored("invalid_signature")
    if not isinstance(claims, dict):
        raise Crashed("claims are not a JSON object")
    for name in ("exp", "nbf"):
        if name in claims:
            claims[name] = _to_num(claims[name])
    if "exp" in claims and not (_is_number(claims["exp"]) and now < claims["exp"]):
        raise Refused(f"exp {claims['exp']!r}")
    if "nbf" in claims and not (_is_number(claims["nbf"]) and claims["nbf"] <= now):
        raise Refused(f"nbf {claims['nbf']!r}")
    for name, value in expected.items():
        if name not in claims:
            raise Refused(f"missing claim {name}")
        # Erlang's term equality: a JSON number never equals a binary
        if not (isinstance(claims[name], str) and claims[name] == value):
            raise Refused(f"claim {name} {claims[name]!r}")
    data = {"is_superuser": _to_bool(claims.get("is_superuser", False))}
    attrs = {}
    for name, value in (claims.get("client_attrs") or {}).items():
        if _RESTRICTED_STR.match(name):
            if not isinstance(value, str):
                raise Crashed(f"iolist_to_binary({value!r})")
            attrs[name] = value
    data["client_attrs"] = attrs
    if "exp" in claims:
        if not isinstance(claims["exp"], int) or isinstance(claims["exp"], bool):
            raise Crashed(f"convert_time_unit({claims['exp']!r}, second, millisecond)")
        data["expire_at"] = claims["exp"] * 1000
    if "acl" in claims:
        data["acl"] = {
            "rules": compile_rules(claims["acl"]),
            "expire": claims.get("exp"),
        }
    return data


def _to_bool(value):
    return value in (True, "true")


def compile_rules(raw_rules):
    """emqx_authz_rule_raw:parse_and_compile_rules (rich actions on)."""
    if isinstance(raw_rules, dict):
        raise Refused("the v1 map format is not what Odoo sends")
    if not isinstance(raw_rules, list):
        raise Refused("acl is not a list")
    return [_compile_rule(raw) for raw in raw_rules]


def _compile_rule(raw):
    if not (isinstance(raw, dict) and "permission" in raw and "action" in raw):
        raise Refused(f"invalid_rule {raw!r}")
    if isinstance(raw.get("topic"), str):
        topics = [raw["topic"]]
    elif isinstance(raw.get("topics"), list):
        topics = raw["topics"]
    else:
        raise Refused("missing_topic_or_topics")
    compiled_topics = []
    for topic in topics:
        if not isinstance(topic, str):
            raise Refused(f"topic {topic!r}")
        if topic.startswith("eq "):
            compiled_topics.append(("eq", topic[3:].split("/")))
        elif _TEMPLATE_VAR.search(topic):
            compiled_topics.append(("pattern", topic))
        else:
            compiled_topics.append(("filter", topic.split("/")))
    permission = {"allow": "allow", "deny": "deny"}.get(raw["permission"])
    if not permission:
        raise Refused(f"invalid_permission {raw['permission']!r}")
    action = {"pub": "publish", "publish": "publish", "sub": "subscribe"}.get(
        raw["action"], raw["action"]
    )
    if action not in ("publish", "subscribe", "all"):
        raise Refused(f"invalid_action {raw['action']!r}")
    qos = _qos(raw.get("qos"))
    retain = _retain(raw.get("retain", "all")) if action != "subscribe" else "all"
    return permission, action, qos, retain, compiled_topics


def _qos(value):
    if value is None:
        return DEFAULT_QOS
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 2:
        return (value,)
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, list):
        raise Refused(f"invalid_qos {value!r}")
    result = []
    for item in items:
        if item in (0, 1, 2, "0", "1", "2") and not isinstance(item, bool):
            result.append(int(item))
        else:
            raise Refused(f"invalid_qos {value!r}")
    return tuple(result)


def _retain(value):
    table = {"0": False, "1": True, 0: False, 1: True, "true": True, "false": False}
    if isinstance(value, bool):
        return value
    if value in (None, "all"):
        return "all"
    if value in table:
        return table[value]
    raise Refused(f"invalid_retain {value!r}")


def _match_words(name, flt):
    """emqx_topic:match_words/2 (both as lists of words)."""
    if name and name[0].startswith("$") and flt and flt[0] in ("+", "#"):
        return False
    while True:
        if not name and not flt:
            return True
        if flt == ["#"]:
            return True
        if not name or not flt:
            return False
        if flt[0] == "+" or name[0] == flt[0]:
            name, flt = name[1:], flt[1:]
            continue
        return False


def authorize(data, clientinfo, action, topic, qos=0, retain=False, now=None):
    """emqx_authz_client_info:authorize/4 for an ACL from the token:
    "allow", "deny" or "nomatch" (falls through to the next source)."""
    now = int(time.time()) if now is None else now
    acl = data.get("acl")
    if acl is None:
        return "nomatch"
    expire = acl["expire"]
    if expire is not None and not (
        isinstance(expire, int) and not isinstance(expire, bool) and expire > now
    ):
        return "deny"
    words = topic.split("/")
    for permission, rule_action, rule_qos, rule_retain, topics in acl["rules"]:
        if rule_action not in (action, "all"):
            continue
        if qos not in rule_qos:
            continue
        if action == "publish" and rule_retain not in ("all", retain):
            continue
        for kind, value in topics:
            if kind == "eq":
                hit = words == value
            elif kind == "pattern":
                rendered = _TEMPLATE_VAR.sub(
                    lambda m: clientinfo.get(m.group(1), "\x00"), value
                )
                hit = "\x00" not in rendered and _topic_match(topic, rendered)
            else:
                hit = _topic_match(topic, "/".join(value))
            if hit:
                return permission
    return "nomatch"


def _topic_match(name, flt):
    """emqx_topic:match/2 on binaries (its ``$`` clauses first)."""
    if name.startswith("$") and flt[:1] in ("+", "#"):
        return False
    return _match_words(name.split("/"), flt.split("/"))
