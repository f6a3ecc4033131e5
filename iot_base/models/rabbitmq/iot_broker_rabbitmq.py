# License LGPL-3.0 or later (https://www.gnu.org/licenses/lgpl).
"""RabbitMQ 3.10 ``rabbitmq_auth_backend_http`` (controllers/rabbitmq/auth.py):
the same credentials, topic rules and audit trail as EMQX's endpoints.

RabbitMQ asks four questions; the fields are what 3.10 sends
(``rabbit_auth_backend_http.erl``), ``client_id`` being added by the MQTT
plugin (``rabbit_mqtt_connection_info`` / the direct connection's
``variable_map``):

* user: ``username``, ``password``, ``vhost``, ``client_id``
* vhost: ``username``, ``vhost``, ``ip``, ``tags``, ``client_id``
* resource: ``username``, ``vhost``, ``resource`` (queue|exchange), ``name``,
  ``permission`` (configure|write|read), ``tags``, ``client_id``
* topic: ``username``, ``vhost``, ``resource`` (topic), ``name`` (the
  exchange), ``permission`` (write|read), ``routing_key``, ``tags``,
  ``variable_map.client_id``, ``variable_map.username``, ``variable_map.vhost``

The reply is the body ``allow`` (user: ``allow <tags>``) or ``deny``; anything
else, or a status other than 200/201, is an error RabbitMQ treats as a deny.
"""

from odoo import api, models

from ...tools import topic_acl
from ...tools.client_ids import owns_client_id
from ...tools.rabbitmq import (
    EXCHANGE,
    QUEUE_PREFIX,
    QUEUE_SUFFIXES,
    routing_key_rules,
    routing_key_to_mqtt,
    username_problem,
)

RABBITMQ_ALLOW = "allow"
RABBITMQ_DENY = "deny"
DEFAULT_VHOST = "/"
# the one vhost setting: the HTTP backend, the console tokens and the store
VHOST_PARAM = "iot_base.rabbitmq_vhost"
# What the MQTT plugin does with its queues (declare and delete: configure;
# bind: write; consume: read) and with the exchange (publish: write; bind:
# read). Nothing else is ever allowed: no other queue, no other exchange.
QUEUE_PERMISSIONS = ("configure", "write", "read")
EXCHANGE_PERMISSIONS = ("write", "read")


