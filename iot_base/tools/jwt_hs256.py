# License LGPL-3.0 or later (https://www.gnu.org/licenses/lgpl).
"""HS256 (HMAC with SHA-256) JSON Web Tokens, RFC 7515/7518, for a broker
that cannot fetch a JWKS: Odoo and the broker share the secret.

Plain Python, no Odoo import.
"""

import hashlib
import hmac
import json

from .jwt_es256 import b64url

ALGORITHM = "HS256"
# RFC 7518 3.2: a key of at least the hash's size
MIN_SECRET_BYTES = 32


def sign(secret, kid, claims):
    """A compact JWS of ``claims`` with ``secret`` (bytes or str)."""
    if isinstance(secret, str):
        secret = secret.encode("utf-8")
    header = {"alg": ALGORITHM, "typ": "JWT", "kid": kid}
    signing_input = ".".join(
        b64url(json.dumps(part, separators=(",", ":"), sort_keys=True).encode())
        for part in (header, claims)
    )
    mac = hmac.new(secret, signing_input.encode("ascii"), hashlib.sha256).digest()
    return f"{signing_input}.{b64url(mac)}"


def secret_problem(secret):
    """Why ``secret`` cannot be an HS256 key (English), or None."""
    if not isinstance(secret, str) or not secret:
        return "The HS256 secret is empty."
    if len(secret.encode("utf-8")) < MIN_SECRET_BYTES:
        return f"The HS256 secret must be at least {MIN_SECRET_BYTES} bytes long."
    if not secret.isprintable() or secret != secret.strip():
        return "The HS256 secret must be printable, without surrounding spaces."
    return None
