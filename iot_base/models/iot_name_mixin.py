# License LGPL-3.0 or later (https://www.gnu.org/licenses/lgpl).
from odoo import api, models
from odoo.exceptions import ValidationError

from ..tools.names import NAME_MAX, name_problem


class IotNameMixin(models.AbstractModel):
    """Names people and provisioning tools give (devices, fleets, tags) are
    checked before they are written: PostgreSQL cannot even store a NUL or a
    lone surrogate, so a constraint would run too late."""

    _name = "iot.name.mixin"
    _description = "Validated IoT Names"

    def _iot_name_fields(self):
        """``{field name: max length}`` of the names to check; an optional
        field is checked only when it is given a value."""
        return {"name": NAME_MAX}

    @api.model_create_multi
    def create(self, vals_list):
        for vals in vals_list:
            self._iot_check_names(vals)
        return super().create(vals_list)

    def write(self, vals):
        self._iot_check_names(vals)
        return super().write(vals)

    @api.model
    def _iot_check_names(self, vals):
        for name, max_length in self._iot_name_fields().items():
            field = self._fields[name]
            if name not in vals or not (field.required or vals[name]):
                continue
            problem = name_problem(
                self.env, vals[name], field._description_string(self.env), max_length
            )
            if problem:
                raise ValidationError(problem)
