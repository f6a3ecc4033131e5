# License LGPL-3.0 or later (https://www.gnu.org/licenses/lgpl).
from datetime import timedelta

from freezegun import freeze_time

from odoo import fields
from odoo.exceptions import UserError, ValidationError
from odoo.tests import new_test_user, tagged

from odoo.addons.iot_base.tools.secret_hash import mosquitto_hash

from .common import IotCommonCase


@tagged("post_install", "-at_install")
class TestCredentials(IotCommonCase):
    def _user_credentials(self, user):
        return self.Credentials.search([("user_id", "=", user.id)])

    def _secret_rows(self, credential):
        self.env.cr.execute(
            "SELECT secret_type, expires_at FROM iot_credentials_secret "
            "WHERE credential_id = %s",
            [credential.id],
        )
        return self.env.cr.fetchall()

    # usernames ---------------------------------------------------------

    def test_username_from_login(self):
        user = new_test_user(
            self.env,
            login="admin@example.com",
            groups="base.group_user,iot_base.iot_base_group_user",
        )
        creds = user.with_user(user).get_or_create_iot_credentials()
        self.assertEqual(creds["username"], "user_admin_example_com")
        self.assertEqual(
            self.Credentials._sanitize_login("Jöhn.Doe+mqtt@Example.COM"),
            "j_hn_doe_mqtt_example_com",
        )
        self.assertEqual(self.Credentials._sanitize_login("***"), "user")

    def test_username_collision(self):
        first = new_test_user(
            self.env, login="a.b@x.com", groups="iot_base.iot_base_group_user"
        )
        second = new_test_user(
            self.env, login="a-b@x.com", groups="iot_base.iot_base_group_user"
        )
        third = new_test_user(
            self.env, login="a_b@x.com", groups="iot_base.iot_base_group_user"
        )
        names = [
            u.with_user(u).get_or_create_iot_credentials()["username"]
            for u in (first, second, third)
        ]
        self.assertEqual(
            names, ["user_a_b_x_com", "user_a_b_x_com_2", "user_a_b_x_com_3"]
        )
        # an archived credential still holds its name
        self.Credentials.search(
            [("username", "=", "user_a_b_x_com_3")]
        ).action_archive()
        fourth = new_test_user(
            self.env, login="a+b@x.com", groups="iot_base.iot_base_group_user"
        )
        self.assertEqual(
            fourth.with_user(fourth).get_or_create_iot_credentials()["username"],
            "user_a_b_x_com_4",
        )

    def test_username_validation(self):
        for bad in ("", "a b", "a/b", "a+b", "a#b", "x" * 129, "a\nb"):
            with self.subTest(bad=bad), self.assertRaises(ValidationError):
                with self.env.cr.savepoint():
                    self._device(bad)
        self.assertTrue(self._device("device:tenant-1:dev.01@site"))
        # a trailing newline would end a Mosquitto password or ACL line early
        device = self._device("device_nl01")
        with self.assertRaises(ValidationError), self.env.cr.savepoint():
            device.write({"username": "device_nl01\n"})

    def test_username_only_dots(self):
        """``.``, ``..`` are REST path dot-segments on the brokers' APIs
        (revoking ``..`` once deleted EMQX's authenticator): refused to
        everyone, sudo included, at creation, rename and through the wizard."""
        device = self._device("device_dots01")
        manager = self.env["iot.credentials.new"].with_user(self.iot_manager)
        for username in (".", "..", "..."):
            with self.subTest(username=username):
                with (
                    self.assertRaisesRegex(ValidationError, "dots only"),
                    self.env.cr.savepoint(),
                ):
                    self._device(username)
                with (
                    self.assertRaisesRegex(ValidationError, "dots only"),
                    self.env.cr.savepoint(),
                ):
                    device.write({"username": username})
                wizard = manager.create({"username": username, "kind": "device"})
                with (
                    self.assertRaisesRegex(ValidationError, "dots only"),
                    self.env.cr.savepoint(),
                ):
                    wizard.action_create()
        self.assertEqual(device.username, "device_dots01")
        self.assertFalse(
            self.Credentials.with_context(active_test=False).search(
                [("username", "in", (".", "..", "..."))]
            )
        )

    def test_reserved_usernames(self):
        """``odoo_`` names are given out by Odoo's own code only: not by a
        manager, an administrator or sudo, on create or rename."""
        admin = new_test_user(
            self.env,
            login="iot.reserved.admin",
            groups="base.group_system,iot_base.iot_base_group_manager",
        )
        device = self._device("device_rsv01")
        for env in (
            self.env(su=True),
            self.env(user=admin),
            self.env(user=self.iot_manager),
        ):
            for username in ("odoo_listener_99", "odoo_publisher_2", "odoo_"):
                with self.subTest(uid=env.uid, su=env.su, username=username):
                    with (
                        self.assertRaisesRegex(ValidationError, "Odoo's own"),
                        self.env.cr.savepoint(),
                    ):
                        env["iot.credentials"].create(
                            {"username": username, "kind": "service"}
                        )
                    with (
                        self.assertRaisesRegex(ValidationError, "Odoo's own"),
                        self.env.cr.savepoint(),
                    ):
                        device.with_env(env).write({"username": username})
        # a context key in an RPC call is JSON: it cannot carry the marker
        with (
            self.assertRaisesRegex(ValidationError, "Odoo's own"),
            self.env.cr.savepoint(),
        ):
            self.Credentials.with_context(iot_base_odoo_own_credential=True).create(
                {"username": "odoo_listener_98", "kind": "service"}
            )
        # Odoo's own code, through its one door
        own = self.Credentials._create_odoo_credentials(
            [{"username": "odoo_listener_97", "kind": "service"}]
        )
        self.assertEqual(own.username, "odoo_listener_97")
        self.assertNotIn("iot_base_odoo_own_credential", own.env.context)
        with self.assertRaisesRegex(ValidationError, "Odoo's own"):
            own.write({"username": "odoo_listener_96"})

    def test_credential_limit_per_company(self):
        """``iot_base.max_credentials_per_company``: archived credentials
        count, a batch past the limit creates nothing, other companies and
        Odoo's own service credentials are not held back."""
        Credentials = self.Credentials.with_context(active_test=False)
        existing = Credentials.search_count([("company_id", "=", self.company.id)])
        self.env["ir.config_parameter"].sudo().set_param(
            "iot_base.max_credentials_per_company", existing + 2
        )
        self._device("device_lim01").action_revoke()
        with (
            self.assertRaisesRegex(UserError, f"at most {existing + 2} MQTT"),
            self.env.cr.savepoint(),
        ):
            self.Credentials.create(
                [
                    {"username": f"device_lim1{i}", "company_id": self.company.id}
                    for i in range(2)
                ]
            )
        self.assertFalse(Credentials.search([("username", "=like", "device_lim1%")]))
        self._device("device_lim02")
        manager = self.env["iot.credentials.new"].with_user(self.iot_manager)
        wizard = manager.create({"username": "device_lim03", "kind": "device"})
        with self.assertRaisesRegex(UserError, "at most"), self.env.cr.savepoint():
            wizard.action_create()
        other = self._device("device_lim04", company=self.other_company)
        with self.assertRaisesRegex(UserError, "at most"), self.env.cr.savepoint():
            other.write({"company_id": self.company.id})
        own = self.Credentials._create_odoo_credentials(
            {"username": "odoo_lim_service", "company_id": self.company.id}
        )
        self.assertTrue(own)

    # session secrets ---------------------------------------------------

    def test_session_secrets(self):
        user = self.iot_user.with_user(self.iot_user)
        first = user.get_or_create_iot_credentials()
        second = user.get_or_create_iot_credentials()
        self.assertEqual(
            set(first),
            {
                "username",
                "password",
                "is_superuser",
                "expires_at",
                "credential_id",
                "secret_id",
            },
        )
        self.assertEqual(first["username"], second["username"])
        self.assertNotEqual(first["password"], second["password"])
        self.assertGreaterEqual(len(first["password"]), 32)  # >= 128 bits in hex
        self.assertFalse(first["is_superuser"])
        credential = self._user_credentials(self.iot_user)
        self.assertEqual(len(credential), 1)
        # both tabs keep working
        self.assertEqual(
            self._authenticate(first["username"], first["password"]), credential
        )
        self.assertEqual(
            self._authenticate(second["username"], second["password"]), credential
        )
        # default lifetime: 12 hours
        expires = fields.Datetime.to_datetime(first["expires_at"])
        self.assertAlmostEqual(
            expires,
            fields.Datetime.now() + timedelta(hours=12),
            delta=timedelta(minutes=1),
        )
        self.assertEqual(len(self._secret_rows(credential)), 2)

    def test_session_secret_expiry_and_vacuum(self):
        self.env["ir.config_parameter"].sudo().set_param(
            "iot_base.session_lifetime_hours", "1"
        )
        user = self.iot_user.with_user(self.iot_user)
        creds = user.get_or_create_iot_credentials()
        credential = self._user_credentials(self.iot_user)
        expires = fields.Datetime.to_datetime(creds["expires_at"])
        self.assertAlmostEqual(
            expires,
            fields.Datetime.now() + timedelta(hours=1),
            delta=timedelta(minutes=1),
        )
        with freeze_time(fields.Datetime.now() + timedelta(minutes=59)):
            self.assertEqual(
                self._authenticate(creds["username"], creds["password"]), credential
            )
            self.env["iot.credentials.secret"]._gc_expired_secrets()
            self.assertEqual(len(self._secret_rows(credential)), 1)
        with freeze_time(fields.Datetime.now() + timedelta(minutes=61)):
            self.assertFalse(self._authenticate(creds["username"], creds["password"]))
            self.env["iot.credentials.secret"]._gc_expired_secrets()
            self.assertEqual(self._secret_rows(credential), [])

    def test_session_secrets_are_capped(self):
        """Every console load issues a session secret: at most N live ones
        per credential (default 20), the oldest go first."""
        user = self.iot_user.with_user(self.iot_user)
        issued = [user.get_or_create_iot_credentials() for _load in range(25)]
        credential = self._user_credentials(self.iot_user)
        self.assertEqual(len(self._secret_rows(credential)), 20)
        username = issued[0]["username"]
        for creds in issued[:5]:
            self.assertFalse(self._authenticate(username, creds["password"]))
        for creds in issued[5:]:
            self.assertEqual(
                self._authenticate(username, creds["password"]), credential
            )
        # a device's long-lived secret is not a session: never trimmed
        device, device_secret = self._device_with_secret()
        self.env["ir.config_parameter"].sudo().set_param(
            "iot_base.max_session_secrets", "3"
        )
        issued.append(user.get_or_create_iot_credentials())
        self.assertEqual(len(self._secret_rows(credential)), 3)
        self.assertFalse(self._authenticate(username, issued[-4]["password"]))
        self.assertTrue(self._authenticate(username, issued[-1]["password"]))
        self.assertEqual(self._authenticate(device.username, device_secret), device)
        # another user's sessions are theirs: not counted, not trimmed
        other = self.iot_user2.with_user(self.iot_user2)
        other_creds = other.get_or_create_iot_credentials()
        user.get_or_create_iot_credentials()
        self.assertTrue(
            self._authenticate(other_creds["username"], other_creds["password"])
        )
        for value in ("abc", "-1", "0"):
            self.env["ir.config_parameter"].sudo().set_param(
                "iot_base.max_session_secrets", value
            )
            self.assertEqual(
                self.env["iot.credentials.secret"]._max_session_secrets(), 20
            )

    def test_max_session_secrets_setting(self):
        settings = self.env["res.config.settings"].create({})
        self.assertEqual(settings.iot_max_session_secrets, 20)
        settings.iot_max_session_secrets = 5
        settings.execute()
        self.assertEqual(self.env["iot.credentials.secret"]._max_session_secrets(), 5)

    def test_bad_lifetime_parameter_falls_back(self):
        for value in ("abc", "-3", "0"):
            self.env["ir.config_parameter"].sudo().set_param(
                "iot_base.session_lifetime_hours", value
            )
            self.assertEqual(self.iot_user._iot_session_lifetime(), timedelta(hours=12))

    def test_session_secret_capped_by_credential_expiry(self):
        user = self.iot_user.with_user(self.iot_user)
        user.get_or_create_iot_credentials()
        credential = self._user_credentials(self.iot_user)
        soon = fields.Datetime.now() + timedelta(hours=2)
        credential.expires_at = soon
        creds = user.get_or_create_iot_credentials()
        self.assertEqual(creds["expires_at"], fields.Datetime.to_string(soon))

    # device and service secrets -----------------------------------------

    def test_device_secret_shown_once_and_rotated(self):
        wizard = (
            self.env["iot.credentials.new"]
            .with_user(self.iot_manager)
            .create({"username": "device_ab12cd34", "kind": "device"})
        )
        action = wizard.action_create()
        self.assertEqual(action["res_model"], "iot.credentials.secret.show")
        secret = action["context"]["default_secret"]
        self.assertEqual(action["context"]["default_username"], "device_ab12cd34")
        device = self.Credentials.search([("username", "=", "device_ab12cd34")])
        self.assertEqual(device.kind, "device")
        self.assertEqual(self._authenticate("device_ab12cd34", secret), device)
        # never shown again: nothing readable holds it
        data = device.with_user(self.iot_manager).read()
        self.assertNotIn(secret, repr(data))
        self.assertNotIn(secret, repr(device.secret_ids.read()))
        # rotation: the old secret fails at once, the new one works
        new_secret = device.with_user(self.iot_manager).action_rotate_secret()[
            "context"
        ]["default_secret"]
        self.assertNotEqual(new_secret, secret)
        self.assertFalse(self._authenticate("device_ab12cd34", secret))
        self.assertEqual(self._authenticate("device_ab12cd34", new_secret), device)
        self.assertEqual([row[0] for row in self._secret_rows(device)], ["long_lived"])

    def test_service_credential(self):
        service, secret = self._device_with_secret(
            "service:pulse", kind="service", is_superuser=True
        )
        self.assertEqual(self._authenticate("service:pulse", secret), service)
        self.assertTrue(service.is_superuser)
        self.assertFalse(self._secret_rows(service)[0][1], "long-lived: no expiry")

    def test_rotate_refused_for_user_credentials(self):
        self.iot_user.with_user(self.iot_user).get_or_create_iot_credentials()
        with self.assertRaises(ValidationError):
            self._user_credentials(self.iot_user).action_rotate_secret()

    def test_revocation_is_final(self):
        device, secret = self._device_with_secret()
        device.with_user(self.iot_manager).action_revoke()
        self.assertFalse(device.active)
        self.assertFalse(self._authenticate("device_test01", secret))
        device.action_unarchive()
        self.assertFalse(self._authenticate("device_test01", secret))
        self.assertEqual(self._secret_rows(device), [])

    # verification ------------------------------------------------------

    def test_verification(self):
        device, secret = self._device_with_secret()
        self.assertEqual(self._authenticate("device_test01", secret), device)
        self.assertTrue(device.last_auth_at)
        wrong = ("0" if secret[0] != "0" else "1") + secret[1:]  # another index
        for username, password in [
            ("device_test01", secret[:-1] + ("0" if secret[-1] != "0" else "1")),
            ("device_test01", secret[:8] + "f" * 32),  # right index, wrong secret
            ("device_test01", wrong),
            ("device_test01", ""),
            ("device_test01", secret[:8]),
            ("device_test01", secret + "x" * 200),
            ("device_test02", secret),
            ("", secret),
            ("DEVICE_TEST01", secret),
            ("x" * 10000, secret),
        ]:
            with self.subTest(username=username[:20], password=password[:12]):
                self.assertFalse(self._authenticate(username, password))

    def test_verification_rejects_non_strings(self):
        device, secret = self._device_with_secret()
        for username, password in [
            ("device_test01", [secret]),
            ("device_test01", [secret, "x"]),
            ("device_test01", {"$ne": ""}),
            ("device_test01", None),
            ("device_test01", 12345678901234),
            ("device_test01", secret.encode()),
            (["device_test01"], secret),
            (None, secret),
            ({"device_test01": 1}, secret),
        ]:
            with self.subTest(username=type(username), password=type(password)):
                self.assertFalse(self._authenticate(username, password))

    def test_verification_expired_credential(self):
        device, secret = self._device_with_secret(
            expires_at=fields.Datetime.now() + timedelta(days=1)
        )
        self.assertTrue(self._authenticate("device_test01", secret))
        with freeze_time(fields.Datetime.now() + timedelta(days=2)):
            self.assertFalse(self._authenticate("device_test01", secret))
            self.assertTrue(device.is_expired)
            self.assertIn(device, self.Credentials.search([("is_expired", "=", True)]))
        self.assertNotIn(device, self.Credentials.search([("is_expired", "=", True)]))

    def test_verification_owner_archived_or_out_of_group(self):
        creds = self.iot_user.with_user(self.iot_user).get_or_create_iot_credentials()
        self.assertTrue(self._authenticate(creds["username"], creds["password"]))
        # removed from the IoT group: refused at once
        self.iot_user.groups_id = [(3, self.env.ref("iot_base.iot_base_group_user").id)]
        self.assertFalse(self._authenticate(creds["username"], creds["password"]))
        self.iot_user.groups_id = [(4, self.env.ref("iot_base.iot_base_group_user").id)]
        self.assertTrue(self._authenticate(creds["username"], creds["password"]))
        # archived: refused, and the secrets are gone for good
        self.iot_user.action_archive()
        self.assertFalse(self._authenticate(creds["username"], creds["password"]))
        self.iot_user.action_unarchive()
        self.assertFalse(self._authenticate(creds["username"], creds["password"]))

    def test_last_auth_not_written_every_time(self):
        device, secret = self._device_with_secret()
        self._authenticate("device_test01", secret)
        first = device.last_auth_at
        self.assertTrue(first)
        with freeze_time(first + timedelta(minutes=1)):
            self._authenticate("device_test01", secret)
            device.invalidate_recordset()
            self.assertEqual(device.last_auth_at, first)
        with freeze_time(first + timedelta(minutes=10)):
            self._authenticate("device_test01", secret)
            device.invalidate_recordset()
            self.assertEqual(device.last_auth_at, first + timedelta(minutes=10))

    # storage -----------------------------------------------------------

    def test_no_secret_in_clear_anywhere(self):
        issued = [
            self.iot_user.with_user(self.iot_user).get_or_create_iot_credentials()[
                "password"
            ],
            self.iot_user.with_user(self.iot_user).get_or_create_iot_credentials()[
                "password"
            ],
            self._device_with_secret("device_clear01")[1],
            self._device_with_secret("service_clear01", kind="service")[1],
        ]
        wizard = (
            self.env["iot.credentials.new"]
            .with_user(self.iot_manager)
            .create({"username": "device_clear02"})
        )
        issued.append(wizard.action_create()["context"]["default_secret"])
        self.env.flush_all()
        self.env.cr.execute(
            "SELECT table_name FROM information_schema.tables "
            "WHERE table_schema = 'public' AND table_type = 'BASE TABLE'"
        )
        tables = [row[0] for row in self.env.cr.fetchall()]
        self.assertIn("iot_credentials", tables)
        self.assertIn("iot_credentials_secret", tables)
        for secret in issued:
            for table in tables:
                # the row cast to text covers every column of the table
                self.env.cr.execute(
                    f'SELECT count(*) FROM "{table}" t WHERE strpos(t::text, %s) > 0',
                    [secret],
                )
                self.assertEqual(
                    self.env.cr.fetchone()[0], 0, f"secret in clear in {table}"
                )

    def test_mosquitto_hash_format(self):
        import base64
        import hashlib

        device, secret = self._device_with_secret()
        self.env.cr.execute(
            "SELECT hash FROM iot_credentials_secret WHERE credential_id = %s",
            [device.id],
        )
        line = mosquitto_hash(self.env.cr.fetchone()[0])
        _empty, seven, rounds, salt, key = line.split("$")
        self.assertEqual(seven, "7")
        salt, key = base64.b64decode(salt), base64.b64decode(key)
        self.assertEqual((len(salt), len(key)), (12, 64))
        self.assertEqual(
            hashlib.pbkdf2_hmac("sha512", secret.encode(), salt, int(rounds)), key
        )
        self.assertIsNone(mosquitto_hash("$2b$12$whatever"))
