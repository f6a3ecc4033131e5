import { reactive } from "@odoo/owl";
import { browser } from "@web/core/browser/browser";
import { _t } from "@web/core/l10n/translation";
import { rpc, RPCError } from "@web/core/network/rpc";
import { registry } from "@web/core/registry";
import { sprintf } from "@web/core/utils/strings";
import { ALLOW, authorize, isValidTopicFilter, isValidTopicName, topicMatches } from "../utils/topic_acl.esm";

/**
 * The one MQTT connection of a page (MQTT.js over WebSocket).
 *
 * API (see the functions returned by `start` for details):
 *   connect(options) / connectWithOdooConfig(overrides) / disconnect()
 *   subscribe(filter, callback, {qos}) / unsubscribe(filter, callback)
 *   publish(topic, payload, {qos, retain})
 *   checkSubscribe(filter, qos) / checkPublish(topic, qos, retain)
 *   state: reactive, read-only for callers
 *
 * Reconnection is ours, not MQTT.js's (its fixed 1 s period is how two tabs
 * end up kicking each other forever): exponential back-off with jitter,
 * capped, reset once a connection has stayed up; never after disconnect().
 * Subscriptions are re-sent, one at a time, after every reconnection; a
 * filter the broker refuses is dropped from that set and reported.
 */

export const STATUS = Object.freeze({
    DISCONNECTED: "disconnected",
    CONNECTING: "connecting",
    CONNECTED: "connected",
    RECONNECTING: "reconnecting",
    ERROR: "error",
});

export const RECONNECT = {
    initialDelay: 1000,
    maxDelay: 60000,
    // A connection that stays up this long resets the back-off. Resetting on
    // CONNACK alone would let a broker that accepts and then drops us (a
    // refused subscription, a session take-over) drive a one-second loop.
    stableAfter: 10000,
    backOnlineDelay: 1000,
};
// Renew the session secret this long before it expires (at most half its
// life), but never more often than every MIN_REFRESH_DELAY: a misconfigured
// lifetime of a second must not become a reconnection loop.
export const REFRESH_MARGIN = 5 * 60 * 1000;
export const MIN_REFRESH_DELAY = 5000;
// A connection closed this soon after a SUBSCRIBE without SUBACK: the broker
// refused that filter by dropping us (what some brokers do instead of 0x80).
export const SUBSCRIBE_REFUSAL_WINDOW = 10000;
// CONNACK return codes meaning "who you are is not accepted" (3.1.1 and 5).
const AUTH_REFUSED_CODES = new Set([4, 5, 134, 135]);
// Answers of the refresh route that retrying cannot change.
const FINAL_RPC_ERRORS = new Set([
    "odoo.exceptions.AccessError",
    "odoo.exceptions.AccessDenied",
    "odoo.http.SessionExpiredException",
]);

/**
 * Where MQTT.js comes from (static/lib/mqtt, global `mqtt`); tests replace it.
 * `onSocketOpen` tells a broker that answered from one that could not be
 * reached: in the browser, MQTT.js reports both as a bare "close", and a
 * broker that hangs up after the WebSocket opened (RabbitMQ's Web MQTT on bad
 * credentials) has refused the CONNECT.
 */
export const mqttLib = {
    connect(url, options, { onSocketOpen } = {}) {
        if (!window.mqtt) {
            throw new MqttError(_t("The MQTT library (static/lib/mqtt) is not loaded."));
        }
        return window.mqtt.connect(url, {
            ...options,
            createWebsocket(wsUrl, protocols) {
                const socket = new WebSocket(wsUrl, protocols);
                socket.addEventListener("open", () => onSocketOpen?.());
                return socket;
            },
        });
    },
};

export class MqttError extends Error {
    name = "MqttError";
}
/** `window.odoo.mqtt_config` is missing or incomplete. */
export class MqttConfigError extends MqttError {
    name = "MqttConfigError";
}
/** A topic or filter that is invalid or not allowed; never sent to the broker. */
export class MqttRefusedError extends MqttError {
    name = "MqttRefusedError";
}

