# License LGPL-3.0 or later (https://www.gnu.org/licenses/lgpl).
# Fed to `odoo-bin shell` of the NEW iot_base by scripts/check_upgrade.sh after
# the upgrade: the secrets issued by the old version still authenticate.
import json
import os

with open(os.environ["IOT_UPGRADE_SECRETS"]) as handle:
    secrets = json.load(handle)
Credentials = env["iot.credentials"].sudo()  # noqa: F821
refused = [
    name
    for name, secret in secrets.items()
    if not Credentials._authenticate(name, secret)
]
wrong = [
    name
    for name, secret in secrets.items()
    if Credentials._authenticate(name, secret + "x")
]
revoked = Credentials.with_context(active_test=False).search(
    [("username", "=", "dev_upgrade_revoked")]
)
if refused or wrong or not revoked or revoked.active:
    print(f"verify: FAILED: refused {refused}, wrong secret accepted {wrong}")
else:
    print(
        f"verify: OK ({len(secrets)} secrets of the old version log in, "
        "wrong ones do not)"
    )
