-- iot_base: a restored copy must not drive the production brokers.

-- no Mosquitto file sync (so no file written, no broker signalled)
UPDATE ir_config_parameter
   SET value = 'False'
 WHERE key = 'iot_base.mosquitto_sync_enabled';

-- Odoo's own MQTT client derives its secret from database.secret, which a
-- restore copies, and this version: a new version gives the copy a secret
-- that production never accepts
INSERT INTO ir_config_parameter (key, value)
VALUES ('iot_base.publisher_secret_version', 'neutralized-' || md5(random()::text))
    ON CONFLICT (key) DO
       UPDATE SET value = EXCLUDED.value;

-- no broker token (every broker request is refused), no broker API endpoint
-- or secret, no pid file; any secret-like iot_base parameter goes too,
-- whatever version of the module added it
DELETE FROM ir_config_parameter
 WHERE key IN (
           'iot_base.auth_token',
           'iot_base.mosquitto_pid_file',
           'iot_base.rabbitmq_management_url',
           'iot_base.emqx_api_url'
       )
    OR (key LIKE 'iot_base.%'
        AND key ~ '(token|secret|passw|private|signing|key|credential)'
        AND key != 'iot_base.publisher_secret_version');

-- iot_base refuses to sync or to cut sessions while this is set
INSERT INTO ir_config_parameter (key, value)
VALUES ('database.is_neutralized', true)
    ON CONFLICT (key) DO
       UPDATE SET value = true;

-- no console token signing key: a copy signs with a key of its own, which
-- no production broker knows
DELETE FROM iot_jwt_key;

-- no broker store kept (RabbitMQ internal users, EMQX built-in database)
UPDATE ir_config_parameter
   SET value = 'False'
 WHERE key IN ('iot_base.rabbitmq_store_enabled', 'iot_base.emqx_store_enabled');

-- no device registers itself on a copy with a factory's claim secret (the
-- copy's broker details would be handed to it): every claim is revoked here
UPDATE iot_provisioning_claim
   SET revoked_at = now() AT TIME ZONE 'UTC'
 WHERE revoked_at IS NULL;
