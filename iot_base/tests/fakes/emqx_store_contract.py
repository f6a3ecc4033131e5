# License LGPL-3.0 or later (https://www.gnu.org/licenses/lgpl).
"""CONTRACT TEST server for the EMQX 5 REST calls of the built-in database
store (``iot.emqx.store``). Not a broker: it implements the request formats
strictly and checks what a real EMQX would check with what it receives.

* every call: Basic auth ``api_key:api_secret``, else 401;
* ``POST .../password_based%3Abuilt_in_database/import_users?type=hash``:
  a JSON array of objects with exactly ``user_id`` (string),
  ``password_hash`` (string), ``salt`` (string), ``is_superuser`` (boolean),
  else 400 and nothing imported (one transaction per call); existing users
  are overridden; 200 ``{total, success, override, skipped, failed}``;
* ``POST .../users`` (a clear password) is refused and recorded: Odoo must
  never use it;
* ``GET .../users/{user_id}``: 200 ``{user_id, is_superuser}`` (EMQX shows
  nothing else of a user), or 404; ``GET .../users?page=&limit=``: paged
  ``{data, meta: {page, limit, count, hasnext}}``;
* ``DELETE .../users/{user_id}``: 204, or 404 ``NOT_FOUND``;
* ``PUT /api/v5/authorization/sources/built_in_database/rules/users/{name}``:
  ``{"username": name, "rules": [...]}``, at most 100 rules of exactly
  ``topic``, ``permission`` (allow|deny), ``action`` (publish|subscribe|all),
  optional ``qos`` (list of 0..2) and ``retain`` (boolean or "all"); 204;
* ``GET`` of the same path: 200 ``{username, rules}`` or 404; ``GET
  .../rules/users?page=&limit=``: paged;
* ``DELETE`` of the same path: 204 or 404 (emqx_authz_api_mnesia);
* ``GET /api/v5/clients?username=`` and ``DELETE /api/v5/clients/{id}``.

Hashes are verified as EMQX's salted sha256 with ``salt_position = prefix``
does (emqx_passwd): ``hex(sha256(salt + password))``, compared
case-insensitively, the salt being the UTF-8 bytes of the JSON string,
against the clear secrets the test holds (:attr:`secrets`).
"""

import base64
import hashlib
import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler
from urllib.parse import parse_qs, unquote, urlsplit

from ..common import LoopbackHttpServer

AUTHN = "/api/v5/authentication/password_based%3Abuilt_in_database"
RULES = "/api/v5/authorization/sources/built_in_database/rules/users/"
USER_FIELDS = {
    "user_id": str,
    "password_hash": str,
    "salt": str,
    "is_superuser": bool,
}
RULE_FIELDS = {"topic", "permission", "action", "qos", "retain"}


