# License LGPL-3.0 or later (https://www.gnu.org/licenses/lgpl).
"""Mosquitto password and ACL files, checked against a real Mosquitto 2.0.

The broker (iot_base/tests/brokers/mosquitto.py) runs on free loopback ports
with a TCP and a WebSocket listener, and reads the files the sync writes;
it is started once for the class and always stopped. Without
/usr/sbin/mosquitto the class fails (it never skips).

The sync runs in a new cursor (as after a commit): the registry is in test
mode, so that cursor works inside the test transaction.
"""

import os
import random
import re
import shutil
import socket
import ssl
import stat
import subprocess
import sys
import tempfile
import time
from datetime import timedelta

from passlib.context import CryptContext

from odoo import fields
from odoo.exceptions import AccessError
from odoo.tests import BaseCase, new_test_user, tagged

from ...models import iot_store_sync as engine
from ...models.mosquitto import iot_mosquitto_sync as mosq
from ...tools import topic_acl
from ...tools.mosquitto import files
from ...tools.secret_hash import (
    mosquitto_hash,
    new_secret,
    verify_secret,
)
from ..brokers.mosquitto import BrokerError
from ..brokers.rabbitmq import free_ports
from ..common import IotCommonCase, MosquittoClientMixin, start_synced_mosquitto

WAIT = 5  # seconds for anything the broker must do
# the store port logs every run (iot.store.adapter._log_result)
LOGGER = "odoo.addons.iot_base.models.iot_store_adapter"
REPO = os.path.dirname(
    os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
)


def parse_acl(text):
    """({login: [(access, topic)]}, [(access, pattern)]) of an ACL file."""
    sections, patterns, user = {}, [], None
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        word, rest = line.split(" ", 1)
        if word == "user":
            user = rest
            sections.setdefault(user, [])
        elif word == "topic":
            sections[user].append(tuple(rest.split(" ", 1)))
        else:
            assert word == "pattern", line
            patterns.append(tuple(rest.split(" ", 1)))
    return sections, patterns


def mosquitto_decides(section, patterns, login, clientid, access, topic):
    """Python port of mosquitto_acl_check_default (2.0.11): the login's
    section (denies first), then the patterns (denies first)."""

    def decide(entries, substitute):
        ordered = [e for e in entries if e[0] == "deny"] + [
            e for e in entries if e[0] != "deny"
        ]
        for entry_access, entry_topic in ordered:
            if not topic_acl.topic_matches(substitute(entry_topic), topic):
                continue
            if entry_access == "deny":
                return False
            if entry_access == "readwrite" or entry_access == access:
                return True
        return None

    verdict = decide(section or [], lambda t: t)
    if verdict is not None:
        return verdict
    if not patterns or re.search(r"[+#]", login + clientid):
        return False
    verdict = decide(patterns, lambda t: t.replace("%u", login).replace("%c", clientid))
    return bool(verdict)


def ours_allows_always(rules, access, topic, retains=(False, True)):
    """First-match rules allow ``topic`` for every QoS/retain variant."""
    if access == "write":
        return all(
            topic_acl.authorize(rules, "publish", topic, qos=q, retain=r) == "allow"
            for q in (0, 1, 2)
            for r in retains
        )
    return all(
        topic_acl.authorize(rules, "subscribe", topic, qos=q) == "allow"
        for q in (0, 1, 2)
    )


