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
rule (idempotent), and deletes the users an earlier run pushed. Before any
write or delete each login is read back: a user or rules of a name Odoo did
not create are never touched (:meth:`_claims`). Every call goes through
:class:`broker_api.EmqxRest`.
"""

from odoo import _, api, models

from ...tools.emqx import store as emqx_store
from ...tools.store_sync import SyncError
from ..iot_store_api import ABSENT, FOREIGN, LEFTOVER, OURS

ENABLED_PARAM = "iot_base.emqx_store_enabled"
# up to this many logins, read each user and its rules on their own; above,
# list every user and every rules entry (paged)
PER_LOGIN_READS = 50


class IotEmqxStore(models.AbstractModel):
    _name = "iot.emqx.store"
    _inherit = "iot.store.api"
    _description = "EMQX Built-in Database"
    _store_key = "emqx"
    _enabled_param = ENABLED_PARAM

    @api.model
    def _get_config(self):
        return dict(self.env["iot.broker.api"]._get_config()["emqx"])

    @api.model
    def _render(self, login, rules):
        entries, notes = emqx_store.user_rules(rules, login.superuser)
        return {
            "user": emqx_store.user_entry(
                login.username, login.hash, login.salt, login.superuser
            ),
            "rules": entries,
        }, notes

    @api.model
    def _read_broker_states(self, client, config):
        return None  # EMQX does not report hashes: compare with nothing

    @api.model
    def _claims(self, client, logins, known):
        """A user is this store's when Odoo created it: EMQX 5.8.9 keeps
        nothing but ``user_id``, ``password_hash``, ``salt`` and
        ``is_superuser`` per built-in database user and its API shows only
        ``user_id`` and ``is_superuser`` (emqx_authn_mnesia
        ``format_user_info/1``), so no mark can live on the broker. The mark
        is Odoo's record instead: a login enters ``iot_store_pushed`` only
        when a push finds neither a user nor rules of that name (claimed
        before the import), and stays there while Odoo keeps it. A user or
        rules of any other name are never written nor deleted."""
        if len(logins) > PER_LOGIN_READS:
            users, ruled = client.user_ids(), client.rule_usernames()

            def has_user(login):
                return login in users

            def has_rules(login):
                return login in ruled
        else:

            def has_user(login):
                return client.user(login) is not None

            def has_rules(login):
                return client.rules(login) is not None

        claims = {}
        for login in logins:
            if has_user(login):
                claims[login] = OURS if login in known else FOREIGN
            elif has_rules(login):
                claims[login] = LEFTOVER if login in known else FOREIGN
            else:
                claims[login] = ABSENT
        return claims

    @api.model
    def _push(self, client, config, states):
        users = [states[login]["user"] for login in sorted(states)]
        for batch in emqx_store.batches(users):
            body = client.import_users(batch)
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
            client.put_rules(login, states[login]["rules"])

    @api.model
    def _delete(self, client, claims):
        for login, claim in sorted(claims.items()):
            if claim == OURS:
                client.delete_user(login)  # 204, else the run fails
            # rules may be missing (a push that failed before them)
            client.delete_rules(login)
        self._close(client, sorted(claims))
