# License LGPL-3.0 or later (https://www.gnu.org/licenses/lgpl).
"""18.0.2.0.0: settings named after their broker, one RabbitMQ vhost.

* ``iot_base.console_auth`` = ``jwt`` (EMQX's JWT authenticator) is now
  ``emqx_jwt``, next to ``rabbitmq_jwt``.
* ``iot_base.rabbitmq_store_vhost`` (the internal-users store) and
  ``iot_base.rabbitmq_vhost`` (HTTP backend and console tokens, no settings
  field) become the one ``iot_base.rabbitmq_vhost``. Where both were set and
  differ, the store's wins when the store is on (its users live there and
  its field was the one on the settings page), the other one otherwise; the
  value dropped is logged.
"""

import logging

_logger = logging.getLogger(__name__)

OLD_STORE_VHOST = "iot_base.rabbitmq_store_vhost"
VHOST = "iot_base.rabbitmq_vhost"
STORE_ENABLED = "iot_base.rabbitmq_store_enabled"
CONSOLE_AUTH = "iot_base.console_auth"


def _get(cr, key):
    cr.execute("SELECT value FROM ir_config_parameter WHERE key = %s", [key])
    row = cr.fetchone()
    return row[0] if row else None


def _set(cr, key, value):
    cr.execute(
        """INSERT INTO ir_config_parameter (key, value, create_date, write_date)
           VALUES (%s, %s, now() at time zone 'UTC', now() at time zone 'UTC')
           ON CONFLICT (key) DO UPDATE
              SET value = EXCLUDED.value, write_date = EXCLUDED.write_date""",
        [key, value],
    )


def migrate_settings(cr):
    cr.execute(
        "UPDATE ir_config_parameter SET value = 'emqx_jwt' "
        "WHERE key = %s AND value = 'jwt'",
        [CONSOLE_AUTH],
    )
    store_vhost = (_get(cr, OLD_STORE_VHOST) or "").strip()
    vhost = (_get(cr, VHOST) or "").strip()
    store_on = (_get(cr, STORE_ENABLED) or "").strip().lower() in ("1", "true")
    if store_vhost and store_vhost != vhost:
        if not vhost or store_on:
            if vhost:
                _logger.warning(
                    "RabbitMQ vhost: %s was %r, now %r (the store's, which is on)",
                    VHOST,
                    vhost,
                    store_vhost,
                )
            _set(cr, VHOST, store_vhost)
        else:
            _logger.warning(
                "RabbitMQ vhost: %s=%r dropped for %s=%r (the store is off)",
                OLD_STORE_VHOST,
                store_vhost,
                VHOST,
                vhost,
            )
    cr.execute("DELETE FROM ir_config_parameter WHERE key = %s", [OLD_STORE_VHOST])


def migrate(cr, version):
    if version:
        migrate_settings(cr)
