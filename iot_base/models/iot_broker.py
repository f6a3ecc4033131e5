# License LGPL-3.0 or later (https://www.gnu.org/licenses/lgpl).
"""What Odoo answers a broker's HTTP authentication and authorization calls.

The controllers only parse requests; the decisions, the throttle and the
audit trail live here. Replies follow EMQX 5's HTTP contract: a deny is
``200 {"result": "deny"}`` (any other status means "no opinion" to EMQX).
"""

import hmac
from datetime import timezone

from odoo import api, models
from odoo.tools import SQL

from ..tools import topic_acl
from .iot_credentials import owns_client_id

ALLOW = {"result": "allow"}
DENY = {"result": "deny"}
ALLOW_EVERYTHING = [topic_acl.Rule("allow", "all", "#")]
# EMQX 5 gives up on its HTTP authenticator after 5 s (``request_timeout``):
# a lock or a slow query on the hot path ends well before, with a "no
# opinion" answer. Each statement is bounded; the first to fail ends the
# request (it is never replayed).
LOCK_TIMEOUT = "2s"
STATEMENT_TIMEOUT = "3s"

# RabbitMQ 3.10 ``rabbitmq_auth_backend_http``: same credentials, same topic
# rules, same audit trail as the EMQX endpoints.
#
# RabbitMQ asks four questions; the fields below are what 3.10 sends
# (``rabbit_auth_backend_http.erl``), ``client_id`` being added by the MQTT
# plugin (``rabbit_mqtt_connection_info`` / the direct connection's
# ``variable_map``):
#
# * user: ``username``, ``password``, ``vhost``, ``client_id``
# * vhost: ``username``, ``vhost``, ``ip``, ``tags``, ``client_id``
# * resource: ``username``, ``vhost``, ``resource`` (queue|exchange), ``name``,
#   ``permission`` (configure|write|read), ``tags``, ``client_id``
# * topic: ``username``, ``vhost``, ``resource`` (topic), ``name`` (the
#   exchange), ``permission`` (write|read), ``routing_key``, ``tags``,
#   ``variable_map.client_id``, ``variable_map.username``, ``variable_map.vhost``
#
# The reply is the body ``allow`` (user: ``allow <tags>``) or ``deny``; anything
# else, or a status other than 200/201, is an error RabbitMQ treats as a deny.


RABBITMQ_ALLOW = "allow"
RABBITMQ_DENY = "deny"
DEFAULT_VHOST = "/"
# rabbitmq_mqtt's ``mqtt.exchange`` (default): every MQTT publish and
# subscription goes through this topic exchange.
EXCHANGE = "amq.topic"
# rabbit_mqtt_util:subcription_queue_name/1: one queue per client and QoS.
QUEUE_PREFIX = "mqtt-subscription-"
QUEUE_SUFFIXES = ("qos0", "qos1")
# What the MQTT plugin does with its queues (declare and delete: configure;
# bind: write; consume: read) and with the exchange (publish: write; bind:
# read). Nothing else is ever allowed: no other queue, no other exchange.
QUEUE_PERMISSIONS = ("configure", "write", "read")
EXCHANGE_PERMISSIONS = ("write", "read")