/**
 * Delay before reconnection attempt number `attempt` (0-based): doubles from
 * RECONNECT.initialDelay up to RECONNECT.maxDelay, then a random point in its
 * upper half, so that many pages never retry in step.
 */
export function backoffDelay(attempt, random = Math.random) {
    const base = Math.min(RECONNECT.initialDelay * 2 ** attempt, RECONNECT.maxDelay);
    return Math.round(base / 2 + (random() * base) / 2);
}

function isWebSocketUrl(url) {
    try {
        return ["ws:", "wss:"].includes(new URL(url).protocol);
    } catch {
        return false;
    }
}

/**
 * Validate a console config (`window.odoo.mqtt_config` or the answer of the
 * refresh route) and return a normalized copy.
 *
 * @throws {MqttConfigError} naming what is missing
 */
export function validateConfig(config) {
    if (!config || typeof config !== "object") {
        throw new MqttConfigError(
            _t("There is no MQTT configuration on this page: open the console from /iot/app.")
        );
    }
    const missing = [];
    if (!isWebSocketUrl(config.broker_url)) {
        missing.push(_t("broker_url (a ws:// or wss:// URL)"));
    }
    const credentials = config.credentials;
    if (!credentials || typeof credentials !== "object") {
        missing.push("credentials");
    } else {
        if (typeof credentials.username !== "string" || !credentials.username) {
            missing.push("credentials.username");
        }
        if (typeof credentials.password !== "string" || !credentials.password) {
            missing.push("credentials.password");
        }
        if (typeof credentials.is_superuser !== "boolean") {
            missing.push("credentials.is_superuser");
        }
    }
    if (config.acl !== undefined && config.acl !== null && !Array.isArray(config.acl)) {
        missing.push(_t("acl (a list of rules)"));
    }
    if (
        config.expires_in !== undefined &&
        config.expires_in !== null &&
        !(Number.isFinite(config.expires_in) && config.expires_in >= 0)
    ) {
        missing.push(_t("expires_in (seconds)"));
    }
    if (missing.length) {
        throw new MqttConfigError(
            _t("The MQTT configuration is incomplete: %s.", missing.join(", "))
        );
    }
    return {
        broker_url: config.broker_url,
        client_id: typeof config.client_id === "string" ? config.client_id : "",
        credentials: {
            username: credentials.username,
            password: credentials.password,
            is_superuser: credentials.is_superuser,
        },
        expires_at: config.expires_at || null,
        expires_in: config.expires_in ?? null,
        namespace: config.namespace || "",
        acl: config.acl || null,
        default_subscriptions: config.default_subscriptions || [],
        default_publish_topic: config.default_publish_topic || "",
        refresh_route: config.refresh_route || "/iot/app/config",
        // "jwt": the password is a signed token the broker verifies itself
        auth: config.auth === "jwt" ? "jwt" : "secret",
        broker_kind: typeof config.broker_kind === "string" ? config.broker_kind : "",
    };
}

function sprintfWords(template, value) {
    return sprintf(String(template), value);
}

// What the page's password is, for its messages.
function passwordWords(authKind) {
    return authKind === "jwt"
        ? {
              refusedRenewing: _t("The broker refused the token (%s): fetching a new one."),
              refusedFresh: _t(
                  "The broker refused a freshly issued token (%s). Check that the broker verifies tokens with this Odoo's keys (/iot/jwks.json), that its clock is right and that the Console Login setting names this broker, then connect again."
              ),
              renewFailed: _t("Could not renew the token: %s"),
          }
        : {
              refusedRenewing: _t("The broker refused the session secret (%s): renewing it."),
              refusedFresh: _t(
                  "The broker refused a freshly issued secret (%s). Check that the broker authenticates against this Odoo, then connect again."
              ),
              renewFailed: _t("Could not renew the session secret: %s"),
          };
}