class IotBrokerRabbitmq(models.AbstractModel):
    _name = "iot.broker.rabbitmq"
    _inherit = "iot.broker"
    _description = "RabbitMQ HTTP Auth Backend"

    @api.model
    def _rules(self, credential, clientid):
        # RabbitMQ 3.10 never tells the retain flag (topic_acl.retain_blind),
        # and a "." inside a level is a key separator (routing_key_rules)
        return routing_key_rules(
            topic_acl.retain_blind(super()._rules(credential, clientid))
        )

    @api.model
    def _rabbitmq_decide(self, check, values, peer):
        """Answer one RabbitMQ question: ``"allow"`` or ``"deny"``."""
        handler = {
            "user": self._rabbitmq_user,
            "vhost": self._rabbitmq_vhost,
            "resource": self._rabbitmq_resource,
            "topic": self._rabbitmq_topic,
        }[check]
        if not all(isinstance(value, str) for value in values.values()):
            return self._rabbitmq_deny("bad_request", values, peer)
        if self._rabbitmq_foreign_client(values):
            return self._rabbitmq_deny("clientid_denied", values, peer)
        if username_problem(values.get("username")):
            # before any secret is checked: a dotted name gets nothing here
            return self._rabbitmq_deny("username_denied", values, peer)
        return handler(values, peer)

    @api.model
    def _rabbitmq_deny(self, reason, values, peer, action=None, topic=None):
        self._refuse(
            "rabbitmq",
            reason,
            {
                "username": values.get("username"),
                "clientid": _client_id(values),
                "action": action,
                "topic": topic,
            },
            peer,
        )
        return RABBITMQ_DENY

    @api.model
    def _rabbitmq_vhost_name(self):
        return (
            self.env["ir.config_parameter"].sudo().get_param(VHOST_PARAM)
            or DEFAULT_VHOST
        )

    @api.model
    def _rabbitmq_user(self, values, peer):
        # Not throttled: RabbitMQ 3.10 does not send the client's address
        # here; throttling the broker's own address would lock every client
        # out, and a username alone its owner (models/iot_auth_throttle.py).
        login = self._check_login("rabbitmq", values, peer, _client_id(values), "")
        if login.reason:
            return self._rabbitmq_deny(login.reason, values, peer)
        # No tags, not even for a broker superuser: tags (administrator,
        # management, policymaker, impersonator...) grant rights on the
        # management API and on message user_id headers, which no MQTT
        # identity needs; a superuser's reach is in its topic rules.
        return RABBITMQ_ALLOW

    @api.model
    def _rabbitmq_vhost(self, values, peer):
        if not self._rabbitmq_live(values):
            return self._rabbitmq_deny("unknown_user", values, peer)
        if values.get("vhost") != self._rabbitmq_vhost_name():
            return self._rabbitmq_deny(
                "topic_denied", values, peer, topic=f"vhost {values.get('vhost')}"
            )
        return RABBITMQ_ALLOW

    @api.model
    def _rabbitmq_resource(self, values, peer):
        kind = values.get("resource")
        name = values.get("name") or ""
        permission = values.get("permission")
        if not self._rabbitmq_live(values):
            return self._rabbitmq_deny("unknown_user", values, peer)
        client_id = _client_id(values)
        if values.get("vhost") == self._rabbitmq_vhost_name() and (
            (
                kind == "exchange"
                and name == EXCHANGE
                and permission in EXCHANGE_PERMISSIONS
            )
            or (
                kind == "queue"
                and permission in QUEUE_PERMISSIONS
                # only MQTT connections carry a client id: plain AMQP
                # clients get no queue at all
                and client_id
                and name
                in {QUEUE_PREFIX + client_id + suffix for suffix in QUEUE_SUFFIXES}
            )
        ):
            return RABBITMQ_ALLOW
        return self._rabbitmq_deny(
            "topic_denied", values, peer, topic=f"{kind} {name} ({permission})"
        )

    @api.model
    def _rabbitmq_topic(self, values, peer):
        permission = values.get("permission")
        routing_key = values.get("routing_key")
        action = {"write": "publish", "read": "subscribe"}.get(permission)
        if not (
            values.get("resource") == "topic" and action and routing_key is not None
        ):
            return self._rabbitmq_deny("bad_request", values, peer)
        credential = self._rabbitmq_live(values)
        if not credential:
            return self._rabbitmq_deny("unknown_user", values, peer)
        topic = routing_key_to_mqtt(routing_key)
        # RabbitMQ tells neither the QoS nor the retain flag: allow only
        # what the rules allow whichever they are, so a rule limited to
        # some QoS or to retained messages never lets more through
        if not (
            values.get("vhost") == self._rabbitmq_vhost_name()
            and values.get("name") == EXCHANGE
            and self._topic_allowed(
                credential,
                _client_id(values),
                action,
                topic,
                (0, 1, 2),
                (False, True) if action == "publish" else (False,),
            )
        ):
            return self._rabbitmq_deny(
                "topic_denied", values, peer, action=action, topic=topic
            )
        # allowed publishes are not logged: RabbitMQ caches the answer per
        # channel, but a busy broker would still write a row per topic
        return RABBITMQ_ALLOW

    @api.model
    def _rabbitmq_foreign_client(self, values):
        """Whether the request names a client id the user does not own.

        MQTT connections always have one (RabbitMQ makes one up for an
        empty id, which no credential owns); plain AMQP connections have
        none, and no queue either (see :meth:`_rabbitmq_resource`).
        """
        client_id = _client_id(values)
        return bool(client_id) and not owns_client_id(values.get("username"), client_id)

    @api.model
    def _rabbitmq_live(self, values):
        return self.env["iot.credentials"].sudo()._find_live(values.get("username"))


def _client_id(values):
    """The MQTT client id: a plain field for user/vhost/resource checks, in
    the variable map for topic checks. Empty for non-MQTT connections."""
    client_id = values.get("client_id") or values.get("variable_map.client_id") or ""
    return client_id if isinstance(client_id, str) else ""
