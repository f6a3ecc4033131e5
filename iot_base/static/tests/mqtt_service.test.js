import {describe, expect, test} from "@odoo/hoot";
import {manuallyDispatchProgrammaticEvent} from "@odoo/hoot-dom";
import {advanceTime, microTick, tick} from "@odoo/hoot-mock";
import {
    getService,
    makeMockEnv,
    makeServerError,
    onRpc,
    patchWithCleanup,
} from "@web/../tests/web_test_helpers";
import {
    backoffDelay,
    makeClientId,
    MqttConfigError,
    mqttLib,
    MqttRefusedError,
    readOdooConfig,
    RECONNECT,
    REFRESH_MARGIN,
    STATUS,
    validateConfig,
} from "@iot_base/services/mqtt_service.esm";

describe.current.tags("headless");

/** Stands for an MQTT.js client: records what the service asks, lets the test answer. */
class FakeClient {
    constructor(url, options, hooks) {
        this.url = url;
        this.options = options;
        this.hooks = hooks;
        this.listeners = {};
        this.subscribeCalls = []; // [{filter, qos, callback}]
        this.unsubscribed = [];
        this.published = [];
        this.ended = false;
        this.connected = false;
    }
    on(event, callback) {
        (this.listeners[event] ||= []).push(callback);
        return this;
    }
    emit(event, ...args) {
        for (const callback of this.listeners[event] || []) {
            callback(...args);
        }
    }
    subscribe(filter, options, callback) {
        this.subscribeCalls.push({filter, qos: options.qos, callback});
    }
    unsubscribe(filter) {
        this.unsubscribed.push(filter);
    }
    publish(topic, payload, options, callback) {
        this.published.push({topic, payload, ...options});
        callback();
    }
    end() {
        this.ended = true;
    }
    // --- what the broker does ---
    accept() {
        this.hooks.onSocketOpen();
        this.connected = true;
        this.emit("connect", {returnCode: 0});
    }
    /** a CONNACK with a refusal code (EMQX, Mosquitto, RabbitMQ over TCP) */
    refuse(code = 5) {
        this.hooks.onSocketOpen();
        const error = new Error("Connection refused: Not authorized");
        error.code = code;
        this.emit("error", error);
        this.emit("close");
    }
    /** the WebSocket opens, then closes without a CONNACK (RabbitMQ's Web MQTT) */
    hangUp() {
        this.hooks.onSocketOpen();
        this.emit("close");
    }
    drop() {
        this.connected = false;
        this.emit("close");
        // MQTT.js then fails what was waiting for an answer, a bit later
        const waiting = this.subscribeCalls.filter((c) => !c.answered);
        Promise.resolve().then(() => {
            for (const call of waiting) {
                call.answered = true;
                call.callback(new Error("Connection closed"), []);
            }
        });
    }
    /** answers the oldest unanswered SUBSCRIBE */
    suback(code) {
        const call = this.subscribeCalls.find((c) => !c.answered);
        call.answered = true;
        const packet = {cmd: "suback", granted: [code]};
        if (code >= 128) {
            const error = new Error("Subscribe error");
            error.packet = packet;
            call.callback(error, [], packet);
        } else {
            call.callback(null, [{topic: call.filter, qos: code}], packet);
        }
    }
    message(topic, text, packet = {}) {
        this.emit("message", topic, new TextEncoder().encode(text), {
            qos: 0,
            retain: false,
            ...packet,
        });
    }
}

/** A message callback that keeps what it receives (in `.messages`). */
function collector() {
    const messages = [];
    const callback = (message) => messages.push(message);
    callback.messages = messages;
    return callback;
}

const RULES = [
    {
        permission: "deny",
        action: "all",
        topic: "acme/devices/+/config/#",
        qos: null,
        retain: null,
    },
    {
        permission: "allow",
        action: "subscribe",
        topic: "acme/devices/+/telemetry/#",
        qos: null,
        retain: null,
    },
    {
        permission: "allow",
        action: "all",
        topic: "acme/users/user_demo/#",
        qos: null,
        retain: null,
    },
];