/** Read and validate `window.odoo.mqtt_config`. */
export function readOdooConfig() {
    return validateConfig(window.odoo?.mqtt_config);
}

/**
 * `{username}~{8 random hex}`: unique per page, so per tab, and a client id
 * the credential owns (the brokers refuse any other; see iot_credentials.py).
 */
export function makeClientId(username) {
    const bytes = new Uint8Array(4);
    crypto.getRandomValues(bytes);
    const suffix = [...bytes].map((b) => b.toString(16).padStart(2, "0")).join("");
    return `${username}~${suffix}`;
}

function describeError(error) {
    if (!error) {
        return "";
    }
    if (error.data?.message) {
        return error.data.message; // RPCError
    }
    return error.message || String(error);
}

export const mqttService = {
    dependencies: [],

    start() {
        const state = reactive({
            status: STATUS.DISCONNECTED,
            lastError: "",
            /** ms timestamp of the next automatic reconnection, or null */
            nextRetryAt: null,
            /** connection attempts since the last connect() or stable connection */
            attempts: 0,
            brokerUrl: "",
            username: "",
            clientId: "",
            isSuperuser: false,
            /** true when the connection uses the page's Odoo session secret */
            usesOdooSession: false,
            /** ms timestamp at which the current secret expires, or null */
            expiresAt: null,
            /** "secret" (session secret) or "jwt" (signed token): the password */
            authKind: "secret",
            secretRenewals: 0,
            /** topic rules known for this identity (null: the broker decides alone) */
            acl: null,
            /** filter -> {filter, qos, status: "pending"|"active"|"refused", error} */
            subscriptions: {},
        });

        let client = null;
        let generation = 0; // events of replaced clients are ignored
        let wanted = false; // false after disconnect(): never reconnect on our own
        let failures = 0; // back-off exponent
        let firstAttempt = false; // the next attempt is the first since connect()
        let params = null;
        let odooConfig = null; // latest validated Odoo config (refreshed)
        // the password was issued after the last successful connection: if the
        // broker refuses it, renewing it again would not help
        let secretIsFresh = false;
        let refreshFailures = 0;
        let firstOutcome = null; // resolves connect()'s promise
        const timers = { retry: null, stable: null, refresh: null, online: null };
        /** filter -> {qos, callbacks: Set} : what is (re)subscribed */
        const handlers = new Map();
        let subscribeQueue = Promise.resolve();
        let pendingSubscribe = null; // {filter, sentAt, gen, resolve}

        function clearTimer(name) {
            if (timers[name]) {
                browser.clearTimeout(timers[name]);
                timers[name] = null;
            }
        }

        function settleFirstOutcome(connected) {
            if (firstOutcome) {
                const resolve = firstOutcome;
                firstOutcome = null;
                resolve(connected);
            }
        }

        function setSubscription(filter, values) {
            state.subscriptions[filter] = {
                ...(state.subscriptions[filter] || { filter, qos: 0, error: "" }),
                ...values,
            };
        }

        // ------------------------------------------------------------------
        // Connection
        // ------------------------------------------------------------------

        /** The SUBSCRIBE in flight will get no SUBACK: free the queue. */
        function abandonPendingSubscribe() {
            pendingSubscribe?.resolve(false);
            pendingSubscribe = null;
        }

        /** Forget the current client without reacting to its events. */
        function dropClient() {
            generation++;
            abandonPendingSubscribe();
            clearTimer("stable");
            if (client) {
                const old = client;
                client = null;
                try {
                    old.end(!old.connected);
                } catch {
                    // a half-open client may throw while closing: it is gone anyway
                }
            }
            for (const filter of handlers.keys()) {
                setSubscription(filter, { status: "pending", error: "" });
            }
        }

        function openClient() {
            clearTimer("retry");
            state.nextRetryAt = null;
            dropClient();
            const gen = generation;
            state.status = firstAttempt ? STATUS.CONNECTING : STATUS.RECONNECTING;
            firstAttempt = false;
            state.attempts++;
            // this attempt: what MQTT.js reported, whether the broker answered
            const current = { error: null, socketOpened: false, connected: false };
            let newClient;
            try {
                newClient = mqttLib.connect(
                    params.url,
                    {
                        clientId: params.clientId,
                        username: params.username,
                        password: params.password,
                        protocolVersion: params.protocolVersion,
                        keepalive: params.keepalive,
                        clean: true,
                        // reconnection and re-subscription are done here
                        reconnectPeriod: 0,
                        resubscribe: false,
                        connectTimeout: params.connectTimeout,
                    },
                    { onSocketOpen: () => (current.socketOpened = true) }
                );
            } catch (error) {
                fail(_t("Cannot connect to %(url)s: %(error)s", {
                    url: params.url,
                    error: describeError(error),
                }));
                return;
            }
            client = newClient;
            newClient.on("connect", () => {
                if (gen === generation) {
                    current.connected = true;
                    onConnected();
                }
            });
            newClient.on("error", (error) => {
                if (gen === generation) {
                    current.error = error;
                }
            });
            newClient.on("close", () => gen === generation && onClosed(current));
            newClient.on("message", (topic, payload, packet) => {
                if (gen === generation) {
                    dispatch(topic, payload, packet);
                }
            });
        }

        function onConnected() {
            state.status = STATUS.CONNECTED;
            state.lastError = "";
            secretIsFresh = false;
            clearTimer("stable");
            timers.stable = browser.setTimeout(() => {
                timers.stable = null;
                failures = 0;
                state.attempts = 0;
            }, RECONNECT.stableAfter);
            for (const filter of handlers.keys()) {
                queueSubscribe(filter);
            }
            settleFirstOutcome(true);
        }

        function onClosed({ error, socketOpened, connected }) {
            const gen = generation;
            client = null;
            generation++; // late callbacks of this client are stale now
            clearTimer("stable");
            if (
                pendingSubscribe &&
                pendingSubscribe.gen === gen &&
                Date.now() - pendingSubscribe.sentAt < SUBSCRIBE_REFUSAL_WINDOW
            ) {
                refuseFilter(
                    pendingSubscribe.filter,
                    _t("The broker closed the connection when asked for this subscription.")
                );
            }
            abandonPendingSubscribe();
            for (const filter of handlers.keys()) {
                setSubscription(filter, { status: "pending", error: "" });
            }
            settleFirstOutcome(false);
            if (!wanted) {
                state.status = STATUS.DISCONNECTED;
                return;
            }
            if (!connected) {
                if (error && AUTH_REFUSED_CODES.has(error.code)) {
                    onCredentialsRefused(describeError(error));
                    return;
                }
                if (socketOpened) {
                    // answered, then hung up without a CONNACK
                    onCredentialsRefused(_t("it closed the connection instead of accepting it"));
                    return;
                }
                state.lastError = _t("Cannot reach the broker at %s.", params.url);
            } else {
                state.lastError = error
                    ? _t("Connection lost: %s", describeError(error))
                    : _t("Connection lost.");
            }
            scheduleRetry();
        }

        function scheduleRetry(delay = backoffDelay(failures++)) {
            clearTimer("retry");
            state.status = STATUS.RECONNECTING;
            if (browser.navigator.onLine === false) {
                // the "online" event reconnects; retrying now would only fail
                state.nextRetryAt = null;
                return;
            }
            state.nextRetryAt = Date.now() + delay;
            timers.retry = browser.setTimeout(() => {
                timers.retry = null;
                if (wanted) {
                    openClient();
                }
            }, delay);
        }

        /** Stop for good (until the next connect()) with a message. */
        function fail(message) {
            wanted = false;
            clearTimer("retry");
            clearTimer("refresh");
            dropClient();
            state.status = STATUS.ERROR;
            state.lastError = message;
            state.nextRetryAt = null;
            settleFirstOutcome(false);
        }

        async function onCredentialsRefused(reason) {
            if (params.refresh && !secretIsFresh) {
                // an expired or revoked session secret: fetch a new one
                state.status = STATUS.RECONNECTING;
                state.lastError = sprintfWords(passwordWords(state.authKind).refusedRenewing, reason);
                if ((await refreshCredentials()) && wanted) {
                    openClient();
                }
                return;
            }
            fail(
                params.refresh
                    ? sprintfWords(passwordWords(state.authKind).refusedFresh, reason)
                    : _t("The broker refused these credentials (%s).", reason)
            );
        }

        // ------------------------------------------------------------------
        // Session secret renewal
        // ------------------------------------------------------------------

        function applyOdooConfig(config) {
            odooConfig = config;
            const receivedAt = Date.now();
            params.username = config.credentials.username;
            params.password = config.credentials.password;
            params.clientId = config.client_id || params.clientId;
            params.isSuperuser = config.credentials.is_superuser;
            params.acl = config.acl;
            params.expiresAt =
                config.expires_in === null ? null : receivedAt + config.expires_in * 1000;
            params.receivedAt = receivedAt;
            state.authKind = config.auth === "jwt" ? "jwt" : "secret";
            state.username = params.username;
            state.clientId = params.clientId;
            state.isSuperuser = params.isSuperuser;
            state.acl = params.acl;
            state.expiresAt = params.expiresAt;
            scheduleRefresh();
        }

        function scheduleRefresh() {
            clearTimer("refresh");
            if (!params?.refresh || !params.expiresAt) {
                return;
            }
            const lifetime = params.expiresAt - params.receivedAt;
            const renewAt = params.expiresAt - Math.min(REFRESH_MARGIN, lifetime / 2);
            timers.refresh = browser.setTimeout(
                renewBeforeExpiry,
                Math.max(MIN_REFRESH_DELAY, renewAt - Date.now())
            );
        }

        async function renewBeforeExpiry() {
            timers.refresh = null;
            if (!wanted) {
                return;
            }
            if ((await refreshCredentials()) && wanted) {
                // hand over to a connection with the new secret before the
                // broker ends this one at the old secret's expiry (or connect
                // now if a refusal was waiting for this secret)
                openClient();
            }
        }

        /**
         * Fetch a new config (new session secret) and use it from now on.
         * @returns {Promise<boolean>} whether it worked
         */
        async function refreshCredentials() {
            const refresh = params.refresh;
            let config;
            try {
                config = validateConfig(await refresh(params.clientId));
            } catch (error) {
                if (params?.refresh !== refresh) {
                    return false; // connect() was called meanwhile
                }
                if (
                    error instanceof MqttConfigError ||
                    (error instanceof RPCError && FINAL_RPC_ERRORS.has(error.exceptionName))
                ) {
                    fail(_t("You can no longer use MQTT: %s", describeError(error)));
                    return false;
                }
                // Odoo unreachable or failing: keep what we have, try again later
                const delay = backoffDelay(refreshFailures++);
                state.lastError = sprintfWords(
                    passwordWords(state.authKind).renewFailed,
                    describeError(error)
                );
                clearTimer("refresh");
                timers.refresh = browser.setTimeout(renewBeforeExpiry, delay);
                if (!client) {
                    clearTimer("retry");
                    state.status = STATUS.RECONNECTING;
                    state.nextRetryAt = Date.now() + delay;
                }
                return false;
            }
            if (params?.refresh !== refresh) {
                return false;
            }
            refreshFailures = 0;
            secretIsFresh = true;
            applyOdooConfig(config);
            state.secretRenewals++;
            return true;
        }

        // ------------------------------------------------------------------
        // Subscriptions and messages
        // ------------------------------------------------------------------

        function refuseFilter(filter, message) {
            handlers.delete(filter);
            setSubscription(filter, { status: "refused", error: message });
        }

        /** SUBSCRIBEs go one at a time: a broker that drops the connection
         * instead of answering 0x80 then tells us which filter it refused. */
        function queueSubscribe(filter) {
            const gen = generation;
            const run = () => sendSubscribe(filter, gen);
            const result = subscribeQueue.then(run, run);
            subscribeQueue = result;
            return result;
        }

        function sendSubscribe(filter, gen) {
            const handler = handlers.get(filter);
            if (!handler || gen !== generation || !client || state.status !== STATUS.CONNECTED) {
                return Promise.resolve(false);
            }
            return new Promise((resolve) => {
                pendingSubscribe = { filter, sentAt: Date.now(), gen, resolve };
                client.subscribe(filter, { qos: handler.qos }, (error, granted, packet) => {
                    const suback = packet?.granted || error?.packet?.granted;
                    if (gen !== generation || !suback) {
                        // connection gone before the SUBACK: see onClosed()
                        resolve(false);
                        return;
                    }
                    pendingSubscribe = null;
                    const code = suback[0];
                    if (error || code >= 128) {
                        refuseFilter(
                            filter,
                            _t("The broker refused this subscription (code %s).", code)
                        );
                        resolve(false);
                        return;
                    }
                    if (handlers.has(filter)) {
                        setSubscription(filter, { status: "active", qos: code, error: "" });
                    }
                    resolve(true);
                });
            });
        }

        function dispatch(topic, payload, packet) {
            const message = {
                topic,
                payload,
                qos: packet?.qos ?? 0,
                retain: Boolean(packet?.retain),
                dup: Boolean(packet?.dup),
                receivedAt: Date.now(),
            };
            const callbacks = new Set();
            for (const [filter, handler] of handlers) {
                if (topicMatches(filter, topic)) {
                    handler.callbacks.forEach((callback) => callbacks.add(callback));
                }
            }
            for (const callback of callbacks) {
                try {
                    callback(message);
                } catch (error) {
                    // one broken listener must not starve the others
                    console.error(error);
                }
            }
        }

        function checkSubscribe(filter, qos = 0) {
            if (!isValidTopicFilter(filter)) {
                throw new MqttRefusedError(
                    _t(
                        "“%s” is not a valid topic filter: “+” must fill a whole level and “#” must be the whole last level.",
                        filter
                    )
                );
            }
            if (![0, 1, 2].includes(qos)) {
                throw new MqttRefusedError(_t("QoS must be 0, 1 or 2."));
            }
            if (!state.isSuperuser && state.acl && authorize(state.acl, "subscribe", filter, qos) !== ALLOW) {
                throw new MqttRefusedError(
                    _t(
                        "Your topic rules do not allow subscribing to “%(filter)s” with QoS %(qos)s: a filter is allowed only when every topic it can match is.",
                        { filter, qos }
                    )
                );
            }
        }

        function checkPublish(topic, qos = 0, retain = false) {
            if (!isValidTopicName(topic)) {
                throw new MqttRefusedError(
                    _t("“%s” is not a valid topic to publish to (not empty, no “+” or “#”).", topic)
                );
            }
            if (![0, 1, 2].includes(qos)) {
                throw new MqttRefusedError(_t("QoS must be 0, 1 or 2."));
            }
            if (
                !state.isSuperuser &&
                state.acl &&
                authorize(state.acl, "publish", topic, qos, retain) !== ALLOW
            ) {
                throw new MqttRefusedError(
                    _t("Your topic rules do not allow publishing to “%(topic)s” (QoS %(qos)s%(retain)s).", {
                        topic,
                        qos,
                        retain: retain ? _t(", retained") : "",
                    })
                );
            }
        }

        // ------------------------------------------------------------------
        // Offline / online
        // ------------------------------------------------------------------

        browser.addEventListener("offline", () => {
            if (!wanted) {
                return;
            }
            clearTimer("retry");
            clearTimer("online");
            dropClient();
            state.status = STATUS.RECONNECTING;
            state.nextRetryAt = null;
            state.lastError = _t("The browser is offline.");
        });
        browser.addEventListener("online", () => {
            if (wanted && !client) {
                clearTimer("online");
                const delay = backoffDelay(0) * (RECONNECT.backOnlineDelay / RECONNECT.initialDelay);
                state.nextRetryAt = Date.now() + delay;
                timers.online = browser.setTimeout(() => {
                    timers.online = null;
                    if (wanted && !client) {
                        openClient();
                    }
                }, delay);
            }
        });

        // ------------------------------------------------------------------
        // API
        // ------------------------------------------------------------------

        /**
         * Connect (after closing any current connection) and keep connected
         * until disconnect().
         *
         * @param {Object} options
         * @param {string} options.url ws:// or wss:// URL of the broker
         * @param {string} options.username
         * @param {string} options.password
         * @param {string} [options.clientId] default `{username}~{random}`
         * @param {boolean} [options.isSuperuser]
         * @param {Object[]|null} [options.acl] topic rules checked before the broker
         * @param {Function} [options.refresh] async (clientId) => new config
         * @param {number} [options.expiresIn] seconds the password stays valid
         * @param {string} [options.authKind] "jwt" when the password is a
         *   signed token (renewed, and reconnected with, before its exp)
         * @param {number} [options.protocolVersion] 4 (3.1.1, default) or 5
         * @returns {Promise<boolean>} whether the first attempt connected
         *   (attempts go on in the background when it did not)
         * @throws {MqttConfigError} when the URL or the username is missing
         */
        function connect(options = {}) {
            if (!isWebSocketUrl(options.url)) {
                throw new MqttConfigError(_t("The broker URL must be a ws:// or wss:// URL."));
            }
            if (typeof options.username !== "string" || !options.username) {
                throw new MqttConfigError(_t("A username is required."));
            }
            clearTimer("retry");
            clearTimer("refresh");
            clearTimer("online");
            settleFirstOutcome(false);
            const receivedAt = Date.now();
            params = {
                url: options.url,
                username: options.username,
                password: options.password || "",
                clientId: options.clientId || makeClientId(options.username),
                isSuperuser: Boolean(options.isSuperuser),
                acl: options.acl || null,
                refresh: options.refresh || null,
                receivedAt,
                expiresAt: Number.isFinite(options.expiresIn)
                    ? receivedAt + options.expiresIn * 1000
                    : null,
                protocolVersion: options.protocolVersion || 4,
                keepalive: options.keepalive ?? 30,
                connectTimeout: options.connectTimeout ?? 15000,
            };
            wanted = true;
            firstAttempt = true;
            failures = 0;
            refreshFailures = 0;
            secretIsFresh = false;
            Object.assign(state, {
                lastError: "",
                attempts: 0,
                brokerUrl: params.url,
                username: params.username,
                clientId: params.clientId,
                isSuperuser: params.isSuperuser,
                usesOdooSession: Boolean(params.refresh),
                authKind: options.authKind === "jwt" ? "jwt" : "secret",
                acl: params.acl,
                expiresAt: params.expiresAt,
            });
            for (const filter of Object.keys(state.subscriptions)) {
                if (!handlers.has(filter)) {
                    delete state.subscriptions[filter]; // refused under the old identity
                }
            }
            const outcome = new Promise((resolve) => (firstOutcome = resolve));
            scheduleRefresh();
            openClient();
            return outcome;
        }

        /**
         * Connect with the page's Odoo config (`window.odoo.mqtt_config`, or
         * the latest one fetched since): the session secret is renewed before
         * it expires and when the broker refuses it.
         *
         * @param {Object} [overrides] e.g. {url} from the connection panel
         * @throws {MqttConfigError} when the config is missing or incomplete
         */
        function connectWithOdooConfig(overrides = {}) {
            const config = odooConfig || readOdooConfig();
            odooConfig = config;
            const refresh = (clientId) =>
                rpc(odooConfig.refresh_route, { client_id: clientId }, { silent: true });
            return connect({
                url: config.broker_url,
                username: config.credentials.username,
                password: config.credentials.password,
                clientId: config.client_id || undefined,
                isSuperuser: config.credentials.is_superuser,
                acl: config.acl,
                expiresIn: config.expires_in ?? undefined,
                authKind: config.auth,
                refresh,
                ...overrides,
            });
        }

        /** Close the connection on purpose: no automatic reconnection. */
        function disconnect() {
            wanted = false;
            clearTimer("retry");
            clearTimer("refresh");
            clearTimer("online");
            dropClient();
            settleFirstOutcome(false);
            Object.assign(state, {
                status: STATUS.DISCONNECTED,
                nextRetryAt: null,
                lastError: "",
                attempts: 0,
            });
        }

        /**
         * Receive the messages of `filter` in `callback({topic, payload
         * (Uint8Array), qos, retain, dup, receivedAt})`. Kept across
         * reconnections.
         *
         * @returns {Promise<boolean>} true once the broker granted it (false
         *   when it refused it, or when it will be sent on the next connection)
         * @throws {MqttRefusedError} for an invalid or not allowed filter
         */
        function subscribe(filter, callback, { qos = 0 } = {}) {
            checkSubscribe(filter, qos);
            let handler = handlers.get(filter);
            const resend = !handler || qos > handler.qos;
            if (!handler) {
                handler = { qos, callbacks: new Set() };
                handlers.set(filter, handler);
            }
            handler.qos = Math.max(handler.qos, qos);
            if (callback) {
                handler.callbacks.add(callback);
            }
            if (resend || state.subscriptions[filter]?.status !== "active") {
                setSubscription(filter, { qos: handler.qos, status: "pending", error: "" });
                if (client && state.status === STATUS.CONNECTED) {
                    return queueSubscribe(filter);
                }
                return Promise.resolve(false);
            }
            return Promise.resolve(true);
        }

        /**
         * Stop calling `callback` for `filter` (every callback when omitted);
         * the broker subscription ends with the last callback. Also forgets a
         * refused filter.
         */
        function unsubscribe(filter, callback) {
            const handler = handlers.get(filter);
            if (handler && callback) {
                handler.callbacks.delete(callback);
                if (handler.callbacks.size) {
                    return;
                }
            }
            delete state.subscriptions[filter];
            if (!handler) {
                return;
            }
            handlers.delete(filter);
            if (client && state.status === STATUS.CONNECTED) {
                client.unsubscribe(filter);
            }
        }

        /**
         * Publish `payload` (string, Uint8Array, or anything JSON) to `topic`.
         *
         * @returns {Promise<void>} resolved once sent (QoS 0) or acknowledged
         * @throws {MqttRefusedError} for an invalid or not allowed topic
         * @throws {MqttError} when not connected
         */
        function publish(topic, payload, { qos = 0, retain = false } = {}) {
            checkPublish(topic, qos, retain);
            if (!client || state.status !== STATUS.CONNECTED) {
                throw new MqttError(_t("Not connected to the broker."));
            }
            const body =
                typeof payload === "string" || payload instanceof Uint8Array
                    ? payload
                    : JSON.stringify(payload);
            return new Promise((resolve, reject) => {
                client.publish(topic, body, { qos, retain }, (error) =>
                    error
                        ? reject(new MqttError(_t("Publishing failed: %s", describeError(error))))
                        : resolve()
                );
            });
        }

        return {
            state,
            connect,
            connectWithOdooConfig,
            disconnect,
            subscribe,
            unsubscribe,
            publish,
            checkSubscribe,
            checkPublish,
            /** the validated Odoo config (without reading it twice), or null */
            get odooConfig() {
                if (!odooConfig && window.odoo?.mqtt_config) {
                    odooConfig = readOdooConfig();
                }
                return odooConfig;
            },
        };
    },
};

registry.category("services").add("mqtt", mqttService);
