"""Self-test of scripts/odoo_test_report.py over small synthetic Odoo logs
(.ci/run runs it before make test): `python3 scripts/test_odoo_test_report.py`."""

import os
import subprocess
import sys
import tempfile
import unittest

REPORT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "odoo_test_report.py")
HEAD = "2026-01-01 10:00:00,000 42"
DB = "iot_test_1"
MOD = "odoo.addons.iot_base.tests.test_x"


def line(level, logger, msg):
    return f"{HEAD} {level} {DB} {logger}: {msg}\n"


def start(test):
    return line("INFO", MOD, f"Starting {test} ...")


def final(failed=0, errors=0, run=2, level="INFO"):
    return line(
        level,
        "odoo.tests.result",
        f"{failed} failed, {errors} error(s) of {run} tests "
        f"when loading database '{DB}'",
    )


GREEN = start("TestX.test_a") + start("TestX.test_b") + final()


class TestOdooTestReport(unittest.TestCase):
    def report(self, log, rc=0, setup="", setup_rc=0, *extra):
        with tempfile.TemporaryDirectory() as tmp:
            paths = {}
            for name, text in (("setup", setup), ("log", log)):
                paths[name] = os.path.join(tmp, name)
                with open(paths[name], "w", encoding="utf-8") as handle:
                    handle.write(text)
            proc = subprocess.run(
                [
                    sys.executable,
                    REPORT,
                    "--setup-log",
                    paths["setup"],
                    "--setup-rc",
                    str(setup_rc),
                    "--log",
                    paths["log"],
                    "--rc",
                    str(rc),
                    *extra,
                ],
                capture_output=True,
                text=True,
                check=False,
            )
        last = proc.stdout.rstrip("\n").splitlines()[-1]
        return proc.returncode, last, proc.stdout

    def test_green_run(self):
        rc, last, _out = self.report(GREEN)
        self.assertEqual((rc, last), (0, "2 passed, 0 failed"))

    def test_failure(self):
        log = (
            start("TestX.test_a")
            + line("ERROR", MOD, "FAIL: TestX.test_a")
            + "Traceback (most recent call last):\nAssertionError: 1 != 2\n"
            + start("TestX.test_b")
            + final(failed=1, level="ERROR")
        )
        rc, last, _out = self.report(log, rc=1)
        self.assertEqual((rc, last), (1, "1 passed, 1 failed"))

    def test_skip_counts_as_failed(self):
        log = (
            start("TestX.test_a")
            + line("INFO", MOD, "skipped TestX.test_a : no chrome")
            + start("TestX.test_b")
            + final()
        )
        rc, last, out = self.report(log)
        self.assertEqual((rc, last), (1, "1 passed, 1 failed"))
        self.assertIn("SKIPPED", out)

    def test_warning_line_fails(self):
        log = start("TestX.test_a") + line("WARNING", "odoo.x", "odd") + final(run=1)
        rc, last, _out = self.report(log)
        self.assertEqual((rc, last), (1, "1 passed, 1 failed"))

    def test_thread_exception_fails(self):
        log = (
            start("TestX.test_a")
            + "Exception in thread Thread-3 (serve):\n"
            + "Traceback (most recent call last):\n"
            + '  File "x.py", line 1, in serve\nValueError: boom\n'
            + start("TestX.test_b")
            + final()
        )
        rc, last, out = self.report(log)
        self.assertEqual((rc, last), (1, "2 passed, 1 failed"))
        self.assertIn("uncaught exception in thread Thread-3 (serve)", out)
        self.assertIn("ValueError: boom", out)

    def test_fewer_tests_than_main(self):
        rc, last, out = self.report(GREEN, 0, "", 0, "--min-tests", "3")
        self.assertEqual((rc, last), (1, "2 passed, 1 failed"))
        self.assertIn("fewer than the 3", out)
        self.assertEqual(self.report(GREEN, 0, "", 0, "--min-tests", "2")[0], 0)

    def test_hang(self):
        log = start("TestX.test_a")  # ended by the time limit: no final line
        rc, last, out = self.report(log, 124, "", 0, "--timed-out", "60")
        self.assertEqual((rc, last), (1, "1 passed, 1 failed"))
        self.assertIn("the run hung", out)

    def test_no_test(self):
        rc, last, _out = self.report(final(run=0, level="WARNING"))
        self.assertEqual((rc, last), (1, "0 passed, 1 failed"))

    def test_unredacted_broker_url_fails(self):
        for leak in (
            '"POST /iot/auth/S3CRET HTTP/1.1" 200 -',
            "GET //IOT/rabbitmq/S3CRET/user",
            "url http://h/iot%2Facl%2FS3CRET",
        ):
            with self.subTest(leak=leak):
                log = (
                    start("TestX.test_a")
                    + line("INFO", "werkzeug", leak)
                    + final(run=1)
                )
                rc, last, out = self.report(log)
                self.assertEqual((rc, last), (1, "1 passed, 1 failed"))
                self.assertIn("broker URL in clear", out)
                self.assertNotIn("S3CRET", out)
        redacted = (
            start("TestX.test_a")
            + line("INFO", "werkzeug", '"POST /iot/auth/*** HTTP/1.1" 200 -')
            + line("INFO", "werkzeug", '"GET /iot/jwks.json HTTP/1.1" 200 -')
            + final(run=1)
        )
        self.assertEqual(self.report(redacted)[:2], (0, "1 passed, 0 failed"))

    def test_setup_failure(self):
        setup = line("ERROR", "odoo.modules.loading", "boom")
        rc, last, out = self.report("", 1, setup, 1)
        self.assertEqual(rc, 1)
        self.assertEqual(last, "0 passed, 1 failed")
        self.assertIn("installing the dependencies failed", out)


if __name__ == "__main__":
    unittest.main()
