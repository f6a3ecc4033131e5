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

// iot_base/tests/test_settings_page.py: Generate a New Token, as a system
// administrator does it: the page never shows the token, only its end; the
// confirmation says what breaks; the new token is shown once, with a copy
// button; the page then shows the new end.
registry.category("web_tour.tours").add("iot_base_settings_token_tour", {
    steps: () => [
        {
            content: "Open the IoT settings",
            trigger: ".settings_tab .tab[data-key=iot_base]",
            run: "click",
        },
        {
            content: "The page shows only the end of the current token",
            trigger:
                "#iot_auth_token_setting div[name=iot_auth_token_hint]:contains(…WXYZ)",
            run() {
                if (document.body.innerHTML.includes("old-broker-token")) {
                    throw new Error("the broker token is on the settings page");
                }
            },
        },
        {
            content: "Generate a new token",
            trigger:
                "#iot_auth_token_setting button[name=action_iot_generate_auth_token]",
            run: "click",
        },
        {
            content: "The confirmation says what breaks and what make run does",
            trigger:
                ".modal:contains(old token refuses logins):contains(run make run again) .modal-footer .btn-primary",
            run: "click",
        },
        {
            content: "The new token is shown once, with a copy button",
            trigger: ".modal div[name=secret] .o_clipboard_button",
            run() {
                const token = document
                    .querySelector(".modal div[name=secret] span")
                    .textContent.trim();
                if (token.length < 40) {
                    throw new Error(`no new token shown: ${token}`);
                }
                window.iotNewTokenEnd = token.slice(-4);
            },
        },
        {
            content: "Done",
            trigger: ".modal .modal-footer button:contains(Done)",
            run: "click",
        },
        {
            content: "The page now shows the new token's end, not the token",
            trigger:
                "#iot_auth_token_setting div[name=iot_auth_token_hint]:not(:contains(WXYZ))",
            run() {
                const hint = document.querySelector(
                    "#iot_auth_token_setting div[name=iot_auth_token_hint]"
                ).textContent;
                if (!hint.includes(`…${window.iotNewTokenEnd}`)) {
                    throw new Error(`the page shows ${hint}`);
                }
            },
        },
        {
            content: "Each number has its unit",
            trigger: "#iot_listener_setting .o_iot_unit:contains(seconds)",
        },
    ],
});
