# License LGPL-3.0 or later (https://www.gnu.org/licenses/lgpl).
import calendar
import re
import secrets
import time

from odoo import _, api, fields, models
from odoo.exceptions import AccessError

from ..tools import topic_acl
from ..tools.client_ids import CLIENT_ID_SEPARATOR, make_client_id
from ..tools.emqx.acl import compile_acl
from ..tools.rabbitmq import scopes as rabbitmq_scopes

# Server-made MQTT client ids of the console: one per page (tab), so that two
# tabs of the same user never take over each other's session; of the user's
# credential (iot_credentials.client_id_owner).
CLIENT_ID_RE = r"%s" + re.escape(CLIENT_ID_SEPARATOR) + r"[0-9a-f]{8}"
MAX_SUGGESTIONS = 6
DEFAULT_BROKER_URL = "ws://localhost:8083/mqtt"
# "secret": the console logs in with a session secret Odoo checks at each
# CONNECT; "emqx_jwt": with a token EMQX verifies itself (iot.jwt.key);
# "rabbitmq_jwt": with a token RabbitMQ's OAuth 2 backend verifies itself.
CONSOLE_AUTH_PARAM = "iot_base.console_auth"
AUTH_SECRET, AUTH_EMQX_JWT, AUTH_RABBITMQ_JWT = "secret", "emqx_jwt", "rabbitmq_jwt"
# rabbitmq.conf's auth_oauth2.resource_server_id: the token's audience and
# the prefix of its scopes
RABBITMQ_RESOURCE_SERVER_PARAM = "iot_base.rabbitmq_resource_server_id"
DEFAULT_RABBITMQ_RESOURCE_SERVER = "iot_base"
RESOURCE_SERVER_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")


