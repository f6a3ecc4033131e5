"""Read the Odoo 18.0 logs of `make test` and decide whether the run passed.

Prints a short summary whose LAST line is exactly "N passed, N failed", and exits
non-zero when a test failed, errored or was skipped, when no test ran (or, with
--min-tests, fewer than the last full run on main), when Odoo exited non-zero
(a run that hung is ended by scripts/test.sh's time limit), when a thread died
of an uncaught exception (Python prints "Exception in thread ..." on stderr,
which make test writes into the log, outside any record), or when the logs
contain an ERROR/CRITICAL line or a WARNING line while the module was
installed/tested, or when any line of either log (records, tracebacks, stderr)
holds a broker URL that was not redacted (``/iot/auth/<token>``: the broker
token or a secret reached the log; tools/log_redaction.py cuts every such URL
to ``/iot/auth/***``, so one clear one means a path around the redaction).

What Odoo 18.0 logs (odoo/tests/result.py, case.py, suite.py, service/server.py),
each record being "<date> <time> <pid> <LEVEL> <db> <logger>: <message>":
  * every test start, at INFO, logger = the test's Python module:
        "Starting TestClass.test_method ..."
    (OdooTestResult.startTest; this is also what Odoo counts as "tests run",
    skipped tests included);
  * a skipped test, at INFO: "skipped TestClass.test_method : <reason>";
    a class whose setUpClass raised SkipTest (e.g. HttpCase when Chrome or
    websocket-client is missing) gives "skipped setUpClass (<module>.<Class>) :
    <reason>" and its tests never start;
  * a failure or an error, at ERROR, followed by the traceback on the next lines:
        "FAIL: TestClass.test_method" / "ERROR: TestClass.test_method"
    (subtests: "FAIL: Subtest TestClass.test_method (i=1)"; class-level
    problems: "ERROR: setUpClass (<module>.<Class>)");
  * at the end, logger odoo.tests.result, at ERROR if anything failed,
    WARNING if no test ran, INFO otherwise:
        "<F> failed, <E> error(s) of <N> tests when loading database '<db>'"

Counting: "failed" is Odoo's own failures + errors from that final line;
"passed" is the number of started tests that got no FAIL/ERROR/skip record.
"""

import argparse
import re
import sys

RECORD = re.compile(
    r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} \d+ (?P<level>[A-Z]+) \S+ "
    r"(?P<logger>\S+): (?P<msg>.*)$"
)
STARTING = re.compile(r"^Starting (?P<test>\S+) \.\.\.")
SKIPPED = re.compile(r"^skipped (?P<test>.+?) : (?P<reason>.*)$")
FAILURE = re.compile(r"^(?P<kind>FAIL|ERROR): (?P<test>.+)$")
FINAL = re.compile(
    r"^(?P<failed>\d+) failed, (?P<errors>\d+) error\(s\) of (?P<run>\d+) tests "
    r"when loading database"
)
# ERROR lines that only echo test failures already counted above.
TEST_ECHOES = re.compile(
    r"^(At least one test failed when loading the modules\."
    r"|Module \S+: \d+ failures, \d+ errors of \d+ tests$"
    r"|Test suite halted: max failed tests"
    r"|.*: at least one error occurred in a test)"
)
# WARNING lines that are allowed while installing the module. Keep this empty
# unless Odoo itself always emits the line (a bare `-i web` install on Odoo
# 18.0 emits no WARNING at all, so nothing is allowed today).
ALLOWED_WARNINGS: list[re.Pattern] = []


EXCEPTION = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Exit|Interrupt)\b")
# threading.excepthook's default output (stderr, no log record)
THREAD_DIED = re.compile(r"^Exception in thread (?P<thread>.+?):?$")


# A broker route followed by anything but the redaction mark, raw or
# percent-encoded (the spellings tools/log_redaction.py decodes).
UNREDACTED = re.compile(
    r"(?i)/+iot(?:/+|%2f)(?:auth|acl|rabbitmq|provision)(?:/+|%2f)(?!\*\*\*)[^\s\"'<>]"
)


def unredacted(path):
    """The lines of ``path`` holding a broker URL in clear, clipped."""
    found = []
    try:
        with open(path, encoding="utf-8", errors="replace") as log:
            for number, line in enumerate(log, 1):
                if match := UNREDACTED.search(line):
                    # show where, never the rest of what may be a secret
                    found.append(f"line {number}: ...{line[: match.end() - 1][-60:]}")
    except FileNotFoundError:
        pass
    return found


def records(path):
    """Yield (level, logger, first message line, exception line) per log record.

    The exception line is the last "SomeError: ..." line of a traceback logged
    with the record (the exception finally raised), or "". A thread's uncaught
    exception, printed outside any record, is yielded as an ERROR record of
    logger "thread".
    """
    record = None
    try:
        with open(path, encoding="utf-8", errors="replace") as log:
            for line in log:
                line = line.rstrip("\n")
                if match := RECORD.match(line):
                    if record:
                        yield record
                    record = [
                        match["level"],
                        match["logger"],
                        match["msg"].rstrip(),
                        "",
                    ]
                elif match := THREAD_DIED.match(line):
                    if record:
                        yield record
                    record = [
                        "ERROR",
                        "thread",
                        f"uncaught exception in thread {match['thread']}",
                        "",
                    ]
                elif record and EXCEPTION.match(line):
                    record[3] = line.rstrip()
    except FileNotFoundError:
        pass
    if record:
        yield record


