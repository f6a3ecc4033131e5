# License LGPL-3.0 or later (https://www.gnu.org/licenses/lgpl).
import json
import threading
from unittest.mock import patch

import requests
from psycopg2.errors import SerializationFailure

from odoo import SUPERUSER_ID, api
from odoo.api import Transaction
from odoo.modules.registry import DummyRLock, Registry
from odoo.tests import (
    HOST,
    BaseCase,
    HttpCase,
    get_db_name,
    new_test_user,
    tagged,
)
from odoo.tools import config

from odoo.addons.iot_base.models.iot_credentials import IotCredentials


@tagged("post_install", "-at_install")
class TestConcurrentFirstCall(BaseCase):
    """Two first calls at once, in real committed transactions."""

    def setUp(self):
        super().setUp()
        self.registry = Registry(get_db_name())
        with self.registry.cursor() as cr:
            env = api.Environment(cr, SUPERUSER_ID, {})
            self.user_id = new_test_user(
                env,
                login="race.user@example.com",
                groups="base.group_user,iot_base.iot_base_group_user",
            ).id
        self.addCleanup(self._cleanup)

    def _cleanup(self):
        with self.registry.cursor() as cr:
            env = api.Environment(cr, SUPERUSER_ID, {})
            env["iot.credentials"].with_context(active_test=False).search(
                [("user_id", "=", self.user_id)]
            ).unlink()
            env["res.users"].browse(self.user_id).unlink()

    def test_two_first_calls_make_one_credential(self):
        barrier = threading.Barrier(2, timeout=20)
        original = IotCredentials._free_username

        def free_username_after_both_searched(model, base):
            # both transactions have looked and found nothing before either
            # creates: the race the method must survive
            barrier.wait()
            return original(model, base)

        results, errors, retried = [], [], []

        def call():
            # what Odoo's request dispatch does (service.model.retrying), minus
            # its registry look-ups, which would wait for the registry lock
            # the test runner holds
            try:
                for _attempt in range(5):
                    with self.registry.cursor() as cr:
                        cr.transaction = Transaction(self.registry)
                        env = api.Environment(cr, self.user_id, {})
                        try:
                            results.append(
                                env["res.users"]
                                .browse(self.user_id)
                                .get_or_create_iot_credentials()
                            )
                            return
                        except SerializationFailure:
                            retried.append(True)
                            cr.rollback()
                raise AssertionError("still failing after 5 tries")
            except Exception as exc:  # noqa: BLE001 - reported by the assertion below
                errors.append(exc)

        with patch.object(
            IotCredentials, "_free_username", free_username_after_both_searched
        ):
            threads = [threading.Thread(target=call) for _ in range(2)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(60)
        self.assertEqual(errors, [])
        self.assertEqual(len(results), 2)
        self.assertEqual(results[0]["username"], results[1]["username"])
        self.assertEqual(len(retried), 1, "the loser replays once")
        with self.registry.cursor() as cr:
            env = api.Environment(cr, SUPERUSER_ID, {})
            credentials = env["iot.credentials"].search(
                [("user_id", "=", self.user_id)]
            )
            self.assertEqual(len(credentials), 1)
            for creds in results:
                self.assertEqual(
                    env["iot.credentials"]._authenticate(
                        creds["username"], creds["password"]
                    ),
                    credentials,
                )


@tagged("post_install", "-at_install")
class TestConcurrentFailures(BaseCase):
    """Wrong secrets sent at once, over HTTP, in real committed transactions.

    Not an HttpCase: its requests share one test cursor and take turns, so
    they could never conflict. Here the server's threads open their own
    cursors, as Odoo's workers do (REPEATABLE READ, committed).
    """

    TOKEN = "concurrency-t0ken-for-tests"
    DEVICE = "device_cc12cd34"
    PARAMS = ("iot_base.auth_token", "iot_base.throttle_max_failures")

    def setUp(self):
        super().setUp()
        self.registry = Registry(get_db_name())
        with self.registry.cursor() as cr:
            env = api.Environment(cr, SUPERUSER_ID, {})
            params = env["ir.config_parameter"]
            self.saved_params = {key: params.get_param(key) for key in self.PARAMS}
            params.set_param("iot_base.auth_token", self.TOKEN)
            params.set_param("iot_base.throttle_max_failures", "10")
            device = env["iot.credentials"].create(
                {"username": self.DEVICE, "kind": "device"}
            )
            self.device_id = device.id
            self.secret = device.action_rotate_secret()["context"]["default_secret"]
        self.addCleanup(self._cleanup)

    def _cleanup(self):
        with self.registry.cursor() as cr:
            env = api.Environment(cr, SUPERUSER_ID, {})
            for key, value in self.saved_params.items():
                env["ir.config_parameter"].set_param(key, value or False)
            cr.execute(
                "DELETE FROM iot_auth_throttle WHERE key LIKE %s",
                [f"%{self.DEVICE}%"],
            )
            cr.execute("DELETE FROM iot_auth_throttle WHERE key = 'peer:10.7.7.7'")
            cr.execute("DELETE FROM iot_auth_log WHERE username = %s", [self.DEVICE])
            env["iot.credentials"].browse(self.device_id).unlink()

    def _auth(self, password, peer):
        return requests.post(
            f"http://{HOST}:{HttpCase.http_port()}/iot/auth/{self.TOKEN}",
            json={
                "username": self.DEVICE,
                "password": password,
                "clientid": self.DEVICE,
                "peerhost": peer,
            },
            timeout=30,
        )

    def test_parallel_wrong_secrets_never_fail(self):
        # The test runner holds Registry._lock for the whole run; the server
        # threads' registry look-up would wait for it. HttpCase swaps it for
        # a dummy (Registry.enter_test_mode); so does this test, without
        # the test mode's shared cursor.
        dummy_lock = patch.object(Registry, "_lock", DummyRLock())
        dummy_lock.start()
        self.addCleanup(dummy_lock.stop)
        parallel = 40
        barrier = threading.Barrier(parallel, timeout=20)
        answers, errors = [], []

        def attempt():
            try:
                barrier.wait()
                response = self._auth("f" * 40, "10.7.7.7")
                answers.append((response.status_code, response.text))
            except Exception as exc:  # noqa: BLE001 - reported below
                errors.append(exc)

        threads = [threading.Thread(target=attempt) for _ in range(parallel)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        self.assertEqual(errors, [])
        self.assertEqual(len(answers), parallel)
        self.assertEqual(
            [answer for answer in answers if answer[0] >= 500], [], "no 5xx"
        )
        self.assertEqual(
            {(status, json.loads(text)["result"]) for status, text in answers},
            {(200, "deny")},
        )
        # the attacker's address is blocked now; the device, elsewhere, is not
        blocked = self._auth(self.secret, "10.7.7.7")
        self.assertEqual(blocked.json()["result"], "deny")
        allowed = self._auth(self.secret, "10.1.2.3")
        self.assertEqual(allowed.json()["result"], "allow")

    def test_last_auth_written_after_our_snapshot(self):
        """Another worker recorded a login of the same credential after this
        transaction's snapshot: this login still succeeds (REPEATABLE READ
        would raise a serialization failure on that row)."""
        with self.registry.cursor() as cr_late, self.registry.cursor() as cr_early:
            late = api.Environment(cr_late, SUPERUSER_ID, {})
            early = api.Environment(cr_early, SUPERUSER_ID, {})
            cr_early.execute("SELECT 1")  # takes the snapshot
            stale = late["iot.credentials"].browse(self.device_id)
            stale._touch_last_auth(None)
            cr_late.commit()
            credential, _expires_at = early["iot.credentials"]._authenticate_secret(
                self.DEVICE, self.secret
            )
            self.assertEqual(credential.id, self.device_id)
            cr_early.execute("SELECT 1")  # the transaction is still usable


@tagged("post_install", "-at_install")
class TestPublisherLogin(BaseCase):
    """Odoo's publisher logs in from one transaction while the broker checks
    that login from another: a hash stored when none matched (here: a
    neutralized copy's new secret version) must be committed before use."""

    def test_publisher_hash_committed_before_use(self):
        registry = Registry(get_db_name())
        registry.clear_all_caches()  # nothing cached from other tests
        with (
            patch.dict(config.options, {"test_enable": False}),
            registry.cursor() as cr_request,
            registry.cursor() as cr_broker,
        ):
            request_env = api.Environment(cr_request, SUPERUSER_ID, {})
            params = request_env["ir.config_parameter"]
            version = int(params.get_param("iot_base.publisher_secret_version", "1"))
            params.set_param("iot_base.publisher_secret_version", str(version + 1))
            username, secret = request_env["iot.mqtt.client"]._publisher_login()
            broker_env = api.Environment(cr_broker, SUPERUSER_ID, {})
            self.assertEqual(
                broker_env["iot.credentials"]._authenticate(username, secret),
                broker_env.ref("iot_base.iot_credentials_odoo_publisher"),
            )
            cr_request.rollback()
        # the request's transaction is gone; the installed version's hash
        # is stored again for the tests that follow
        registry.clear_all_caches()
        with registry.cursor() as cr:
            env = api.Environment(cr, SUPERUSER_ID, {})
            with patch.dict(config.options, {"test_enable": False}):
                env["iot.mqtt.client"]._publisher_login()
