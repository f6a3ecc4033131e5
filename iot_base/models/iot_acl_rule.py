# License LGPL-3.0 or later (https://www.gnu.org/licenses/lgpl).
from collections import defaultdict

from odoo import _, api, fields, models, tools
from odoo.exceptions import ValidationError

from ..tools import topic_acl
from ..tools.limits import company_limit
from ..tools.store_sync import LiveLogin, RuleKey, RuleRow, applicable_rules

PLACEHOLDERS = ("${username}", "${clientid}", "${namespace}")


class IotAclRule(models.Model):
    """One MQTT topic rule. Rules are tried in sequence order; the first that
    applies decides, and nothing matched means deny."""

    _name = "iot.acl.rule"
    _description = "MQTT Topic Rule"
    _order = "sequence, id"

    sequence = fields.Integer(default=10)
    name = fields.Char("Description", required=True)
    active = fields.Boolean(default=True)
    permission = fields.Selection(
        [("allow", "Allow"), ("deny", "Deny")], required=True, default="allow"
    )
    action = fields.Selection(
        [
            ("publish", "Publish"),
            ("subscribe", "Subscribe"),
            ("all", "Publish and Subscribe"),
        ],
        required=True,
        default="all",
    )
    topic = fields.Char(
        "Topic Filter",
        required=True,
        help="MQTT topic filter (+ and # wildcards); ${username}, ${clientid} "
        "and ${namespace} (the company's MQTT namespace) are replaced for "
        "each client.",
    )
    qos = fields.Char(
        "QoS", help="Comma-separated QoS levels this rule is limited to; empty: any."
    )
    retain = fields.Selection(
        [("any", "Any"), ("yes", "Retained only"), ("no", "Not retained")],
        required=True,
        default="any",
        help="Publish only: limit the rule to retained or non-retained messages.",
    )
    credential_kind = fields.Selection(
        [("user", "Users"), ("device", "Devices"), ("service", "Services")],
        "For",
        help="Kind of credential the rule applies to; empty: every kind.",
    )
    group_ids = fields.Many2many(
        "res.groups",
        string="Groups",
        help="User credentials only: the owner must belong to one of these groups.",
    )
    credential_ids = fields.Many2many(
        "iot.credentials",
        string="Credentials",
        help="If set, the rule applies to these credentials only.",
    )
    company_id = fields.Many2one(
        "res.company",
        default=lambda self: self._default_company_id(),
        help="If set, the rule applies to this company's credentials only. "
        "Rules for every company are made by administrators.",
    )

    @api.model
    def _default_company_id(self):
        # only administrators make rules for every company (data files too)
        return False if self.env.is_system() else self.env.company

    @api.constrains("topic", "qos")
    def _check_topic(self):
        for rule in self:
            probe = rule.topic or ""
            for placeholder in PLACEHOLDERS:
                probe = probe.replace(placeholder, "x")
            if not topic_acl.is_valid_topic_filter(probe) or "${" in probe:
                raise ValidationError(
                    _("%(topic)r is not a valid MQTT topic filter.", topic=rule.topic)
                )
            try:
                rule._qos_levels()
            except ValueError as exc:
                raise ValidationError(
                    _("QoS must list levels among 0, 1 and 2, e.g. '0,1'.")
                ) from exc

    @api.constrains(
        "name",
        "sequence",
        "active",
        "permission",
        "action",
        "topic",
        "qos",
        "retain",
        "credential_kind",
        "group_ids",
        "credential_ids",
        "company_id",
    )
    def _check_company_scope(self):
        """Outside system administrators, a rule belongs to one of the
        writer's companies and its filter lies in that company's namespace:
        its first level is ``${namespace}``, which stays the company's own
        whatever the namespace is renamed to. Checked before a change as
        well (see write and unlink): an administrator's rule beyond the
        namespace (an allow to widen, a deny to drop) is theirs alone."""
        if self.env.is_system():
            return
        for rule in self:
            if rule.company_id not in self.env.companies:
                raise ValidationError(
                    _(
                        "Only administrators can change a topic rule for every "
                        "company or for a company you do not manage."
                    )
                )
            if (rule.topic or "").split("/")[0] != "${namespace}":
                raise ValidationError(
                    _(
                        "%(topic)r reaches outside your company's topics: only "
                        "administrators change such rules. A company rule's "
                        "filter starts with ${namespace}/, e.g. "
                        "${namespace}/devices/#.",
                        topic=rule.topic,
                    )
                )

    def _qos_levels(self):
        self.ensure_one()
        if not (self.qos or "").strip():
            return None
        levels = frozenset(int(level) for level in self.qos.split(","))
        if not levels <= {0, 1, 2}:
            raise ValueError(self.qos)
        return levels

    @api.model_create_multi
    def create(self, vals_list):
        self._rules_changed()
        rules = super().create(vals_list)
        self._check_rule_limit(rules.company_id)
        return rules

    def write(self, vals):
        self.check_access("write")
        self._check_company_scope()
        self._rules_changed()
        res = super().write(vals)
        if vals.get("company_id"):
            self._check_rule_limit(self.company_id)
        return res

    def unlink(self):
        self.check_access("unlink")
        self._check_company_scope()
        self._rules_changed()
        return super().unlink()

    @api.model
    def _check_rule_limit(self, companies):
        """Refuse more rules in a company than ``iot_base.max_rules_per_company``
        (archived ones included; rules for every company are the
        administrators' and count for none): every rule a company has costs
        each build and each of its logins' ACL."""
        if not companies:
            return
        limit = company_limit(self.env, "iot_base.max_rules_per_company")
        counts = (
            self.sudo()
            .with_context(active_test=False)
            ._read_group(
                [("company_id", "in", companies.ids)], ["company_id"], ["__count"]
            )
        )
        for company, count in counts:
            if count > limit:
                raise ValidationError(
                    _(
                        "%(company)s would have %(count)s topic rules: at most "
                        "%(limit)s rules per company (Settings > IoT).",
                        company=company.sudo().display_name,
                        count=count,
                        limit=limit,
                    )
                )

    def _rules_changed(self):
        self.env.registry.clear_cache()
        self.env["iot.store.sync"]._schedule()

    @api.model
    def _owner_groups(self, owners, rule_groups):
        """{user id: frozenset of its groups among ``rule_groups``} of the
        ``owners``, in one query (missing users: the empty set)."""
        groups = defaultdict(frozenset)
        if owners and rule_groups:
            self.env.cr.execute(
                "SELECT uid, array_agg(gid) FROM res_groups_users_rel "
                "WHERE uid = ANY(%s) AND gid = ANY(%s) GROUP BY uid",
                [list(owners), list(rule_groups)],
            )
            groups.update(
                (uid, frozenset(gids)) for uid, gids in self.env.cr.fetchall()
            )
        return groups

    @api.model
    @tools.ormcache()
    def _rule_table(self):
        """Every active rule, in order, as :class:`RuleRow`, cached per worker
        until a rule changes: the broker's hot path compiles ACLs without a
        query."""
        table = []
        for rule in self.sudo().search([]):
            retain = {"any": None, "yes": True, "no": False}[rule.retain]
            table.append(
                RuleRow(
                    name=rule.name,
                    kind=rule.credential_kind or None,
                    group_ids=frozenset(rule.group_ids.ids),
                    credential_ids=frozenset(rule.credential_ids.ids),
                    company_id=rule.company_id.id or None,
                    rule=topic_acl.Rule(
                        rule.permission,
                        rule.action,
                        rule.topic,
                        rule._qos_levels(),
                        retain,
                    ),
                )
            )
        return tuple(table)

    @api.model
    @tools.ormcache()
    def _rule_index(self):
        """({company id or None: group ids}, {company id or None: credential
        ids}) that the rules of each company (None: the global rules) name."""
        groups, credentials = defaultdict(frozenset), defaultdict(frozenset)
        for row in self._rule_table():
            groups[row.company_id] |= row.group_ids
            credentials[row.company_id] |= row.credential_ids
        return dict(groups), dict(credentials)

    @api.model
    def _rule_keys(self, logins, owner_groups=None):
        """The :class:`RuleKey` of each of ``logins`` (rows with
        ``credential_id``, ``kind``, ``company_id``, ``user_id``), in order:
        the one place that says which facts of a credential choose its
        rules. Groups and credentials a rule names tell credentials apart
        only within the rule's company, so another company's rules split no
        company's logins. ``owner_groups``: {user id: group ids}, read from
        the database when not given."""
        groups, credentials = self._rule_index()
        if owner_groups is None:
            owners = {login.user_id for login in logins if login.user_id}
            owner_groups = self._owner_groups(
                owners, frozenset().union(*groups.values())
            )
        empty = frozenset()
        named_cache = {}
        keys = []
        for login in logins:
            company = login.company_id
            if company not in named_cache:
                named_cache[company] = (
                    groups.get(None, empty) | groups.get(company, empty),
                    credentials.get(None, empty) | credentials.get(company, empty),
                )
            named_groups, named_credentials = named_cache[company]
            keys.append(
                RuleKey(
                    kind=login.kind,
                    company_id=company,
                    group_ids=owner_groups.get(login.user_id, empty) & named_groups
                    if login.user_id
                    else empty,
                    credential_id=login.credential_id
                    if login.credential_id in named_credentials
                    else None,
                )
            )
        return keys

    @api.model
    def _namespaces(self):
        """{company id: MQTT namespace} of every company, in one query."""
        self.env.cr.execute("SELECT id, iot_mqtt_namespace FROM res_company")
        return dict(self.env.cr.fetchall())

    @api.model
    def _rules_for_logins(self, logins, clientid=None, namespaces=None):
        """{credential id: its rules, in order, placeholders replaced} of
        ``logins`` (:class:`LiveLogin` rows): which rules a credential gets,
        for one credential or a hundred thousand."""
        applicable = applicable_rules(self._rule_table())
        if namespaces is None:
            namespaces = self._namespaces()
        out = {}
        for login, key in zip(logins, self._rule_keys(logins), strict=True):
            out[login.credential_id] = topic_acl.expand_rules(
                [row.rule for row in applicable(key)],
                username=login.username,
                clientid=clientid,
                namespace=namespaces.get(login.company_id),
            )
        return out

    @api.model
    def _rules_for(self, credential, clientid=None):
        """The rules of ``credential``, in order, placeholders replaced (the
        broker's hot path: no query once the rules are cached)."""
        user = credential.user_id
        login = LiveLogin(
            credential_id=credential.id,
            username=credential.username,
            kind=credential.kind,
            company_id=credential.company_id.id,
            user_id=user.id or None,
            superuser=credential.is_superuser,
            expires_at=None,
            hash=None,
            salt=None,
        )
        key = self._rule_keys(
            [login], owner_groups={user.id: frozenset(user.groups_id.ids)}
        )[0]
        return topic_acl.expand_rules(
            [row.rule for row in applicable_rules(self._rule_table())(key)],
            username=credential.username,
            clientid=clientid,
            namespace=credential.company_id.iot_mqtt_namespace,
        )
