# License LGPL-3.0 or later (https://www.gnu.org/licenses/lgpl).
{
    "name": "IoT Base",
    "summary": "Odoo as the identity and access authority for MQTT brokers, "
    "with a live MQTT console",
    "version": "18.0.1.0.0",
    "category": "Internet of Things (IoT)",
    "website": "https://github.com/iot-base/iot_base",
    "author": "iot_base developers",
    "license": "LGPL-3",
    "depends": ["base", "web", "base_setup"],
    "external_dependencies": {"python": ["paho-mqtt", "passlib"]},
    "data": [
        "security/iot_base_groups.xml",
        "security/ir.model.access.csv",
        "security/iot_base_rules.xml",
        "data/ir_config_parameter_data.xml",
        "wizard/iot_credentials_secret_show_views.xml",
        "views/iot_credentials_views.xml",
        "views/res_config_settings_views.xml",
        "views/iot_menus.xml",
    ],
    "installable": True,
    "application": True,
}