class IotApp(models.AbstractModel):
    """The MQTT console (/iot/app) of the current user."""

    _name = "iot.app"
    _description = "MQTT Console"

    @api.model
    def _page_config(self, client_id=None, issue=True):
        """Everything the console page needs, with a fresh session secret.

        The topic rules are the ones the broker gets for this client (same
        expansion, same first-match order), so the page can refuse a filter
        before the broker has to.

        :param client_id: the page's current client id, kept when it is one
            this method made for this user; otherwise a new one is made
        :param issue: False for the page itself (GET /iot/app): no password,
            and nothing written (no secret, no credential, no store sync);
            the page gets its password from the POST of /iot/app/config
        :raise AccessError: when the user is not an IoT user
        :return: the ``window.odoo.mqtt_config`` dict (JSON-serializable)
        """
        # With Mosquitto's files, each session secret has a login of its own
        # (Mosquitto holds one secret per name), which the broker makes the
        # client id (use_username_as_clientid), and its ACL section cannot
        # know the client id: show the rules that broker will apply.
        # Mosquitto cannot verify a token: it always gets session secrets.
        mosquitto = self.env["iot.mosquitto.sync"].sudo()._is_enabled()
        auth = AUTH_SECRET if mosquitto else self._console_auth()
        token_mode = auth != AUTH_SECRET
        if not issue:
            credentials = self._unissued_credentials()
        elif token_mode:
            credentials = self._token_credentials()
        else:
            credentials = self.env.user.get_or_create_iot_credentials()
        credential = credentials.pop("credential", None) or (
            self.env["iot.credentials"].sudo().browse(credentials["credential_id"])
        )
        username = credentials["username"]
        broker_username = (
            self.env.user._iot_broker_username(credentials) if issue else username
        )
        if mosquitto:
            client_id = broker_username
        elif not (
            isinstance(client_id, str)
            and re.fullmatch(CLIENT_ID_RE % re.escape(username), client_id)
        ):
            client_id = make_client_id(username, secrets.token_hex(4))
        rules = self.env["iot.broker"]._rules(
            credential, None if mosquitto else client_id
        )
        if issue and auth == AUTH_EMQX_JWT:
            credentials.update(self._console_token(credential, client_id, rules))
        elif issue and auth == AUTH_RABBITMQ_JWT:
            credentials.update(
                self._rabbitmq_console_token(credential, client_id, rules)
            )
        expires_at = fields.Datetime.to_datetime(credentials["expires_at"])
        expires_in = (
            max(0, int((expires_at - fields.Datetime.now()).total_seconds()))
            if expires_at
            else None
        )
        broker_url = (
            self.env["ir.config_parameter"].sudo().get_param("iot_base.mqtt_broker_url")
            or DEFAULT_BROKER_URL
        )
        return {
            "broker_url": broker_url,
            "client_id": client_id,
            "credentials": {
                "username": broker_username,
                "password": credentials["password"],
                "is_superuser": credentials["is_superuser"],
            },
            "expires_at": credentials["expires_at"],
            "expires_in": expires_in,
            "namespace": credential.company_id.iot_mqtt_namespace or "",
            "acl": [_rule_to_dict(rule) for rule in rules],
            "default_subscriptions": _suggested_filters(rules),
            "default_publish_topic": _suggested_topic(rules),
            "refresh_route": "/iot/app/config",
            "auth": "jwt" if token_mode else "secret",
            "broker_kind": {AUTH_EMQX_JWT: "emqx", AUTH_RABBITMQ_JWT: "rabbitmq"}.get(
                auth, ""
            ),
            # what the page puts between a username and a tab's suffix when
            # it makes a client id itself (tools/client_ids.py owns it)
            "client_id_separator": CLIENT_ID_SEPARATOR,
        }

    @api.model
    def _console_auth(self):
        """How the console logs in: per broker kind (Mosquitto, which cannot
        verify a token, is decided by the caller); anything unknown is
        session secrets."""
        value = self.env["ir.config_parameter"].sudo().get_param(CONSOLE_AUTH_PARAM)
        return value if value in (AUTH_EMQX_JWT, AUTH_RABBITMQ_JWT) else AUTH_SECRET

    @api.model
    def _unissued_credentials(self):
        """The user's credential as :meth:`_token_credentials` gives it, but
        nothing written: a user without one yet gets the credential it will
        be (a new record, never saved) and no password."""
        user = self.env.user
        if not user.has_group("iot_base.iot_base_group_user"):
            raise AccessError(_("You are not allowed to use MQTT: ask an IoT manager."))
        credential = user._iot_user_credential(create=False)
        return {
            "username": credential.username,
            "password": None,
            "is_superuser": credential.is_superuser,
            "expires_at": None,
            "credential": credential,
        }

    @api.model
    def _token_credentials(self):
        """The user's credential, as ``get_or_create_iot_credentials`` gives
        it, without issuing a session secret (the token replaces it)."""
        user = self.env.user
        if not user.has_group("iot_base.iot_base_group_user"):
            raise AccessError(_("You are not allowed to use MQTT: ask an IoT manager."))
        credential = user._iot_user_credential()
        return {
            "username": credential.username,
            "password": None,
            "is_superuser": credential.is_superuser,
            "expires_at": None,
            "credential_id": credential.id,
        }

    @api.model
    def _token_exp(self, credential):
        """(now, exp) of a new console token: integers of epoch seconds, the
        token never outliving its credential."""
        now = int(time.time())
        exp = now + self.env["iot.jwt.key"].sudo()._token_lifetime()
        if credential.expires_at:
            exp = min(exp, calendar.timegm(credential.expires_at.timetuple()))
        return now, exp

    @api.model
    def _rabbitmq_resource_server(self):
        value = (
            self.env["ir.config_parameter"]
            .sudo()
            .get_param(RABBITMQ_RESOURCE_SERVER_PARAM)
        )
        if isinstance(value, str) and RESOURCE_SERVER_RE.fullmatch(value):
            return value
        return DEFAULT_RABBITMQ_RESOURCE_SERVER

    @api.model
    def _rabbitmq_console_token(self, credential, client_id, rules):
        """A console token for RabbitMQ 3.10's OAuth 2 backend
        (rabbit_auth_backend_oauth2): ``sub`` the username (the broker's
        username comes from ``client_id``, else ``sub``: there is no
        ``client_id`` claim), ``aud`` the resource server id, ``exp`` an
        integer, ``scope`` the topic rules compiled by
        :mod:`..tools.rabbitmq_scopes` (never more than the evaluator
        allows) with the client id policy: only this client id's own
        subscription queues. The header's ``kid`` names the signing key in
        the JWKS (auth_oauth2.jwks_url). Never a ``tag:`` scope.

        :return: ``password`` (the token) and ``expires_at`` (UTC string)
        """
        server = self._rabbitmq_resource_server()
        vhost = self.env["iot.broker.rabbitmq"]._rabbitmq_vhost_name()
        now, exp = self._token_exp(credential)
        scopes = rabbitmq_scopes.compile_scopes(rules, client_id, vhost=vhost)
        claims = {
            "iat": now,
            "exp": exp,
            "sub": credential.username,
            "aud": [server],
            "scope": " ".join(f"{server}.{scope}" for scope in scopes),
        }
        return {
            "password": self.env["iot.jwt.key"].sudo()._sign(claims),
            "expires_at": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(exp)),
        }

    @api.model
    def _console_token(self, credential, client_id, rules):
        """A console token for ``client_id`` of ``credential``, signed by
        the current key, with the claims EMQX 5.8's JWT authenticator reads
        (apps/emqx_auth_jwt/src/emqx_authn_jwt.erl): ``exp`` an integer (a
        float crashes its expire_at), ``username`` and ``clientid`` strings
        for ``verify_claims``, the ACL in its rule-list format ending with
        the deny of everything, ``client_attrs`` of strings, and never
        ``is_superuser``.

        :return: ``password`` (the token) and ``expires_at`` (UTC string)
        """
        keys = self.env["iot.jwt.key"].sudo()
        now, exp = self._token_exp(credential)
        claims = {
            "iat": now,
            "exp": exp,
            "username": credential.username,
            "clientid": client_id,
            "acl": compile_acl(rules),
            "client_attrs": {
                "kind": credential.kind,
                "namespace": credential.company_id.iot_mqtt_namespace or "",
                "company_id": str(credential.company_id.id),
            },
        }
        return {
            "password": keys._sign(claims),
            "expires_at": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(exp)),
        }


