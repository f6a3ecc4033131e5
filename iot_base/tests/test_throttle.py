# License LGPL-3.0 or later (https://www.gnu.org/licenses/lgpl).
"""The login throttle's window, cool-down and keys, on a frozen clock
(models/iot_auth_throttle.py; the README's **Throttling** paragraph)."""

from datetime import datetime, timedelta

from freezegun import freeze_time

from odoo.tests import TransactionCase, tagged

T0 = datetime(2026, 3, 1, 12, 0, 0)
PEER = "192.0.2.7"


@tagged("post_install", "-at_install")
class TestThrottleWindow(TransactionCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        params = cls.env["ir.config_parameter"].sudo()
        params.set_param("iot_base.throttle_max_failures", "3")
        params.set_param("iot_base.throttle_window_seconds", "60")
        params.set_param("iot_base.throttle_cooldown_seconds", "300")
        cls.Throttle = cls.env["iot.auth.throttle"].sudo()

    def _fail_at(self, seconds, username="dev1", peer=PEER):
        with freeze_time(T0 + timedelta(seconds=seconds)):
            self.Throttle._register_failure(username, peer)

    def _blocked_at(self, seconds, username="dev1", peer=PEER):
        with freeze_time(T0 + timedelta(seconds=seconds)):
            return self.Throttle._is_blocked(username, peer)

    def test_failures_outside_the_window_do_not_add_up(self):
        # 3 failures, but never 3 within 60 s of each other
        for seconds in (0, 40, 101):
            self._fail_at(seconds)
            self.assertFalse(self._blocked_at(seconds + 1), seconds)
        # the third inside one window blocks
        self._fail_at(130)
        self.assertFalse(self._blocked_at(131))
        self._fail_at(140)
        self.assertTrue(self._blocked_at(141))
        # for the cool-down from that failure (300 s), not from the first
        self.assertTrue(self._blocked_at(439))
        self.assertFalse(self._blocked_at(441))

    def test_cool_down_ends_the_block(self):
        for seconds in (0, 1, 2):
            self._fail_at(seconds)
        # blocked from the third failure for the cool-down (300 s)
        self.assertTrue(self._blocked_at(3))
        self.assertTrue(self._blocked_at(301))
        self.assertFalse(self._blocked_at(303))
        # a block is not extended by the logins it refuses (they only read)
        self.assertFalse(self._blocked_at(303))

    def test_a_username_is_never_locked_out_from_elsewhere(self):
        for seconds in range(10):
            self._fail_at(seconds)
        self.assertTrue(self._blocked_at(11))
        # the same username from another address: not blocked
        self.assertFalse(self._blocked_at(11, peer="198.51.100.1"))
        # another username from the blocked address: only when the address
        # itself failed 5 times the limit (a NAT in front of many devices)
        self.assertFalse(self._blocked_at(11, username="dev2"))
        for seconds in range(10, 15):
            self._fail_at(seconds, username="dev2")
        self.assertTrue(self._blocked_at(16, username="dev3"))

    def test_no_address_no_throttle(self):
        # RabbitMQ's user check, EMQX without peerhost: the address would be
        # the broker's, shared by every client
        rows_before = self.Throttle.search_count([])
        for seconds in range(20):
            self._fail_at(seconds, peer="")
        self.assertFalse(self._blocked_at(21, peer=""))
        # (rows other tests committed may be there: none was added)
        self.assertEqual(self.Throttle.search_count([]), rows_before)

    def test_gc_keeps_blocks_and_the_window(self):
        for seconds in (0, 1, 2):
            self._fail_at(seconds)
        self._fail_at(200, username="other")
        with freeze_time(T0 + timedelta(seconds=250)):
            self.Throttle._gc_throttle()
        # the blocking rows (until 302) and the failure inside the window stay
        self.assertTrue(self._blocked_at(251))
        keys = self.Throttle.search([("key", "like", PEER)]).mapped("key")
        self.assertIn(f"pair:{PEER}|other", keys)
        with freeze_time(T0 + timedelta(seconds=400)):
            self.Throttle._gc_throttle()
        self.assertFalse(self.Throttle.search_count([("key", "like", PEER)]))
