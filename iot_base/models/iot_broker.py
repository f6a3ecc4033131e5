# License LGPL-3.0 or later (https://www.gnu.org/licenses/lgpl).
"""The decisions behind every broker's HTTP callbacks, whatever the protocol.

The shared checks (broker token, login, topic rules, audit trail) live here;
each protocol reads its questions and shapes its answers in its own file:
``iot_broker_emqx.py`` (EMQX 5), ``iot_broker_rabbitmq.py`` (RabbitMQ 3.10).
"""

import hmac
from datetime import datetime
from typing import NamedTuple

from odoo import api, models
from odoo.tools import SQL

from ..tools import topic_acl
from ..tools.client_ids import is_issued_client_id
from ..tools.settings import bool_param

ALLOW = {"result": "allow"}
DENY = {"result": "deny"}
ALLOW_EVERYTHING = [topic_acl.Rule("allow", "all", "#")]
# EMQX 5 gives up on its HTTP authenticator after 5 s (``request_timeout``):
# a lock or a slow query on the hot path ends well before, with a "no
# opinion" answer. Each statement is bounded; the first to fail ends the
# request (it is never replayed).
LOCK_TIMEOUT = "2s"
STATEMENT_TIMEOUT = "3s"
# Devices must connect with the client id issued with their secret
# (tools/client_ids.issued_client_id): set it where a broker does not bind
# client ids to users (RabbitMQ 3.10 with console tokens or its store, EMQX's
# store), so that nobody can knock a device off by its id.
REQUIRE_ISSUED_CLIENT_ID_PARAM = "iot_base.require_issued_client_id"


class Login(NamedTuple):
    """A login check's outcome: the credential, or the reason it failed."""

    credential: models.BaseModel | None
    expires_at: datetime | None
    reason: str | None


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
        """Whether one of ``candidates`` is the configured broker token
        (constant time; with no token configured, nothing passes)."""
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

    @api.model
    def _check_login(self, endpoint, values, peer, clientid, throttle_peer):
        """Throttle, secret and audit trail of one broker login: a
        :class:`Login`."""
        username = values.get("username")
        password = values.get("password")
        if not (isinstance(username, str) and isinstance(password, str)):
            return Login(None, None, "bad_request")
        throttle = self.env["iot.auth.throttle"].sudo()
        if throttle._is_blocked(username, throttle_peer):
            return Login(None, None, "throttled")
        credentials = self.env["iot.credentials"].sudo()
        credential, expires_at = credentials._authenticate_secret(username, password)
        if not credential:
            throttle._register_failure(username, throttle_peer)
            return Login(None, None, "invalid_credentials")
        if (
            credential.kind == "device"
            and bool_param(self.env, REQUIRE_ISSUED_CLIENT_ID_PARAM)
            and not is_issued_client_id(username, password, clientid)
        ):
            return Login(None, None, "clientid_denied")
        self._log(
            endpoint,
            "allow",
            "ok",
            username=username,
            clientid=clientid,
            peer=peer,
            credential_id=credential.id,
        )
        return Login(credential, expires_at, None)

    @api.model
    def _rules(self, credential, clientid):
        if credential.is_superuser:
            return ALLOW_EVERYTHING
        return self.env["iot.acl.rule"].sudo()._rules_for(credential, clientid or None)

    @api.model
    def _topic_allowed(self, credential, clientid, action, topic, qos, retain):
        """Whether the rules allow ``action`` on ``topic`` for every QoS in
        ``qos`` and every retain flag in ``retain``."""
        rules = self._rules(credential, clientid)
        return all(
            topic_acl.authorize(rules, action, topic, qos=q, retain=r)
            == topic_acl.ALLOW
            for q in qos
            for r in retain
        )


def _text(value):
    return value if isinstance(value, str) else None
