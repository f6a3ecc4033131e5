import {registry} from "@web/core/registry";
import {rpc} from "@web/core/network/rpc";

// iot_base/tests/test_listener_tour.py: a device goes online while the device
// list is open; its badge changes through Odoo's bus, without a reload.

function check(condition, message) {
    if (!condition) {
        throw new Error(message);
    }
}

registry.category("web_tour.tours").add("iot_base_presence_tour", {
    steps: () => [
        {
            content: "The device list shows the device, never seen",
            trigger:
                ".o_data_row:contains('Tour Sensor') .o_iot_presence_badge[data-presence=unknown]",
            async run() {
                window.iotNoReload = true;
                // tells the test to make the device publish "online" now
                await rpc("/web/dataset/call_kw/iot.mqtt.device/get_fleet_dashboard", {
                    model: "iot.mqtt.device",
                    method: "get_fleet_dashboard",
                    args: [],
                    kwargs: {},
                });
            },
        },
        {
            content: "Its badge turns Online by itself",
            trigger:
                ".o_data_row:contains('Tour Sensor') .o_iot_presence_badge[data-presence=online]",
            timeout: 20000,
        },
        {
            content: "The page was not reloaded",
            trigger: ".o_list_view",
            run() {
                check(window.iotNoReload, "the page was reloaded");
            },
        },
        {
            content: "Open the Fleet dashboard",
            trigger:
                ".o_menu_sections [data-menu-xmlid='iot_base.iot_fleet_dashboard_menu']",
            run: "click",
        },
        {
            content: "It counts the online device",
            trigger: ".o_iot_fleet_online .o_iot_fleet_number:contains(1)",
        },
        {
            content: "The count links to the online devices",
            trigger: ".o_iot_fleet_online",
            run: "click",
        },
        {
            content: "The list of online devices shows it",
            trigger:
                ".o_data_row:contains('Tour Sensor') .o_iot_presence_badge[data-presence=online]",
        },
    ],
});