def _rule_to_dict(rule):
    return {
        "permission": rule.permission,
        "action": rule.action,
        "topic": rule.topic,
        "qos": sorted(rule.qos) if rule.qos is not None else None,
        "retain": rule.retain,
    }


def _suggested_filters(rules):
    """The allowed subscribe filters of the rules themselves, in rule order."""
    suggestions = []
    for rule in rules:
        if (
            rule.permission == topic_acl.ALLOW
            and rule.action in (topic_acl.SUBSCRIBE, topic_acl.ALL)
            and rule.topic not in suggestions
            and topic_acl.authorize(rules, topic_acl.SUBSCRIBE, rule.topic)
            == topic_acl.ALLOW
        ):
            suggestions.append(rule.topic)
        if len(suggestions) == MAX_SUGGESTIONS:
            break
    return suggestions


def _suggested_topic(rules):
    """A topic the user may publish to, to pre-fill the publish form."""
    for rule in rules:
        if rule.permission != topic_acl.ALLOW or rule.action not in (
            topic_acl.PUBLISH,
            topic_acl.ALL,
        ):
            continue
        levels = ["console" if level in ("+", "#") else level for level in rule.levels]
        topic = "/".join(levels)
        if topic_acl.authorize(rules, topic_acl.PUBLISH, topic) == topic_acl.ALLOW:
            return topic
    return ""
