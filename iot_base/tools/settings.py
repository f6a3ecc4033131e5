# License LGPL-3.0 or later (https://www.gnu.org/licenses/lgpl).
"""Reading the addon's numeric system parameters: the one place."""

import math


def number_param(env, key, default, cast=int, bounds=None):
    """The system parameter ``key`` as a ``cast`` number.

    ``default`` when it is unset or unreadable; otherwise, with ``bounds``
    (low, high), clamped into them; without, ``default`` unless positive and
    finite (a zero or negative limit, lifetime or count means "unset").
    """
    value = env["ir.config_parameter"].sudo().get_param(key)
    if not value:  # unset: get_param answers False, which int() reads as 0
        return default
    try:
        value = cast(value)
    except (TypeError, ValueError, OverflowError):
        return default
    if not math.isfinite(value):
        return default
    if bounds:
        return min(max(value, bounds[0]), bounds[1])
    return value if value > 0 else default


def bool_param(env, key):
    """Whether the system parameter ``key`` is set to a true value ("True",
    as a Boolean settings field writes it, "1", "yes", "on"); unset or
    anything else is False."""
    value = env["ir.config_parameter"].sudo().get_param(key)
    return str(value).strip().lower() in ("1", "true", "t", "yes", "y", "on")


NEUTRALIZED_PARAM = "database.is_neutralized"


def database_is_neutralized(env):
    """Whether this database is a neutralized copy (``odoo-bin neutralize``):
    then Odoo must not act on any broker."""
    return bool_param(env, NEUTRALIZED_PARAM)
