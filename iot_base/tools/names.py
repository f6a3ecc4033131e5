# License LGPL-3.0 or later (https://www.gnu.org/licenses/lgpl).
"""Which names may label a device, a fleet, a tag or a firmware version."""

import unicodedata

# Control characters (NUL included), format characters (zero-width, bidi
# overrides that make one name look like another), lone surrogates (not
# storable in PostgreSQL), private-use and unassigned code points, and the
# line/paragraph separators.
REFUSED_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})
NAME_MAX = 128  # characters, for device, fleet and tag names


def name_problem(env, value, label, max_length=NAME_MAX):
    """Why ``value`` cannot be a name (a sentence in ``env``'s language), or
    None.

    Names are refused, never truncated or cleaned: what the caller sent is
    what gets stored, or the caller is told why not. Check values before they
    are written: PostgreSQL cannot even store NUL or a lone surrogate, so a
    constraint would run too late.
    """
    if not value or (isinstance(value, str) and not value.strip()):
        return env._("%(label)s must not be blank.", label=label)
    if not isinstance(value, str):
        return env._("%(label)s must be a text.", label=label)
    if len(value) > max_length:
        return env._(
            "%(label)s must be at most %(max)s characters long.",
            label=label,
            max=max_length,
        )
    if any(unicodedata.category(char) in REFUSED_CATEGORIES for char in value):
        return env._(
            "%(label)s must not contain control or invisible characters.",
            label=label,
        )
    return None
