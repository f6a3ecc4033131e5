# License LGPL-3.0 or later (https://www.gnu.org/licenses/lgpl).
"""The MQTT identity policy, in one place: which usernames a credential may
have, which of them are Odoo's own, and which client ids belong to which
username. Plain Python, no Odoo import: models, stores and broker checks all
ask here.

A username must be usable unchanged by every supported broker:

* a Mosquitto 2.0 password-file key and ``user`` line (no ``:``, no space:
  the Mosquitto sync skips names with ``:``), and ``%u`` in ACL patterns (no
  ``+``, ``#`` or ``/``);
* one segment of a REST path on the RabbitMQ management API
  (``/api/users/<u>``, ``/api/connections/username/<u>``) and the EMQX API
  (``.../built_in_database/users/<u>``): a segment that is only dots is a
  dot-segment (RFC 3986 §5.2.4), which HTTP clients and servers remove, so
  ``..`` would address the parent collection (all of EMQX's rules, its
  authenticator), never the user: no username is made of dots only;
* not a RabbitMQ routing-key word when it holds a ``.``: the MQTT plugin
  maps ``/`` to ``.`` (tools/rabbitmq/__init__.py), so ``dev.1`` would be
  two words and ``dev``'s rules would reach it; RabbitMQ's checks refuse
  such a username (``username_denied``).
"""

import hashlib
import hmac
import re

USERNAME_MAX = 128
# MQTT allows any UTF-8 username; ours is ASCII, and also safe in log lines
USERNAME_RE = re.compile(rf"[A-Za-z0-9_.:@-]{{1,{USERNAME_MAX}}}")
# usernames only Odoo's own code gives out (its publisher, each company's
# listener): whoever took one first would get, or block, what Odoo gives it
RESERVED_PREFIX = "odoo_"
# A client id belongs to one credential: the id equal to its username, or the
# username, CLIENT_ID_SEPARATOR and a short suffix (one per connection). No
# username can hold the separator, so no username is a prefix of another's
# ids. It is also the separator of the per-secret Mosquitto logins
# (iot_mosquitto_sync.LOGIN_SEPARATOR): such a login, which Mosquitto uses as
# client id (use_username_as_clientid), is its credential's.
CLIENT_ID_SEPARATOR = "~"
CLIENT_ID_SUFFIX_RE = re.compile(r"[A-Za-z0-9_.:@-]{1,64}")
# The client id issued with a device's secret: ``<username>~<32 hex>``, the
# suffix an HMAC of the secret. Brokers that do not bind client ids to users
# (RabbitMQ 3.10 registers them cluster-wide by the id alone) let anyone who
# knows a device's client id knock it off; usernames are in topics, this id
# is known only to whoever holds the secret, and Odoo stores nothing more.
ISSUED_SUFFIX_HEX = 32  # 128 bits
_ISSUED_LABEL = b"iot_base issued client id"

# why a username is refused (username_problem)
BAD_CHARSET = "charset"
ONLY_DOTS = "dots"
RESERVED = "reserved"


def username_problem(username, odoo_own=False):
    """Why ``username`` cannot be given to a credential: :data:`BAD_CHARSET`,
    :data:`ONLY_DOTS`, :data:`RESERVED` (an ``odoo_`` name, unless
    ``odoo_own``: Odoo's own code is giving it to its own service), or None.
    """
    if not isinstance(username, str) or not USERNAME_RE.fullmatch(username):
        return BAD_CHARSET
    if not username.strip("."):
        return ONLY_DOTS
    if not odoo_own and username.startswith(RESERVED_PREFIX):
        return RESERVED
    return None


def is_username(username):
    """Whether ``username`` can name a credential at all (Odoo's own
    included)."""
    return username_problem(username, odoo_own=True) is None


def client_id_owner(client_id):
    """The username owning the MQTT client id ``client_id``, or None when no
    credential may use it. The one place of the client id policy: every
    broker check asks it."""
    if not isinstance(client_id, str):
        return None
    username, separator, suffix = client_id.partition(CLIENT_ID_SEPARATOR)
    if separator and not CLIENT_ID_SUFFIX_RE.fullmatch(suffix):
        return None
    return username if is_username(username) else None


def owns_client_id(username, client_id):
    """Whether the credential named ``username`` may connect as ``client_id``."""
    return isinstance(username, str) and client_id_owner(client_id) == username


def make_client_id(username, suffix):
    """A client id of the credential ``username`` (``suffix`` as the policy
    allows it, e.g. a few random hex digits)."""
    client_id = f"{username}{CLIENT_ID_SEPARATOR}{suffix}"
    if not owns_client_id(username, client_id):
        raise ValueError(f"not a client id of {username!r}: {client_id!r}")
    return client_id


def issued_client_id(username, secret):
    """The client id issued to the credential ``username`` with ``secret``."""
    digest = hmac.new(secret.encode(), _ISSUED_LABEL, hashlib.sha256).hexdigest()
    return make_client_id(username, digest[:ISSUED_SUFFIX_HEX])


def is_issued_client_id(username, secret, client_id):
    """Whether ``client_id`` is the one issued to ``username`` with
    ``secret`` (constant time)."""
    if not (isinstance(secret, str) and isinstance(client_id, str)):
        return False
    if not owns_client_id(username, client_id):
        return False
    expected = issued_client_id(username, secret)
    return hmac.compare_digest(expected.encode(), client_id.encode())
