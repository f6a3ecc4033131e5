import {rpc} from "@web/core/network/rpc";
import {registry} from "@web/core/registry";
import {user} from "@web/core/user";

// Tours of the MQTT console against a real broker (iot_base/tests/test_iot_app.py
// starts RabbitMQ and publishes/subscribes with paho-mqtt around them).

const tours = registry.category("web_tour.tours");

// The page's own config (GET /iot/app: no password)
function config() {
    return odoo.mqtt_config;
}

// The config the "mqtt" service fetched (POST /iot/app/config): the password
function liveConfig() {
    return odoo.__WOWL_DEBUG__.root.env.services.mqtt.odooConfig;
}

const connected = {
    content: "The console connects to the broker by itself",
    trigger: ".o_mqtt_status[data-status=connected]",
    timeout: 30000,
};

function check(condition, message) {
    if (!condition) {
        throw new Error(message);
    }
}

function subscribe(filter) {
    return [
        {content: `Type ${filter}`, trigger: "#o_mqtt_filter", run: `edit ${filter}`},
        {content: "Subscribe", trigger: ".o_mqtt_subscribe", run: "click"},
    ];
}

function waitFor(ms) {
    return {
        content: `Let ${ms} ms pass`,
        trigger: ".o_mqtt_subscriber",
        run: () => new Promise((resolve) => setTimeout(resolve, ms)),
    };
}

tours.add("iot_app_console", {
    url: "/iot/app",
    steps: () => {
        const {namespace: ns, credentials} = config();
        const me = credentials.username;
        const telemetry = `${ns}/devices/+/telemetry/#`;
        const own = `${ns}/users/${me}/#`;
        return [
            connected,
            {
                content:
                    "The password is fetched, never shown: not in the DOM, not in the URL",
                trigger: "#o_mqtt_password",
                run: function () {
                    const password = liveConfig().credentials.password;
                    check(password, "the page fetched no password");
                    check(
                        config().credentials.password === null,
                        "the page's GET carries a password"
                    );
                    check(
                        this.anchor.type === "password",
                        "the password input is not masked"
                    );
                    check(this.anchor.value === "", "the password is pre-filled");
                    check(
                        !document.documentElement.outerHTML.includes(password),
                        "the password is in the DOM"
                    );
                    check(
                        !window.location.href.includes(password),
                        "the password is in the URL"
                    );
                },
            },
            // a filter outside the user's rules: refused before the broker
            ...subscribe("#"),
            {
                content: "Refused with a message",
                trigger: ".o_mqtt_subscribe_error:contains(do not allow subscribing)",
            },
            ...subscribe(`${ns}/devices/+/config`), // no rule for this one either
            {
                content: "Refused too",
                trigger: ".o_mqtt_subscribe_error:contains(config)",
            },
            {
                content: "Nothing was subscribed and the connection is still up",
                trigger: ".o_mqtt_status[data-status=connected][data-attempts='1']",
                run: () =>
                    check(
                        !document.querySelector(".o_mqtt_subscription"),
                        "subscribed"
                    ),
            },
            // an allowed filter
            ...subscribe(telemetry),
            {
                content: "The broker granted it",
                trigger: `.o_mqtt_subscription[data-filter='${telemetry}'][data-status=active]`,
            },
            {
                content:
                    "A message published with paho-mqtt shows up, as formatted JSON",
                trigger: `.o_mqtt_message[data-topic='${ns}/devices/device_console01/telemetry/temp'] .o_mqtt_payload_json:contains(21.5)`,
                timeout: 20000,
            },
            {
                content: "Subscribe to my own topics from the suggestions",
                trigger: `.o_mqtt_suggestion[data-filter='${own}']`,
                run: "click",
            },
            {
                content: "Granted",
                trigger: `.o_mqtt_subscription[data-filter='${own}'][data-status=active]`,
            },
            // publish from the page
            {
                content: "Topic",
                trigger: "#o_mqtt_publish_topic",
                run: `edit ${ns}/users/${me}/chat`,
            },
            {
                content: "Payload",
                trigger: "#o_mqtt_publish_payload",
                run: "edit hello from the page",
            },
            {content: "Publish", trigger: ".o_mqtt_publish_button", run: "click"},
            {content: "Sent", trigger: ".o_mqtt_publish_info:contains(Published to)"},
            {
                content: "It comes back through my subscription",
                trigger: `.o_mqtt_message[data-topic='${ns}/users/${me}/chat'] .o_mqtt_payload_text:contains(hello from the page)`,
            },
            // a topic the user may not publish to
            {
                content: "Someone else's telemetry",
                trigger: "#o_mqtt_publish_topic",
                run: `edit ${ns}/devices/device_console01/telemetry/temp`,
            },
            {content: "Publish", trigger: ".o_mqtt_publish_button", run: "click"},
            {
                content: "Refused with a message",
                trigger: ".o_mqtt_publish_error:contains(do not allow publishing)",
            },
            {
                content: "The message filter narrows the list",
                trigger: ".o_mqtt_search input",
                run: "edit hello from",
            },
            {
                content: "Only the page's message is left",
                trigger: ".o_mqtt_message:contains(hello from the page)",
                run: () =>
                    check(
                        [...document.querySelectorAll(".o_mqtt_message")].every((el) =>
                            el.textContent.includes("hello from the page")
                        ),
                        "the filter did not filter"
                    ),
            },
            // a second tab of the same user
            {
                content: "Open the console a second time (a second tab)",
                trigger: ".o_mqtt_subscriber",
                run: () => {
                    const frame = document.createElement("iframe");
                    frame.className = "o_iot_app_second_tab";
                    frame.src = "/iot/app";
                    frame.style.cssText = "width: 1000px; height: 700px; border: 0";
                    document.body.append(frame);
                },
            },
            {
                content: "The second tab connects",
                trigger:
                    ".o_iot_app_second_tab:iframe .o_mqtt_status[data-status=connected]",
                timeout: 30000,
            },
            waitFor(3000),
            {
                content:
                    "Both tabs are still connected, neither reconnected: their client ids differ",
                trigger:
                    ".o_iot_app_second_tab:iframe .o_mqtt_status[data-status=connected][data-attempts='1']",
                run: () => {
                    const frameDoc = document.querySelector(
                        ".o_iot_app_second_tab"
                    ).contentDocument;
                    const status = document.querySelector(".o_mqtt_status");
                    check(
                        status.dataset.status === "connected",
                        "the first tab was disconnected"
                    );
                    check(
                        Number(status.dataset.attempts) <= 1,
                        "the first tab had to reconnect"
                    );
                    const ids = [document, frameDoc].map(
                        (doc) => doc.querySelector(".o_mqtt_client_id").textContent
                    );
                    check(ids[0] !== ids[1], `both tabs use the client id ${ids[0]}`);
                },
            },
        ];
    },
});