class IotBroker(models.AbstractModel):
    _name = "iot.broker"
    _description = "MQTT Broker Endpoints"

    @api.model
    def _limit_waits(self):
        """Bound every wait of the current broker request's transaction."""
        self.env.cr.execute(
            SQL(
                "SET LOCAL lock_timeout = %s; SET LOCAL statement_timeout = %s",
                LOCK_TIMEOUT,
                STATEMENT_TIMEOUT,
            )
        )

    @api.model
    def _check_token(self, candidates):
        """Whether one of ``candidates`` is the configured broker token.

        Constant-time comparison; with no token configured, nothing passes.
        """
        expected = (
            self.env["ir.config_parameter"].sudo().get_param("iot_base.auth_token")
        )
        if not expected:
            return False
        expected = expected.encode()
        ok = False
        for candidate in candidates:
            if isinstance(candidate, str) and candidate:
                ok |= hmac.compare_digest(candidate.encode(), expected)
        return ok

    @api.model
    def _log(self, *args, **kwargs):
        self.env["iot.auth.log"].sudo()._record(*args, **kwargs)

    @api.model
    def _refuse(self, endpoint, reason, values=None, peer=""):
        """Deny and write down why (without anything secret)."""
        values = values if isinstance(values, dict) else {}
        self._log(
            endpoint,
            "deny",
            reason,
            username=_text(values.get("username")),
            clientid=_text(values.get("clientid")),
            peer=peer,
            action=values.get("action")
            if values.get("action") in ("publish", "subscribe")
            else None,
            topic=_text(values.get("topic")),
        )
        return DENY

    # ------------------------------------------------------------------
    # Authentication
    # ------------------------------------------------------------------

    @api.model
    def _check_login(self, endpoint, values, peer, clientid, throttle_peer):
        """Check a broker login: throttle, secret, audit trail.

        :return: (credential, secret expiry, None) or (None, None, reason)
        """
        username = values.get("username")
        password = values.get("password")
        if not (isinstance(username, str) and isinstance(password, str)):
            return None, None, "bad_request"
        throttle = self.env["iot.auth.throttle"].sudo()
        if throttle._is_blocked(username, throttle_peer):
            return None, None, "throttled"
        credentials = self.env["iot.credentials"].sudo()
        credential, expires_at = credentials._authenticate_secret(username, password)
        if not credential:
            throttle._register_failure(username, throttle_peer)
            return None, None, "invalid_credentials"
        self._log(
            endpoint,
            "allow",
            "ok",
            username=username,
            clientid=clientid,
            peer=peer,
            credential_id=credential.id,
        )
        return credential, expires_at, None

    @api.model
    def _emqx_authenticate(self, values, peer):
        clientid = values.get("clientid", "")
        if not isinstance(clientid, str):
            return self._refuse("auth", "bad_request", values, peer)
        username = values.get("username")
        # before the secret is checked: nothing to learn with a foreign id
        if isinstance(username, str) and not owns_client_id(username, clientid):
            return self._refuse("auth", "clientid_denied", values, peer)
        credential, expires_at, reason = self._check_login(
            "auth", values, peer, clientid, peer
        )
        if reason:
            return self._refuse("auth", reason, values, peer)
        reply = {
            "result": "allow",
            "is_superuser": credential.is_superuser,
            "resource_type": credential.kind,
            "client_attrs": {
                "kind": credential.kind,
                "namespace": credential.company_id.iot_mqtt_namespace or "",
                "company_id": str(credential.company_id.id),
            },
            "acl": topic_acl.to_emqx_acl(self._rules(credential, clientid)),
        }
        if expires_at:
            reply["expire_at"] = int(
                expires_at.replace(tzinfo=timezone.utc).timestamp()
            )
        return reply

    @api.model
    def _rules(self, credential, clientid):
        if credential.is_superuser:
            return ALLOW_EVERYTHING
        return self.env["iot.acl.rule"].sudo()._rules_for(credential, clientid or None)

    # ------------------------------------------------------------------
    # Authorization
    # ------------------------------------------------------------------

    @api.model
    def _emqx_authorize(self, values, peer):
        username = values.get("username")
        clientid = values.get("clientid", "")
        action = values.get("action")
        topic = values.get("topic")
        qos = _to_qos(values.get("qos", 0))
        retain = _to_bool(values.get("retain", False))
        if (
            not all(isinstance(v, str) for v in (username, clientid, topic))
            or action not in ("publish", "subscribe")
            or qos is None
            or retain is None
        ):
            return self._refuse("acl", "bad_request", values, peer)
        if not owns_client_id(username, clientid):
            return self._refuse("acl", "clientid_denied", values, peer)
        credential = self.env["iot.credentials"].sudo()._find_live(username)
        if not credential:
            return self._refuse("acl", "unknown_user", values, peer)
        if action == "subscribe":
            topic = _unshared(topic)
        decision = topic_acl.authorize(
            self._rules(credential, clientid), action, topic, qos=qos, retain=retain
        )
        if decision != "allow":
            return self._refuse("acl", "topic_denied", values, peer)
        # allowed publishes are not logged: that would be a write per message
        return ALLOW

    # ------------------------------------------------------------------
    # RabbitMQ 3.10 rabbitmq_auth_backend_http
    # ------------------------------------------------------------------

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
            self.env["ir.config_parameter"].sudo().get_param("iot_base.rabbitmq_vhost")
            or DEFAULT_VHOST
        )

    # ------------------------------------------------------------------
    # The four questions
    # ------------------------------------------------------------------

    @api.model
    def _rabbitmq_user(self, values, peer):
        # Not throttled: RabbitMQ 3.10 does not send the client's address
        # here; throttling the broker's own address would lock every client
        # out, and a username alone its owner (models/iot_auth_throttle.py).
        _credential, _expires_at, reason = self._check_login(
            "rabbitmq", values, peer, _client_id(values), ""
        )
        if reason:
            return self._rabbitmq_deny(reason, values, peer)
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
        if not (
            values.get("vhost") == self._rabbitmq_vhost_name()
            and values.get("name") == EXCHANGE
            and self._rabbitmq_topic_allowed(
                credential, _client_id(values), action, topic
            )
        ):
            return self._rabbitmq_deny(
                "topic_denied", values, peer, action=action, topic=topic
            )
        # allowed publishes are not logged: RabbitMQ caches the answer per
        # channel, but a busy broker would still write a row per topic
        return RABBITMQ_ALLOW

    # ------------------------------------------------------------------
    # Helpers
    # ------------------------------------------------------------------

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

    @api.model
    def _rabbitmq_topic_allowed(self, credential, client_id, action, topic):
        """RabbitMQ does not tell the QoS nor the retain flag of the message
        or subscription: allow only what the rules allow whichever they are,
        so a rule limited to some QoS or to retained messages never lets
        more through than it says."""
        rules = self._rules(credential, client_id)
        retains = (False, True) if action == "publish" else (False,)
        return all(
            topic_acl.authorize(rules, action, topic, qos=qos, retain=retain)
            == RABBITMQ_ALLOW
            for qos in (0, 1, 2)
            for retain in retains
        )


