import {browser} from "@web/core/browser/browser";
import {_t} from "@web/core/l10n/translation";
import {topicMatches} from "../utils/topic_acl.esm";

/**
 * One MQTT.js client kept connected: the reconnect back-off, online/offline,
 * the subscriptions re-sent after every reconnection. Who the client is and
 * what it may do (config, password renewal, topic rules) is the "mqtt"
 * service's (mqtt_service.esm.js), which owns one MqttConnection.
 *
 * Reconnection is ours, not MQTT.js's (its fixed 1 s period is how two tabs
 * end up kicking each other forever): exponential back-off with jitter,
 * capped, reset once a connection has stayed up; never after stop().
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
// A connection closed this soon after a SUBSCRIBE without SUBACK: the broker
// refused that filter by dropping us (what some brokers do instead of 0x80).
export const SUBSCRIBE_REFUSAL_WINDOW = 10000;
// CONNACK return codes meaning "who you are is not accepted" (3.1.1 and 5).
const AUTH_REFUSED_CODES = new Set([4, 5, 134, 135]);

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
 * Where MQTT.js comes from (static/lib/mqtt, global `mqtt`); tests replace it.
 * `onSocketOpen` tells a broker that answered from one that could not be
 * reached: in the browser, MQTT.js reports both as a bare "close", and a
 * broker that hangs up after the WebSocket opened (RabbitMQ's Web MQTT on bad
 * credentials) has refused the CONNECT.
 */
