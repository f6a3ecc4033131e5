# License LGPL-3.0 or later (https://www.gnu.org/licenses/lgpl).
from datetime import timedelta

from psycopg2 import errors

from odoo import _, fields, models
from odoo.exceptions import AccessError
from odoo.tools import SQL

from ..tools.settings import number_param

DEFAULT_SESSION_LIFETIME_HOURS = 12.0


class ResUsers(models.Model):
    _inherit = "res.users"

    iot_credential_ids = fields.One2many(
        "iot.credentials",
        "user_id",
        string="MQTT Credentials",
        groups="iot_base.iot_base_group_user",
    )

    def write(self, vals):
        res = super().write(vals)
        if "active" in vals and not vals["active"]:
            # Authentication already refuses archived owners; dropping their
            # secrets too means unarchiving does not revive old sessions.
            credentials = (
                self.env["iot.credentials"]
                .sudo()
                .with_context(active_test=False)
                .search([("user_id", "in", self.ids)])
            )
            self.env["iot.credentials.secret"].sudo()._revoke_credentials(credentials)
            # their devices are shown offline now, with the reason
            self.env["iot.mqtt.device"]._presence_cut_credentials(
                credentials, "owner_archived"
            )
        if (
            "active" in vals
            or "groups_id" in vals
            or any(key.startswith(("in_group_", "sel_groups_")) for key in vals)
        ):
            # who may use the broker changed (Mosquitto files, live sessions)
            self.env["iot.store.sync"]._schedule()
            self.env["iot.broker.session"]._cut_users(self)
        return res

    def unlink(self):
        self.env["iot.broker.session"]._cut_users(self)
        res = super().unlink()
        self.env["iot.store.sync"]._schedule()
        return res

    def _iot_broker_username(self, credentials):
        """The MQTT username to send with ``credentials["password"]``.

        ``credentials`` is what :meth:`get_or_create_iot_credentials` returned.
        With the Mosquitto files enabled, a session secret has its own login
        ``<username>~<secret id>`` (Mosquitto holds one secret per name);
        otherwise, and for the EMQX flow, it is ``credentials["username"]``.
        """
        self.ensure_one()
        credential = (
            self.env["iot.credentials"].sudo().browse(credentials["credential_id"])
        )
        if credential.user_id != self or not credentials.get("secret_id"):
            return credentials["username"]
        return (
            self.env["iot.mosquitto.sync"]
            .sudo()
            ._broker_login(credential.username, credentials["secret_id"])
        )

    def _iot_session_lifetime(self):
        hours = number_param(
            self.env,
            "iot_base.session_lifetime_hours",
            DEFAULT_SESSION_LIFETIME_HOURS,
            float,
        )
        # no lifetime beyond ten years (timedelta and the database have limits)
        return timedelta(hours=min(hours, 24 * 3650))

    def get_or_create_iot_credentials(self):
        """Return the MQTT identity of this user with a fresh session secret.

        Finds the user's first active credential of kind User, or creates
        one named ``user_<login sanitized>``. Secrets are stored hashed, so
        each call issues a new short-lived session secret; earlier unexpired
        ones keep working (several tabs), up to ``iot_base.max_session_secrets``
        per credential: beyond it the oldest is deleted.

        :return: dict with ``username``, ``password``, ``is_superuser``,
            ``expires_at`` (UTC, ``YYYY-MM-DD HH:MM:SS``), ``credential_id``
            and ``secret_id`` (the session secret's row)
        """
        self.ensure_one()
        if not (self.env.su or self == self.env.user):
            raise AccessError(_("You can only get your own MQTT credentials."))
        if not self.has_group("iot_base.iot_base_group_user"):
            raise AccessError(_("You are not allowed to use MQTT: ask an IoT manager."))
        credential = self._iot_user_credential()
        issued = credential._issue_secret("session", self._iot_session_lifetime())
        return {
            "username": credential.username,
            "password": issued.secret,
            "is_superuser": credential.is_superuser,
            "expires_at": fields.Datetime.to_string(issued.expires_at),
            "credential_id": credential.id,
            "secret_id": issued.secret_id,
        }

    def _iot_user_credential(self, create=True):
        """The user's first active User credential, created when missing
        (without ``create``: a new record of what it would be, not saved)."""
        credentials = self.env["iot.credentials"].sudo()
        credential = credentials.search(
            [("user_id", "=", self.id), ("kind", "=", "user")], order="id", limit=1
        )
        if credential:
            return credential
        username = credentials._free_username(
            "user_" + credentials._sanitize_login(self.login)
        )
        if not create:
            return credentials.new(
                {
                    "username": username,
                    "kind": "user",
                    "user_id": self.id,
                    "company_id": self.company_id.id,
                }
            )
        # Plain SQL for the one statement that can meet a concurrent first
        # call: when another transaction committed this username after our
        # snapshot, PostgreSQL (REPEATABLE READ) raises a serialization
        # failure, and Odoo replays the whole request in a fresh transaction
        # that finds the credential. ON CONFLICT keeps the unique violation
        # (and its "bad query" error log) out of it.
        now = fields.Datetime.now()
        self.env.cr.execute(
            SQL(
                """
            INSERT INTO iot_credentials (username, kind, user_id, company_id,
                active, is_superuser, create_uid, create_date, write_uid, write_date)
            VALUES (%(username)s, 'user', %(user)s, %(company)s, true, false,
                %(uid)s, %(now)s, %(uid)s, %(now)s)
            ON CONFLICT (username) DO NOTHING
            RETURNING id
            """,
                username=username,
                user=self.id,
                company=self.company_id.id,
                uid=self.env.uid,
                now=now,
            ),
            log_exceptions=False,
        )
        row = self.env.cr.fetchone()
        if not row:
            # taken by a row we can see: only possible if it appeared between
            # our search and the insert, the same race as above
            raise errors.SerializationFailure("concurrent MQTT credential creation")
        return credentials.browse(row[0])