def test_key(logger, description):
    """Name a test as "<Class>.<method> (<python module>)", subtests folded."""
    if description.startswith("Subtest "):
        description = description.split(" ")[1]
    if logger.startswith("odoo.tests."):  # setUpClass/tearDownClass problems
        return description.replace("(odoo.addons.", "(")
    return f"{description} ({logger.removeprefix('odoo.addons.')})"


def analyse(path):
    result = {
        "started": [],
        "failed": {},
        "skipped": {},
        "final": None,
        "warnings": {},
        "errors": [],
    }
    for level, logger, msg, exception in records(path):
        if level == "INFO":
            if match := STARTING.match(msg):
                result["started"].append(test_key(logger, match["test"]))
            elif match := SKIPPED.match(msg):
                result["skipped"][test_key(logger, match["test"])] = match["reason"]
            elif match := FINAL.match(msg):
                result["final"] = match
        elif level in ("ERROR", "CRITICAL"):
            if level == "ERROR" and (match := FAILURE.match(msg)):
                key = test_key(logger, match["test"])
                result["failed"].setdefault(key, match["kind"])
            elif match := FINAL.match(msg):
                result["final"] = match
            elif not TEST_ECHOES.match(msg):
                cause = f"\n      -> {exception}" if exception else ""
                result["errors"].append(f"{level} {logger}: {msg}{cause}")
        elif level == "WARNING":
            if match := FINAL.match(msg):  # Odoo warns when no test ran
                result["final"] = match
            elif not any(allowed.search(msg) for allowed in ALLOWED_WARNINGS):
                line = f"{logger}: {msg}"
                result["warnings"][line] = result["warnings"].get(line, 0) + 1
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--module", default="iot_base")
    parser.add_argument("--setup-log", required=True)
    parser.add_argument("--setup-rc", type=int, required=True)
    parser.add_argument("--log", required=True)
    parser.add_argument("--rc", type=int, required=True)
    parser.add_argument(
        "--min-tests",
        type=int,
        default=0,
        help="fail when fewer tests ran (the count of the last full run on main)",
    )
    parser.add_argument(
        "--timed-out", type=int, default=0, help="the time limit that ended the run"
    )
    args = parser.parse_args()

    setup = analyse(args.setup_log)
    run = analyse(args.log)
    final = run["final"]

    started = list(dict.fromkeys(run["started"]))
    bad = set(run["failed"]) | set(run["skipped"])
    passed = sum(1 for test in started if test not in bad)
    if final:
        failed = int(final["failed"]) + int(final["errors"])
        tests_run = int(final["run"])
    else:  # Odoo died before its final line: count what the log shows
        failed = len(run["failed"])
        tests_run = len(started)

    problems = []
    print(f"---- {args.module} test summary (full log: {args.log}) ----")
    if args.setup_rc != 0 or setup["errors"]:
        problems.append("installing the dependencies failed")
        print(f"Installing the dependencies failed (exit {args.setup_rc}):")
        for line in setup["errors"][:10]:
            print(f"  {line}")
    for test, kind in run["failed"].items():
        print(f"{kind:7} {test}")
    if failed:
        problems.append(f"{failed} failed")
    for test, reason in run["skipped"].items():
        print(f"SKIPPED {test}: {reason}")
    if run["skipped"]:
        problems.append(f"{len(run['skipped'])} skipped")
    if run["errors"]:
        problems.append(f"{len(run['errors'])} ERROR/CRITICAL log line(s)")
        print("ERROR/CRITICAL log lines outside test results:")
        for line in run["errors"][:20]:
            print(f"  {line}")
    if run["warnings"]:
        count = sum(run["warnings"].values())
        problems.append(f"{count} WARNING log line(s)")
        print(f"WARNING log lines while installing {args.module} (none allowed):")
        for line, times in list(run["warnings"].items())[:20]:
            print(f"  {line}" + (f" (x{times})" if times > 1 else ""))
    leaked = unredacted(args.setup_log) + unredacted(args.log)
    if leaked:
        problems.append(f"{len(leaked)} log line(s) with a broker URL in clear")
        print("Broker URLs not redacted (the token or a secret reached the log):")
        for line in leaked[:10]:
            print(f"  {line}")
    if args.setup_rc == 0 and not final:
        problems.append("Odoo never reported its test results")
    elif tests_run == 0 and args.setup_rc == 0:
        problems.append("no test ran")
    elif args.min_tests and tests_run < args.min_tests:
        problems.append(
            f"only {tests_run} tests ran, fewer than the {args.min_tests} of the "
            "last full run (.ci/min_tests): a test module is no longer loaded?"
        )
    if args.timed_out:
        problems.append(f"the run hung: ended after {args.timed_out} s")
    elif args.rc != 0 and args.setup_rc == 0 and not failed:
        problems.append(f"Odoo exited with status {args.rc}")
    if final:
        print(f"Odoo: {final.group(0).rsplit(' when', 1)[0]}")
    if len(started) != tests_run:
        print(f"note: {len(started)} test starts in the log, Odoo counted {tests_run}")

    print(f"Result: {'FAILED (' + '; '.join(problems) + ')' if problems else 'OK'}")
    # A skipped test counts as failed, and so does a run that failed for any
    # other reason (warning, error log line, no test...): "0 failed" only
    # ever closes a green run.
    failed += len(run["skipped"])
    if problems and not failed:
        failed = 1
    print(f"{passed} passed, {failed} failed")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
