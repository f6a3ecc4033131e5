import {registry} from "@web/core/registry";

// iot_base/tests/test_fleet_dashboard.py (TestFleetPage): the Fleet page
// draws its charts with Odoo's Chart.js, lists the devices with a relative
// "last seen", searches and filters them, and never shows "false".

function check(condition, message) {
    if (!condition) {
        throw new Error(message);
    }
}

function chartOf(selector) {
    const canvas = document.querySelector(selector);
    check(canvas, `no ${selector}`);
    // eslint-disable-next-line no-undef
    const chart = Chart.getChart(canvas);
    check(chart, `no chart drawn on ${selector}`);
    check(canvas.width > 0 && canvas.height > 0, `${selector} has no size`);
    return chart;
}

registry.category("web_tour.tours").add("iot_base_fleet_tour", {
    steps: () => [
        {
            content:
                "The messages chart: a time axis, 60 minutes, the last one partial",
            trigger: ".o_iot_fleet_messages_chart",
            run() {
                const chart = chartOf(".o_iot_fleet_messages_chart");
                check(chart.options.scales.x.type === "time", "no time axis");
                const [dataset] = chart.data.datasets;
                check(dataset.data.length === 60, `${dataset.data.length} minutes`);
                check(
                    dataset.data.at(-1) === 7,
                    `current minute ${dataset.data.at(-1)}`
                );
                check(
                    dataset.backgroundColor.at(-1) !== dataset.backgroundColor.at(-2),
                    "the partial minute is not marked"
                );
                check(chart.scales.y.max >= 11, "no scale");
            },
        },
        {
            content: "The presence chart counts the devices by presence",
            trigger: ".o_iot_fleet_presence_chart",
            run() {
                const chart = chartOf(".o_iot_fleet_presence_chart");
                const counts = chart.data.datasets[0].data;
                check(counts.join(",") === "2,1,1,0", `presence ${counts}`);
            },
        },
        {
            content: "The refused logins chart: 24 hours",
            trigger: ".o_iot_fleet_logins_chart",
            run() {
                const chart = chartOf(".o_iot_fleet_logins_chart");
                check(chart.options.scales.x.type === "time", "no time axis");
                check(chart.data.datasets[0].data.length === 24, "not 24 hours");
            },
        },
        {
            content: "The device list says when each device was last seen",
            trigger:
                ".o_iot_fleet_device:contains('Alpha Sensor') .o_iot_fleet_last_seen:contains('2 minutes ago')",
        },
        {
            content: "It shows the address of the device's last accepted login",
            trigger:
                ".o_iot_fleet_device:contains('Alpha Sensor') .o_iot_fleet_peer:contains('10.1.2.3')",
        },
        {
            content: "A refused login without a username says unknown, not false",
            trigger: ".o_iot_fleet_logins td:contains('unknown')",
            run() {
                const cells = [
                    ...document.querySelectorAll(".o_iot_fleet_dashboard td"),
                ];
                check(
                    !cells.some((cell) => cell.innerText.trim() === "false"),
                    "a cell says false"
                );
            },
        },
        {
            content: "Filter on offline devices",
            trigger: ".o_iot_fleet_filter_presence",
            run: "select offline",
        },
        {
            content: "Only the offline device is listed",
            trigger:
                ".o_iot_fleet_device_list:has(.o_iot_fleet_device:contains('Gamma Sensor')):not(:has(.o_iot_fleet_device:contains('Alpha Sensor')))",
        },
        {
            content: "Any presence again",
            trigger: ".o_iot_fleet_filter_presence",
            run() {
                const select = document.querySelector(".o_iot_fleet_filter_presence");
                select.value = "";
                select.dispatchEvent(new Event("change"));
            },
        },
        {
            content: "Search by name",
            trigger: ".o_iot_fleet_search",
            run: "edit Beta",
        },
        {
            content: "Only Beta is listed",
            trigger:
                ".o_iot_fleet_device_list:has(.o_iot_fleet_device:contains('Beta Sensor')):not(:has(.o_iot_fleet_device:contains('Alpha Sensor')))",
        },
        {
            content: "Open its form",
            trigger: ".o_iot_fleet_device_link:contains('Beta Sensor')",
            run: "click",
        },
        {
            content: "The device form opens",
            trigger:
                ".o_form_view .o_field_widget[name=name]:has(input:value('Beta Sensor')), .o_form_view .o_field_widget[name=name]:contains('Beta Sensor')",
        },
    ],
});