tours.add("iot_app_refused_secret", {
    url: "/iot/app",
    steps: () => [
        connected,
        {
            content: "A manager revokes every session secret of this user",
            trigger: ".o_mqtt_subscriber",
            run: async () => {
                const model = "iot.credentials.secret";
                const ids = await rpc(`/web/dataset/call_kw/${model}/search`, {
                    model,
                    method: "search",
                    args: [[["credential_id.user_id", "=", user.userId]]],
                    kwargs: {},
                });
                check(ids.length, "no secret to revoke");
                await rpc(`/web/dataset/call_kw/${model}/unlink`, {
                    model,
                    method: "unlink",
                    args: [ids],
                    kwargs: {},
                });
            },
        },
        {content: "Disconnect", trigger: ".o_mqtt_disconnect", run: "click"},
        {content: "Disconnected", trigger: ".o_mqtt_status[data-status=disconnected]"},
        {content: "Connect again", trigger: ".o_mqtt_connect", run: "click"},
        {
            content:
                "The broker refused the revoked secret: a fresh one was fetched and used",
            trigger: ".o_mqtt_status[data-status=connected][data-renewals='1']",
            timeout: 30000,
        },
        {
            content: "Type a wrong password",
            trigger: "#o_mqtt_password",
            run: "edit not-the-password",
        },
        {content: "Connect with it", trigger: ".o_mqtt_connect", run: "click"},
        {
            content: "A clear error",
            trigger: ".o_mqtt_status[data-status=error]",
            timeout: 30000,
        },
        {
            content: "... saying why",
            trigger: ".o_mqtt_connection_error:contains(refused these credentials)",
        },
        waitFor(3000),
        {
            content: "... and no reconnection loop",
            trigger: ".o_mqtt_status[data-status=error][data-attempts='1']",
        },
    ],
});

tours.add("iot_app_secret_renewal", {
    url: "/iot/app",
    steps: () => {
        const ns = config().namespace;
        const telemetry = `${ns}/devices/+/telemetry/#`;
        return [
            connected,
            ...subscribe(telemetry),
            {
                content: "Granted",
                trigger: `.o_mqtt_subscription[data-filter='${telemetry}'][data-status=active]`,
            },
            {
                content:
                    "Before the short-lived secret expires, a new one is fetched and used",
                trigger: ".o_mqtt_status[data-status=connected][data-renewals='1']",
                timeout: 30000,
            },
            {
                content: "Subscriptions were re-established on the new connection",
                trigger: `.o_mqtt_subscription[data-filter='${telemetry}'][data-status=active]`,
            },
            {content: "Clear the list", trigger: ".o_mqtt_clear", run: "click"},
            {
                content: "Messages keep coming",
                trigger: `.o_mqtt_message[data-topic='${ns}/devices/device_console01/telemetry/temp']`,
                timeout: 20000,
            },
        ];
    },
});

