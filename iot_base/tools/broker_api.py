# License LGPL-3.0 or later (https://www.gnu.org/licenses/lgpl).
"""The one client of the broker REST APIs Odoo calls (no Odoo): RabbitMQ's
management API (rabbitmq_management 3.10) and EMQX's REST API (``/api/v5``,
5.8). Stores and the session cut-off call these methods; nobody else
formats a broker URL.

Every path is a fixed template whose variable parts go through
:func:`segment`: percent-encoded except the RFC 3986 unreserved characters,
and refused when they cannot be sent unambiguously (empty, all dots, which
HTTP clients and servers remove as dot segments, control characters, not
text). No redirect is followed (a 3xx is an error), timeouts are bounded,
and no error text holds a secret or a login: it shows the origin, the
method and the route template.
"""

import string
import time
from urllib.parse import quote, urlsplit

import requests

_UNRESERVED = frozenset(string.ascii_letters + string.digits + "-._~")
_LOGIN = "…"  # what an error shows in place of a variable segment
# what RabbitMQ tells a client whose connection Odoo closes
CLOSE_REASON = "MQTT credential revoked in Odoo"
# above this many users to disconnect, RabbitMQ lists its connections first
BULK_CLOSE = 20


class BrokerApiError(Exception):
    """A broker API call that failed; the text holds no secret and no login."""

    def __init__(self, message, status=None):
        super().__init__(message)
        self.status = status


class UnaddressableError(BrokerApiError, ValueError):
    """A name that no path segment can carry unambiguously."""


def segment(value):
    """``value`` as one encoded path segment; raises UnaddressableError."""
    if not isinstance(value, str):
        raise UnaddressableError("a path segment must be text")
    if not value.strip("."):
        # "", ".", "..": removed or resolved by HTTP clients and servers
        # (RFC 3986 §5.2.4); longer all-dot names are refused alike
        raise UnaddressableError("an empty or all-dot name cannot be addressed")
    if any(ord(char) < 0x20 or ord(char) == 0x7F for char in value):
        raise UnaddressableError("a name with control characters cannot be addressed")
    try:
        data = value.encode("utf-8")
    except UnicodeEncodeError:
        raise UnaddressableError("a name that is not valid text") from None
    return quote(data, safe="")


def addressable(value):
    """Whether ``value`` can be a path segment (see :func:`segment`)."""
    try:
        segment(value)
    except UnaddressableError:
        return False
    return True