export const mqttLib = {
    connect(url, options, {onSocketOpen} = {}) {
        if (!window.mqtt) {
            throw new MqttError(
                _t("The MQTT library (static/lib/mqtt) is not loaded.")
            );
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

/**
 * Delay before reconnection attempt number `attempt` (0-based): doubles from
 * RECONNECT.initialDelay up to RECONNECT.maxDelay, then a random point in its
 * upper half, so that many pages never retry in step.
 */
export function backoffDelay(attempt, random = Math.random) {
    const base = Math.min(RECONNECT.initialDelay * 2 ** attempt, RECONNECT.maxDelay);
    return Math.round(base / 2 + (random() * base) / 2);
}

export function isWebSocketUrl(url) {
    try {
        return ["ws:", "wss:"].includes(new URL(url).protocol);
    } catch {
        return false;
    }
}

export function describeError(error) {
    if (!error) {
        return "";
    }
    if (error.data?.message) {
        // An RPCError
        return error.data.message;
    }
    return error.message || String(error);
}

export class MqttConnection {
    /**
     * @param {Object} state the service's reactive state: this class writes
     *   its `status`, `lastError`, `nextRetryAt`, `attempts` and
     *   `subscriptions`
     * @param {Object} hooks
     * @param {Function} hooks.onConnected () => void, on every CONNACK
     * @param {Function} hooks.onRefused (reason) => void: the broker refused
     *   the credentials; nothing is retried until the hook calls reopen() or
     *   fail()
     * @param {Function} hooks.onFailed () => void, after fail()
     */
    constructor(state, {onConnected, onRefused, onFailed}) {
        this.state = state;
        this.hooks = {onConnected, onRefused, onFailed};
        /** {url, clientId, username, password, protocolVersion, keepalive, connectTimeout} */
        this.params = null;
        this.client = null;
        // Events of replaced clients are ignored
        this.generation = 0;
        // False after stop(): never reconnect on our own
        this.wanted = false;
        // The back-off exponent
        this.failures = 0;
        // The next attempt is the first since start()
        this.firstAttempt = false;
        // Resolves start()'s promise
        this.firstOutcome = null;
        this.timers = {retry: null, stable: null, online: null};
        /** Filter -> {qos, callbacks: Set}: what is (re)subscribed */
        this.handlers = new Map();
        this.subscribeQueue = Promise.resolve();
        /** The SUBSCRIBE waiting for its SUBACK: {filter, sentAt, gen, resolve} */
        this.pendingSubscribe = null;
        browser.addEventListener("offline", () => this._onOffline());
        browser.addEventListener("online", () => this._onOnline());
    }

    get isConnected() {
        return Boolean(this.client) && this.state.status === STATUS.CONNECTED;
    }

    // ----------------------------------------------------------------------
    // Lifecycle
    // ----------------------------------------------------------------------

    /**
     * Connect with `params` (after closing any current client) and keep
     * connected until stop() or fail().
     *
     * @param {Object} params
     * @param {Object} [options]
     * @param {boolean} [options.deferred] the first attempt waits for the
     *   caller's reopen() (a password still to fetch)
     * @returns {Promise<boolean>} whether the first attempt connected
     */
    start(params, {deferred = false} = {}) {
        this._clearTimer("retry");
        this._clearTimer("online");
        this._settleFirstOutcome(false);
        this.params = {...params};
        this.wanted = true;
        this.firstAttempt = true;
        this.failures = 0;
        Object.assign(this.state, {lastError: "", attempts: 0});
        for (const filter of Object.keys(this.state.subscriptions)) {
            if (!this.handlers.has(filter)) {
                // Refused under the old identity
                delete this.state.subscriptions[filter];
            }
        }
        const outcome = new Promise((resolve) => (this.firstOutcome = resolve));
        if (deferred) {
            this._dropClient();
            this.state.status = STATUS.CONNECTING;
        } else {
            this.reopen();
        }
        return outcome;
    }

    /** Replace the credentials of the next attempts (a renewed password). */
    setCredentials({username, password, clientId}) {
        Object.assign(this.params, {username, password, clientId});
    }

    /** Close the connection on purpose: no automatic reconnection. */
    stop() {
        this.wanted = false;
        this._clearTimer("retry");
        this._clearTimer("online");
        this._dropClient();
        this._settleFirstOutcome(false);
        Object.assign(this.state, {
            status: STATUS.DISCONNECTED,
            nextRetryAt: null,
            lastError: "",
            attempts: 0,
        });
    }

    /** Stop for good (until the next start()) with a message. */
    fail(message) {
        this.wanted = false;
        this._clearTimer("retry");
        this._dropClient();
        this.state.status = STATUS.ERROR;
        this.state.lastError = message;
        this.state.nextRetryAt = null;
        this._settleFirstOutcome(false);
        this.hooks.onFailed();
    }

    /**
     * No client now: the next attempt waits for the service (a password it
     * could not renew yet, retried in `delay` ms).
     */
    waitForCredentials(delay) {
        if (!this.client) {
            this._clearTimer("retry");
            this.state.status = STATUS.RECONNECTING;
            this.state.nextRetryAt = Date.now() + delay;
        }
    }

    /** Open a new client now, replacing the current one (if any). */
    reopen() {
        this._clearTimer("retry");
        this.state.nextRetryAt = null;
        this._dropClient();
        const gen = this.generation;
        this.state.status = this.firstAttempt ? STATUS.CONNECTING : STATUS.RECONNECTING;
        this.firstAttempt = false;
        this.state.attempts++;
        const params = this.params;
        // This attempt: what MQTT.js reported, whether the broker answered
        const current = {error: null, socketOpened: false, connected: false};
        let client = null;
        try {
            client = mqttLib.connect(
                params.url,
                {
                    clientId: params.clientId,
                    username: params.username,
                    password: params.password,
                    protocolVersion: params.protocolVersion,
                    keepalive: params.keepalive,
                    clean: true,
                    // Reconnection and re-subscription are done here
                    reconnectPeriod: 0,
                    resubscribe: false,
                    connectTimeout: params.connectTimeout,
                },
                {onSocketOpen: () => (current.socketOpened = true)}
            );
        } catch (error) {
            this.fail(
                _t("Cannot connect to %(url)s: %(error)s", {
                    url: params.url,
                    error: describeError(error),
                })
            );
            return;
        }
        this.client = client;
        client.on("connect", () => {
            if (gen === this.generation) {
                current.connected = true;
                this._onConnected();
            }
        });
        client.on("error", (error) => {
            if (gen === this.generation) {
                current.error = error;
            }
        });
        client.on("close", () => {
            if (gen === this.generation) {
                this._onClosed(current);
            }
        });
        client.on("message", (topic, payload, packet) => {
            if (gen === this.generation) {
                this._dispatch(topic, payload, packet);
            }
        });
    }

    // ----------------------------------------------------------------------
    // Subscriptions and messages
    // ----------------------------------------------------------------------

    /**
     * Receive the messages of `filter` in `callback` (kept across
     * reconnections); the filter was checked by the caller.
     *
     * @returns {Promise<boolean>} true once the broker granted it
     */
    subscribe(filter, callback, qos) {
        let handler = this.handlers.get(filter);
        const resend = !handler || qos > handler.qos;
        if (!handler) {
            handler = {qos, callbacks: new Set()};
            this.handlers.set(filter, handler);
        }
        handler.qos = Math.max(handler.qos, qos);
        if (callback) {
            handler.callbacks.add(callback);
        }
        if (resend || this.state.subscriptions[filter]?.status !== "active") {
            this._setSubscription(filter, {
                qos: handler.qos,
                status: "pending",
                error: "",
            });
            if (this.isConnected) {
                return this._queueSubscribe(filter);
            }
            return Promise.resolve(false);
        }
        return Promise.resolve(true);
    }

    /** See the service's unsubscribe(). */
    unsubscribe(filter, callback) {
        const handler = this.handlers.get(filter);
        if (handler && callback) {
            handler.callbacks.delete(callback);
            if (handler.callbacks.size) {
                return;
            }
        }
        delete this.state.subscriptions[filter];
        if (!handler) {
            return;
        }
        this.handlers.delete(filter);
        if (this.isConnected) {
            this.client.unsubscribe(filter);
        }
    }

    /**
     * @returns {Promise<void>} resolved once sent (QoS 0) or acknowledged
     * @throws {MqttError} when not connected
     */
    publish(topic, payload, {qos, retain}) {
        if (!this.isConnected) {
            throw new MqttError(_t("Not connected to the broker."));
        }
        return new Promise((resolve, reject) => {
            this.client.publish(topic, payload, {qos, retain}, (error) =>
                error
                    ? reject(
                          new MqttError(
                              _t("Publishing failed: %s", describeError(error))
                          )
                      )
                    : resolve()
            );
        });
    }

    // ----------------------------------------------------------------------
    // Private
    // ----------------------------------------------------------------------

    _clearTimer(name) {
        if (this.timers[name]) {
            browser.clearTimeout(this.timers[name]);
            this.timers[name] = null;
        }
    }

    _settleFirstOutcome(connected) {
        if (this.firstOutcome) {
            const resolve = this.firstOutcome;
            this.firstOutcome = null;
            resolve(connected);
        }
    }

    _setSubscription(filter, values) {
        this.state.subscriptions[filter] = {
            ...(this.state.subscriptions[filter] || {filter, qos: 0, error: ""}),
            ...values,
        };
    }

    _markSubscriptionsPending() {
        for (const filter of this.handlers.keys()) {
            this._setSubscription(filter, {status: "pending", error: ""});
        }
    }

    /** The SUBSCRIBE in flight will get no SUBACK: free the queue. */
    _abandonPendingSubscribe() {
        this.pendingSubscribe?.resolve(false);
        this.pendingSubscribe = null;
    }

    /** Forget the current client without reacting to its events. */
    _dropClient() {
        this.generation++;
        this._abandonPendingSubscribe();
        this._clearTimer("stable");
        if (this.client) {
            const old = this.client;
            this.client = null;
            try {
                old.end(!old.connected);
            } catch {
                // A half-open client may throw while closing: it is gone anyway
            }
        }
        this._markSubscriptionsPending();
    }

    _onConnected() {
        this.state.status = STATUS.CONNECTED;
        this.state.lastError = "";
        this.hooks.onConnected();
        this._clearTimer("stable");
        this.timers.stable = browser.setTimeout(() => {
            this.timers.stable = null;
            this.failures = 0;
            this.state.attempts = 0;
        }, RECONNECT.stableAfter);
        for (const filter of this.handlers.keys()) {
            this._queueSubscribe(filter);
        }
        this._settleFirstOutcome(true);
    }

    _onClosed({error, socketOpened, connected}) {
        const gen = this.generation;
        this.client = null;
        // Late callbacks of this client are stale now
        this.generation++;
        this._clearTimer("stable");
        const pending = this.pendingSubscribe;
        if (
            pending &&
            pending.gen === gen &&
            Date.now() - pending.sentAt < SUBSCRIBE_REFUSAL_WINDOW
        ) {
            this._refuseFilter(
                pending.filter,
                _t("The broker closed the connection when asked for this subscription.")
            );
        }
        this._abandonPendingSubscribe();
        this._markSubscriptionsPending();
        this._settleFirstOutcome(false);
        if (!this.wanted) {
            this.state.status = STATUS.DISCONNECTED;
            return;
        }
        if (!connected) {
            if (error && AUTH_REFUSED_CODES.has(error.code)) {
                this.hooks.onRefused(describeError(error));
                return;
            }
            if (socketOpened) {
                // Answered, then hung up without a CONNACK
                this.hooks.onRefused(
                    _t("it closed the connection instead of accepting it")
                );
                return;
            }
            this.state.lastError = _t(
                "Cannot reach the broker at %s.",
                this.params.url
            );
        } else {
            this.state.lastError = error
                ? _t("Connection lost: %s", describeError(error))
                : _t("Connection lost.");
        }
        this._scheduleRetry(backoffDelay(this.failures++));
    }

    _scheduleRetry(delay) {
        this._clearTimer("retry");
        this.state.status = STATUS.RECONNECTING;
        if (browser.navigator.onLine === false) {
            // The "online" event reconnects; retrying now would only fail
            this.state.nextRetryAt = null;
            return;
        }
        this.state.nextRetryAt = Date.now() + delay;
        this.timers.retry = browser.setTimeout(() => {
            this.timers.retry = null;
            if (this.wanted) {
                this.reopen();
            }
        }, delay);
    }

    _onOffline() {
        if (!this.wanted) {
            return;
        }
        this._clearTimer("retry");
        this._clearTimer("online");
        this._dropClient();
        this.state.status = STATUS.RECONNECTING;
        this.state.nextRetryAt = null;
        this.state.lastError = _t("The browser is offline.");
    }

    _onOnline() {
        if (!this.wanted || this.client) {
            return;
        }
        this._clearTimer("online");
        const delay =
            backoffDelay(0) * (RECONNECT.backOnlineDelay / RECONNECT.initialDelay);
        this.state.nextRetryAt = Date.now() + delay;
        this.timers.online = browser.setTimeout(() => {
            this.timers.online = null;
            if (this.wanted && !this.client) {
                this.reopen();
            }
        }, delay);
    }

    _refuseFilter(filter, message) {
        this.handlers.delete(filter);
        this._setSubscription(filter, {status: "refused", error: message});
    }

    /**
     * SUBSCRIBEs go one at a time: a broker that drops the connection instead
     * of answering 0x80 then tells us which filter it refused.
     */
    _queueSubscribe(filter) {
        const gen = this.generation;
        const run = () => this._sendSubscribe(filter, gen);
        const result = this.subscribeQueue.then(run, run);
        this.subscribeQueue = result;
        return result;
    }

    _sendSubscribe(filter, gen) {
        const handler = this.handlers.get(filter);
        if (!handler || gen !== this.generation || !this.isConnected) {
            return Promise.resolve(false);
        }
        return new Promise((resolve) => {
            this.pendingSubscribe = {filter, sentAt: Date.now(), gen, resolve};
            this.client.subscribe(
                filter,
                {qos: handler.qos},
                (error, granted, packet) => {
                    const suback = packet?.granted || error?.packet?.granted;
                    if (gen !== this.generation || !suback) {
                        // Connection gone before the SUBACK: see _onClosed()
                        resolve(false);
                        return;
                    }
                    this.pendingSubscribe = null;
                    const code = suback[0];
                    if (error || code >= 128) {
                        this._refuseFilter(
                            filter,
                            _t("The broker refused this subscription (code %s).", code)
                        );
                        resolve(false);
                        return;
                    }
                    if (this.handlers.has(filter)) {
                        this._setSubscription(filter, {
                            status: "active",
                            qos: code,
                            error: "",
                        });
                    }
                    resolve(true);
                }
            );
        });
    }

    _dispatch(topic, payload, packet) {
        const message = {
            topic,
            payload,
            qos: packet?.qos ?? 0,
            retain: Boolean(packet?.retain),
            dup: Boolean(packet?.dup),
            receivedAt: Date.now(),
        };
        const callbacks = new Set();
        for (const [filter, handler] of this.handlers) {
            if (topicMatches(filter, topic)) {
                handler.callbacks.forEach((callback) => callbacks.add(callback));
            }
        }
        for (const callback of callbacks) {
            try {
                callback(message);
            } catch (error) {
                // One broken listener must not starve the others
                console.error(error);
            }
        }
    }
}
