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
    SecretRow,
    build_acl,
    login_for,
    password_line_hash,
    reload_broker,
    write_atomically,
)
from ...tools.store_sync import LiveLogin, SyncError
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
    # Logins: one per secret
    # ------------------------------------------------------------------

    @api.model
    def _broker_login(self, username, secret_id=None):
        """The login a client sends with the secret ``secret_id`` of the
        credential ``username`` (None: its newest long-lived secret). With
        the Mosquitto files on, every other secret has a login of its own,
        ``<username>~<secret id>`` (Mosquitto holds one secret per name:
        module docstring); otherwise, and on every other broker, the
        username. :meth:`_login_sql` is the same in SQL."""
        if secret_id is None or not self._is_enabled():
            return username
        return login_for(username, secret_id)

    @api.model
    def _login_sql(self, alias):
        """The Mosquitto login (:meth:`_broker_login`) of a row ``alias`` of
        the port's ``_live_secrets`` query, in SQL."""
        row = SQL.identifier(alias)
        return SQL(
            "CASE WHEN %(row)s.newest THEN %(row)s.username "
            "ELSE %(row)s.username || %(sep)s || %(row)s.secret_id END",
            row=row,
            sep=LOGIN_SEPARATOR,
        )

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
    def _file_rows(self, now, named):
        """Every live secret as a :class:`files.SecretRow`, from the port's one
        query (``_live_secrets``).

        The password line is made by PostgreSQL for the hash format this addon
        issues, so that Python handles each of 100,000 rows only once. The
        group (``kind|company|owner|superuser|named``) is set for a login
        named after its credential; ``named`` ({company id or None: credential
        ids}) says which credentials a rule names. ``bad``: the username cannot
        be written (':', blanks, or a character that no username may hold and
        that Mosquitto reads specially).
        """
        pairs = [(cid, company or 0) for company, cids in named.items() for cid in cids]
        # a plan this size makes PostgreSQL compile it (JIT): ~0.4 s wasted
        self.env.cr.execute("SET LOCAL jit = off")
        self.env.cr.execute(
            SQL(
                r"""
            SELECT CASE WHEN x.fast AND NOT x.bad THEN
                        x.login || ':$7$' || translate(substr(x.hash, 16), '.', '+')
                        || E'==\n'
                   END,
                   x.credential_id,
                   CASE WHEN x.newest AND NOT x.bad THEN
                        concat_ws('|', x.kind, x.company_id, COALESCE(x.user_id, 0),
                                  x.superuser::int, COALESCE(x.named, 0))
                   END,
                   x.expires_at,
                   CASE WHEN x.bad THEN x.username WHEN NOT x.fast THEN x.login END,
                   CASE WHEN NOT x.fast AND NOT x.bad THEN x.hash END,
                   x.bad
              FROM (
                SELECT q.*,
                       CASE WHEN q.credential_id = ANY(%(named)s) AND EXISTS (
                                SELECT 1 FROM unnest(%(named)s::int[],
                                                     %(named_companies)s::int[])
                                       AS sp(id, company_id)
                                 WHERE sp.id = q.credential_id
                                   AND sp.company_id IN (0, q.company_id))
                            THEN q.credential_id END AS named,
                       %(login)s AS login,
                       (length(q.hash) = 120
                        AND left(q.hash, 17) = '$pbkdf2-sha512$1$'
                        OR length(q.hash) = 122
                        AND left(q.hash, 19) = '$pbkdf2-sha512$101$') AS fast,
                       q.username ~ '[:\s~#+/]' AS bad
                  FROM (%(live)s) q
                 ORDER BY q.credential_id, q.secret_id
              ) x
            """,
                live=self._live_secrets(now),
                login=self._login_sql("q"),
                named=[cid for cid, _company in pairs],
                named_companies=[company for _cid, company in pairs],
            )
        )
        return list(map(SecretRow._make, self.env.cr.fetchall()))

    @api.model
    def _build(self):
        """Both files' content from the database: {"password": str,
        "acl": str, "stats": dict, "next_expiry": datetime or None}."""
        t0 = time.monotonic()
        now = fields.Datetime.now()
        acl = self.env["iot.acl.rule"].sudo()
        rule_rows = acl._rule_table()
        rows = self._file_rows(now, acl._rule_index()[1])
        t_query = time.monotonic()

        skipped = []
        lines = [row.line for row in rows]
        if None in lines:  # unwritable usernames, or another hash format
            rows, lines, skipped = self._slow_rows(rows)
        # logins named after their credential, by group; every other login
        groups = defaultdict(list)
        section_rows = []
        for row in rows:
            if row.group is not None:
                groups[row.group].append(row)
            else:
                section_rows.append(row)
        next_expiry = min(
            (row.expires_at for row in rows if row.expires_at is not None),
            default=None,
        )
        password = HEADER + "".join(lines)
        t_passwd = time.monotonic()

        # the rule key of each group, and of each other login's credential
        # (iot.acl.rule decides which rules a key gets); a superuser gets
        # every topic instead
        facts = []
        for gkey in groups:
            kind, company_id, user_id, superuser, named = gkey.split("|")
            facts.append(
                LiveLogin(
                    credential_id=int(named) or None,
                    username=None,
                    kind=kind,
                    company_id=int(company_id),
                    user_id=int(user_id) or None,
                    superuser=superuser == "1",
                    expires_at=None,
                    hash=None,
                    salt=None,
                )
            )
        self.env.cr.execute(
            "SELECT id, NULL, kind, company_id, user_id, "
            "COALESCE(is_superuser, false), NULL, NULL, NULL "
            "FROM iot_credentials WHERE id = ANY(%s)",
            [list({row.credential_id for row in section_rows})],
        )
        section_creds = [LiveLogin._make(row) for row in self.env.cr.fetchall()]
        logins = facts + section_creds
        keys = [
            "superuser" if login.superuser else key
            for login, key in zip(logins, acl._rule_keys(logins), strict=True)
        ]
        plain_by_key = defaultdict(list)
        for members, key in zip(groups.values(), keys[: len(facts)], strict=True):
            plain_by_key[key].extend(members)
        key_of_cred = {
            login.credential_id: key
            for login, key in zip(section_creds, keys[len(facts) :], strict=True)
        }
        sections = [
            (row.credential_id, key_of_cred[row.credential_id], row)
            for row in section_rows
        ]
        acl_lines, acl_stats = build_acl(
            rule_rows, plain_by_key, sections, acl._namespaces()
        )
        t_acl = time.monotonic()
        stats = {
            "credentials": len({row.credential_id for row in rows}),
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
            if row.bad:
                if row.login not in skipped:
                    skipped.append(row.login)
                continue
            if row.line is None:
                line_hash = password_line_hash(row.hash)
                if line_hash is None:
                    skipped.append(f"{row.login} (unknown hash format)")
                    continue
                row = row._replace(
                    line=f"{row.login}:{line_hash}\n", login=None, hash=None
                )
            kept.append(row)
        return kept, [row.line for row in kept], skipped

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
