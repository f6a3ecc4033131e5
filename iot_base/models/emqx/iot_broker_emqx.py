# License LGPL-3.0 or later (https://www.gnu.org/licenses/lgpl).
"""EMQX 5's HTTP authentication and authorization (controllers/emqx/auth.py).

A deny is ``200 {"result": "deny"}``: any other status means "no opinion"
to EMQX, and for authorization falls through to its ``no_match``.
"""

from datetime import timezone

from odoo import api, models

from ...tools.client_ids import owns_client_id
from ...tools.emqx.acl import compile_acl
from ..iot_broker import ALLOW


class IotBrokerEmqx(models.AbstractModel):
    _name = "iot.broker.emqx"
    _inherit = "iot.broker"
    _description = "EMQX HTTP Endpoints"

    @api.model
    def _emqx_authenticate(self, values, peer):
        clientid = values.get("clientid", "")
        if not isinstance(clientid, str):
            return self._refuse("auth", "bad_request", values, peer)
        username = values.get("username")
        # before the secret is checked: nothing to learn with a foreign id
        if isinstance(username, str) and not owns_client_id(username, clientid):
            return self._refuse("auth", "clientid_denied", values, peer)
        login = self._check_login("auth", values, peer, clientid, peer)
        if login.reason:
            return self._refuse("auth", login.reason, values, peer)
        credential = login.credential
        reply = {
            "result": "allow",
            "is_superuser": credential.is_superuser,
            "resource_type": credential.kind,
            "client_attrs": {
                "kind": credential.kind,
                "namespace": credential.company_id.iot_mqtt_namespace or "",
                "company_id": str(credential.company_id.id),
            },
            "acl": compile_acl(self._rules(credential, clientid)),
        }
        if login.expires_at:
            reply["expire_at"] = int(
                login.expires_at.replace(tzinfo=timezone.utc).timestamp()
            )
        return reply

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
        if not self._topic_allowed(
            credential, clientid, action, topic, (qos,), (retain,)
        ):
            return self._refuse("acl", "topic_denied", values, peer)
        # allowed publishes are not logged: that would be a write per message
        return ALLOW


def _unshared(topic_filter):
    """``$share/<group>/<filter>`` and ``$queue/<filter>`` deliver the
    messages of ``<filter>``: that is what must be allowed."""
    if topic_filter.startswith("$share/"):
        parts = topic_filter.split("/", 2)
        return parts[2] if len(parts) == 3 else ""
    if topic_filter.startswith("$queue/"):
        return topic_filter[len("$queue/") :]
    return topic_filter


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