def _unshared(topic_filter):
    """``$share/<group>/<filter>`` and ``$queue/<filter>`` deliver the
    messages of ``<filter>``: that is what must be allowed."""
    if topic_filter.startswith("$share/"):
        parts = topic_filter.split("/", 2)
        return parts[2] if len(parts) == 3 else ""
    if topic_filter.startswith("$queue/"):
        return topic_filter[len("$queue/") :]
    return topic_filter


def _text(value):
    return value if isinstance(value, str) else None


def _to_qos(value):
    """EMQX sends strings; accept 0..2 as int or digit string."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str) and value.strip() in ("0", "1", "2"):
        return int(value)
    if isinstance(value, int) and value in (0, 1, 2):
        return value
    if value in ("", None):
        return 0
    return None


def _to_bool(value):
    if isinstance(value, bool):
        return value
    if value in ("", None):
        return False
    if isinstance(value, str) and value.lower() in ("true", "false", "1", "0"):
        return value.lower() in ("true", "1")
    return None


def routing_key_to_mqtt(routing_key):
    """The MQTT topic (or filter) a routing key of the MQTT plugin stands for.

    rabbitmq_mqtt 3.10 (``rabbit_mqtt_util:to_amqp/1``) turns an MQTT topic
    into a routing key by replacing ``/`` with ``.`` and ``+`` with ``*``;
    this is its ``to_mqtt/1``. A ``.`` inside an MQTT level thus becomes a
    level separator: ``a.b/c`` and ``a/b/c`` are the same routing key, so
    they must get the same answer, the one for ``a/b/c`` (rules naming a
    level with a dot never match in RabbitMQ: deny, never a wider allow).
    A literal ``*`` in an MQTT topic is a wildcard for RabbitMQ, so it is
    read as ``+``: a publish to it is refused, a subscription is judged by
    what it really receives. (Assumes ``mqtt.sparkplug`` is off.)
    """
    return routing_key.replace("*", "+").replace(".", "/")


def _client_id(values):
    """The MQTT client id: a plain field for user/vhost/resource checks, in
    the variable map for topic checks. Empty for non-MQTT connections."""
    client_id = values.get("client_id") or values.get("variable_map.client_id") or ""
    return client_id if isinstance(client_id, str) else ""
