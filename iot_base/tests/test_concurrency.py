# License LGPL-3.0 or later (https://www.gnu.org/licenses/lgpl).
import threading
from unittest.mock import patch

from psycopg2.errors import SerializationFailure

from odoo import SUPERUSER_ID, api
from odoo.api import Transaction
from odoo.modules.registry import Registry
from odoo.tests import BaseCase, get_db_name, new_test_user, tagged

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
