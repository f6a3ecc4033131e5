# License LGPL-3.0 or later (https://www.gnu.org/licenses/lgpl).
"""The broker REST APIs Odoo calls (RabbitMQ's management API, EMQX's REST
API): their settings, read in one place, and the clients of
tools/broker_api.py made from them. The stores (``iot.store.api``) and the
session cut-off (``iot.broker.session``) get their clients here and call the
same client methods; nothing in models/ builds a broker URL."""

from odoo import api, models

from ..tools import broker_api

RABBITMQ_URL_PARAM = "iot_base.rabbitmq_management_url"
RABBITMQ_USER_PARAM = "iot_base.rabbitmq_management_user"
RABBITMQ_PASSWORD_PARAM = "iot_base.rabbitmq_management_password"
EMQX_URL_PARAM = "iot_base.emqx_api_url"
EMQX_KEY_PARAM = "iot_base.emqx_api_key"
EMQX_SECRET_PARAM = "iot_base.emqx_api_secret"
# the settings of each broker API: (URL, user, password)
PARAMS = {
    "rabbitmq": (RABBITMQ_URL_PARAM, RABBITMQ_USER_PARAM, RABBITMQ_PASSWORD_PARAM),
    "emqx": (EMQX_URL_PARAM, EMQX_KEY_PARAM, EMQX_SECRET_PARAM),
}


class IotBrokerApi(models.AbstractModel):
    _name = "iot.broker.api"
    _description = "Broker REST APIs"

    @api.model
    def _get_config(self):
        """{broker: {"url", "user", "password"}} of every broker API (an
        empty URL: not configured)."""
        params = self.env["ir.config_parameter"].sudo()
        return {
            broker: {
                "url": (params.get_param(url) or "").strip().rstrip("/"),
                "user": params.get_param(user) or "",
                "password": params.get_param(password) or "",
            }
            for broker, (url, user, password) in PARAMS.items()
        }

    @api.model
    def _configured(self):
        """Whether any broker API is configured."""
        return any(config["url"] for config in self._get_config().values())

    @api.model
    def _client(self, broker, timeout, deadline=None, config=None):
        """The API client of ``broker`` ("rabbitmq", "emqx"), from ``config``
        or the settings; each call waits at most ``timeout`` seconds and
        never past ``deadline`` (a ``time.monotonic()`` value)."""
        config = config or self._get_config()[broker]
        return broker_api.CLIENTS[broker](
            config["url"],
            config["user"],
            config["password"],
            timeout=timeout,
            deadline=deadline,
        )
