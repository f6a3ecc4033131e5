# License LGPL-3.0 or later (https://www.gnu.org/licenses/lgpl).
# Fed to `odoo-bin shell` of the OLD iot_base by scripts/check_upgrade.sh:
# fills the database through that version's own ORM, then commits.
# (`env` is the shell's superuser environment.)
import itertools
import json
import os

params = env["ir.config_parameter"].sudo()  # noqa: F821
Settings = env["res.config.settings"]  # noqa: F821
numbers = itertools.count(7)
written = 0
# every iot_base setting of the settings page, at a value that is not its default
for name, field in sorted(Settings._fields.items()):
    key = getattr(field, "config_parameter", None)
    if not key or not key.startswith("iot_base."):
        continue
    if field.type == "boolean":
        value = "True"
    elif field.type == "integer":
        value = str(next(numbers))
    elif field.type == "selection":
        options = [opt for opt, _label in field._description_selection(env)]  # noqa: F821
        value = options[-1] if key != "iot_base.console_auth" else "jwt"
    elif key.endswith("_url"):
        value = f"http://127.0.0.1:{next(numbers)}/"
    elif key.endswith("_file"):
        value = f"/tmp/iot_upgrade_{name}"
    else:
        value = f"seed-{name}"
    params.set_param(key, value)
    written += 1
# the two vhosts of 18.0.1: the store (on) wins
params.set_param("iot_base.rabbitmq_vhost", "http-vhost")
params.set_param("iot_base.rabbitmq_store_vhost", "store-vhost")
params.set_param("iot_base.rabbitmq_store_enabled", "True")

company = env.ref("base.main_company")  # noqa: F821
Credentials = env["iot.credentials"].sudo()  # noqa: F821
fleet = env["iot.mqtt.fleet"].create({"name": "Upgrade fleet"})  # noqa: F821
secrets = {}
for index in range(3):
    device, secret = env["iot.mqtt.device"]._register_device(  # noqa: F821
        f"aa:bb:cc:00:00:0{index}", name=f"Upgrade device {index}", fleet_id=fleet.id
    )
    secrets[device.credential_id.username] = secret
service = Credentials.create(
    {"username": "svc_upgrade", "kind": "service", "company_id": company.id}
)
secrets["svc_upgrade"] = service._issue_secret("long_lived")[0]
revoked = Credentials.create(
    {"username": "dev_upgrade_revoked", "kind": "device", "company_id": company.id}
)
revoked._issue_secret("long_lived")
revoked.active = False
env["iot.acl.rule"].create(  # noqa: F821
    [
        {
            "name": "upgrade: devices publish telemetry",
            "permission": "allow",
            "action": "publish",
            "topic": "${namespace}/devices/${username}/telemetry/#",
            "credential_kind": "device",
            "company_id": company.id,
        },
        {
            "name": "upgrade: deny a corner",
            "permission": "deny",
            "action": "all",
            "topic": "secret/#",
            "company_id": company.id,
        },
    ]
)
# the store engine's cron as an administrator set it (renamed by the upgrade)
env.ref("iot_base.ir_cron_mosquitto_sync").write(  # noqa: F821
    {"interval_number": 9, "interval_type": "hours", "nextcall": "2031-05-04 03:02:01"}
)
env.cr.commit()  # noqa: F821
with open(os.environ["IOT_UPGRADE_SECRETS"], "w") as handle:
    json.dump(secrets, handle)
print(f"seed: OK ({written} settings, 3 devices, 2 credentials, 2 rules, 1 cron)")
