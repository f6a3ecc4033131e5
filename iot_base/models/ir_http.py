# License LGPL-3.0 or later (https://www.gnu.org/licenses/lgpl).
from werkzeug.exceptions import NotFound
from werkzeug.routing import RequestRedirect

from odoo import models

PROVISIONING_PREFIX = "/iot/provision"


class IrHttp(models.AbstractModel):
    _inherit = "ir.http"

    @classmethod
    def _match(cls, path_info):
        """Paths under the provisioning API that werkzeug cannot match (a
        newline in a segment, a ``//`` it would redirect) get the API's own
        JSON 404, not Odoo's HTML page or redirect."""
        try:
            return super()._match(path_info)
        except (NotFound, RequestRedirect):
            if not path_info.startswith(f"{PROVISIONING_PREFIX}/"):
                raise
            return super()._match(PROVISIONING_PREFIX)
