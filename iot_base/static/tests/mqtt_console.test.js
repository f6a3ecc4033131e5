import {describe, expect, test} from "@odoo/hoot";
import {click, edit, queryOne} from "@odoo/hoot-dom";
import {animationFrame} from "@odoo/hoot-mock";
import {Component, useState, xml} from "@odoo/owl";
import {
    getService,
    mountWithCleanup,
    patchWithCleanup,
} from "@web/../tests/web_test_helpers";
import {mqttLib} from "@iot_base/services/mqtt_service.esm";
import {
    formatPayload,
    MAX_PAYLOAD_CHARS,
} from "@iot_base/components/message_list/message_log.esm";
import {MqttConsole} from "@iot_base/iot_app/mqtt_console.esm";

describe.current.tags("desktop");

const encode = (text) => new TextEncoder().encode(text);

const CONFIG = {
    broker_url: "ws://broker.test:8083/mqtt",
    client_id: "user_demo~0a1b2c3d",
    credentials: {
        username: "user_demo",
        password: "s3cret-pw-1234",
        is_superuser: false,
    },
    expires_in: 3600,
    namespace: "acme",
    acl: [
        {permission: "allow", action: "all", topic: "acme/#", qos: null, retain: null},
    ],
    default_subscriptions: ["acme/#"],
    default_publish_topic: "acme/console",
    client_id_separator: "~",
};

/** A broker that accepts every connection and subscription. */
function useAcceptingBroker() {
    const clients = [];
    patchWithCleanup(mqttLib, {
        connect(url, options, hooks) {
            const listeners = {};
            const client = {
                options,
                published: [],
                unsubscribed: [],
                ended: false,
                on: (event, callback) => (listeners[event] ||= []).push(callback),
                emit: (event, ...args) =>
                    (listeners[event] || []).forEach((cb) => cb(...args)),
                subscribe: (filter, opts, callback) =>
                    callback(null, [{topic: filter, qos: opts.qos}], {
                        granted: [opts.qos],
                    }),
                unsubscribe: (filter) => client.unsubscribed.push(filter),
                publish(topic, payload, opts, callback) {
                    client.published.push({topic, payload});
                    callback();
                },
                end() {
                    client.ended = true;
                },
            };
            clients.push(client);
            setTimeout(() => {
                hooks.onSocketOpen();
                client.emit("connect");
            });
            return client;
        },
    });
    return clients;
}

test("payloads: JSON formatted, text as is, binary in hex, size-capped", () => {
    expect(formatPayload(encode('{"a":1,"b":[true]}'))).toEqual({
        kind: "json",
        text: '{\n  "a": 1,\n  "b": [\n    true\n  ]\n}',
        size: 18,
        truncated: false,
    });
    expect(formatPayload(encode("on"))).toMatchObject({kind: "text", text: "on"});
    expect(formatPayload(encode("12 apples"))).toMatchObject({kind: "text"});
    expect(formatPayload(new Uint8Array([0xff, 0x00, 0x10]))).toMatchObject({
        kind: "binary",
        text: "ff 00 10",
    });
    const big = formatPayload(encode("x".repeat(MAX_PAYLOAD_CHARS + 10)));
    expect(big.text).toHaveLength(MAX_PAYLOAD_CHARS);
    expect(big.truncated).toBe(true);
    expect(big.size).toBe(MAX_PAYLOAD_CHARS + 10);
});

test("the console connects by itself, refuses, receives and publishes", async () => {
    patchWithCleanup(odoo, {mqtt_config: CONFIG});
    const clients = useAcceptingBroker();
    await mountWithCleanup(MqttConsole);
    expect(".o_mqtt_status").toHaveAttribute("data-status", "connecting");
    await animationFrame();
    await animationFrame();
    expect(".o_mqtt_status").toHaveAttribute("data-status", "connected");
    expect(".o_mqtt_status").toHaveText(/Connected/);
    expect(clients[0].options.username).toBe("user_demo");

    // the password: pre-filled in a masked input, nowhere else
    expect("#o_mqtt_password").toHaveAttribute("type", "password");
    expect(queryOne("#o_mqtt_password").value).toBe("s3cret-pw-1234");
    expect(document.body.outerHTML).not.toInclude("s3cret-pw-1234");

    // a filter outside the rules
    await click("#o_mqtt_filter");
    await edit("other/#");
    await click(".o_mqtt_subscribe");
    await animationFrame();
    expect(".o_mqtt_subscribe_error").toHaveText(/do not allow subscribing/);
    expect(".o_mqtt_subscription").toHaveCount(0);

    // a suggested one
    await click(".o_mqtt_suggestion[data-filter='acme/#']");
    await animationFrame();
    expect(".o_mqtt_subscription[data-filter='acme/#']").toHaveAttribute(
        "data-status",
        "active"
    );

    clients[0].emit("message", "acme/t", encode('{"t":21.5}'), {qos: 1, retain: true});
    clients[0].emit("message", "acme/s", encode("online"), {qos: 0});
    await animationFrame();
    expect(".o_mqtt_message").toHaveCount(2);
    expect(".o_mqtt_message:first .o_mqtt_message_topic").toHaveText("acme/s");
    expect(queryOne(".o_mqtt_message:last .o_mqtt_payload_json").textContent).toBe(
        '{\n  "t": 21.5\n}'
    );
    expect(".o_mqtt_message:last").toHaveText(/retained/);

    // the text filter, pause, clear
    await click(".o_mqtt_search input");
    await edit("online");
    await animationFrame();
    expect(".o_mqtt_message").toHaveCount(1);
    await click(".o_mqtt_pause");
    clients[0].emit("message", "acme/s", encode("online again"), {qos: 0});
    await animationFrame();
    expect(".o_mqtt_message").toHaveCount(1);
    expect(".o_mqtt_pause").toHaveText(/Resume \(1\)/);
    await click(".o_mqtt_pause");
    await animationFrame();
    expect(".o_mqtt_message").toHaveCount(2);
    await click(".o_mqtt_clear");
    await animationFrame();
    expect(".o_mqtt_message").toHaveCount(0);

    // publish
    await click("#o_mqtt_publish_topic");
    await edit("elsewhere/x");
    await click(".o_mqtt_publish_button");
    await animationFrame();
    expect(".o_mqtt_publish_error").toHaveText(/do not allow publishing/);
    await click("#o_mqtt_publish_topic");
    await edit("acme/console");
    await click(".o_mqtt_publish_button");
    await animationFrame();
    expect(".o_mqtt_publish_info").toHaveText("Published to acme/console");
    expect(clients[0].published.map((m) => m.topic)).toEqual(["acme/console"]);
});

