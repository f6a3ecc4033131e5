# License LGPL-3.0 or later (https://www.gnu.org/licenses/lgpl).
"""EMQX 5 built-in database kept by Odoo, through the REST API (``/api/v5``,
Basic auth with the EMQX API key of the settings): EMQX checks CONNECTs and
topics against its own users and rules.

* users: ``import_users?type=hash`` in batches (one transaction each;
  existing users are overridden), never ``POST /users`` (clear password);
* rules: ``PUT /authorization/sources/built_in_database/rules/users/{name}``;
* a deleted login: ``DELETE .../users/{user_id}``, then its clients are
  kicked (``DELETE /api/v5/clients/{clientid}``): deleting a user does not
  disconnect it. A changed login's clients are kicked too (EMQX checks the
  password at CONNECT only).

EMQX's user list carries no hash, so a full run re-imports every user and
rule (idempotent), and deletes the users an earlier run pushed.
"""

import time
from urllib.parse import quote

from odoo import _, api, models

from ..tools import emqx_store
from ..tools.store_sync import SyncError
from .iot_broker_session import BUDGET

ENABLED_PARAM = "iot_base.emqx_store_enabled"
AUTHN = "/api/v5/authentication/password_based%3Abuilt_in_database"
RULES = "/api/v5/authorization/sources/built_in_database/rules/users"


class IotEmqxStore(models.AbstractModel):
    _name = "iot.emqx.store"
    _inherit = "iot.store.adapter"
    _description = "EMQX Built-in Database"
    _store_key = "emqx"
    _enabled_param = ENABLED_PARAM

    @api.model
    def _get_config(self):
        return dict(self.env["iot.broker.session"]._get_config()["emqx"])

    @api.model
    def _render(self, row, rules):
        _cid, username, _kind, _co, _user, superuser, _exp, hash_, salt = row
        entries, notes = emqx_store.user_rules(rules, superuser)
        return {
            "user": emqx_store.user_entry(username, hash_, salt, superuser),
            "rules": entries,
        }, notes

    @api.model
    def _read_broker_states(self, config):
        return None  # EMQX does not report hashes: compare with nothing

    @api.model
    def _push(self, config, states):
        users = [states[login]["user"] for login in sorted(states)]
        for batch in emqx_store.batches(users):
            response = self._call(
                config,
                "POST",
                f"{AUTHN}/import_users?type=hash",
                (200,),
                json=batch,
            )
            body = response.json()
            if body.get("failed") or body.get("skipped"):
                raise SyncError(
                    _(
                        "EMQX imported %(success)s of %(total)s users "
                        "(%(failed)s failed, %(skipped)s skipped)",
                        success=body.get("success"),
                        total=body.get("total"),
                        failed=body.get("failed"),
                        skipped=body.get("skipped"),
                    )
                )
        for login in sorted(states):
            self._call(
                config,
                "PUT",
                f"{RULES}/{quote(login, safe='')}",
                (204, 200),
                json={"username": login, "rules": states[login]["rules"]},
            )

    @api.model
    def _delete(self, config, logins):
        for login in logins:
            name = quote(login, safe="")
            self._call(config, "DELETE", f"{AUTHN}/users/{name}", (204, 404))
            self._call(config, "DELETE", f"{RULES}/{name}", (204, 404))
        self._close(config, logins)

    @api.model
    def _close(self, config, logins):
        if logins:
            self.env["iot.broker.session"]._cut_emqx(
                config, sorted(logins), time.monotonic() + BUDGET * max(1, len(logins))
            )
