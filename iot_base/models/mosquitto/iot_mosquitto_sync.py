# License LGPL-3.0 or later (https://www.gnu.org/licenses/lgpl).
"""Mosquitto 2.0 password and ACL files, written from Odoo's credentials.

What Mosquitto 2.0.11 does with these files (src/security_default.c) and
what follows from it here:

* Password file: ``pwfile__parse`` adds every ``user:hash`` line to a uthash
  table without checking for duplicates, and ``mosquitto_unpwd_check_default``
  checks the one entry ``HASH_FIND`` returns (in practice the last line for
  that name) and fails otherwise. So one username can hold ONE secret, and a
  user with several live session secrets (two tabs) cannot be written as
  several lines of one name. Each secret other than the credential's newest
  long-lived one therefore gets its own login, ``<username>~<secret id>``
  (``~`` never occurs in a credential username, so the names cannot clash),
  with the ACL of ``<username>``. On SIGHUP Mosquitto re-checks every
  connected client's password against the new file
  (``mosquitto_security_apply_default``): a revoked secret is disconnected,
  the other sessions keep going.
* ACL file: for each connected client the broker first tries the entries of
  its ``user`` section, then the ``pattern`` lines (``%u``: login,
  ``%c``: client id); within each list every ``deny`` entry is tried before
  any allow entry, a deny matching the topic wins, nothing matching means
  deny. There is no QoS or retain condition, and a deny always covers read
  and write. SUBSCRIBE itself is never refused by the ACL file: each message
  is checked (read) when it is delivered, so a client only ever receives
  topics it may read. Rules (first match wins) are translated so that the
  broker never allows what :func:`topic_acl.authorize` denies: allows with a
  QoS or retain condition are left out, denies are kept (widened when they
  cannot be written exactly), and a deny is only dropped when an earlier
  unconditional allow covers it (it could never decide). Where Mosquitto
  ends up stricter the sync result says so ("approximations").
* ``add__acl`` looks up the section of each ``topic`` line by walking the
  list of all sections: reading N sections costs O(N^2) (measured with
  2.0.11: 10,000 sections 1.8 s, 20,000 sections 4.6 s). So the largest
  group of credentials that share the same rules (typically "devices of a
  company") is written as ``pattern`` lines with ``%u`` and gets no section;
  everyone else gets a section. Patterns apply to every login, so each
  section also denies what the patterns would grant beyond the login's own
  rules: one ``deny <root>/#`` for a first level of the patterns (the
  pattern company's namespace) that the login's own rules never reach, one
  deny per pattern line otherwise (logins of the pattern company itself).
  So another company's rules add at most one line to a section, and a
  credential's rules are looked up among its company's and the global ones
  only: the build is linear in the output.

The files are built from one SQL query (no ORM per record), written to a
temporary file in the target directory (mode 0640, group: system parameter
``iot_base.mosquitto_file_group``, default the directory's group) and renamed
over the old one; then the broker gets SIGHUP (pid from the configured pid
file, checked to run the Mosquitto binary, ``/proc/<pid>/exe``, to have
started before the pid file was written, and to be able to read the files).
"""

import grp
import os
import time
from collections import defaultdict

from odoo import _, api, fields, models
from odoo.exceptions import AccessError
from odoo.tools import SQL

from ...tools.mosquitto.files import (
    HEADER,
    LOGIN_SEPARATOR,
    MOSQUITTO_BINARIES,
    build_acl,
    password_line_hash,
    reload_broker,
    write_atomically,
)
from ...tools.store_sync import SyncError
from ..iot_store_sync import run_sync

ENABLED_PARAM = "iot_base.mosquitto_sync_enabled"
PASSWORD_FILE_PARAM = "iot_base.mosquitto_password_file"
ACL_FILE_PARAM = "iot_base.mosquitto_acl_file"
PID_FILE_PARAM = "iot_base.mosquitto_pid_file"
FILE_GROUP_PARAM = "iot_base.mosquitto_file_group"
# the broker's executable, when not one of MOSQUITTO_BINARIES
BINARY_PARAM = "iot_base.mosquitto_binary"