test("the filter's example is a suggestion the rules allow, never made up", async () => {
    patchWithCleanup(odoo, {
        mqtt_config: {...CONFIG, default_subscriptions: ["acme/devices/+/status/#"]},
    });
    useAcceptingBroker();
    await mountWithCleanup(MqttConsole);
    await animationFrame();
    await animationFrame();
    expect("#o_mqtt_filter").toHaveAttribute(
        "placeholder",
        "e.g. acme/devices/+/status/#"
    );
    // an empty filter: the hint names the same allowed example
    await click(".o_mqtt_subscribe");
    await animationFrame();
    expect(".o_mqtt_subscribe_error").toHaveText(/e\.g\. acme\/devices\/\+\/status\/#/);
    expect(document.body.outerHTML).not.toInclude("sensors/+/temperature");
});

test("rules that allow no subscription: no example at all", async () => {
    patchWithCleanup(odoo, {mqtt_config: {...CONFIG, default_subscriptions: []}});
    useAcceptingBroker();
    await mountWithCleanup(MqttConsole);
    await animationFrame();
    expect(queryOne("#o_mqtt_filter").placeholder).toBe("");
    expect(".o_mqtt_suggestion").toHaveCount(0);
});

test("without a config: a clear error, no connection", async () => {
    const clients = useAcceptingBroker();
    await mountWithCleanup(MqttConsole);
    await animationFrame();
    expect(".o_mqtt_connection_error").toHaveText(/no MQTT configuration on this page/);
    expect(".o_mqtt_status").toHaveAttribute("data-status", "disconnected");
    expect(clients).toHaveLength(0);
});

test("the expiry of the page's password: a session secret or a signed token", async () => {
    patchWithCleanup(odoo, {
        mqtt_config: {...CONFIG, auth: "jwt", broker_kind: "rabbitmq", expires_in: 600},
    });
    useAcceptingBroker();
    await mountWithCleanup(MqttConsole);
    await animationFrame();
    await animationFrame();
    expect(".o_mqtt_expiry").toHaveAttribute("data-auth", "jwt");
    expect(".o_mqtt_expiry").toHaveText(
        /Signed token, renewed automatically \(valid until \d\d:\d\d\)/
    );
});

test("a session secret's expiry says so", async () => {
    patchWithCleanup(odoo, {mqtt_config: CONFIG});
    useAcceptingBroker();
    await mountWithCleanup(MqttConsole);
    await animationFrame();
    await animationFrame();
    expect(".o_mqtt_expiry").toHaveAttribute("data-auth", "secret");
    expect(".o_mqtt_expiry").toHaveText(/Session secret, renewed automatically/);
});

test("the console's subscriptions end when it is closed", async () => {
    patchWithCleanup(odoo, {mqtt_config: CONFIG});
    const clients = useAcceptingBroker();
    class Host extends Component {
        static template = xml`<MqttConsole t-if="state.shown"/>`;
        static components = {MqttConsole};
        static props = {};
        setup() {
            this.state = useState({shown: true});
        }
    }
    const host = await mountWithCleanup(Host);
    await animationFrame();
    await click(".o_mqtt_suggestion[data-filter='acme/#']");
    await animationFrame();
    expect(".o_mqtt_subscription[data-filter='acme/#']").toHaveAttribute(
        "data-status",
        "active"
    );
    host.state.shown = false;
    await animationFrame();
    expect(".o_mqtt_subscriber").toHaveCount(0);
    expect(clients[0].unsubscribed).toEqual(["acme/#"]);
    expect(getService("mqtt").state.subscriptions).toEqual({});
    // The connection itself is the page's: it stays up
    expect(getService("mqtt").state.status).toBe("connected");
});