class EmqxStoreContractServer(LoopbackHttpServer):
    def __init__(self, key, secret, delay=0.0):
        self.auth = "Basic " + base64.b64encode(f"{key}:{secret}".encode()).decode()
        self.users = {}  # user_id -> {password_hash, salt, is_superuser}
        self.rules = {}  # username -> rules
        self.clients = {}  # clientid -> username
        self.secrets = {}  # user_id -> clear secret the test holds
        self.requests = []  # (method, path)
        self.violations = []  # what a real EMQX would refuse or get wrong
        self.delay = delay  # seconds each import takes
        self.in_flight = 0
        self.max_in_flight = 0
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *_args):
                pass

            def _reply(self, status, body=None):
                data = json.dumps(body).encode() if body is not None else b""
                self.send_response(status)
                if body is not None:
                    self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _body(self):
                length = int(self.headers.get("Content-Length") or 0)
                try:
                    return json.loads(self.rfile.read(length) or b"null")
                except ValueError:
                    return ValueError

            def _handle(self, method):
                with server.lock:
                    server.requests.append((method, self.path))
                    server.in_flight += 1
                    server.max_in_flight = max(server.max_in_flight, server.in_flight)
                try:
                    if self.headers.get("Authorization") != server.auth:
                        return self._reply(401, {"code": "BAD_API_KEY_OR_SECRET"})
                    return server.route(self, method, urlsplit(self.path))
                finally:
                    with server.lock:
                        server.in_flight -= 1

            def do_GET(self):
                self._handle("GET")

            def do_POST(self):
                self._handle("POST")

            def do_PUT(self):
                self._handle("PUT")

            def do_DELETE(self):
                self._handle("DELETE")

        self._serve(Handler)

    # ------------------------------------------------------------------

    def route(self, handler, method, url):
        path = url.path
        if method == "POST" and path == f"{AUTHN}/import_users":
            return self.import_users(handler, parse_qs(url.query))
        if method == "POST" and path == f"{AUTHN}/users":
            self.violations.append("POST /users: a clear password sent")
            return handler._reply(400, {"code": "BAD_REQUEST"})
        if method == "GET" and path == f"{AUTHN}/users":
            with self.lock:
                rows = [
                    {"user_id": uid, "is_superuser": user["is_superuser"]}
                    for uid, user in sorted(self.users.items())
                ]
            return self.page(handler, rows, parse_qs(url.query))
        if method == "GET" and path == RULES[:-1]:
            with self.lock:
                rows = [
                    {"username": name, "rules": rules}
                    for name, rules in sorted(self.rules.items())
                ]
            return self.page(handler, rows, parse_qs(url.query))
        match = re.fullmatch(re.escape(AUTHN) + r"/users/([^/]+)", path)
        if method == "GET" and match:
            user_id = unquote(match.group(1))
            with self.lock:
                user = self.users.get(user_id)
            if user is None:
                return handler._reply(404, {"code": "NOT_FOUND"})
            return handler._reply(
                200, {"user_id": user_id, "is_superuser": user["is_superuser"]}
            )
        if method == "DELETE" and match:
            with self.lock:
                found = self.users.pop(unquote(match.group(1)), None)
            return handler._reply(
                204 if found else 404, None if found else {"code": "NOT_FOUND"}
            )
        if path.startswith(RULES):
            username = unquote(path[len(RULES) :])
            if method == "PUT":
                return self.put_rules(handler, username)
            if method == "GET":
                with self.lock:
                    rules = self.rules.get(username)
                if rules is None:
                    return handler._reply(404, {"code": "NOT_FOUND"})
                return handler._reply(200, {"username": username, "rules": rules})
            if method == "DELETE":
                with self.lock:
                    found = self.rules.pop(username, None)
                return handler._reply(204 if found is not None else 404)
        if method == "GET" and path == "/api/v5/clients":
            usernames = parse_qs(url.query).get("username")
            with self.lock:
                rows = [
                    {"clientid": cid, "username": user}
                    for cid, user in sorted(self.clients.items())
                    if usernames is None or user in usernames
                ]
            return handler._reply(
                200, {"data": rows, "meta": {"count": len(rows), "hasnext": False}}
            )
        match = re.fullmatch(r"/api/v5/clients/([^/]+)", path)
        if method == "DELETE" and match:
            clientid = unquote(match.group(1))
            with self.lock:
                username = self.clients.pop(clientid, None)
            return handler._reply(204 if username is not None else 404)
        return handler._reply(404, {"code": "NOT_FOUND"})

    @staticmethod
    def page(handler, rows, query):
        try:
            page = int(query.get("page", ["1"])[0])
            limit = int(query.get("limit", ["100"])[0])
        except ValueError:
            page = limit = 0
        if page < 1 or not 1 <= limit <= 10000:
            return handler._reply(400, {"code": "INVALID_PARAMETER"})
        chunk = rows[(page - 1) * limit : page * limit]
        meta = {
            "page": page,
            "limit": limit,
            "count": len(rows),
            "hasnext": page * limit < len(rows),
        }
        return handler._reply(200, {"data": chunk, "meta": meta})

    def import_users(self, handler, query):
        if query.get("type") != ["hash"]:
            self.violations.append(f"import_users type {query.get('type')}")
            return handler._reply(400, {"code": "BAD_REQUEST"})
        body = handler._body()
        if not isinstance(body, list) or not all(
            isinstance(user, dict)
            and set(user) == set(USER_FIELDS)
            and all(isinstance(user[k], t) for k, t in USER_FIELDS.items())
            for user in body
        ):
            self.violations.append("import_users: malformed body")
            return handler._reply(400, {"code": "BAD_REQUEST"})
        time.sleep(self.delay)
        override = 0
        with self.lock:
            for user in body:
                override += user["user_id"] in self.users
                self.users[user["user_id"]] = {
                    "password_hash": user["password_hash"],
                    "salt": user["salt"],
                    "is_superuser": user["is_superuser"],
                }
                secret = self.secrets.get(user["user_id"])
                if secret is None or not self.authenticate(user["user_id"], secret):
                    self.violations.append(f"{user['user_id']}: hash does not verify")
        return handler._reply(
            200,
            {
                "total": len(body),
                "success": len(body),
                "override": override,
                "skipped": 0,
                "failed": 0,
            },
        )

    def put_rules(self, handler, username):
        body = handler._body()
        ok = (
            isinstance(body, dict)
            and set(body) == {"username", "rules"}
            and body["username"] == username
            and isinstance(body["rules"], list)
            and len(body["rules"]) <= 100
            and all(self._rule_ok(rule) for rule in body["rules"])
        )
        if not ok:
            self.violations.append(f"rules of {username}: malformed body")
            return handler._reply(400, {"code": "BAD_REQUEST"})
        if body["rules"][-1:] != [
            {"permission": "deny", "action": "all", "topic": "#"}
        ] and body["rules"][-1:] != [
            {"topic": "#", "permission": "allow", "action": "all"}
        ]:
            self.violations.append(f"rules of {username} do not end with a deny")
        with self.lock:
            self.rules[username] = body["rules"]
        return handler._reply(204)

    @staticmethod
    def _rule_ok(rule):
        return (
            isinstance(rule, dict)
            and set(rule) <= RULE_FIELDS
            and {"topic", "permission", "action"} <= set(rule)
            and isinstance(rule["topic"], str)
            and rule["permission"] in ("allow", "deny")
            and rule["action"] in ("publish", "subscribe", "all")
            and (
                "qos" not in rule
                or (
                    isinstance(rule["qos"], list)
                    and all(q in (0, 1, 2) and isinstance(q, int) for q in rule["qos"])
                )
            )
            and ("retain" not in rule or rule["retain"] in (True, False, "all"))
        )

    def authenticate(self, user_id, password):
        """EMQX's check of a CONNECT against the built-in database."""
        user = self.users.get(user_id)
        if user is None:
            return False
        computed = hashlib.sha256(
            user["salt"].encode("utf-8") + password.encode("utf-8")
        ).hexdigest()
        return computed == user["password_hash"].lower()