def origin(url):
    """``scheme://host:port`` of ``url``: what an error may show of it."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname}" + (
        f":{parts.port}" if parts.port else ""
    )


class BrokerApi:
    """Basic-auth JSON calls to one broker API at ``url``; each call waits at
    most ``timeout`` seconds (connect, then each read) and never past
    ``deadline`` (a ``time.monotonic()`` value), when given."""

    def __init__(self, url, user, password, timeout=30.0, deadline=None):
        url = (url or "").strip().rstrip("/")
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise BrokerApiError("the broker API URL must be an http(s) URL")
        if parts.username or parts.password or parts.query or parts.fragment:
            raise BrokerApiError(
                "the broker API URL must hold no credentials, query or fragment"
            )
        self.url = url
        self.origin = origin(url)
        self._auth = (user or "", password or "")
        self.timeout = timeout
        self.deadline = deadline

    def call(self, method, template, args=(), expected=(200,), **kwargs):
        """``method`` on ``template`` (its ``{}`` filled with the encoded
        ``args``); returns the response when its status is ``expected``,
        raises BrokerApiError otherwise."""
        path = template.format(*(segment(arg) for arg in args))
        route = template.format(*(_LOGIN for _arg in args))
        timeout = self.timeout
        if self.deadline is not None:
            left = self.deadline - time.monotonic()
            if left <= 0:
                raise BrokerApiError(f"{self.origin}: time budget used up")
            timeout = min(timeout, left)
        try:
            response = requests.request(
                method,
                self.url + path,
                auth=self._auth,
                timeout=timeout,
                allow_redirects=False,
                **kwargs,
            )
        except requests.RequestException as exc:
            raise BrokerApiError(
                f"{self.origin} unreachable ({exc.__class__.__name__})"
            ) from None
        if response.status_code not in expected:
            raise BrokerApiError(
                f"{self.origin} answered HTTP {response.status_code} "
                f"to {method} {route}",
                status=response.status_code,
            )
        return response

    def json(self, response, kind=(list, dict)):
        try:
            body = response.json()
        except ValueError:
            body = None
        if not isinstance(body, kind):
            raise BrokerApiError(f"{self.origin}: not the expected JSON answer")
        return body


class RabbitmqManagement(BrokerApi):
    """The operations of the RabbitMQ 3.10 management API Odoo uses."""

    def users(self):
        return self.json(self.call("GET", "/api/users"), list)

    def user(self, name):
        """The user ``name`` (a dict), or None when the node has none."""
        response = self.call("GET", "/api/users/{}", (name,), (200, 404))
        return self.json(response, dict) if response.status_code == 200 else None

    def permissions(self, vhost):
        return self.json(self.call("GET", "/api/vhosts/{}/permissions", (vhost,)))

    def topic_permissions(self, vhost):
        return self.json(self.call("GET", "/api/vhosts/{}/topic-permissions", (vhost,)))

    def import_definitions(self, definitions):
        self.call(
            "POST", "/api/definitions", expected=(200, 201, 204), json=definitions
        )

    def delete_user(self, name):
        """Delete the user ``name``, which must exist (204, nothing else)."""
        self.call("DELETE", "/api/users/{}", (name,), (204,))

    def delete_users(self, names):
        """Delete ``names`` in one call (the node answers 204 whichever of
        them existed: the caller checks)."""
        self.call(
            "POST", "/api/users/bulk-delete", expected=(204,), json={"users": names}
        )

    def connected_users(self):
        response = self.call("GET", "/api/connections", params={"columns": "user"})
        return {c.get("user") for c in self.json(response, list) if isinstance(c, dict)}

    def close_connections(self, name, reason):
        """Close every connection of the user ``name`` (none: 404, fine)
        (rabbit_mgmt_wm_connection_user_name)."""
        self.call(
            "DELETE",
            "/api/connections/username/{}",
            (name,),
            (200, 204, 404),
            headers={"X-Reason": reason},
        )

    def disconnect_users(self, names, reason=CLOSE_REASON):
        """Close every connection of each user of ``names``; for many, only
        of those the node lists as connected (one call instead of one per
        user). Return how many users were handled."""
        names = list(names)
        if len(names) > BULK_CLOSE:
            connected = self.connected_users()
            names = [name for name in names if name in connected]
        for name in names:
            self.close_connections(name, reason)
        return len(names)


EMQX_AUTHN = "/api/v5/authentication/password_based%3Abuilt_in_database"
EMQX_RULES = "/api/v5/authorization/sources/built_in_database/rules/users"
EMQX_PAGE_LIMIT = 1000  # EMQX 5.8 accepts 1..10000


class EmqxRest(BrokerApi):
    """The operations of the EMQX 5.8 REST API Odoo uses: the built-in
    database's users (emqx_authn_mnesia) and rules (emqx_authz_api_mnesia),
    and clients (emqx_mgmt_api_clients)."""

    page_limit = EMQX_PAGE_LIMIT

    def _pages(self, template, params=None):
        page = 1
        while True:
            response = self.call(
                "GET",
                template,
                params=dict(params or {}, page=page, limit=self.page_limit),
            )
            body = self.json(response, dict)
            data, meta = body.get("data"), body.get("meta")
            if not isinstance(data, list) or not isinstance(meta, dict):
                raise BrokerApiError(f"{self.origin}: not a paged list")
            yield from (row for row in data if isinstance(row, dict))
            if not meta.get("hasnext"):
                return
            page += 1

    def import_users(self, users):
        """Import ``users`` (hash form); returns EMQX's counts."""
        response = self.call(
            "POST",
            EMQX_AUTHN + "/import_users",
            params={"type": "hash"},
            json=users,
        )
        return self.json(response, dict)

    def user(self, user_id):
        """The built-in database user (``user_id``, ``is_superuser``: EMQX
        shows nothing else of it), or None."""
        response = self.call("GET", EMQX_AUTHN + "/users/{}", (user_id,), (200, 404))
        return self.json(response, dict) if response.status_code == 200 else None

    def user_ids(self):
        return {row.get("user_id") for row in self._pages(EMQX_AUTHN + "/users")}

    def delete_user(self, user_id):
        """Delete the user ``user_id``, which must exist (204, nothing else)."""
        self.call("DELETE", EMQX_AUTHN + "/users/{}", (user_id,), (204,))

    def rules(self, username):
        """The rules of ``username``, or None when it has none."""
        response = self.call("GET", EMQX_RULES + "/{}", (username,), (200, 404))
        if response.status_code == 404:
            return None
        return self.json(response, dict).get("rules")

    def rule_usernames(self):
        return {row.get("username") for row in self._pages(EMQX_RULES)}

    def put_rules(self, username, rules):
        self.call(
            "PUT",
            EMQX_RULES + "/{}",
            (username,),
            (200, 204),
            json={"username": username, "rules": rules},
        )

    def delete_rules(self, username):
        """Delete the rules of ``username``; False when it had none."""
        response = self.call("DELETE", EMQX_RULES + "/{}", (username,), (204, 404))
        return response.status_code == 204

    def client_ids(self, username):
        return {
            row["clientid"]
            for row in self._pages("/api/v5/clients", {"username": username})
            if row.get("username") == username and isinstance(row.get("clientid"), str)
        }

    def kick(self, clientid):
        """Disconnect ``clientid``; False when it was gone meanwhile."""
        response = self.call("DELETE", "/api/v5/clients/{}", (clientid,), (204, 404))
        return response.status_code == 204

    def kick_user(self, username):
        """Disconnect every client of ``username``; return how many."""
        return sum(self.kick(cid) for cid in sorted(self.client_ids(username)))

    def disconnect_users(self, usernames):
        """Disconnect every client of each of ``usernames``; return how many
        clients were kicked."""
        return sum(self.kick_user(username) for username in usernames)


CLIENTS = {"rabbitmq": RabbitmqManagement, "emqx": EmqxRest}
