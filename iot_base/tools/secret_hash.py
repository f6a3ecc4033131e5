# License LGPL-3.0 or later (https://www.gnu.org/licenses/lgpl).
"""How MQTT secrets are made, hashed and rendered for Mosquitto (no Odoo)."""

import base64
import re
import secrets

from passlib.context import CryptContext

SECRET_SIZE = 20  # bytes of randomness: 160 bits, shown as 40 hex digits
INDEX_SIZE = 8  # clear hex prefix used to find the row, as for Odoo API keys
# A secret is 40 hex digits; anything much longer is not ours and is refused
# before it reaches the hash function.
MAX_SECRET_LENGTH = 128
# What every secret Odoo issues or derives looks like: ``token_hex`` output.
SECRET_RE = re.compile(f"[0-9a-f]{{{2 * SECRET_SIZE}}}")
# Secrets are 160 random bits, so a slow KDF adds no protection against
# guessing: it only costs time on the broker's hot path (one check per MQTT
# CONNECT, in Odoo and in Mosquitto). PBKDF2-SHA512 with a 12-byte salt and a
# 64-byte key is the format of Mosquitto's ``$7$<iterations>$`` password
# lines, so the same stored hash also feeds a Mosquitto password file; one
# iteration is the cheapest salted line Mosquitto 2.0 reads (its own default,
# 101, cost Mosquitto 0.1 ms of its single thread per CONNECT, and Odoo the
# same per /iot/auth). Hashes issued with 101 rounds keep working until their
# secret is rotated.
SECRET_HASH_ROUNDS = 1
SECRET_CRYPT_CONTEXT = CryptContext(
    ["pbkdf2_sha512"],
    pbkdf2_sha512__rounds=SECRET_HASH_ROUNDS,
    pbkdf2_sha512__salt_size=12,
)


def new_secret(secret=None):
    """A fresh random secret (or ``secret``): (clear secret, clear index, hash)."""
    secret = secret or secrets.token_hex(SECRET_SIZE)
    return secret, secret[:INDEX_SIZE], SECRET_CRYPT_CONTEXT.hash(secret)


def is_secret_format(secret):
    """Whether ``secret`` has the exact form of an issued secret.

    Checked before hashing: HMAC pads a short key with zero bytes, so the
    right secret plus a trailing NUL would otherwise hash the same.
    """
    return isinstance(secret, str) and SECRET_RE.fullmatch(secret) is not None


def verify_secret(secret, secret_hash):
    return is_secret_format(secret) and SECRET_CRYPT_CONTEXT.verify(secret, secret_hash)


def _ab64_to_b64(value):
    """passlib's adapted base64 ('.' for '+', no padding) to standard base64."""
    raw = value.replace(".", "+")
    return base64.b64encode(base64.b64decode(raw + "=" * (-len(raw) % 4))).decode()


def mosquitto_hash(passlib_hash):
    """Render a stored ``$pbkdf2-sha512$`` hash as a Mosquitto ``$7$`` hash.

    Returns None for any other format, so a caller never writes a line that
    Mosquitto would misread.
    """
    parts = passlib_hash.split("$")
    if len(parts) != 5 or parts[1] != "pbkdf2-sha512":
        return None
    rounds, salt, checksum = parts[2], parts[3], parts[4]
    return f"$7${rounds}${_ab64_to_b64(salt)}${_ab64_to_b64(checksum)}"