function makeConfig(values = {}) {
    return {
        broker_url: "ws://broker.test:8083/mqtt",
        client_id: "user_demo~0a1b2c3d",
        credentials: {username: "user_demo", password: "s3cret-1", is_superuser: false},
        expires_at: "2030-01-01 00:00:00",
        expires_in: 3600,
        namespace: "acme",
        acl: RULES,
        default_subscriptions: ["acme/devices/+/telemetry/#"],
        default_publish_topic: "acme/users/user_demo/console",
        refresh_route: "/iot/app/config",
        client_id_separator: "~",
        ...values,
    };
}

/** The clients the service created, newest last. */
function useFakeBroker() {
    const clients = [];
    patchWithCleanup(mqttLib, {
        connect(url, options, hooks) {
            const client = new FakeClient(url, options, hooks);
            clients.push(client);
            return client;
        },
    });
    return clients;
}

async function setup({config = makeConfig(), random = 0.5} = {}) {
    patchWithCleanup(Math, {random: () => random});
    if (config) {
        patchWithCleanup(odoo, {mqtt_config: config});
    }
    const clients = useFakeBroker();
    await makeMockEnv();
    return {clients, mqtt: getService("mqtt")};
}

describe("config", () => {
    test("a missing config is a clear error", async () => {
        const {mqtt, clients} = await setup({config: null});
        expect(() => readOdooConfig()).toThrow(/no MQTT configuration on this page/);
        expect(() => mqtt.connectWithOdooConfig()).toThrow(MqttConfigError);
        expect(clients).toHaveLength(0);
        expect(mqtt.state.status).toBe(STATUS.DISCONNECTED);
    });

    test("an incomplete config names what is missing", async () => {
        await makeMockEnv(); // messages are translated
        expect(() => validateConfig({broker_url: "ws://b/mqtt"})).toThrow(
            /credentials\./
        );
        expect(() =>
            validateConfig(
                makeConfig({credentials: {username: "u", is_superuser: false}})
            )
        ).toThrow(/credentials\.password/);
        expect(() => validateConfig(makeConfig({broker_url: "http://b/mqtt"}))).toThrow(
            /broker_url/
        );
        expect(() => validateConfig(makeConfig({acl: "allow all"}))).toThrow(/acl/);
        expect(() => validateConfig(makeConfig({expires_in: -1}))).toThrow(
            /expires_in/
        );
        const config = validateConfig(makeConfig({default_subscriptions: undefined}));
        expect(config.default_subscriptions).toEqual([]);
        expect(config.credentials).toEqual({
            username: "user_demo",
            password: "s3cret-1",
            is_superuser: false,
        });
    });

    test("connectWithOdooConfig uses the page's identity and client id", async () => {
        const {mqtt, clients} = await setup();
        mqtt.connectWithOdooConfig();
        expect(clients).toHaveLength(1);
        const [client] = clients;
        expect(client.url).toBe("ws://broker.test:8083/mqtt");
        expect(client.options).toMatchObject({
            clientId: "user_demo~0a1b2c3d",
            username: "user_demo",
            password: "s3cret-1",
            clean: true,
            reconnectPeriod: 0, // reconnection is the service's
            resubscribe: false,
        });
        expect(mqtt.state.usesOdooSession).toBe(true);
    });

    test("client ids are per tab", () => {
        const a = makeClientId("user_demo", "~");
        const b = makeClientId("user_demo", "~");
        expect(a).toMatch(/^user_demo~[0-9a-f]{8}$/);
        expect(a).not.toBe(b);
        // The separator is the config's, not the page's own
        expect(makeClientId("user_demo", "#")).toMatch(/^user_demo#[0-9a-f]{8}$/);
    });

    test("a config without the client id separator is incomplete", async () => {
        await makeMockEnv(); // messages are translated
        expect(() =>
            validateConfig(makeConfig({client_id_separator: undefined}))
        ).toThrow(/client_id_separator/);
        expect(() => validateConfig(makeConfig({client_id_separator: "~~"}))).toThrow(
            /client_id_separator/
        );
        expect(validateConfig(makeConfig()).client_id_separator).toBe("~");
    });
});

describe("connection", () => {
    test("state transitions", async () => {
        const {mqtt, clients} = await setup();
        const outcome = mqtt.connectWithOdooConfig();
        expect(mqtt.state.status).toBe(STATUS.CONNECTING);
        clients[0].accept();
        expect(mqtt.state.status).toBe(STATUS.CONNECTED);
        await expect(outcome).resolves.toBe(true);

        clients[0].drop();
        expect(mqtt.state.status).toBe(STATUS.RECONNECTING);
        expect(mqtt.state.lastError).toMatch(/Connection lost/);
        expect(mqtt.state.nextRetryAt).toBeGreaterThan(Date.now());
        await advanceTime(backoffDelay(0) + 100);
        expect(clients).toHaveLength(2);
        expect(mqtt.state.status).toBe(STATUS.RECONNECTING);
        expect(mqtt.state.nextRetryAt).toBe(null);
        clients[1].accept();
        expect(mqtt.state.status).toBe(STATUS.CONNECTED);
        expect(mqtt.state.lastError).toBe("");

        clients[1].drop();
        await advanceTime(backoffDelay(1) + 100);
        clients[2].drop(); // the WebSocket never opened: the broker is down, not refusing
        expect(mqtt.state.status).toBe(STATUS.RECONNECTING);
        expect(mqtt.state.lastError).toMatch(
            /Cannot reach the broker at ws:\/\/broker.test/
        );
        await advanceTime(backoffDelay(2) + 100);
        clients[3].accept();

        mqtt.disconnect();
        expect(mqtt.state.status).toBe(STATUS.DISCONNECTED);
        expect(clients[3].ended).toBe(true);
    });

    test("back-off doubles, is jittered, capped, and reset by a stable connection", async () => {
        expect(backoffDelay(0, () => 0)).toBe(RECONNECT.initialDelay / 2);
        expect(backoffDelay(0, () => 1)).toBe(RECONNECT.initialDelay);
        expect(backoffDelay(3, () => 1)).toBe(RECONNECT.initialDelay * 8);
        expect(backoffDelay(30, () => 1)).toBe(RECONNECT.maxDelay);
        expect(backoffDelay(30, () => 0)).toBe(RECONNECT.maxDelay / 2);

        const {mqtt, clients} = await setup({random: 1});
        mqtt.connectWithOdooConfig();
        const delays = [];
        for (let i = 0; i < 8; i++) {
            clients.at(-1).drop(); // the broker is down
            delays.push(mqtt.state.nextRetryAt - Date.now());
            // (a margin: the next failure is our drop(), not a timer)
            await advanceTime(mqtt.state.nextRetryAt - Date.now() + 100);
        }
        expect(clients).toHaveLength(9);
        const expected = [1000, 2000, 4000, 8000, 16000, 32000, 60000, 60000];
        delays.forEach((delay, i) =>
            expect(Math.abs(delay - expected[i])).toBeLessThan(50)
        );

        // up again, but dropped before it was stable: no reset
        clients.at(-1).accept();
        clients.at(-1).drop();
        expect(mqtt.state.nextRetryAt - Date.now()).toBeGreaterThan(59000);
        await advanceTime(60100);
        clients.at(-1).accept();
        await advanceTime(RECONNECT.stableAfter + 100);
        expect(mqtt.state.attempts).toBe(0);
        clients.at(-1).drop();
        expect(mqtt.state.nextRetryAt - Date.now()).toBeLessThan(
            RECONNECT.initialDelay + 50
        );
    });

    test("no reconnection after a deliberate disconnect", async () => {
        const {mqtt, clients} = await setup();
        mqtt.connectWithOdooConfig();
        clients[0].accept();
        mqtt.disconnect();
        clients[0].drop(); // the socket closing afterwards
        await advanceTime(RECONNECT.maxDelay * 2);
        expect(clients).toHaveLength(1);
        expect(mqtt.state.status).toBe(STATUS.DISCONNECTED);
        expect(mqtt.state.nextRetryAt).toBe(null);
    });

    test("offline waits for online instead of retrying", async () => {
        const {mqtt, clients} = await setup();
        mqtt.connectWithOdooConfig();
        clients[0].accept();
        patchWithCleanup(navigator, {onLine: false});
        await manuallyDispatchProgrammaticEvent(window, "offline");
        expect(mqtt.state.status).toBe(STATUS.RECONNECTING);
        expect(clients[0].ended).toBe(true);
        await advanceTime(RECONNECT.maxDelay);
        expect(clients).toHaveLength(1);
        patchWithCleanup(navigator, {onLine: true});
        await manuallyDispatchProgrammaticEvent(window, "online");
        await advanceTime(RECONNECT.backOnlineDelay);
        expect(clients).toHaveLength(2);
        clients[1].accept();
        expect(mqtt.state.status).toBe(STATUS.CONNECTED);
    });
});

describe("subscriptions", () => {
    test("re-subscribed after a reconnection, one at a time", async () => {
        const {mqtt, clients} = await setup();
        mqtt.connectWithOdooConfig();
        clients[0].accept();
        const received = [];
        mqtt.subscribe("acme/devices/+/telemetry/#", (m) => received.push(m.topic));
        mqtt.subscribe("acme/users/user_demo/#", (m) => received.push(m.topic), {
            qos: 1,
        });
        await tick();
        expect(clients[0].subscribeCalls.map((c) => c.filter)).toEqual([
            "acme/devices/+/telemetry/#",
        ]);
        clients[0].suback(0);
        await tick();
        expect(clients[0].subscribeCalls).toHaveLength(2);
        clients[0].suback(1);
        await tick();
        expect(mqtt.state.subscriptions["acme/users/user_demo/#"]).toMatchObject({
            status: "active",
            qos: 1,
        });

        clients[0].drop();
        expect(mqtt.state.subscriptions["acme/users/user_demo/#"].status).toBe(
            "pending"
        );
        await advanceTime(RECONNECT.initialDelay + 100);
        clients[1].accept();
        await tick();
        clients[1].suback(0);
        await tick();
        expect(clients[1].subscribeCalls.map((c) => [c.filter, c.qos])).toEqual([
            ["acme/devices/+/telemetry/#", 0],
            ["acme/users/user_demo/#", 1],
        ]);
        clients[1].message("acme/devices/d1/telemetry/t", "21");
        clients[1].message("acme/users/user_demo/x", "hi");
        clients[1].message("acme/other", "never");
        expect(received).toEqual([
            "acme/devices/d1/telemetry/t",
            "acme/users/user_demo/x",
        ]);
    });

    test("a filter outside the rules never reaches the broker", async () => {
        const {mqtt, clients} = await setup();
        mqtt.connectWithOdooConfig();
        clients[0].accept();
        for (const filter of [
            "#",
            "acme/#",
            "acme/devices/#", // would include acme/devices/x/config
            "acme/devices/+/status", // no rule
            "acme/users/user_other/#",
        ]) {
            expect(() => mqtt.subscribe(filter, collector())).toThrow(MqttRefusedError);
        }
        expect(() => mqtt.subscribe("a/#/b", collector())).toThrow(
            /not a valid topic filter/
        );
        await tick();
        expect(clients[0].subscribeCalls).toHaveLength(0);
        expect(mqtt.state.status).toBe(STATUS.CONNECTED);
        expect(Object.keys(mqtt.state.subscriptions)).toEqual([]);
        expect(() => mqtt.publish("acme/devices/d1/telemetry/t", "x")).toThrow(
            /do not allow publishing/
        );
        await mqtt.publish("acme/users/user_demo/console", {a: 1}, {qos: 1});
        expect(clients[0].published).toEqual([
            {
                topic: "acme/users/user_demo/console",
                payload: '{"a":1}',
                qos: 1,
                retain: false,
            },
        ]);
    });

    test("SUBACK failure: dropped from the re-subscribe set, reported", async () => {
        const {mqtt, clients} = await setup();
        mqtt.connectWithOdooConfig();
        clients[0].accept();
        const granted = mqtt.subscribe("acme/devices/+/telemetry/#", collector());
        await tick();
        clients[0].suback(0x80);
        await expect(granted).resolves.toBe(false);
        expect(mqtt.state.subscriptions["acme/devices/+/telemetry/#"]).toMatchObject({
            status: "refused",
        });
        expect(mqtt.state.subscriptions["acme/devices/+/telemetry/#"].error).toMatch(
            /refused/
        );
        expect(mqtt.state.status).toBe(STATUS.CONNECTED);
        clients[0].drop();
        await advanceTime(RECONNECT.initialDelay + 100);
        clients[1].accept();
        await tick();
        expect(clients[1].subscribeCalls).toHaveLength(0);
        // dismissing it forgets it
        mqtt.unsubscribe("acme/devices/+/telemetry/#");
        expect(mqtt.state.subscriptions).toEqual({});
    });

    test("a broker that drops the connection on a refused SUBSCRIBE: no loop", async () => {
        const {mqtt, clients} = await setup();
        mqtt.connectWithOdooConfig();
        clients[0].accept();
        mqtt.subscribe("acme/users/user_demo/#", collector());
        await tick();
        clients[0].suback(0);
        await tick();
        mqtt.subscribe("acme/devices/+/telemetry/#", collector());
        await tick();
        clients[0].drop(); // instead of a SUBACK
        await microTick();
        expect(mqtt.state.subscriptions["acme/devices/+/telemetry/#"].status).toBe(
            "refused"
        );
        expect(mqtt.state.subscriptions["acme/devices/+/telemetry/#"].error).toMatch(
            /closed the connection/
        );
        await advanceTime(RECONNECT.initialDelay + 100);
        expect(clients).toHaveLength(2);
        clients[1].accept();
        await tick();
        clients[1].suback(0);
        await tick();
        expect(clients[1].subscribeCalls.map((c) => c.filter)).toEqual([
            "acme/users/user_demo/#",
        ]);
        await advanceTime(RECONNECT.maxDelay);
        expect(clients).toHaveLength(2);
        expect(mqtt.state.status).toBe(STATUS.CONNECTED);
    });
});

describe("session secret", () => {
    // GET /iot/app writes nothing: the page's config has no password, the
    // service fetches it (POST /iot/app/config) before its first attempt
    test("the page's password is fetched before the first attempt", async () => {
        onRpc("/iot/app/config", async (request) => {
            const {params} = await request.json();
            expect.step(`issue ${params.client_id}`);
            return makeConfig({
                credentials: {
                    username: "user_demo",
                    password: "s3cret-issued",
                    is_superuser: false,
                },
            });
        });
        const page = makeConfig({
            credentials: {username: "user_demo", password: null, is_superuser: false},
            expires_at: null,
            expires_in: null,
        });
        const {mqtt, clients} = await setup({config: page});
        expect(() => validateConfig(page)).toThrow(/credentials\.password/);
        expect(readOdooConfig().credentials.password).toBe(null);
        mqtt.connectWithOdooConfig();
        expect(clients).toHaveLength(0);
        expect(mqtt.state.status).toBe(STATUS.CONNECTING);
        await tick();
        expect.verifySteps(["issue user_demo~0a1b2c3d"]);
        expect(clients).toHaveLength(1);
        expect(clients[0].options.password).toBe("s3cret-issued");
        expect(clients[0].options.clientId).toBe("user_demo~0a1b2c3d");
        clients[0].accept();
        await tick();
        expect(mqtt.state.status).toBe(STATUS.CONNECTED);
        expect(mqtt.state.secretRenewals).toBe(0);
        expect(mqtt.state.expiresAt).not.toBe(null);
        // connecting again uses the fetched password, without a new POST
        mqtt.disconnect();
        mqtt.connectWithOdooConfig();
        expect(clients).toHaveLength(2);
        expect(clients[1].options.password).toBe("s3cret-issued");
        expect.verifySteps([]);
    });

    test("the page's password refused by Odoo: an error, no attempt", async () => {
        onRpc("/iot/app/config", () => {
            expect.step("issue");
            throw makeServerError({
                type: "AccessError",
                description: "Only the MQTT console's own page may ask for this.",
            });
        });
        const page = makeConfig({
            credentials: {username: "user_demo", password: null, is_superuser: false},
        });
        const {mqtt, clients} = await setup({config: page});
        const outcome = mqtt.connectWithOdooConfig();
        await tick();
        expect.verifySteps(["issue"]);
        expect(await outcome).toBe(false);
        expect(mqtt.state.status).toBe(STATUS.ERROR);
        expect(mqtt.state.lastError).toMatch(/own page may ask/);
        await advanceTime(RECONNECT.maxDelay * 5);
        expect(clients).toHaveLength(0);
        expect.verifySteps([]);
    });

    test("renewed before it expires, then handed over to a new connection", async () => {
        let calls = 0;
        onRpc("/iot/app/config", async (request) => {
            const {params} = await request.json();
            expect.step(`refresh ${params.client_id}`);
            calls++;
            return makeConfig({
                credentials: {
                    username: "user_demo",
                    password: `s3cret-${calls + 1}`,
                    is_superuser: false,
                },
            });
        });
        const {mqtt, clients} = await setup();
        mqtt.connectWithOdooConfig();
        clients[0].accept();
        await advanceTime(3600 * 1000 - REFRESH_MARGIN - 1000);
        expect.verifySteps([]);
        await advanceTime(2000);
        await tick();
        expect.verifySteps(["refresh user_demo~0a1b2c3d"]);
        expect(mqtt.state.secretRenewals).toBe(1);
        expect(clients).toHaveLength(2);
        expect(clients[0].ended).toBe(true);
        expect(clients[1].options.password).toBe("s3cret-2");
        expect(clients[1].options.clientId).toBe("user_demo~0a1b2c3d");
    });

    test("a refused secret is renewed once; refused again is an error, not a loop", async () => {
        onRpc("/iot/app/config", () => {
            expect.step("refresh");
            return makeConfig({
                credentials: {
                    username: "user_demo",
                    password: "s3cret-2",
                    is_superuser: false,
                },
            });
        });
        const {mqtt, clients} = await setup();
        mqtt.connectWithOdooConfig();
        clients[0].refuse(5);
        await tick();
        expect.verifySteps(["refresh"]);
        expect(clients).toHaveLength(2);
        expect(clients[1].options.password).toBe("s3cret-2");
        clients[1].refuse(4);
        await tick();
        expect(mqtt.state.status).toBe(STATUS.ERROR);
        expect(mqtt.state.lastError).toMatch(/refused a freshly issued secret/);
        await advanceTime(RECONNECT.maxDelay * 5);
        expect(clients).toHaveLength(2);
        expect.verifySteps([]);
    });

    test("a refresh refused by Odoo (access revoked) stops with the reason", async () => {
        onRpc("/iot/app/config", () => {
            throw makeServerError({
                type: "AccessError",
                description: "You are not allowed to use MQTT",
            });
        });
        const {mqtt, clients} = await setup();
        mqtt.connectWithOdooConfig();
        clients[0].refuse(5);
        await tick();
        expect(mqtt.state.status).toBe(STATUS.ERROR);
        expect(mqtt.state.lastError).toMatch(/not allowed to use MQTT/);
        await advanceTime(RECONNECT.maxDelay * 5);
        expect(clients).toHaveLength(1);
    });

    test("a broker hanging up before CONNACK counts as a refusal", async () => {
        onRpc("/iot/app/config", () => {
            expect.step("refresh");
            return makeConfig();
        });
        const {mqtt, clients} = await setup();
        mqtt.connectWithOdooConfig();
        clients[0].hangUp();
        await tick();
        expect.verifySteps(["refresh"]);
        clients[1].hangUp();
        await tick();
        expect(mqtt.state.status).toBe(STATUS.ERROR);
        expect(mqtt.state.lastError).toMatch(
            /closed the connection instead of accepting it/
        );
        await advanceTime(RECONNECT.maxDelay * 5);
        expect(clients).toHaveLength(2);
    });

    test("manual credentials are not renewed: refused is an error", async () => {
        const {mqtt, clients} = await setup();
        mqtt.connect({
            url: "ws://broker.test/mqtt",
            username: "device_01",
            password: "wrong",
        });
        expect(clients[0].options.clientId).toMatch(/^device_01~[0-9a-f]{8}$/);
        clients[0].refuse(4);
        await tick();
        expect(mqtt.state.status).toBe(STATUS.ERROR);
        expect(mqtt.state.lastError).toMatch(/refused these credentials/);
        await advanceTime(RECONNECT.maxDelay * 2);
        expect(clients).toHaveLength(1);
        expect(() => mqtt.connect({url: "http://x", username: "u"})).toThrow(
            MqttConfigError
        );
    });
});

describe("signed token", () => {
    const TOKEN_CONFIG = {auth: "jwt", broker_kind: "rabbitmq", expires_in: 600};

    test("the config says token mode", () => {
        expect(validateConfig(makeConfig(TOKEN_CONFIG)).auth).toBe("jwt");
        expect(validateConfig(makeConfig(TOKEN_CONFIG)).broker_kind).toBe("rabbitmq");
        expect(validateConfig(makeConfig({auth: "other"})).auth).toBe("secret");
        expect(validateConfig(makeConfig()).auth).toBe("secret");
    });

    test("reconnected with a fresh token before its exp, the client id kept", async () => {
        let calls = 0;
        onRpc("/iot/app/config", async (request) => {
            const {params} = await request.json();
            expect.step(`refresh ${params.client_id}`);
            calls++;
            return makeConfig({
                ...TOKEN_CONFIG,
                credentials: {
                    username: "user_demo",
                    password: `jwt-${calls + 1}`,
                    is_superuser: false,
                },
            });
        });
        const {mqtt, clients} = await setup({
            config: makeConfig({
                ...TOKEN_CONFIG,
                credentials: {
                    username: "user_demo",
                    password: "jwt-1",
                    is_superuser: false,
                },
            }),
        });
        mqtt.connectWithOdooConfig();
        clients[0].accept();
        expect(mqtt.state.authKind).toBe("jwt");
        const expiresAt = mqtt.state.expiresAt;
        expect(expiresAt - Date.now()).toBeGreaterThan(599 * 1000);
        expect(expiresAt - Date.now()).toBeLessThan(600 * 1000 + 1);
        // renewed at half its life (well before the broker ends it at exp)
        await advanceTime(300 * 1000 - 1000);
        expect.verifySteps([]);
        await advanceTime(2000);
        await tick();
        expect.verifySteps(["refresh user_demo~0a1b2c3d"]);
        expect(clients).toHaveLength(2);
        expect(clients[0].ended).toBe(true);
        expect(clients[1].options.password).toBe("jwt-2");
        expect(clients[1].options.clientId).toBe("user_demo~0a1b2c3d");
        expect(mqtt.state.expiresAt).toBeGreaterThan(expiresAt);
        expect(mqtt.state.authKind).toBe("jwt");
    });

    test("a refused token is fetched again once, then a clear message", async () => {
        onRpc("/iot/app/config", () => {
            expect.step("refresh");
            return makeConfig({
                ...TOKEN_CONFIG,
                credentials: {
                    username: "user_demo",
                    password: "jwt-2",
                    is_superuser: false,
                },
            });
        });
        const {mqtt, clients} = await setup({config: makeConfig(TOKEN_CONFIG)});
        mqtt.connectWithOdooConfig();
        // RabbitMQ's Web MQTT closes the socket of a refused token
        clients[0].hangUp();
        await tick();
        expect.verifySteps(["refresh"]);
        expect(mqtt.state.lastError).toMatch(/refused the token/);
        clients[1].hangUp();
        await tick();
        expect(mqtt.state.status).toBe(STATUS.ERROR);
        expect(mqtt.state.lastError).toMatch(/refused a freshly issued token/);
        expect(mqtt.state.lastError).toMatch(/jwks\.json/);
        await advanceTime(RECONNECT.maxDelay * 5);
        expect(clients).toHaveLength(2);
        expect.verifySteps([]);
    });
});