@tagged("post_install", "-at_install", "iot_mosquitto")
class TestMosquittoSync(MosquittoClientMixin, IotCommonCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.registry.enter_test_mode(cls.cr)
        cls.addClassCleanup(cls.registry.leave_test_mode)
        cls.broker = start_synced_mosquitto(cls)
        cls.ns = cls.company.iot_mqtt_namespace
        cls.observer = cls.Credentials.create(
            {"username": "svc_observer", "kind": "service", "is_superuser": True}
        )
        cls.observer_secret = cls.observer.action_rotate_secret()["context"][
            "default_secret"
        ]

    def setUp(self):
        super().setUp()

    # helpers ------------------------------------------------------------

    def sync(self, force=False, expect_ok=True):
        self.env.flush_all()
        result = engine.run_sync(self.env.cr.dbname, force=force)
        if expect_ok:
            self.assertTrue(result["ok"], result.get("error"))
        return result

    def device(self, username):
        device, secret = self._device_with_secret(username)
        return device, secret

    def refused(self, username, password, transport="tcp"):
        return not self.broker.can_connect(username, password, transport)

    def publish(self, client, topic, payload=b"x"):
        info = client.publish(topic, payload, qos=1)
        info.wait_for_publish(WAIT)

    def files(self):
        with (
            open(self.broker.password_file) as passwd,
            open(self.broker.acl_file) as acl,
        ):
            return passwd.read(), acl.read()

    def stored_hash(self, credential):
        self.env.cr.execute(
            "SELECT hash FROM iot_credentials_secret WHERE credential_id = %s "
            "ORDER BY id DESC",
            [credential.id],
        )
        return self.env.cr.fetchone()[0]

    # password file --------------------------------------------------------

    def test_password_file(self):
        device, secret = self.device("device_file01")
        result = self.sync()
        passwd, acl = self.files()
        line = f"device_file01:{mosquitto_hash(self.stored_hash(device))}\n"
        self.assertIn(line, passwd)
        self.assertRegex(
            line, r"^device_file01:\$7\$1\$[A-Za-z0-9+/]{16}\$[A-Za-z0-9+/]{86}==\n$"
        )
        for text in (passwd, acl):
            self.assertNotIn(secret, text)
            self.assertNotIn(secret[8:], text)
        for path in (self.broker.password_file, self.broker.acl_file):
            info = os.stat(path)
            self.assertEqual(stat.S_IMODE(info.st_mode), 0o640)
            self.assertEqual(info.st_gid, os.stat(self.broker.directory).st_gid)
        # renamed into place: no temporary file left behind
        self.assertEqual(
            sorted(n for n in os.listdir(self.broker.directory) if n.startswith(".")),
            [],
        )
        self.assertGreaterEqual(result["logins"], 2)
        self.assertTrue(result["changed"])
        self.assertIn("signalled", result["reload"])
        # same content: nothing written, broker left alone
        again = self.sync()
        self.assertFalse(again["changed"])
        # forced (the button): written and signalled anyway
        self.assertTrue(self.sync(force=True)["changed"])

    def test_fast_hash_path_matches_mosquitto_hash(self):
        for _i in range(200):
            stored = new_secret()[2]
            self.assertEqual(files.password_line_hash(stored), mosquitto_hash(stored))
        self.assertIsNone(files.password_line_hash("$2b$12$notpbkdf2"))

    def test_secrets_hashed_before_keep_working(self):
        """A secret issued with 101 rounds (before rounds went to 1) is still
        written on the fast path, and Mosquitto and Odoo accept it; a new one
        gets the one-round line."""
        device, secret = self.device("device_old01")
        old_hash = CryptContext(
            ["pbkdf2_sha512"], pbkdf2_sha512__rounds=101, pbkdf2_sha512__salt_size=12
        ).hash(secret)
        self.env.cr.execute(
            "UPDATE iot_credentials_secret SET hash = %s WHERE credential_id = %s",
            [old_hash, device.id],
        )
        self.assertTrue(verify_secret(secret, old_hash))
        _new_device, new_secret_value = self.device("device_new01")
        self.sync()
        passwd, _acl = self.files()
        self.assertIn(f"device_old01:{mosquitto_hash(old_hash)}\n", passwd)
        self.assertIn("device_old01:$7$101$", passwd)
        self.assertIn("device_new01:$7$1$", passwd)
        self.connect("device_old01", secret)
        self.connect("device_new01", new_secret_value)

    def test_device_connects_tcp_and_websocket(self):
        _device, secret = self.device("device_conn01")
        self.assertTrue(self.refused("device_conn01", secret), "not synced yet")
        self.sync()
        self.connect("device_conn01", secret)
        self.connect("device_conn01", secret, "websockets")
        self.assertTrue(
            self.refused(
                "device_conn01", secret[:-1] + ("1" if secret[-1] == "0" else "0")
            )
        )
        self.assertTrue(self.refused("device_conn01", "x" * 40, "websockets"))
        self.assertTrue(self.refused("device_nobody", secret))

    def test_revoked_disconnected_at_next_sync(self):
        device, secret = self.device("device_rev01")
        other, other_secret = self.device("device_rev02")
        self.sync()
        client = self.connect("device_rev01", secret)
        ws_client = self.connect("device_rev01", secret, "websockets")
        bystander = self.connect("device_rev02", other_secret)
        device.action_revoke()
        self.sync()
        self.wait_for(
            lambda: client.disconnects and ws_client.disconnects, "disconnection"
        )
        self.assertTrue(self.refused("device_rev01", secret))
        self.assertFalse(bystander.disconnects, "other devices stay connected")
        # rotation: the old secret is dropped, the new one works
        new_secret_ = other.action_rotate_secret()["context"]["default_secret"]
        self.sync()
        self.wait_for(lambda: bystander.disconnects, "old secret disconnected")
        self.connect("device_rev02", new_secret_)
        self.assertTrue(self.refused("device_rev02", other_secret))

    # client ids: one login each -------------------------------------------

    def test_client_id_takeover_refused(self):
        """Device B, with its own valid login, connects with device A's
        client id and clean_session=false: the broker makes B's client id its
        login (use_username_as_clientid), so B gets none of A's queued
        commands and A's session and connection stay A's."""
        _a, secret_a = self.device("device_tko01")
        _b, secret_b = self.device("device_tko02")
        self.sync()
        commands = f"{self.ns}/devices/device_tko01/commands"

        def durable(username, secret, transport="tcp"):
            client, reason = self.broker.client(
                username,
                secret,
                transport,
                client_id="device_tko01",
                clean_session=False,
            )
            self.assertFalse(reason is None or reason.is_failure, reason)
            self.addCleanup(self.broker.close_client, client)
            return client

        self.assertTrue(self.broker.wait_connect("device_tko01", secret_a))
        device_a = durable("device_tko01", secret_a)
        self.subscribe(device_a, f"{commands}/#")
        self.broker.close_client(device_a)
        observer = self.connect("svc_observer", self.observer_secret)
        self.publish(observer, f"{commands}/door", b"door-code=4711")
        for transport in ("tcp", "websockets"):
            with self.subTest(transport=transport):
                device_b = durable("device_tko02", secret_b, transport)
                self.publish(observer, f"{commands}/door", b"door-code=0000")
                time.sleep(0.5)
                self.assertEqual(device_b.received, [])
                self.broker.close_client(device_b)
        device_a = durable("device_tko01", secret_a)
        self.wait_for(lambda: len(device_a.received) == 3, "A's queued commands")
        self.assertEqual(
            [payload for _topic, payload in device_a.received],
            [b"door-code=4711", b"door-code=0000", b"door-code=0000"],
        )
        # while A is connected, B with A's client id does not end A's session
        durable("device_tko02", secret_b)
        self.publish(observer, f"{commands}/light", b"on")
        self.wait_for(lambda: len(device_a.received) == 4, "A's next command")
        self.assertEqual(device_a.disconnects, 0)

    # session secrets: one login per secret --------------------------------

    def test_two_tabs_do_not_kick_each_other(self):
        user = self.iot_user.with_user(self.iot_user)
        tab1 = user.get_or_create_iot_credentials()
        tab2 = user.get_or_create_iot_credentials()
        login1 = user._iot_broker_username(tab1)
        login2 = user._iot_broker_username(tab2)
        self.assertNotEqual(login1, login2)
        for login in (login1, login2):
            self.assertRegex(login, rf"^{re.escape(tab1['username'])}~\d+$")
        self.sync()
        passwd, acl = self.files()
        self.assertIn(f"{login1}:$7$", passwd)
        self.assertIn(f"{login2}:$7$", passwd)
        self.assertNotIn(f"\n{tab1['username']}:", passwd)  # no long-lived secret
        client1 = self.connect(login1, tab1["password"], "websockets")
        client2 = self.connect(login2, tab2["password"])
        # a third tab (new secret, new sync, SIGHUP) does not log out the others
        tab3 = user.get_or_create_iot_credentials()
        result = self.sync()
        self.assertTrue(result["changed"])
        login3 = user._iot_broker_username(tab3)
        self.connect(login3, tab3["password"], "websockets")
        time.sleep(0.3)
        self.assertEqual((client1.disconnects, client2.disconnects), (0, 0))
        # the login is the client id (use_username_as_clientid): a second
        # connection of one login replaces the first, whatever id it sends
        self.connect(login1, tab1["password"], client_id=f"{login1}x")
        self.wait_for(lambda: client1.disconnects, "the first connection replaced")
        self.assertEqual(client2.disconnects, 0)
        # each secret only works with its own login
        self.assertTrue(self.refused(login2, tab1["password"]))
        self.assertTrue(self.refused(tab1["username"], tab1["password"]))
        # and every session login has the ACL of the credential
        sections, _patterns = parse_acl(acl)
        self.assertEqual(sections[login1], sections[login2])
        self.assertIn(
            ("readwrite", f"{self.ns}/users/{tab1['username']}/#"), sections[login1]
        )
        # the EMQX flow keeps the plain username
        self.env["ir.config_parameter"].sudo().set_param(mosq.ENABLED_PARAM, "False")
        self.assertEqual(user._iot_broker_username(tab1), tab1["username"])

    def test_archived_owner_disconnected(self):
        user = new_test_user(
            self.env,
            login="mosq.owner@example.com",
            groups="base.group_user,iot_base.iot_base_group_user",
        )
        creds = user.with_user(user).get_or_create_iot_credentials()
        login = user._iot_broker_username(creds)
        self.sync()
        client = self.connect(login, creds["password"])
        user.action_archive()
        self.sync()
        self.wait_for(lambda: client.disconnects, "disconnection of an archived owner")

    # ACL ------------------------------------------------------------------

    def test_device_acl_on_the_broker(self):
        _device, secret = self.device("device_acl01")
        _other, other_secret = self.device("device_acl02")
        self.sync()
        ns = self.ns
        observer = self.connect("svc_observer", self.observer_secret)
        self.subscribe(observer, "#")
        device = self.connect("device_acl01", secret, "websockets")
        self.subscribe(device, "#")  # Mosquitto filters each delivered message

        # telemetry and status out, nothing else
        for topic in (
            f"{ns}/devices/device_acl01/telemetry/temp",
            f"{ns}/devices/device_acl01/status",
            f"{ns}/devices/device_acl02/telemetry/temp",
            f"{ns}/devices/device_acl01/commands/reboot",
            f"{ns}/users/x",
            "elsewhere",
        ):
            self.publish(device, topic, b"from-device")
        self.publish(device, f"{ns}/devices/device_acl01/telemetry/end", b"marker")
        self.wait_for(
            lambda: (
                (f"{ns}/devices/device_acl01/telemetry/end", b"marker")
                in observer.received
            ),
            "the device's marker",
        )
        from_device = [t for t, p in observer.received if p == b"from-device"]
        self.assertEqual(
            from_device,
            [
                f"{ns}/devices/device_acl01/telemetry/temp",
                f"{ns}/devices/device_acl01/status",
            ],
        )

        # its commands in, nothing else
        for topic in (
            f"{ns}/devices/device_acl02/commands/reboot",
            f"{ns}/devices/device_acl01/telemetry/temp",
            f"{ns}/devices/device_acl01/status",
            f"{ns}/users/someone/x",
            "elsewhere",
            f"{ns}/devices/device_acl01/commands/reboot",
        ):
            self.publish(observer, topic, b"to-device")
        self.wait_for(
            lambda: any(p == b"to-device" for _t, p in device.received),
            "the device's command",
        )
        time.sleep(0.2)
        self.assertEqual(
            [t for t, p in device.received if p == b"to-device"],
            [f"{ns}/devices/device_acl01/commands/reboot"],
        )
        # the other device, through the pattern lines, gets its own commands
        other = self.connect("device_acl02", other_secret)
        self.subscribe(other, f"{ns}/devices/+/commands/#")
        self.publish(observer, f"{ns}/devices/device_acl01/commands/a", b"c1")
        self.publish(observer, f"{ns}/devices/device_acl02/commands/b", b"c2")
        self.wait_for(lambda: other.received, "a command")
        time.sleep(0.2)
        self.assertEqual(
            other.received, [(f"{ns}/devices/device_acl02/commands/b", b"c2")]
        )

    def test_patterns_and_protection(self):
        """Devices share their rules: pattern lines, no sections; a user's
        session login cannot use the device patterns for itself."""
        _device, device_secret = self.device("device_pat01")
        self.device("device_pat02")
        user = self.iot_user.with_user(self.iot_user)
        creds = user.get_or_create_iot_credentials()
        login = user._iot_broker_username(creds)
        result = self.sync()
        _passwd, acl = self.files()
        sections, patterns = parse_acl(acl)
        ns = self.ns
        self.assertEqual(
            patterns,
            [
                ("write", f"{ns}/devices/%u/telemetry/#"),
                ("write", f"{ns}/devices/%u/status/#"),
                ("read", f"{ns}/devices/%u/commands/#"),
            ],
        )
        self.assertNotIn("device_pat01", sections)
        self.assertGreaterEqual(result["pattern_logins"], 2)
        self.assertIn(("deny", f"{ns}/devices/{login}/telemetry/#"), sections[login])
        self.assertIn(("deny", f"{ns}/devices/{login}/commands/#"), sections[login])
        self.assertNotIn(
            "deny", [a for a, _t in sections.get("svc_observer", [])], "superuser"
        )

        client = self.connect(login, creds["password"])
        observer = self.connect("svc_observer", self.observer_secret)
        self.subscribe(observer, "#")
        self.subscribe(client, f"{ns}/devices/+/telemetry/#")
        self.publish(client, f"{ns}/devices/{login}/telemetry/fake", b"spoof")
        self.publish(client, f"{ns}/users/{creds['username']}/hello", b"own")
        self.wait_for(
            lambda: any(p == b"own" for _t, p in observer.received), "own topic"
        )
        self.assertNotIn(b"spoof", [p for _t, p in observer.received])
        device = self.connect("device_pat01", device_secret)
        self.publish(device, f"{ns}/devices/device_pat01/telemetry/t", b"real")
        self.wait_for(
            lambda: (
                (f"{ns}/devices/device_pat01/telemetry/t", b"real") in client.received
            ),
            "device telemetry at the user",
        )

    def test_other_company_rules_leave_sections_alone(self):
        """Issue 16/3: rules of one company (even named after another
        company's credentials and groups) change no byte of another
        company's output; the pattern company's lines are shadowed in other
        sections by one deny of its namespace, on the real broker too."""
        ns_a, ns_b = self.ns, self.other_company.iot_mqtt_namespace
        for i in range(3):
            self.device(f"device_ca{i}")
        b_devices = {}
        for i in range(2):
            b_devices[f"device_cb{i}"] = self._device_with_secret(
                f"device_cb{i}", company=self.other_company
            )
        manager = self.other_manager.with_user(self.other_manager)
        creds = manager.with_company(self.other_company).get_or_create_iot_credentials()
        b_logins = {*b_devices, manager._iot_broker_username(creds)}

        def output_of_b():
            sections, patterns = parse_acl(self.files()[1])
            own = {k: v for k, v in sections.items() if k in b_logins}
            if any(t.startswith(f"{ns_b}/") for _a, t in patterns):
                own["<patterns>"] = patterns
            return own

        def add_company_a_rules(count, **extra):
            self.env["iot.acl.rule"].create(
                [
                    dict(
                        {
                            "name": f"A {i}",
                            "company_id": self.company.id,
                            "credential_kind": "device",
                            "action": "publish",
                            "topic": f"${{namespace}}/devices/${{username}}/x{i}/#",
                        },
                        **extra,
                    )
                    for i in range(count)
                ]
            )

        # A's devices are the pattern group: B's sections shadow it with one
        # line, however many rules A has
        before_result = self.sync()
        before = output_of_b()
        self.assertEqual(set(before), b_logins)
        for login, section in before.items():
            self.assertIn(("deny", f"{ns_a}/#"), section, login)
        add_company_a_rules(200)
        result = self.sync()
        self.assertEqual(result["pattern_lines"], before_result["pattern_lines"] + 200)
        self.assertEqual(output_of_b(), before)

        observer = self.connect("svc_observer", self.observer_secret)
        self.subscribe(observer, "#")
        bdev, bsecret = next(iter(b_devices.items()))[0], b_devices["device_cb0"][1]
        client = self.connect(bdev, bsecret)
        for topic in (
            f"{ns_a}/devices/{bdev}/telemetry/t",
            f"{ns_a}/devices/{bdev}/x7/t",
        ):
            self.publish(client, topic, b"spoof")
        self.publish(client, f"{ns_b}/devices/{bdev}/telemetry/t", b"marker")
        self.wait_for(
            lambda: any(p == b"marker" for _t, p in observer.received), "marker"
        )
        self.assertEqual([p for _t, p in observer.received], [b"marker"])

        # B's devices become the pattern group: A's rules naming B's
        # credentials or B's groups do not split it
        for i in range(2, 4):
            self._device_with_secret(f"device_cb{i}", company=self.other_company)
            b_logins.add(f"device_cb{i}")
        self.sync()
        before = output_of_b()
        self.assertIn("<patterns>", before)
        add_company_a_rules(
            1,
            credential_ids=[(4, b_devices["device_cb1"][0].id)],
            group_ids=[(4, self.env.ref("iot_base.iot_base_group_manager").id)],
        )
        self.sync()
        self.assertEqual(output_of_b(), before)

    def test_sections_match_rules_for(self):
        """Every section is the translation of ``_rules_for`` (plus the
        protection denies): the sync's rule selection is the broker's."""
        users = [self.iot_user, self.iot_user2, self.iot_manager, self.other_manager]
        logins = {}
        for user in users:
            creds = user.with_user(user).get_or_create_iot_credentials()
            logins[user._iot_broker_username(creds)] = creds["credential_id"]
        self.env["iot.acl.rule"].create(
            [
                {
                    "name": "deny one user",
                    "sequence": 1,
                    "permission": "deny",
                    "action": "subscribe",
                    "topic": "${namespace}/devices/+/status/#",
                    "credential_ids": [
                        (4, self.iot_user2.sudo().iot_credential_ids.id)
                    ],
                },
                {
                    "name": "other company",
                    "sequence": 2,
                    "topic": "${namespace}/shared/#",
                    "company_id": self.other_company.id,
                },
                {
                    "name": "managers only",
                    "sequence": 3,
                    "topic": "mgmt/${username}/#",
                    "group_ids": [
                        (4, self.env.ref("iot_base.iot_base_group_manager").id)
                    ],
                },
                {
                    "name": "qos",
                    "sequence": 4,
                    "topic": "${namespace}/q/#",
                    "qos": "0,1",
                },
                {
                    "name": "retain",
                    "sequence": 5,
                    "topic": "${namespace}/r/#",
                    "retain": "no",
                },
                {
                    "name": "client",
                    "sequence": 6,
                    "topic": "${namespace}/c/${clientid}/#",
                },
                {
                    "name": "services",
                    "sequence": 7,
                    "credential_kind": "service",
                    "action": "publish",
                    "topic": "${namespace}/svc/${username}",
                },
            ]
        )
        svc = self.Credentials.create({"username": "svc_a", "kind": "service"})
        svc.action_rotate_secret()
        dev_other = self.Credentials.create(
            {
                "username": "device_oc",
                "kind": "device",
                "company_id": self.other_company.id,
            }
        )
        dev_other.action_rotate_secret()
        logins.update({"svc_a": svc.id, "device_oc": dev_other.id})
        result = self.sync()
        sections, patterns = parse_acl(self.files()[1])
        self.assertIn("qos: QoS-limited allow left out", result["approximations"])
        pattern_allows = [(a, t) for a, t in patterns if a != "deny"]
        for login, cid in logins.items():
            credential = self.Credentials.browse(cid)
            expected, _notes = files.translate_rules(
                self.env["iot.acl.rule"]._rules_for(credential, None)
            )
            section = sections.get(login, [])
            own = section[: len(expected)]
            self.assertEqual(own, expected, login)
            roots = {t.split("/", 1)[0] for _a, t in pattern_allows}
            for access, topic in section[len(expected) :]:
                self.assertEqual(access, "deny", login)
                if topic.endswith("/#") and topic[:-2] in roots:
                    continue  # the pattern root no own rule reaches
                self.assertIn(
                    topic.replace(login, "%u"), [t for _a, t in pattern_allows]
                )

    def test_colon_username_skipped(self):
        self.device("svc:colon")
        result = self.sync()
        self.assertIn("svc:colon", result["skipped_usernames"])
        self.assertNotIn("svc:colon", self.files()[0])
        self.assertIn("svc:colon", self.env["iot.mosquitto.sync"]._summary(result))

    def test_live_credentials_only(self):
        """The file holds exactly the logins ``_find_live`` accepts."""
        now = fields.Datetime.now()
        _live, _s = self.device("device_live01")
        expired, _s = self.device("device_exp01")
        archived, _s = self.device("device_arch01")
        creds = self.iot_user2.with_user(self.iot_user2).get_or_create_iot_credentials()
        lost = self.Credentials.browse(creds["credential_id"])
        self.iot_user2.groups_id -= self.env.ref("iot_base.iot_base_group_user")
        expired.expires_at = now - timedelta(minutes=1)
        archived.action_archive()
        # an expired session secret of a live user
        user = self.iot_user.with_user(self.iot_user)
        stale = user.get_or_create_iot_credentials()
        self.env.cr.execute(
            "UPDATE iot_credentials_secret SET expires_at = %s "
            "WHERE credential_id = %s AND index = %s",
            [now - timedelta(seconds=1), stale["credential_id"], stale["password"][:8]],
        )
        fresh = user.get_or_create_iot_credentials()
        self.sync()
        passwd = self.files()[0]
        written = {line.split(":")[0] for line in passwd.splitlines()[1:]}
        base = {name.split("~")[0] for name in written}
        for credential in self.Credentials.with_context(active_test=False).search([]):
            self.assertEqual(
                credential.username in base,
                bool(credential._find_live(credential.username))
                and bool(
                    credential.sudo().secret_ids.filtered(
                        lambda s: not s.expires_at or s.expires_at > now
                    )
                ),
                credential.username,
            )
        self.assertNotIn(lost.username, base)
        self.assertIn(user._iot_broker_username(fresh), written)
        self.assertEqual(
            len([n for n in written if n.startswith(stale["username"] + "~")]), 1
        )
        # the cron is due when the first written secret expires
        triggers = self.env["ir.cron.trigger"].search(
            [("cron_id", "=", self.env.ref(engine.CRON_XMLID).id)]
        )
        self.assertTrue(triggers)
        self.assertLessEqual(
            min(triggers.mapped("call_at")),
            fields.Datetime.to_datetime(fresh["expires_at"]) + timedelta(seconds=1),
        )

    # translation --------------------------------------------------------

    def test_translation_never_more_permissive(self):
        rng = random.Random(4242)
        words = ["a", "b", "$s"]
        topics = [
            "/".join(levels)
            for n in (1, 2, 3)
            for levels in __import__("itertools").product(words + ["c"], repeat=n)
        ]

        def random_filter():
            levels = [rng.choice(words + ["+"]) for _i in range(rng.randint(1, 3))]
            if rng.random() < 0.4:
                levels.append("#")
            return "/".join(levels)

        for _case in range(300):
            rules = [
                topic_acl.Rule(
                    rng.choice(["allow", "allow", "deny"]),
                    rng.choice(["publish", "subscribe", "all"]),
                    random_filter(),
                    rng.choice([None, None, None, {0}, {0, 1, 2}]),
                    rng.choice([None, None, None, True, False]),
                )
                for _i in range(rng.randint(1, 5))
            ]
            entries, _notes = files.translate_rules(rules)
            for access in ("read", "write"):
                for topic in topics:
                    if mosquitto_decides(entries, [], "u", "c", access, topic):
                        # Mosquitto never sees the retain flag: retained-only
                        # denies are left out (topic_acl.retain_blind), and
                        # nothing else is ever more permissive
                        self.assertTrue(
                            ours_allows_always(rules, access, topic, (False,))
                            and ours_allows_always(
                                topic_acl.retain_blind(rules), access, topic
                            ),
                            f"{rules} {entries} {access} {topic}",
                        )

    def test_translation_exact_for_default_rules(self):
        ns = self.ns
        for credential in (
            self.Credentials.create({"username": "device_x1", "kind": "device"}),
            self.Credentials.browse(
                self.iot_manager.with_user(
                    self.iot_manager
                ).get_or_create_iot_credentials()["credential_id"]
            ),
        ):
            rules = self.env["iot.acl.rule"]._rules_for(credential, None)
            entries, notes = files.translate_rules(rules)
            self.assertEqual(notes, [])
            for topic in (
                f"{ns}/devices/device_x1/telemetry/a",
                f"{ns}/devices/device_x1/commands/a",
                f"{ns}/devices/other/status",
                f"{ns}/users/{credential.username}/a",
                f"{ns}/users/other/a",
                f"{ns}",
                "other/x",
                "$SYS/x",
            ):
                for access, action in (("read", "subscribe"), ("write", "publish")):
                    self.assertEqual(
                        mosquitto_decides(
                            entries, [], credential.username, "c", access, topic
                        ),
                        topic_acl.authorize(rules, action, topic) == "allow",
                        (credential.username, access, topic),
                    )

    def test_clientid_rules(self):
        self.assertTrue(files.clientid_pattern_safe("a/${clientid}/#"))
        self.assertTrue(files.clientid_pattern_safe("a/c-${clientid}/#"))
        self.assertFalse(files.clientid_pattern_safe("a/${clientid}"))
        self.assertFalse(files.clientid_pattern_safe("${clientid}/x/#"))
        self.assertFalse(files.clientid_pattern_safe("a/${clientid}/b/#"))
        self.assertEqual(
            files.pattern_text(f"a/{files.U_MARK}/{files.C_MARK}/#"), "a/%u/%c/#"
        )
        self.assertIsNone(files.pattern_text(f"a%c/{files.U_MARK}"))
        self.assertEqual(files._widen(" a/b\nc/d "), "+/+/+")
        self.assertFalse(files.acl_line_safe("a/b "))

    # triggers and errors -----------------------------------------------

    def _sync_hooks(self):
        # the after-commit hook wakes the engine's cron, which syncs
        return [
            f
            for f in self.env.cr.postcommit._funcs
            if getattr(f, "func", None) is engine.trigger_sync
        ]

    def test_after_commit_hook(self):
        postcommit = self.env.cr.postcommit
        postcommit.clear()
        device, secret = self.device("device_hook01")
        device.write({"note": "not a broker field"})
        self.env["iot.acl.rule"].search([], limit=1).write({"sequence": 10})
        hooks = self._sync_hooks()
        self.assertEqual(len(hooks), 1, "once per transaction")
        self.assertTrue(postcommit.data.get(engine.POSTCOMMIT_KEY))
        # what the hook, then the cron it wakes, run once the transaction is
        # committed
        self.env.flush_all()
        hook = hooks[0]
        postcommit.clear()
        hook()
        self.env.ref(engine.CRON_XMLID).method_direct_trigger()
        self.assertIn("device_hook01:", self.files()[0])
        self.connect("device_hook01", secret)
        # disabled: no hook at all
        self.env["ir.config_parameter"].sudo().set_param(mosq.ENABLED_PARAM, "False")
        self.device("device_hook02")
        self.assertFalse(self._sync_hooks())

    def test_settings_save_schedules_a_sync(self):
        postcommit = self.env.cr.postcommit
        postcommit.clear()
        settings = self.env["res.config.settings"].create({})
        settings.set_values()
        self.assertFalse(self._sync_hooks(), "nothing of the Mosquitto files changed")
        settings.iot_mosquitto_pid_file = self.broker.pid_file + ".other"
        settings.set_values()
        self.assertEqual(len(self._sync_hooks()), 1)

    def test_debounce(self):
        first = self.sync()
        self.assertFalse(first.get("skipped"))
        sync = self.env["iot.mosquitto.sync"]
        state = self.env["iot.store.sync.run"]._state(sync._store_key)
        skipped = sync._sync(not_before=state["snapshot_at"] - timedelta(seconds=1))
        self.assertTrue(skipped["skipped"])
        later = sync._sync(not_before=state["snapshot_at"] + timedelta(days=1))
        self.assertFalse(later.get("skipped"))

    def test_reload_errors_are_results(self):
        params = self.env["ir.config_parameter"].sudo()
        cases = [
            (self.broker.pid_file + ".missing", "Cannot read the pid file"),
            (self._pid_file_of(os.getpid()), "not mosquitto"),
            (self._pid_file_of(2**22 + 7), "No process"),
        ]
        for pid_file, message in cases:
            with self.subTest(pid_file=pid_file):
                params.set_param(mosq.PID_FILE_PARAM, pid_file)
                with self.assertLogs(LOGGER, "WARNING"):
                    result = self.sync(force=True, expect_ok=False)
                self.assertFalse(result["ok"])
                self.assertIn(message, result["error"])
                self.assertEqual(
                    self.env["iot.mosquitto.sync"]._last_result()["error"],
                    result["error"],
                )
        params.set_param(mosq.PID_FILE_PARAM, "")
        self.assertIn("no pid file", self.sync(force=True)["reload"])
        params.set_param(mosq.ACL_FILE_PARAM, "relative/acl")
        with self.assertLogs(LOGGER, "WARNING"):
            self.assertIn("absolute", self.sync(expect_ok=False)["error"])
        params.set_param(mosq.ACL_FILE_PARAM, "/nonexistent-dir/acl")
        with self.assertLogs(LOGGER, "WARNING"):
            self.assertIn("No such file", self.sync(expect_ok=False)["error"])

    def test_impostor_not_signalled(self):
        """Issue 16/15: only the broker the pid file names gets SIGHUP: a
        process merely named mosquitto (a copy of sleep, a Python process
        that renamed itself) is refused and keeps running, and so is a pid
        that started after the pid file was written; the real broker is
        signalled."""
        params = self.env["ir.config_parameter"].sudo()
        directory = tempfile.mkdtemp(prefix="iot_impostor_")
        self.addCleanup(shutil.rmtree, directory, True)
        fake = os.path.join(directory, "mosquitto")
        shutil.copy("/bin/sleep", fake)
        ready, hup = os.path.join(directory, "ready"), os.path.join(directory, "hup")
        renamed = (
            "import ctypes, signal, time\n"
            "ctypes.CDLL(None).prctl(15, b'mosquitto', 0, 0, 0)\n"
            f"signal.signal(signal.SIGHUP, lambda *a: open({hup!r}, 'w').close())\n"
            f"open({ready!r}, 'w').close()\n"
            "time.sleep(60)\n"
        )
        impostors = [
            subprocess.Popen([fake, "60"]),
            subprocess.Popen([sys.executable, "-c", renamed]),
        ]
        for process in impostors:
            self.addCleanup(process.wait, 10)
            self.addCleanup(process.kill)
        self.wait_for(lambda: os.path.exists(ready), "the renamed process")
        for process in impostors:
            with open(f"/proc/{process.pid}/comm") as comm:
                self.assertEqual(comm.read().strip(), "mosquitto")
            with self.subTest(pid=process.pid):
                params.set_param(mosq.PID_FILE_PARAM, self._pid_file_of(process.pid))
                with self.assertLogs(LOGGER, "WARNING"):
                    result = self.sync(force=True, expect_ok=False)
                self.assertIn("not mosquitto", result["error"])
                self.assertIsNone(process.poll(), "the impostor got SIGHUP")
        self.assertFalse(os.path.exists(hup), "the renamed process got SIGHUP")

        # the real broker's pid in a file written before it started: stale
        stale = self._pid_file_of(self.broker.pid)
        os.utime(stale, (time.time() - 3600, time.time() - 3600))
        params.set_param(mosq.PID_FILE_PARAM, stale)
        with self.assertLogs(LOGGER, "WARNING"):
            result = self.sync(force=True, expect_ok=False)
        self.assertIn("started after", result["error"])
        # the broker's own pid file: signalled, and the broker reloads
        params.set_param(mosq.PID_FILE_PARAM, self.broker.pid_file)
        _device, secret = self.device("device_hup01")
        result = self.sync()
        self.assertIn(f"(pid {self.broker.pid}) signalled", result["reload"])
        self.wait_for(
            lambda: self.broker.can_connect("device_hup01", secret), "the reload"
        )
        for process in impostors:
            self.assertIsNone(process.poll())

    def test_unreadable_files_not_signalled(self):
        if os.geteuid() != 0 or not self.broker._mosquitto_ids():
            self.assertNotEqual(os.geteuid(), 0, "root runs the broker as mosquitto")
            return
        params = self.env["ir.config_parameter"].sudo()
        params.set_param(mosq.FILE_GROUP_PARAM, "0")
        with self.assertLogs(LOGGER, "WARNING"):
            result = self.sync(force=True, expect_ok=False)
        self.assertIn("cannot read", result["error"])
        params.set_param(mosq.FILE_GROUP_PARAM, "")
        self.sync(force=True)

    def _pid_file_of(self, pid):
        path = os.path.join(self.broker.directory, f"pid-{pid}")
        with open(path, "w") as handle:
            handle.write(f"{pid}\n")
        return path

    def test_settings_sync_now(self):
        settings = self.env["res.config.settings"].with_user(
            self.env.ref("base.user_admin")
        )
        self.env.flush_all()
        record = settings.create({})
        self.assertTrue(record.iot_mosquitto_sync_enabled)
        self.assertEqual(record.iot_mosquitto_password_file, self.broker.password_file)
        action = record.action_iot_mosquitto_sync_now()
        self.assertEqual(
            action["params"]["type"], "success", action["params"]["message"]
        )
        self.assertIn("pattern lines", action["params"]["message"])
        self.assertIn("signalled", settings.create({}).iot_mosquitto_last_result)
        self.env["ir.config_parameter"].sudo().set_param(
            mosq.PID_FILE_PARAM, "/nonexistent"
        )
        self.env.flush_all()
        with self.assertLogs(LOGGER, "WARNING"):
            action = record.action_iot_mosquitto_sync_now()
        self.assertEqual(action["params"]["type"], "danger")
        self.assertIn("/nonexistent", action["params"]["message"])
        self.assertIn("Error", settings.create({}).iot_mosquitto_last_result)
        with self.assertRaises(AccessError):
            record.with_user(self.iot_user).action_iot_mosquitto_sync_now()

    def test_cron(self):
        self.device("device_cron01")
        self.env.flush_all()
        self.env.ref(engine.CRON_XMLID).method_direct_trigger()
        self.assertIn("device_cron01:", self.files()[0])


@tagged("post_install", "-at_install", "iot_mosquitto")
class TestMosquittoExampleConfig(BaseCase):
    """docs/mosquitto.conf (1883, 8083 websockets, TLS 8883/8884) starts on
    Mosquitto 2.0.11, with ports and paths moved to a temporary directory."""

    def test_example_config_runs(self):
        with open(os.path.join(REPO, "docs", "mosquitto.conf")) as handle:
            example = handle.read()
        self.assertIn("allow_anonymous false", example)
        # issue 16/9: the limits Mosquitto 2.0 has on retained floods
        for limit in (
            "message_size_limit 65536",
            "max_packet_size 131072",
            "max_queued_messages 1000",
            "max_queued_bytes 1048576",
            "max_inflight_messages 20",
            "memory_limit 1073741824",
            "retain_available true",
        ):
            self.assertRegex(example, rf"(?m)^{limit}$")
        for port in ("1883", "8083", "8883", "8884"):
            self.assertRegex(example, rf"(?m)^listener {port}\b")
        directory = tempfile.mkdtemp(prefix="iot_mosquitto_conf_")
        self.addCleanup(shutil.rmtree, directory, True)
        os.chmod(directory, 0o755)
        cert, key = (
            os.path.join(directory, "server.crt"),
            os.path.join(directory, "server.key"),
        )
        subprocess.run(
            [
                "openssl",
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "1",
                "-subj",
                "/CN=localhost",
                "-keyout",
                key,
                "-out",
                cert,
            ],
            check=True,
            capture_output=True,
        )
        os.chmod(key, 0o644)  # the broker drops to its own user in a temp dir
        # a client id belongs to one login: on every listener
        listeners = re.split(r"(?m)^(?=listener )", example)[1:]
        self.assertEqual(len(listeners), 4)
        for listener in listeners:
            self.assertRegex(listener, r"(?m)^use_username_as_clientid true$")
        originals = ("1883", "8083", "8883", "8884")
        ports = dict(zip(originals, free_ports(len(originals)), strict=True))
        config = example
        for old, new in ports.items():
            config = re.sub(rf"(?m)^listener {old}\b", f"listener {new}", config)
        replacements = {
            "/etc/mosquitto/certs/server.crt": cert,
            "/etc/mosquitto/certs/server.key": key,
            "/etc/mosquitto/iot/passwd": os.path.join(directory, "passwd"),
            "/etc/mosquitto/iot/acl": os.path.join(directory, "acl"),
            "/run/mosquitto/mosquitto.pid": os.path.join(
                directory, "run", "mosquitto.pid"
            ),
        }
        for old, new in replacements.items():
            self.assertIn(old, config)
            config = config.replace(old, new)
        config = re.sub(
            r"(?m)^(log_dest|persistence_location|persistence) .*$", "", config
        )
        config += "\nlog_dest stdout\npersistence false\n"
        if os.geteuid() == 0:
            config += "user root\n"
        os.mkdir(os.path.join(directory, "run"))
        for name in ("passwd", "acl"):
            open(os.path.join(directory, name), "w").close()
        conf_path = os.path.join(directory, "mosquitto.conf")
        with open(conf_path, "w") as handle:
            handle.write(config)
        if not os.access("/usr/sbin/mosquitto", os.X_OK):
            raise BrokerError("Mosquitto is not installed")
        log = open(os.path.join(directory, "log"), "wb")  # noqa: SIM115
        self.addCleanup(log.close)
        process = subprocess.Popen(
            ["/usr/sbin/mosquitto", "-c", conf_path],
            stdout=log,
            stderr=subprocess.STDOUT,
        )

        def stop():
            process.terminate()
            process.wait(10)

        self.addCleanup(stop)
        deadline = time.monotonic() + WAIT
        for name, port in ports.items():
            while True:
                try:
                    socket.create_connection(("127.0.0.1", port), 0.2).close()
                    break
                except OSError:
                    if time.monotonic() > deadline or process.poll() is not None:
                        with open(os.path.join(directory, "log")) as out:
                            self.fail(f"listener {name} not up:\n{out.read()}")
                    time.sleep(0.02)
        context = ssl.create_default_context(cafile=cert)
        context.check_hostname = False
        for name in ("8883", "8884"):
            with (
                socket.create_connection(("127.0.0.1", ports[name]), WAIT) as raw,
                context.wrap_socket(raw) as tls,
            ):
                self.assertTrue(tls.version())
