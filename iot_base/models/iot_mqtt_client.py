# License LGPL-3.0 or later (https://www.gnu.org/licenses/lgpl).
"""Odoo's own MQTT client: publishes commands with paho-mqtt.

Odoo connects as the service credential ``odoo_publisher``. Its secret is
never stored: it is derived from the database secret (HMAC), and only its
hash is kept like any other, so the same secret works for EMQX (which asks
Odoo) and for Mosquitto (which reads the hash from the password file).
"""

import hashlib
import hmac
import json
import logging
import secrets
import threading
import time

import paho.mqtt.client as mqtt

from odoo import _, api, models
from odoo.exceptions import UserError
from odoo.tools import config

from ..tools.client_ids import make_client_id
from ..tools.settings import bool_param, number_param

_logger = logging.getLogger(__name__)

PUBLISHER_XMLID = "iot_base.iot_credentials_odoo_publisher"
# pg_advisory_xact_lock key of the publisher's one Mosquitto connection
PUBLISHER_LOCK_KEY = 0x10700B11
DEFAULT_TIMEOUT = 5.0
MAX_TIMEOUT = 30.0


class IotMqttClient(models.AbstractModel):
    _name = "iot.mqtt.client"
    _description = "Odoo MQTT Client"

    # ------------------------------------------------------------------
    # Connection settings
    # ------------------------------------------------------------------

    @api.model
    def _settings(self):
        params = self.env["ir.config_parameter"].sudo()
        return {
            "host": params.get_param("iot_base.mqtt_host") or "localhost",
            "port": number_param(self.env, "iot_base.mqtt_port", 1883, int, (1, 65535)),
            "tls": bool_param(self.env, "iot_base.mqtt_tls"),
            "timeout": number_param(
                self.env,
                "iot_base.mqtt_timeout",
                DEFAULT_TIMEOUT,
                float,
                (0.5, MAX_TIMEOUT),
            ),
        }

    @api.model
    def _publisher_login(self):
        """(username, secret) of Odoo's own service credential.

        The secret is derived, not stored. The broker checks this login
        from another transaction, which cannot see a hash this request has
        not committed: the hash is stored at install
        (data/iot_credentials_data.xml), and when none matches (a changed
        database secret, a neutralized copy) in a transaction of its own,
        committed at once.
        """
        credential = self.env.ref(PUBLISHER_XMLID).sudo()
        secret = self._publisher_secret()
        if not credential.active:
            raise UserError(_("Odoo's MQTT publisher credential is revoked."))
        if credential._authenticate(credential.username, secret) == credential:
            return credential.username, secret
        if config["test_enable"] or not self.env.registry.ready:
            # tests run in one transaction that the broker's calls share; an
            # install (the data file) has not committed the secrets' table
            # nor this credential: another transaction would not see them
            self._store_publisher_hash(credential, secret)
        else:
            with self.env.registry.cursor() as cr:
                self._store_publisher_hash(credential.with_env(self.env(cr=cr)), secret)
            self.env["iot.credentials.secret"].invalidate_model()
        return credential.username, secret

    @api.model
    def _store_publisher_hash(self, credential, secret):
        secrets_model = credential.env["iot.credentials.secret"].sudo()
        secrets_model._revoke_credentials(credential, "long_lived")
        secrets_model._issue(credential, "long_lived", secret=secret)

    @api.model
    def _publisher_secret(self):
        params = self.env["ir.config_parameter"].sudo()
        key = params.get_param("database.secret", "").encode()
        version = params.get_param("iot_base.publisher_secret_version", "1")
        return hmac.new(
            key, f"iot_base.publisher:{version}".encode(), hashlib.sha256
        ).hexdigest()[:40]

    # ------------------------------------------------------------------
    # Publishing
    # ------------------------------------------------------------------

    @api.model
    def _publish(self, messages):
        """Publish ``messages``: a list of (topic, payload, qos, retain).

        Connects, publishes, waits for the broker's acknowledgements and
        disconnects within the configured timeout in all, so a worker is
        never held longer. Raises UserError with the broker's own words.
        """
        settings = self._settings()
        username, secret = self._publisher_login()
        deadline = time.monotonic() + settings["timeout"]
        if self.env["iot.mosquitto.sync"].sudo()._is_enabled():
            self._wait_for_publisher_slot(deadline, settings["timeout"])
        connected = threading.Event()
        outcome = {}

        def on_connect(_client, _userdata, _flags, reason_code, _properties):
            outcome["connack"] = reason_code
            connected.set()

        client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            # one per connection (workers publish at the same time), and one
            # the publisher credential owns: brokers refuse any other
            client_id=make_client_id(username, secrets.token_hex(8)),
            clean_session=True,
        )
        client.username_pw_set(username, secret)
        client.connect_timeout = settings["timeout"]
        client.on_connect = on_connect
        if settings["tls"]:
            client.tls_set()
        try:
            try:
                client.connect(settings["host"], settings["port"], keepalive=30)
            except (OSError, ValueError) as exc:
                raise UserError(
                    _(
                        "Cannot reach the MQTT broker at %(host)s:%(port)s: %(error)s",
                        host=settings["host"],
                        port=settings["port"],
                        error=exc,
                    )
                ) from exc
            client.loop_start()
            if not connected.wait(max(deadline - time.monotonic(), 0)):
                raise UserError(
                    _(
                        "The MQTT broker at %(host)s:%(port)s did not answer within "
                        "%(timeout)s seconds.",
                        host=settings["host"],
                        port=settings["port"],
                        timeout=settings["timeout"],
                    )
                )
            reason = outcome["connack"]
            if reason.is_failure:
                raise UserError(
                    _(
                        "The MQTT broker refused Odoo's connection: %(reason)s",
                        reason=reason,
                    )
                )
            infos = [
                client.publish(topic, payload, qos=qos, retain=retain)
                for topic, payload, qos, retain in messages
            ]
            for info in infos:
                info.wait_for_publish(max(deadline - time.monotonic(), 0.01))
                if not info.is_published():
                    raise UserError(
                        _(
                            "The MQTT broker did not acknowledge the message on "
                            "%(topic)s within %(timeout)s seconds.",
                            topic=messages[infos.index(info)][0],
                            timeout=settings["timeout"],
                        )
                    )
        finally:
            client.disconnect()
            client.loop_stop()
        _logger.info("Published %d MQTT message(s) as %s", len(messages), username)
        return len(messages)

    @api.model
    def _wait_for_publisher_slot(self, deadline, timeout):
        """Mosquitto makes the login the client id (``use_username_as_clientid``,
        the client id policy): two workers publishing at once would close
        each other's connection. One at a time, until this transaction ends."""
        while True:
            self.env.cr.execute(
                "SELECT pg_try_advisory_xact_lock(%s)", [PUBLISHER_LOCK_KEY]
            )
            if self.env.cr.fetchone()[0]:
                return
            if time.monotonic() > deadline:
                raise UserError(
                    _(
                        "Odoo's MQTT publisher is busy with another message; "
                        "nothing was sent within %(timeout)s seconds: try again.",
                        timeout=timeout,
                    )
                )
            time.sleep(0.05)

    @api.model
    def _test_connection(self):
        """Connect and disconnect; returns a message or raises UserError."""
        self._publish([])
        settings = self._settings()
        return _(
            "Connected to %(host)s:%(port)s as Odoo's publisher.",
            host=settings["host"],
            port=settings["port"],
        )

    @api.model
    def _send_command(self, devices, command, payload, qos=1):
        """Publish ``payload`` (JSON-serialisable) to each device's
        ``<ns>/devices/<username>/commands/<command>`` topic."""
        body = json.dumps(payload)
        messages = [
            (f"{device._topics()['commands']}/{command}", body, qos, False)
            for device in devices
        ]
        return self._publish(messages)
