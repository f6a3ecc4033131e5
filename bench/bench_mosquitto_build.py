#!/usr/bin/env python3
# License LGPL-3.0 or later (https://www.gnu.org/licenses/lgpl).
"""Build time and size of the Mosquitto ACL file (issue 16 point 3): one
company's rules must not grow the other companies' output, and the build
must stay linear. See bench/MOSQUITTO.md.

    python3 bench/bench_mosquitto_build.py            # ~1 minute on 2 cores
    python3 bench/bench_mosquitto_build.py --ref main --logins 1000

No database and no broker: ``build_acl`` (iot_base/tools/mosquitto/files.py,
what ``iot.mosquitto.sync._build`` calls after its one SQL query) runs on
synthetic input. 10 companies; the 3 default device rules for every company;
company 0 has ``--rules`` extra allow rules of its own (publish
``${namespace}/devices/${username}/x<i>/#``) and a fifth of the logins, so
its devices are the pattern group; the other companies' devices get one
section each. ``--ref`` runs the same on the tools of a git revision.
"""

import argparse
import importlib.util
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
COMPANIES = 10


def load_tools(ref=None):
    """(mosquitto.files, topic_acl, store_sync) of the iot_base/tools package,
    of the working tree or of ``ref`` (extracted with ``git archive``)."""
    directory = REPO / "iot_base" / "tools"
    if ref:
        target = Path(tempfile.mkdtemp(prefix="bench_tools_"))
        archive = subprocess.run(
            ["git", "archive", ref, "iot_base/tools"],
            cwd=REPO,
            check=True,
            capture_output=True,
        ).stdout
        subprocess.run(["tar", "-x", "-C", str(target)], input=archive, check=True)
        directory = target / "iot_base" / "tools"
    package = f"bench_iot_tools_{abs(hash(str(directory)))}"
    spec = importlib.util.spec_from_file_location(
        package, directory / "__init__.py", submodule_search_locations=[str(directory)]
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[package] = module
    spec.loader.exec_module(module)
    try:
        files = importlib.import_module(f"{package}.mosquitto.files")
    except ModuleNotFoundError:  # a tree before tools/mosquitto/
        files = importlib.import_module(f"{package}.mosquitto_files")
    return (
        files,
        importlib.import_module(f"{package}.topic_acl"),
        importlib.import_module(f"{package}.store_sync"),
    )


def _row_types(files, store_sync):
    """The row types ``build_acl`` reads (store_sync.RuleRow and RuleKey,
    files.SecretRow); plain tuples for a tree older than them, whose
    ``build_acl`` reads the same fields by position."""

    def plain(*values, **named):
        return tuple(values) + tuple(named.values())

    return (
        getattr(store_sync, "RuleRow", plain),
        getattr(store_sync, "RuleKey", plain),
        getattr(files, "SecretRow", plain),
    )


def scenario(files, topic_acl, store_sync, logins, rules):
    """(rule rows, plain_by_key, sections, namespaces) as ``_build`` makes
    them."""
    RuleRow, RuleKey, SecretRow = _row_types(files, store_sync)
    Rule = topic_acl.Rule
    device_rules = [
        ("telemetry", "publish", "telemetry"),
        ("status", "publish", "status"),
        ("commands", "subscribe", "commands"),
    ]
    scopes = [
        RuleRow(
            name,
            "device",
            frozenset(),
            frozenset(),
            None,
            Rule("allow", action, f"${{namespace}}/devices/${{username}}/{level}/#"),
        )
        for name, action, level in device_rules
    ]
    scopes.extend(
        RuleRow(
            f"company 0 rule {i}",
            "device",
            frozenset(),
            frozenset(),
            1,
            Rule("allow", "publish", f"${{namespace}}/devices/${{username}}/x{i}/#"),
        )
        for i in range(rules)
    )
    namespaces = {c: f"tenant{c}" for c in range(1, COMPANIES + 1)}
    plain_by_key = {}
    first = logins // 5  # company 0 (id 1): the largest group
    counts = [first] + [
        (logins - first) // (COMPANIES - 1)
        + (1 if i < (logins - first) % (COMPANIES - 1) else 0)
        for i in range(COMPANIES - 1)
    ]
    cid = 0
    for company, count in enumerate(counts, start=1):
        rows = []
        for _i in range(count):
            cid += 1
            rows.append(
                SecretRow(
                    f"dev{cid:06d}:$7$101$x$y==\n",
                    cid,
                    "group",
                    None,
                    None,
                    None,
                    False,
                )
            )
        plain_by_key[RuleKey("device", company, frozenset(), None)] = rows
    return scopes, plain_by_key, [], namespaces


def measure(tools, logins, rules, runs):
    files = tools[0]
    args = scenario(*tools, logins, rules)
    best, lines, stats = None, None, None
    for _run in range(runs):
        # CPU time of this process: the machine is shared, wall time is noise
        t0 = time.process_time()
        lines, stats = files.build_acl(*args)
        elapsed = time.process_time() - t0
        best = elapsed if best is None else min(best, elapsed)
    text = "".join(lines)
    other = text.split("user dev", 1)
    # the section of one login of another company (company 2)
    section = "user " + (
        "dev" + other[1].split("\nuser ", 1)[0] if len(other) > 1 else ""
    )
    return {
        "logins": logins,
        "rules": rules,
        "seconds": round(best, 3),
        "acl_bytes": len(text.encode()),
        "sections": stats["sections"],
        "pattern_lines": stats["pattern_lines"],
        "protection_denies": stats["protection_denies"],
        "other_section_lines": section.count("\n") + 1,
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ref", help="git revision whose tools to measure")
    parser.add_argument(
        "--logins", type=int, action="append", help="default: 1000 and 10000"
    )
    parser.add_argument(
        "--rules", type=int, action="append", help="default: 10 and 1000"
    )
    parser.add_argument("--runs", type=int, default=3)
    opts = parser.parse_args()
    tools = load_tools(opts.ref)
    print(
        f"tools: {opts.ref or 'working tree'}; python {sys.version.split()[0]}; "
        f"{os.cpu_count()} CPUs; load {os.getloadavg()[0]:.1f}"
    )
    header = (
        "logins",
        "rules",
        "build CPU s",
        "ACL bytes",
        "sections",
        "pattern",
        "protection",
        "lines/other section",
    )
    print(" | ".join(header))
    results = []
    for logins in opts.logins or (1000, 10000):
        for rules in opts.rules or (10, 1000):
            row = measure(tools, logins, rules, opts.runs)
            results.append(row)
            print(
                " | ".join(
                    str(row[k])
                    for k in (
                        "logins",
                        "rules",
                        "seconds",
                        "acl_bytes",
                        "sections",
                        "pattern_lines",
                        "protection_denies",
                        "other_section_lines",
                    )
                ),
                flush=True,
            )
    return results


if __name__ == "__main__":
    main()