tours.add("iot_app_broker_refusal", {
    url: "/iot/app",
    steps: () => {
        const ns = config().namespace;
        const lab = `${ns}/lab/#`;
        const telemetry = `${ns}/devices/+/telemetry/#`;
        return [
            connected,
            {
                content:
                    "Meanwhile a manager denies a topic this page's rules still allow",
                trigger: ".o_mqtt_subscriber",
                run: async () => {
                    const model = "iot.acl.rule";
                    await rpc(`/web/dataset/call_kw/${model}/create`, {
                        model,
                        method: "create",
                        args: [
                            {
                                name: "No lab for users",
                                sequence: 1,
                                permission: "deny",
                                action: "subscribe",
                                // a manager's rules are written in their namespace
                                topic: "${namespace}/lab/#",
                                credential_kind: "user",
                            },
                        ],
                        kwargs: {},
                    });
                },
            },
            ...subscribe(lab),
            {
                content:
                    "The broker refused it (RabbitMQ closes the connection): reported",
                trigger: `.o_mqtt_subscription[data-filter='${lab}'][data-status=refused]:contains(closed the connection)`,
                timeout: 20000,
            },
            {
                content: "Reconnected",
                trigger: ".o_mqtt_status[data-status=connected]",
                timeout: 20000,
            },
            ...subscribe(telemetry),
            {
                content: "The connection is usable",
                trigger: `.o_mqtt_subscription[data-filter='${telemetry}'][data-status=active]`,
            },
            waitFor(3000),
            {
                content: "Still connected, the refused filter was not sent again",
                trigger: `.o_mqtt_status[data-status=connected]`,
                run: () =>
                    check(
                        document.querySelector(
                            `.o_mqtt_subscription[data-filter='${lab}']`
                        ).dataset.status === "refused",
                        "the refused filter came back"
                    ),
            },
        ];
    },
});

// The console against Mosquitto (tests/mosquitto/test_iot_app_mosquitto.py). There the
// login is per secret (`<username>~<secret id>`), so the user's own topics
// come from the config's suggested publish topic, not from the login as in
// "iot_app_console".
tours.add("iot_app_mosquitto", {
    url: "/iot/app",
    steps: () => {
        const {namespace: ns, default_publish_topic: suggested} = config();
        const own = suggested.replace(/[^/]+$/, "#"); // <ns>/users/<username>/#
        const chat = suggested.replace(/[^/]+$/, "chat");
        const telemetry = `${ns}/devices/+/telemetry/#`;
        return [
            connected,
            {
                content: "The page logs in with the login of its own secret",
                trigger: ".o_mqtt_subscriber",
                run: () =>
                    check(
                        /~\d+$/.test(liveConfig().credentials.username),
                        `not a per-secret login: ${liveConfig().credentials.username}`
                    ),
            },
            ...subscribe(telemetry),
            {
                content: "Subscribed",
                trigger: `.o_mqtt_subscription[data-filter='${telemetry}'][data-status=active]`,
            },
            {
                content:
                    "A message published with paho-mqtt by a synced device shows up",
                trigger: `.o_mqtt_message[data-topic='${ns}/devices/device_mosq01/telemetry/temp'] .o_mqtt_payload_json:contains(21.5)`,
                timeout: 20000,
            },
            {
                content: "Subscribe to my own topics from the suggestions",
                trigger: `.o_mqtt_suggestion[data-filter='${own}']`,
                run: "click",
            },
            {
                content: "Subscribed",
                trigger: `.o_mqtt_subscription[data-filter='${own}'][data-status=active]`,
            },
            {content: "Topic", trigger: "#o_mqtt_publish_topic", run: `edit ${chat}`},
            {
                content: "Payload",
                trigger: "#o_mqtt_publish_payload",
                run: "edit hello mosquitto",
            },
            {content: "Publish", trigger: ".o_mqtt_publish_button", run: "click"},
            {
                content: "It comes back through my subscription",
                trigger: `.o_mqtt_message[data-topic='${chat}'] .o_mqtt_payload_text:contains(hello mosquitto)`,
            },
        ];
    },
});