class IotMosquittoSync(models.AbstractModel):
    """The Mosquitto files adapter on the store port (``iot.store.adapter``):
    renders both files, writes them when they changed and signals the
    broker."""

    _name = "iot.mosquitto.sync"
    _inherit = "iot.store.adapter"
    _description = "Mosquitto Password and ACL Files"
    _store_key = "mosquitto"
    _enabled_param = ENABLED_PARAM

    @api.model
    def _get_config(self):
        params = self.env["ir.config_parameter"].sudo()
        return {
            "enabled": self._store_enabled(),
            "password_file": (params.get_param(PASSWORD_FILE_PARAM) or "").strip(),
            "acl_file": (params.get_param(ACL_FILE_PARAM) or "").strip(),
            "pid_file": (params.get_param(PID_FILE_PARAM) or "").strip(),
            "group": (params.get_param(FILE_GROUP_PARAM) or "").strip(),
            "binary": (params.get_param(BINARY_PARAM) or "").strip(),
        }

    # ------------------------------------------------------------------
    # The store port (iot.store.adapter)
    # ------------------------------------------------------------------

    @api.model
    def _store_sync(self, result, force):
        """Build, write (when changed or ``force``) and reload; fill
        ``result``; return the first expiry among the written secrets."""
        config = self._get_config()
        if not (config["password_file"] and config["acl_file"]):
            raise SyncError(_("Set the Mosquitto password file and ACL file paths."))
        for key in ("password_file", "acl_file", "pid_file", "binary"):
            if config[key] and not os.path.isabs(config[key]):
                raise SyncError(
                    _("%(path)s is not an absolute path.", path=config[key])
                )
        if config["password_file"] == config["acl_file"]:
            raise SyncError(_("The password file and the ACL file must differ."))
        with self.env.cr.savepoint(flush=False):
            build = self._build()
        next_expiry = build.pop("next_expiry")
        result.update(build.pop("stats"))
        t_write = time.monotonic()
        gid = self._file_gid(config)
        changed = self._write_if_changed(
            config["password_file"], build["password"], gid, force
        )
        changed |= self._write_if_changed(config["acl_file"], build["acl"], gid, force)
        result["write_seconds"] = round(time.monotonic() - t_write, 3)
        result["changed"] = changed
        result["pushed"] = result.get("logins", 0) if changed else 0
        result["unchanged"] = 0 if changed else result.get("logins", 0)
        if changed:
            result["reload"] = self._reload_broker(config)
        else:
            result["reload"] = _("files unchanged: broker not signalled")
        return next_expiry

    @api.model
    def _summary_parts(self, result):
        parts = [
            _(
                "%(logins)s logins (%(extra)s per-secret logins) for %(creds)s "
                "credentials; "
                "ACL: %(patterns)s pattern lines, %(sections)s user sections",
                logins=result.get("logins", 0),
                extra=result.get("secret_logins", 0),
                creds=result.get("credentials", 0),
                patterns=result.get("pattern_lines", 0),
                sections=result.get("sections", 0),
            ),
            result.get("reload") or "",
            _("%(s)s s", s=result.get("seconds")),
        ]
        if result.get("skipped_usernames"):
            parts.append(
                _(
                    "skipped (not writable in a Mosquitto password file): %(names)s",
                    names=", ".join(result["skipped_usernames"]),
                )
            )
        if result.get("approximations"):
            parts.append(
                _(
                    "stricter in Mosquitto: %(notes)s",
                    notes="; ".join(result["approximations"]),
                )
            )
        if result.get("warnings"):
            parts.extend(result["warnings"])
        return parts

    # ------------------------------------------------------------------
    # Building the files
    # ------------------------------------------------------------------

    @api.model
    def _acl_scopes(self):
        """Active rules in order, as (name, kind, groups, credential ids,
        company id, Rule): the same table and filters as
        ``iot.acl.rule._rules_for``."""
        return list(self.env["iot.acl.rule"].sudo()._rule_table())

    @api.model
    def _live_secret_rows(self, now, special_pairs):
        """Every live secret of every live credential, in one query.

        The credential conditions are ``iot.credentials._live_condition``. The
        password line is made by PostgreSQL for the hash format this addon
        issues, so that Python handles each of 100,000 rows only once, in
        C-implemented list operations. Columns: line (None when not made
        here), credential id, group (``kind|company|owner|superuser|
        special`` for a login named after its credential, else None),
        expiry, login (None unless line is None), hash (idem), bad (the
        username cannot be written: ':', blanks, or a character that no
        username may hold and that Mosquitto reads specially).
        """
        # a plan this size makes PostgreSQL compile it (JIT): ~0.4 s wasted
        self.env.cr.execute("SET LOCAL jit = off")
        self.env.cr.execute(
            SQL(
                r"""
            SELECT CASE WHEN x.fast AND NOT x.bad THEN
                        x.login || ':$7$' || translate(substr(x.hash, 16), '.', '+')
                        || E'==\n'
                   END,
                   x.cid,
                   CASE WHEN x.plain AND NOT x.bad THEN
                        concat_ws('|', x.kind, x.company_id, COALESCE(x.user_id, 0),
                                  x.su::int, COALESCE(x.special, 0))
                   END,
                   x.exp,
                   CASE WHEN x.bad THEN x.username WHEN NOT x.fast THEN x.login END,
                   CASE WHEN NOT x.fast AND NOT x.bad THEN x.hash END,
                   x.bad
              FROM (
                SELECT c.id AS cid, c.username, c.kind, c.company_id, c.user_id,
                       COALESCE(c.is_superuser, false) AS su,
                       CASE WHEN c.id = ANY(%(special)s) AND EXISTS (
                                SELECT 1 FROM unnest(%(special)s::int[],
                                                     %(special_companies)s::int[])
                                       AS sp(id, company_id)
                                 WHERE sp.id = c.id
                                   AND sp.company_id IN (0, c.company_id))
                            THEN c.id END AS special,
                       s.hash, LEAST(c.expires_at, s.expires_at) AS exp,
                       s.id IS NOT DISTINCT FROM ll.id AS plain,
                       CASE WHEN s.id = ll.id THEN c.username
                            ELSE c.username || %(sep)s || s.id END AS login,
                       (length(s.hash) = 120
                        AND left(s.hash, 17) = '$pbkdf2-sha512$1$'
                        OR length(s.hash) = 122
                        AND left(s.hash, 19) = '$pbkdf2-sha512$101$') AS fast,
                       c.username ~ '[:\s~#+/]' AS bad
                  FROM iot_credentials c
                  JOIN iot_credentials_secret s ON s.credential_id = c.id
                  LEFT JOIN (
                        SELECT credential_id, max(id) AS id
                          FROM iot_credentials_secret
                         WHERE secret_type = 'long_lived'
                           AND (expires_at IS NULL OR expires_at > %(now)s)
                         GROUP BY credential_id
                  ) ll ON ll.credential_id = c.id
                  LEFT JOIN res_users u ON u.id = c.user_id
                 WHERE %(live)s
                   AND (s.expires_at IS NULL OR s.expires_at > %(now)s)
                 ORDER BY c.id, s.id
              ) x
            """,
                now=now,
                live=self.env["iot.credentials"]._live_condition(now),
                special=[cid for cid, _company in special_pairs],
                special_companies=[company for _cid, company in special_pairs],
                sep=LOGIN_SEPARATOR,
            )
        )
        return self.env.cr.fetchall()

    @api.model
    def _build(self):
        """Both files' content from the database: {"password": str,
        "acl": str, "stats": dict, "next_expiry": datetime or None}."""
        t0 = time.monotonic()
        now = fields.Datetime.now()
        scopes = self._acl_scopes()
        rule_groups = frozenset().union(*(scope[2] for scope in scopes))
        # Groups and credentials named by a rule only tell credentials apart
        # (rule keys) within the rule's company: another company's rules
        # cannot split a company's logins into more sections.
        groups_of = defaultdict(frozenset)
        special_pairs = set()
        for scope in scopes:
            groups_of[scope[4]] |= scope[2]
            special_pairs.update((cid, scope[4] or 0) for cid in scope[3])
        rows = self._live_secret_rows(now, special_pairs)
        t_query = time.monotonic()

        skipped = []
        lines = [row[0] for row in rows]
        if None in lines:  # unwritable usernames, or another hash format
            rows, lines, skipped = self._slow_rows(rows)
        # logins named after their credential, by group; every other login
        groups = defaultdict(list)
        section_rows = []
        for row in rows:
            if row[2] is not None:
                groups[row[2]].append(row)
            else:
                section_rows.append(row)
        next_expiry = min((row[3] for row in rows if row[3] is not None), default=None)
        password = HEADER + "".join(lines)
        t_passwd = time.monotonic()

        owners = {int(gkey.split("|")[2]) for gkey in groups} - {0}
        self.env.cr.execute(
            "SELECT id, kind, company_id, user_id, COALESCE(is_superuser, false) "
            "FROM iot_credentials WHERE id = ANY(%s)",
            [list({row[1] for row in section_rows})],
        )
        section_creds = self.env.cr.fetchall()
        owners.update(user_id for _c, _k, _co, user_id, _s in section_creds if user_id)
        owner_groups = (
            self.env["iot.acl.rule"].sudo()._owner_groups(owners, rule_groups)
        )

        def rule_key(kind, company_id, user_id, superuser, special):
            if superuser:
                return "superuser"
            return (
                kind,
                company_id,
                owner_groups[user_id] & (groups_of[None] | groups_of[company_id])
                if user_id
                else frozenset(),
                special,
            )

        plain_by_key = defaultdict(list)
        for gkey, members in groups.items():
            kind, company_id, user_id, superuser, special = gkey.split("|")
            key = rule_key(
                kind,
                int(company_id),
                int(user_id),
                superuser == "1",
                int(special) or None,
            )
            plain_by_key[key].extend(members)
        key_of_cred = {
            cid: rule_key(
                kind,
                company_id,
                user_id,
                superuser,
                cid
                if (cid, 0) in special_pairs or (cid, company_id) in special_pairs
                else None,
            )
            for cid, kind, company_id, user_id, superuser in section_creds
        }
        sections = [(row[1], key_of_cred[row[1]], row) for row in section_rows]
        self.env.cr.execute("SELECT id, iot_mqtt_namespace FROM res_company")
        namespaces = dict(self.env.cr.fetchall())
        acl_lines, acl_stats = build_acl(scopes, plain_by_key, sections, namespaces)
        t_acl = time.monotonic()
        stats = {
            "credentials": len({row[1] for row in rows}),
            "logins": len(lines),
            "secret_logins": len(section_rows),
            "skipped_usernames": skipped,
            "query_seconds": round(t_query - t0, 3),
            "password_build_seconds": round(t_passwd - t_query, 3),
            "acl_build_seconds": round(t_acl - t_passwd, 3),
            **acl_stats,
        }
        return {
            "password": password,
            "acl": "".join(acl_lines),
            "stats": stats,
            "next_expiry": next_expiry,
        }

    @api.model
    def _slow_rows(self, rows):
        """Rows the query could not render: skip unwritable usernames, render
        other hash formats in Python. Returns (rows, lines, skipped)."""
        kept, skipped = [], []
        for row in rows:
            line, cid, gkey, exp, login, hash_, bad = row
            if bad:
                if login not in skipped:
                    skipped.append(login)
                continue
            if line is None:
                line_hash = password_line_hash(hash_)
                if line_hash is None:
                    skipped.append(f"{login} (unknown hash format)")
                    continue
                row = (f"{login}:{line_hash}\n", cid, gkey, exp, None, None, False)
            kept.append(row)
        return kept, [row[0] for row in kept], skipped

    # ------------------------------------------------------------------
    # Writing and reloading
    # ------------------------------------------------------------------

    @api.model
    def _file_gid(self, config):
        """Group of the written files: the system parameter (a group name or
        number), else the group of the file's directory."""
        name = config["group"]
        if name:
            if name.isdigit():
                return int(name)
            try:
                return grp.getgrnam(name).gr_gid
            except KeyError as exc:
                raise SyncError(_("Unknown group %(name)r.", name=name)) from exc
        return None

    @api.model
    def _write_if_changed(self, path, text, gid, force):
        data = text.encode()
        if not force and os.path.exists(path):
            with open(path, "rb") as current:
                if current.read() == data:
                    return False
        write_atomically(path, data, gid)
        return True

    @api.model
    def _reload_broker(self, config):
        """SIGHUP the broker of the pid file; the text says what happened."""
        pid_file = config["pid_file"]
        if not pid_file:
            return _("no pid file configured: the broker's host must reload Mosquitto")
        return reload_broker(
            pid_file,
            (config["password_file"], config["acl_file"]),
            (config["binary"],) if config["binary"] else MOSQUITTO_BINARIES,
        )

    # ------------------------------------------------------------------
    # UI
    # ------------------------------------------------------------------

    @api.model
    def _action_sync_now(self):
        if not (
            self.env.user.has_group("iot_base.iot_base_group_manager")
            or self.env.user.has_group("base.group_system")
        ):
            raise AccessError(_("Only IoT managers can sync the Mosquitto files."))
        result = run_sync(self.env.cr.dbname, force=True, adapters=[self._name])
        ok = result.get("ok")
        return {
            "type": "ir.actions.client",
            "tag": "display_notification",
            "params": {
                "title": _("Mosquitto sync") if ok else _("Mosquitto sync failed"),
                "message": self._summary(result),
                "type": "success" if ok else "danger",
                "sticky": not ok,
                "next": {"type": "ir.actions.client", "tag": "reload"},
            },
        }
