# License LGPL-3.0 or later (https://www.gnu.org/licenses/lgpl).
"""Two processes, as in production: the listener is ``odoo-bin iot-listen``
started by the test, this test process is the server (its own registry and
caches, requests through Odoo's WSGI application). Odoo's caches are per
process: what one writes must reach the other's through the registry
signaling (``signal_changes`` after a commit, ``check_signaling`` before
reading), on committed transactions (not test mode) and a real Mosquitto."""

import itertools
import os
import signal
import subprocess
import sys
import tempfile
import time

from werkzeug.test import Client

from odoo import SUPERUSER_ID, api, http
from odoo.modules.registry import Registry
from odoo.tests import BaseCase, get_db_name, tagged
from odoo.tools import config

from odoo.addons.iot_base.models import iot_listener
from odoo.addons.iot_base.tools.client_ids import make_client_id

from .listener_common import SLOW_WAIT, CommittedListenerMixin

TOKEN = "listener-process-test-token-0123456789"
# the listener process loads a registry first: slower than a reload
START_WAIT = 90.0


@tagged("post_install", "-at_install")
class TestListenerProcess(CommittedListenerMixin, BaseCase):
    def setUp(self):
        super().setUp()
        self.registry = Registry(get_db_name())
        self._setup_committed(
            {
                "iot_base.auth_token": TOKEN,
                iot_listener.MAX_PAYLOAD_PARAM: "8192",
            }
        )

    # -- the listener process ------------------------------------------------

    def _start_listener_process(self):
        """``odoo-bin iot-listen -d <this database>``, its log in a file;
        stopped (SIGTERM) at cleanup, before the broker and the rows."""
        handle, self.listener_log = tempfile.mkstemp(suffix=".iot_listen.log")
        os.close(handle)
        self.addCleanup(os.unlink, self.listener_log)
        command = [
            sys.executable,
            sys.argv[0],  # odoo-bin, or the launcher make test runs
            f"--addons-path={config['addons_path']}",
            "iot-listen",
            "-d",
            get_db_name(),
            f"--data-dir={config['data_dir']}",
            f"--logfile={self.listener_log}",
            "--log-level=info",
        ]
        # the database connection as this process has it (a password through
        # the environment, never on a command line)
        env = dict(os.environ)
        for option, variable in (
            ("db_host", "PGHOST"),
            ("db_port", "PGPORT"),
            ("db_user", "PGUSER"),
            ("db_password", "PGPASSWORD"),
        ):
            if config[option]:
                env[variable] = str(config[option])
        process = subprocess.Popen(  # noqa: S603 - our own odoo-bin
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
            env=env,
        )

        def stop():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(SLOW_WAIT)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(5)

        self.addCleanup(stop)
        self.listener_process = process
        return process

    def _log_lines(self):
        with open(self.listener_log, encoding="utf-8", errors="replace") as handle:
            return handle.read().splitlines()

    def _wait_log(self, text, after=0, timeout=SLOW_WAIT):
        """The index of the first line of the listener's log, from line
        ``after``, holding ``text``."""

        def found():
            if self.listener_process.poll() is not None:
                self.fail(
                    "the listener process ended:\n" + "\n".join(self._log_lines())
                )
            for index, line in enumerate(self._log_lines()[after:], after):
                if text in line:
                    return index + 1  # (never 0: a truthy index)
            return None

        return self._wait(found, f"{text!r} in the listener's log", timeout) - 1

    # -- the server: requests through Odoo's WSGI application -----------------

    def _acl(self, username, topic):
        """What this process (the server) answers EMQX's authorization
        request: a subscribe of ``topic`` by ``username``."""
        client = Client(http.root)
        response = client.post(
            "/iot/acl",
            json={
                "username": username,
                "clientid": make_client_id(username, "check"),
                "action": "subscribe",
                "topic": topic,
                "qos": "1",
                "retain": "false",
            },
            headers={"Authorization": f"Bearer {TOKEN}"},
        )
        self.assertEqual(response.status_code, 200, response.text)
        return response.json["result"]

    # -- the tests ------------------------------------------------------------

    def test_caches_follow_the_other_process(self):
        process = self._start_listener_process()
        # the main company's connection is up (and its SUBACK in a moment)
        started = self._wait_log(f"company {self.company_id}: connected", 0, START_WAIT)
        sensor = self._device_client(self.username, self.secret)
        topic = f"{self.ns}/devices/{self.username}/telemetry"
        self._publish(sensor, f"{topic}/before", "x" * 2048)
        self._wait(
            lambda: self._reading_of(self.device_id, "before"),
            "a 2 KB reading under the 8 KB limit",
            SLOW_WAIT,
        )

        # server -> listener: the limit lowered here, committed and signalled
        # as a request does (odoo.service.model.retrying)
        with self.registry.cursor() as cr:
            params = api.Environment(cr, SUPERUSER_ID, {})["ir.config_parameter"]
            params.set_param(iot_listener.MAX_PAYLOAD_PARAM, "1024")
        self.registry.signal_changes()
        deadline = time.monotonic() + SLOW_WAIT
        for attempt in itertools.count():
            # a 2 KB reading, then a small one: once the small one is stored,
            # the big one was either stored or dropped
            big = str(attempt).rjust(2048, "x")
            self._publish(sensor, f"{topic}/after", big)
            self._publish(sensor, f"{topic}/mark", str(attempt))
            self._wait(
                lambda mark=str(attempt): (
                    self._reading_of(self.device_id, "mark") == mark
                ),
                "the small reading after the big one",
            )
            if self._reading_of(self.device_id, "after") != big:
                break  # dropped: the new limit holds
            self.assertLess(
                time.monotonic(), deadline, "the listener kept the old limit"
            )
        self._wait_log("settings changed: max_payload", started)

        # listener -> server: a new company, whose name for a listener was
        # taken first (as the old username-pattern hole allowed); the server
        # has its topic rules cached (what every broker request reads)
        with self.registry.cursor() as cr:
            env = api.Environment(cr, SUPERUSER_ID, {})
            cr.execute("SELECT last_value FROM res_company_id_seq")
            next_id = cr.fetchone()[0] + 1
            squatter = env["iot.credentials"]._create_odoo_credentials(
                {
                    "username": f"odoo_listener_{next_id}",
                    "kind": "service",
                    "company_id": self.company_id,
                }
            )
            squatter_id = squatter.id
            company = env["res.company"].create({"name": "Listener Process Co"})
            self.assertEqual(company.id, next_id)
            new_ns = company.iot_mqtt_namespace
        self.registry.signal_changes()
        status = f"{new_ns}/devices/+/status/#"
        self.assertEqual(self._acl(f"odoo_listener_{next_id}", status), "deny")
        # the listener's next reload links the new company's own credential
        mark = len(self._log_lines())
        self._wait_log(f"company {next_id}: connected", mark, 2 * SLOW_WAIT)
        ((username, squatter_rules),) = self._query(
            "SELECT c.username, (SELECT count(*) FROM iot_acl_rule_iot_credentials_rel"
            "        WHERE iot_credentials_id = %s)"
            "  FROM res_company r JOIN iot_credentials c"
            "    ON c.id = r.iot_listener_credential_id WHERE r.id = %s",
            [squatter_id, next_id],
        )
        self.assertEqual(username, f"odoo_listener_{next_id}_2")
        self.assertEqual(squatter_rules, 0)
        # seen by the server's cached rules, with no cache cleared here
        self.assertEqual(self._acl(username, status), "allow")
        self.assertEqual(self._acl(f"odoo_listener_{next_id}", status), "deny")
        self.assertEqual(self._acl(username, f"{self.ns}/devices/+/status/#"), "deny")
        self.assertIsNone(process.poll())

    def _reading_of(self, device_id, topic):
        rows = self._query(
            "SELECT payload FROM iot_device_reading"
            " WHERE device_id = %s AND topic = %s",
            [device_id, topic],
        )
        return rows[0][0] if rows else None
