# License LGPL-3.0 or later (https://www.gnu.org/licenses/lgpl).
"""RabbitMQ 3.10 internal users kept by Odoo, through the management HTTP
API (rabbitmq_management 3.10.8): the node checks CONNECTs against its own
users (``auth_backends.1 = internal``) and asks Odoo's HTTP backend only for
the logins it does not hold (console users).

* a full run reads ``GET /api/users``, ``/api/permissions`` and
  ``/api/topic-permissions``, pushes the difference in one
  ``POST /api/definitions`` (users with ``password_hash`` and
  ``hashing_algorithm``, permissions, topic permissions) and deletes the
  users tagged :data:`rabbitmq_store.TAG` that Odoo no longer has;
* an incremental run pushes what changed since the last one the same way;
* a deleted login: ``DELETE /api/users/{name}``, then
  ``DELETE /api/connections/username/{name}`` (deleting a user does not
  close its connections); a changed login's connections are closed too, as
  RabbitMQ checks the password and caches the topic checks at CONNECT.
"""

from urllib.parse import quote

from odoo import api, models

from ..tools import rabbitmq_store
from .iot_broker_session import CLOSE_REASON

ENABLED_PARAM = "iot_base.rabbitmq_store_enabled"
VHOST_PARAM = "iot_base.rabbitmq_store_vhost"
# above this many logins to cut, list the connections first
BULK_CLOSE = 20
# logins per definitions import
IMPORT_BATCH = 2000


class IotRabbitmqStore(models.AbstractModel):
    _name = "iot.rabbitmq.store"
    _inherit = "iot.store.adapter"
    _description = "RabbitMQ Internal Users"
    _store_key = "rabbitmq"
    _enabled_param = ENABLED_PARAM

    @api.model
    def _get_config(self):
        config = dict(self.env["iot.broker.session"]._get_config()["rabbitmq"])
        params = self.env["ir.config_parameter"].sudo()
        config["vhost"] = params.get_param(VHOST_PARAM) or "/"
        return config

    @api.model
    def _render(self, row, rules):
        _cid, username, _kind, _co, _user, superuser, _exp, hash_, _salt = row
        topic_perms, notes = rabbitmq_store.topic_permissions(rules, superuser)
        state = rabbitmq_store.login_state(
            hash_,
            rabbitmq_store.resource_permissions(username),
            topic_perms,
            # a new vhost changes every login: all are pushed there again
            self.env["ir.config_parameter"].sudo().get_param(VHOST_PARAM) or "/",
        )
        return state, notes

    @api.model
    def _read_broker_states(self, config):
        """{login: state} of the tagged users the node holds."""
        vhost = config["vhost"]
        users = self._call(config, "GET", "/api/users", (200,)).json()
        managed = {
            user["name"]: user
            for user in users
            if rabbitmq_store.TAG in _tags(user.get("tags"))
        }
        path = quote(vhost, safe="")
        permissions = {
            p["user"]: p
            for p in self._call(
                config, "GET", f"/api/vhosts/{path}/permissions", (200,)
            ).json()
            if p["user"] in managed
        }
        topic_perms = {
            p["user"]: p
            for p in self._call(
                config, "GET", f"/api/vhosts/{path}/topic-permissions", (200,)
            ).json()
            if p["user"] in managed and p["exchange"] == rabbitmq_store.EXCHANGE
        }
        empty = {"configure": "", "write": "", "read": ""}
        return {
            name: rabbitmq_store.login_state(
                user.get("password_hash"),
                permissions.get(name, empty),
                topic_perms.get(name, {"write": "", "read": ""}),
                vhost,
            )
            | {
                "hashing_algorithm": user.get("hashing_algorithm"),
                "tags": sorted(_tags(user.get("tags"))),
            }
            for name, user in managed.items()
        }

    @api.model
    def _push(self, config, states):
        # in batches: the management API refuses a body over
        # management.http.max_body_size (10 MB; ~1 KB per login)
        logins = sorted(states)
        for start in range(0, len(logins), IMPORT_BATCH):
            batch = {
                login: states[login] for login in logins[start : start + IMPORT_BATCH]
            }
            self._call(
                config,
                "POST",
                "/api/definitions",
                (200, 201, 204),
                json=rabbitmq_store.definitions(batch, config["vhost"]),
            )

    @api.model
    def _delete(self, config, logins):
        if len(logins) == 1:
            self._call(
                config, "DELETE", f"/api/users/{quote(logins[0], safe='')}", (204, 404)
            )
        else:
            self._call(
                config,
                "POST",
                "/api/users/bulk-delete",
                (204,),
                json={"users": list(logins)},
            )
        self._close(config, logins)

    @api.model
    def _close(self, config, logins):
        """Close the connections of ``logins``; for many, only of those the
        node lists as connected (one call instead of one per login)."""
        if len(logins) > BULK_CLOSE:
            response = self._call(
                config, "GET", "/api/connections?columns=user", (200,)
            )
            connected = {c.get("user") for c in response.json()}
            logins = [login for login in logins if login in connected]
        for login in logins:
            self._call(
                config,
                "DELETE",
                f"/api/connections/username/{quote(login, safe='')}",
                (200, 204, 404),
                headers={"X-Reason": CLOSE_REASON},
            )


def _tags(value):
    """RabbitMQ 3.10 reports tags as a list (older: a comma-separated text)."""
    if isinstance(value, list):
        return set(value)
    return {tag for tag in (value or "").split(",") if tag}
