import {registry} from "@web/core/registry";

// iot_base/tests/test_settings_tour.py: the IoT settings page, as a system
// administrator opens it (every block renders, the port is a plain number).

registry.category("web_tour.tours").add("iot_base_settings_tour", {
    steps: () => [
        {
            content: "The IoT app is in the settings' sidebar",
            trigger: ".settings_tab .tab[data-key=iot_base]",
            run: "click",
        },
        {
            content: "Its blocks render",
            trigger: ".app_settings_block[data-key=iot_base] #iot_listener_setting",
        },
        {
            content: "The MQTT port shows without a thousands separator",
            trigger: "div[name=iot_mqtt_port] input:value(18830)",
        },
        {
            content: "The broker stores' block is there, with its switches",
            trigger:
                ".app_settings_block h2:contains('Broker Stores') + * #iot_store_sync_setting",
        },
    ],
});
