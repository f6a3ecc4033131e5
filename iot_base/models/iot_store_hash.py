# License LGPL-3.0 or later (https://www.gnu.org/licenses/lgpl).
from odoo import api, models
from odoo.tools import SQL

from ..tools.emqx.store import emqx_hash
from ..tools.rabbitmq.store import rabbitmq_hash


class IotStoreHash(models.AbstractModel):
    """The hash forms of a secret that the broker stores need, made when the
    secret is issued (the only moment its clear value exists).

    One row per (secret, store), in a table the ORM does not know (like the
    secrets' own hashes): no one reads it through the ORM. Removed with the
    secret (``ON DELETE CASCADE``). Only long-lived secrets of the stores
    enabled at issue time get one: an older secret is reported "needs
    rotation" by the sync.
    """

    _name = "iot.store.hash"
    _description = "Broker Store Secret Hashes"

    # store key: function(secret) -> (hash, salt or None)
    _HASHERS = {"rabbitmq": rabbitmq_hash, "emqx": emqx_hash}

    def init(self):
        self.env.cr.execute(
            """
            CREATE TABLE IF NOT EXISTS iot_store_hash (
                secret_id integer NOT NULL
                    REFERENCES iot_credentials_secret(id) ON DELETE CASCADE,
                store varchar NOT NULL,
                hash varchar NOT NULL,
                salt varchar,
                PRIMARY KEY (secret_id, store)
            )
            """
        )

    @api.model
    def _store(self, secret_id, secret_type, secret):
        """Hash ``secret`` (clear, of the secret row ``secret_id``) for every
        enabled store that pushes secrets of ``secret_type``."""
        if secret_type != "long_lived" or not secret_id:
            return
        stores = [
            key
            for key, model in self.env["iot.store.sync"]._store_models().items()
            if key in self._HASHERS and self.env[model]._store_enabled()
        ]
        for store in stores:
            hash_, salt = self._HASHERS[store](secret)
            self.env.cr.execute(
                SQL(
                    "INSERT INTO iot_store_hash (secret_id, store, hash, salt) "
                    "VALUES (%s, %s, %s, %s) ON CONFLICT (secret_id, store) "
                    "DO UPDATE SET hash = EXCLUDED.hash, salt = EXCLUDED.salt",
                    secret_id,
                    store,
                    hash_,
                    salt,
                )
            )
