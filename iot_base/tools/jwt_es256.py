# License LGPL-3.0 or later (https://www.gnu.org/licenses/lgpl).
"""ES256 (ECDSA P-256 with SHA-256) JSON Web Tokens, RFC 7515/7518.

Only what Odoo needs to sign console tokens and publish its public keys:
plain ``cryptography``, no Odoo import.
"""

import base64
import json

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

ALGORITHM = "ES256"
_COORDINATE_SIZE = 32  # bytes of a P-256 coordinate, and of r and s


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def new_private_pem():
    """A fresh P-256 private key, as unencrypted PKCS#8 PEM text."""
    key = ec.generate_private_key(ec.SECP256R1())
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode("ascii")


def public_jwk(private_pem, kid):
    """The public half of ``private_pem`` as a JWK (RFC 7518 section 6.2)."""
    numbers = _load(private_pem).public_key().public_numbers()
    return {
        "kty": "EC",
        "crv": "P-256",
        "x": b64url(numbers.x.to_bytes(_COORDINATE_SIZE, "big")),
        "y": b64url(numbers.y.to_bytes(_COORDINATE_SIZE, "big")),
        "use": "sig",
        "alg": ALGORITHM,
        "kid": kid,
    }


def sign(private_pem, kid, claims):
    """A compact JWS of ``claims`` (a JSON-serializable dict)."""
    header = {"alg": ALGORITHM, "typ": "JWT", "kid": kid}
    signing_input = ".".join(
        b64url(json.dumps(part, separators=(",", ":"), sort_keys=True).encode())
        for part in (header, claims)
    )
    der = _load(private_pem).sign(
        signing_input.encode("ascii"), ec.ECDSA(hashes.SHA256())
    )
    # JWS wants r || s, each of the curve's size, not DER (RFC 7518 3.4)
    r, s = decode_dss_signature(der)
    raw = r.to_bytes(_COORDINATE_SIZE, "big") + s.to_bytes(_COORDINATE_SIZE, "big")
    return f"{signing_input}.{b64url(raw)}"


def _load(private_pem):
    return serialization.load_pem_private_key(
        private_pem.encode("ascii"), password=None
    )
