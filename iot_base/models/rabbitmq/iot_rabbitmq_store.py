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
* before any write or delete, each login's user is read: only an absent
  or tagged user is written, only a tagged one deleted (:meth:`_claims`);
* a deleted login: ``DELETE /api/users/{name}`` (204, else the run fails),
  then ``DELETE /api/connections/username/{name}`` (deleting a user does not
  close its connections); a changed login's connections are closed too, as
  RabbitMQ checks the password and caches the topic checks at CONNECT.

Every call goes through :class:`broker_api.RabbitmqManagement`.
"""

from odoo import _, api, models

from ...tools.broker_api import BrokerApiError
from ...tools.rabbitmq import store as rabbitmq_store
from ..iot_store_api import ABSENT, FOREIGN, OURS
from .iot_broker_rabbitmq import VHOST_PARAM  # noqa: F401 (the settings field)

ENABLED_PARAM = "iot_base.rabbitmq_store_enabled"
# up to this many logins, read (and delete) each user on its own; above,
# list them all in one call
PER_LOGIN_READS = 20
# logins per definitions import
IMPORT_BATCH = 2000
# users per bulk delete (3.10 deletes them one by one inside the call)
DELETE_BATCH = 500


class IotRabbitmqStore(models.AbstractModel):
    _name = "iot.rabbitmq.store"
    _inherit = "iot.store.api"
    _description = "RabbitMQ Internal Users"
    _store_key = "rabbitmq"
    _enabled_param = ENABLED_PARAM

    @api.model
    def _get_config(self):
        config = dict(self.env["iot.broker.api"]._get_config()["rabbitmq"])
        config["vhost"] = self.env["iot.broker.rabbitmq"]._rabbitmq_vhost_name()
        return config

    @api.model
    def _render(self, login, rules):
        topic_perms, notes = rabbitmq_store.topic_permissions(rules, login.superuser)
        state = rabbitmq_store.login_state(
            login.hash,
            rabbitmq_store.resource_permissions(login.username),
            topic_perms,
            # a new vhost changes every login: all are pushed there again
            self.env["iot.broker.rabbitmq"]._rabbitmq_vhost_name(),
        )
        return state, notes

    @api.model
    def _read_broker_states(self, client, config):
        """{login: state} of the tagged users the node holds."""
        vhost = config["vhost"]
        managed = {
            user["name"]: user
            for user in client.users()
            if isinstance(user, dict) and rabbitmq_store.TAG in _tags(user.get("tags"))
        }
        permissions = {
            p["user"]: p for p in client.permissions(vhost) if p["user"] in managed
        }
        topic_perms = {
            p["user"]: p
            for p in client.topic_permissions(vhost)
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
    def _claims(self, client, logins, known):
        """A user is this store's when it carries :data:`rabbitmq_store.TAG`
        (set by every import of Odoo's): the node then says so itself, for
        users of any age. An untagged user (an operator, a bridge) is never
        written: the definitions import would replace its password and tags
        and keep its permissions elsewhere. (Between this read and the
        import a user of that name could still appear: the management API
        has no conditional write.)"""
        if len(logins) > PER_LOGIN_READS:
            users = {
                user.get("name"): user
                for user in client.users()
                if isinstance(user, dict)
            }
            read = users.get
        else:
            read = client.user
        claims = {}
        for login in logins:
            user = read(login)
            if user is None:
                claims[login] = ABSENT
            elif rabbitmq_store.TAG in _tags(user.get("tags")):
                claims[login] = OURS
            else:
                claims[login] = FOREIGN
        return claims

    @api.model
    def _push(self, client, config, states):
        # in batches: the management API refuses a body over
        # management.http.max_body_size (10 MB; ~1 KB per login)
        logins = sorted(states)
        for start in range(0, len(logins), IMPORT_BATCH):
            batch = {
                login: states[login] for login in logins[start : start + IMPORT_BATCH]
            }
            client.import_definitions(
                rabbitmq_store.definitions(batch, config["vhost"])
            )

    @api.model
    def _delete(self, client, claims):
        logins = sorted(claims)
        if len(logins) <= PER_LOGIN_READS:
            for login in logins:
                client.delete_user(login)
        else:
            # in batches: each call stays well within its timeout
            for start in range(0, len(logins), DELETE_BATCH):
                client.delete_users(logins[start : start + DELETE_BATCH])
            # the node answers 204 whichever existed: check
            left = {user.get("name") for user in client.users()} & set(logins)
            if left:
                raise BrokerApiError(
                    _(
                        "%(origin)s kept %(n)s of the users to delete",
                        origin=client.origin,
                        n=len(left),
                    )
                )
        self._close(client, logins)


def _tags(value):
    """RabbitMQ 3.10 reports tags as a list (older: a comma-separated text)."""
    if isinstance(value, list):
        return set(value)
    return {tag for tag in (value or "").split(",") if tag}
