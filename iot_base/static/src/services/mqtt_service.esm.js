import {reactive} from "@odoo/owl";
import {browser} from "@web/core/browser/browser";
import {_t} from "@web/core/l10n/translation";
import {RPCError, rpc} from "@web/core/network/rpc";
import {registry} from "@web/core/registry";
import {sprintf} from "@web/core/utils/strings";
import {
    ALLOW,
    authorize,
    isValidTopicFilter,
    isValidTopicName,
} from "../utils/topic_acl.esm";
import {
    MqttConfigError,
    MqttConnection,
    MqttRefusedError,
    STATUS,
    backoffDelay,
    describeError,
    isWebSocketUrl,
} from "./mqtt_connection.esm";

// What the tests and the console import from here
export {
    MqttConfigError,
    MqttError,
    MqttRefusedError,
    RECONNECT,
    STATUS,
    SUBSCRIBE_REFUSAL_WINDOW,
    backoffDelay,
    mqttLib,
} from "./mqtt_connection.esm";

/**
 * The one MQTT connection of a page (MQTT.js over WebSocket): who connects
 * (the page's Odoo config or typed credentials), the renewal of its session
 * secret or signed token, the topic rules checked before the broker sees a
 * request. The connection itself (client, back-off, online/offline,
 * subscriptions) is an MqttConnection (mqtt_connection.esm.js).
 *
 * API (see MqttService's methods):
 *   connect(options) / connectWithOdooConfig(overrides) / disconnect()
 *   subscribe(filter, callback, {qos}) / unsubscribe(filter, callback)
 *   publish(topic, payload, {qos, retain})
 *   checkSubscribe(filter, qos) / checkPublish(topic, qos, retain)
 *   state: reactive, read-only for callers
 *   odooConfig: the validated Odoo config, or null
 */

// Renew the session secret this long before it expires (at most half its
// life), but never more often than every MIN_REFRESH_DELAY: a misconfigured
// lifetime of a second must not become a reconnection loop.
export const REFRESH_MARGIN = 5 * 60 * 1000;
export const MIN_REFRESH_DELAY = 5000;
// Answers of the refresh route that retrying cannot change.
const FINAL_RPC_ERRORS = new Set([
    "odoo.exceptions.AccessError",
    "odoo.exceptions.AccessDenied",
    "odoo.http.SessionExpiredException",
]);

/**
 * Validate a console config (`window.odoo.mqtt_config` or the answer of the
 * refresh route) and return a normalized copy.
 *
 * @param {Object} config
 * @param {Object} [options]
 * @param {boolean} [options.withPassword] false for the page's own config,
 *   which has none: the page's GET writes nothing, its password comes from
 *   the refresh route (a POST)
 * @throws {MqttConfigError} naming what is missing
 */
export function validateConfig(config, {withPassword = true} = {}) {
    if (!config || typeof config !== "object") {
        throw new MqttConfigError(
            _t(
                "There is no MQTT configuration on this page: open the console from /iot/app."
            )
        );
    }
    const missing = [];
    if (!isWebSocketUrl(config.broker_url)) {
        missing.push(_t("broker_url (a ws:// or wss:// URL)"));
    }
    if (
        !(
            typeof config.client_id_separator === "string" &&
            config.client_id_separator.length === 1
        )
    ) {
        // Odoo's identity policy (tools/client_ids.py) owns the separator
        missing.push("client_id_separator");
    }
    const credentials = config.credentials;
    if (!credentials || typeof credentials !== "object") {
        missing.push("credentials");
    } else {
        if (typeof credentials.username !== "string" || !credentials.username) {
            missing.push("credentials.username");
        }
        const password = credentials.password;
        if (
            (withPassword || (password !== null && password !== undefined)) &&
            (typeof password !== "string" || !password)
        ) {
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
            password: credentials.password || null,
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
        client_id_separator: config.client_id_separator,
    };
}

/** Read and validate `window.odoo.mqtt_config` (no password: see validateConfig). */
export function readOdooConfig() {
    return validateConfig(window.odoo?.mqtt_config, {withPassword: false});
}

/**
 * `{username}{separator}{8 random hex}`: unique per page, so per tab, and a
 * client id the credential owns (the brokers refuse any other). The
 * separator is the page config's `client_id_separator`, from Odoo's identity
 * policy (tools/client_ids.py): it is written down nowhere else.
 *
 * @param {string} username
 * @param {string} separator
 * @returns {string}
 */
export function makeClientId(username, separator) {
    const bytes = new Uint8Array(4);
    crypto.getRandomValues(bytes);
    const suffix = [...bytes].map((b) => b.toString(16).padStart(2, "0")).join("");
    return `${username}${separator}${suffix}`;
}

function sprintfWords(template, value) {
    return sprintf(String(template), value);
}

// What the page's password is, for its messages.
function passwordWords(authKind) {
    return authKind === "jwt"
        ? {
              refusedRenewing: _t(
                  "The broker refused the token (%s): fetching a new one."
              ),
              refusedFresh: _t(
                  "The broker refused a freshly issued token (%s). Check that the broker verifies tokens with this Odoo's keys (/iot/jwks.json), that its clock is right and that the Console Login setting names this broker, then connect again."
              ),
              renewFailed: _t("Could not renew the token: %s"),
          }
        : {
              refusedRenewing: _t(
                  "The broker refused the session secret (%s): renewing it."
              ),
              refusedFresh: _t(
                  "The broker refused a freshly issued secret (%s). Check that the broker authenticates against this Odoo, then connect again."
              ),
              renewFailed: _t("Could not renew the session secret: %s"),
          };
}

/**
 * What the service does; start() hands out only its documented API (the
 * rest stays private in start()'s closure).
 */
class MqttService {
    constructor() {
        this.state = reactive({
            status: STATUS.DISCONNECTED,
            lastError: "",
            /** Ms timestamp of the next automatic reconnection, or null */
            nextRetryAt: null,
            /** Connection attempts since the last connect() or stable connection */
            attempts: 0,
            brokerUrl: "",
            username: "",
            clientId: "",
            isSuperuser: false,
            /** True when the connection uses the page's Odoo session secret */
            usesOdooSession: false,
            /** Ms timestamp at which the current secret expires, or null */
            expiresAt: null,
            /** "secret" (session secret) or "jwt" (signed token): the password */
            authKind: "secret",
            secretRenewals: 0,
            /** Topic rules known for this identity (null: the broker decides alone) */
            acl: null,
            /** Filter -> {filter, qos, status: "pending"|"active"|"refused", error} */
            subscriptions: {},
        });
        this.connection = new MqttConnection(this.state, {
            onConnected: () => (this._secretIsFresh = false),
            onRefused: (reason) => this._onCredentialsRefused(reason),
            onFailed: () => this._clearRefreshTimer(),
        });
        // Latest validated Odoo config (refreshed)
        this._odooConfig = null;
        /** The password's renewal: {refresh, receivedAt, expiresAt}, per connect() */
        this._session = null;
        // The password was issued after the last successful connection: if
        // the broker refuses it, renewing it again would not help
        this._secretIsFresh = false;
        this._refreshFailures = 0;
        this._refreshTimer = null;
    }

    /** The validated Odoo config (without reading it twice), or null. */
    get odooConfig() {
        if (!this._odooConfig && window.odoo?.mqtt_config) {
            this._odooConfig = readOdooConfig();
        }
        return this._odooConfig;
    }

    // ----------------------------------------------------------------------
    // Connection
    // ----------------------------------------------------------------------

    /**
     * Connect (after closing any current connection) and keep connected
     * until disconnect().
     *
     * @param {Object} options
     * @param {string} options.url ws:// or wss:// URL of the broker
     * @param {string} options.username
     * @param {string} options.password
     * @param {string} [options.clientId] default `{username}{separator}{random}`
     *   (the separator of the page's config)
     * @param {boolean} [options.isSuperuser]
     * @param {Object[]|null} [options.acl] topic rules checked before the broker
     * @param {Function} [options.refresh] async (clientId) => new config
     * @param {number} [options.expiresIn] seconds the password stays valid
     * @param {string} [options.authKind] "jwt" when the password is a
     *   signed token (renewed, and reconnected with, before its exp)
     * @param {number} [options.protocolVersion] 4 (3.1.1, default) or 5
     * @param {boolean} [options.fetchPassword] fetch the password with
     *   `refresh` before the first attempt (the page's config has none)
     * @returns {Promise<boolean>} whether the first attempt connected
     *   (attempts go on in the background when it did not)
     * @throws {MqttConfigError} when the URL or the username is missing
     */
    connect(options = {}) {
        if (!isWebSocketUrl(options.url)) {
            throw new MqttConfigError(
                _t("The broker URL must be a ws:// or wss:// URL.")
            );
        }
        if (typeof options.username !== "string" || !options.username) {
            throw new MqttConfigError(_t("A username is required."));
        }
        this._clearRefreshTimer();
        const receivedAt = Date.now();
        this._session = {
            refresh: options.refresh || null,
            receivedAt,
            expiresAt: Number.isFinite(options.expiresIn)
                ? receivedAt + options.expiresIn * 1000
                : null,
        };
        this._refreshFailures = 0;
        this._secretIsFresh = false;
        const params = {
            url: options.url,
            username: options.username,
            password: options.password || "",
            clientId:
                options.clientId ||
                makeClientId(
                    options.username,
                    (this._odooConfig || readOdooConfig()).client_id_separator
                ),
            protocolVersion: options.protocolVersion || 4,
            keepalive: options.keepalive ?? 30,
            connectTimeout: options.connectTimeout ?? 15000,
        };
        Object.assign(this.state, {
            brokerUrl: params.url,
            username: params.username,
            clientId: params.clientId,
            isSuperuser: Boolean(options.isSuperuser),
            usesOdooSession: Boolean(this._session.refresh),
            authKind: options.authKind === "jwt" ? "jwt" : "secret",
            acl: options.acl || null,
            expiresAt: this._session.expiresAt,
        });
        if (options.fetchPassword && options.refresh) {
            const outcome = this.connection.start(params, {deferred: true});
            this._fetchFirstPassword();
            return outcome;
        }
        this._scheduleRefresh();
        return this.connection.start(params);
    }

    /**
     * Connect with the page's Odoo config (`window.odoo.mqtt_config`, or
     * the latest one fetched since): the page's password is fetched first
     * (a POST to the refresh route), then renewed before it expires and
     * when the broker refuses it.
     *
     * @param {Object} [overrides] e.g. {url} from the connection panel
     * @throws {MqttConfigError} when the config is missing or incomplete
     */
    connectWithOdooConfig(overrides = {}) {
        const config = this._odooConfig || readOdooConfig();
        this._odooConfig = config;
        const refresh = (clientId) =>
            rpc(this._odooConfig.refresh_route, {client_id: clientId}, {silent: true});
        return this.connect({
            url: config.broker_url,
            username: config.credentials.username,
            password: config.credentials.password,
            clientId: config.client_id || undefined,
            isSuperuser: config.credentials.is_superuser,
            acl: config.acl,
            expiresIn: config.expires_in ?? undefined,
            authKind: config.auth,
            refresh,
            fetchPassword: !config.credentials.password,
            ...overrides,
        });
    }

    /** Close the connection on purpose: no automatic reconnection. */
    disconnect() {
        this._clearRefreshTimer();
        this.connection.stop();
    }

    // ----------------------------------------------------------------------
    // Topics
    // ----------------------------------------------------------------------

    /**
     * Receive the messages of `filter` in `callback({topic, payload
     * (Uint8Array), qos, retain, dup, receivedAt})`. Kept across
     * reconnections.
     *
     * @returns {Promise<boolean>} true once the broker granted it (false
     *   when it refused it, or when it will be sent on the next connection)
     * @throws {MqttRefusedError} for an invalid or not allowed filter
     */
    subscribe(filter, callback, {qos = 0} = {}) {
        this.checkSubscribe(filter, qos);
        return this.connection.subscribe(filter, callback, qos);
    }

    /**
     * Stop calling `callback` for `filter` (every callback when omitted);
     * the broker subscription ends with the last callback. Also forgets a
     * refused filter.
     */
    unsubscribe(filter, callback) {
        this.connection.unsubscribe(filter, callback);
    }

    /**
     * Publish `payload` (string, Uint8Array, or anything JSON) to `topic`.
     *
     * @returns {Promise<void>} resolved once sent (QoS 0) or acknowledged
     * @throws {MqttRefusedError} for an invalid or not allowed topic
     * @throws {MqttError} when not connected
     */
    publish(topic, payload, {qos = 0, retain = false} = {}) {
        this.checkPublish(topic, qos, retain);
        const body =
            typeof payload === "string" || payload instanceof Uint8Array
                ? payload
                : JSON.stringify(payload);
        return this.connection.publish(topic, body, {qos, retain});
    }

    /** @throws {MqttRefusedError} when `filter` is invalid or not allowed */
    checkSubscribe(filter, qos = 0) {
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
        const {isSuperuser, acl} = this.state;
        if (!isSuperuser && acl && authorize(acl, "subscribe", filter, qos) !== ALLOW) {
            throw new MqttRefusedError(
                _t(
                    "Your topic rules do not allow subscribing to “%(filter)s” with QoS %(qos)s: a filter is allowed only when every topic it can match is.",
                    {filter, qos}
                )
            );
        }
    }

    /** @throws {MqttRefusedError} when `topic` is invalid or not allowed */
    checkPublish(topic, qos = 0, retain = false) {
        if (!isValidTopicName(topic)) {
            throw new MqttRefusedError(
                _t(
                    "“%s” is not a valid topic to publish to (not empty, no “+” or “#”).",
                    topic
                )
            );
        }
        if (![0, 1, 2].includes(qos)) {
            throw new MqttRefusedError(_t("QoS must be 0, 1 or 2."));
        }
        const {isSuperuser, acl} = this.state;
        if (
            !isSuperuser &&
            acl &&
            authorize(acl, "publish", topic, qos, retain) !== ALLOW
        ) {
            throw new MqttRefusedError(
                _t(
                    "Your topic rules do not allow publishing to “%(topic)s” (QoS %(qos)s%(retain)s).",
                    {
                        topic,
                        qos,
                        retain: retain ? _t(", retained") : "",
                    }
                )
            );
        }
    }

    // ----------------------------------------------------------------------
    // Session secret (or signed token) renewal
    // ----------------------------------------------------------------------

    _clearRefreshTimer() {
        if (this._refreshTimer) {
            browser.clearTimeout(this._refreshTimer);
            this._refreshTimer = null;
        }
    }

    _setRefreshTimer(delay) {
        this._clearRefreshTimer();
        this._refreshTimer = browser.setTimeout(() => this._renewBeforeExpiry(), delay);
    }

    _scheduleRefresh() {
        this._clearRefreshTimer();
        const session = this._session;
        if (!session?.refresh || !session.expiresAt) {
            return;
        }
        const lifetime = session.expiresAt - session.receivedAt;
        const renewAt = session.expiresAt - Math.min(REFRESH_MARGIN, lifetime / 2);
        this._setRefreshTimer(Math.max(MIN_REFRESH_DELAY, renewAt - Date.now()));
    }

    async _onCredentialsRefused(reason) {
        const words = passwordWords(this.state.authKind);
        if (this._session.refresh && !this._secretIsFresh) {
            // An expired or revoked session secret: fetch a new one
            this.state.status = STATUS.RECONNECTING;
            this.state.lastError = sprintfWords(words.refusedRenewing, reason);
            if ((await this._refreshCredentials()) && this.connection.wanted) {
                this.connection.reopen();
            }
            return;
        }
        this.connection.fail(
            this._session.refresh
                ? sprintfWords(words.refusedFresh, reason)
                : _t("The broker refused these credentials (%s).", reason)
        );
    }

    async _fetchFirstPassword() {
        const session = this._session;
        if (
            (await this._refreshCredentials({first: true})) &&
            this._session === session &&
            this.connection.wanted
        ) {
            this.connection.reopen();
        }
    }

    async _renewBeforeExpiry() {
        this._refreshTimer = null;
        if (!this.connection.wanted) {
            return;
        }
        if ((await this._refreshCredentials()) && this.connection.wanted) {
            // Hand over to a connection with the new secret before the broker
            // ends this one at the old secret's expiry (or connect now if a
            // refusal was waiting for this secret)
            this.connection.reopen();
        }
    }

    /**
     * Fetch a new config (new session secret) and use it from now on.
     * @param {Object} [options]
     * @param {boolean} [options.first] the page's first password: not a renewal
     * @returns {Promise<boolean>} whether it worked
     */
    async _refreshCredentials({first = false} = {}) {
        const session = this._session;
        let config = null;
        try {
            config = validateConfig(
                await session.refresh(this.connection.params.clientId)
            );
        } catch (error) {
            if (this._session !== session) {
                // Connect() was called meanwhile
                return false;
            }
            if (
                error instanceof MqttConfigError ||
                (error instanceof RPCError && FINAL_RPC_ERRORS.has(error.exceptionName))
            ) {
                this.connection.fail(
                    _t("You can no longer use MQTT: %s", describeError(error))
                );
                return false;
            }
            // Odoo unreachable or failing: keep what we have, try again later
            const delay = backoffDelay(this._refreshFailures++);
            this.state.lastError = sprintfWords(
                passwordWords(this.state.authKind).renewFailed,
                describeError(error)
            );
            this._setRefreshTimer(delay);
            this.connection.waitForCredentials(delay);
            return false;
        }
        if (this._session !== session) {
            return false;
        }
        this._refreshFailures = 0;
        this._secretIsFresh = true;
        this._applyOdooConfig(config);
        if (!first) {
            this.state.secretRenewals++;
        }
        return true;
    }

    _applyOdooConfig(config) {
        this._odooConfig = config;
        const session = this._session;
        const receivedAt = Date.now();
        session.receivedAt = receivedAt;
        session.expiresAt =
            config.expires_in === null ? null : receivedAt + config.expires_in * 1000;
        const clientId = config.client_id || this.state.clientId;
        this.connection.setCredentials({
            username: config.credentials.username,
            password: config.credentials.password,
            clientId,
        });
        Object.assign(this.state, {
            authKind: config.auth === "jwt" ? "jwt" : "secret",
            username: config.credentials.username,
            clientId,
            isSuperuser: config.credentials.is_superuser,
            acl: config.acl,
            expiresAt: session.expiresAt,
        });
        this._scheduleRefresh();
    }
}

export const mqttService = {
    dependencies: [],

    start() {
        const service = new MqttService();
        return {
            state: service.state,
            connect: (options) => service.connect(options),
            connectWithOdooConfig: (overrides) =>
                service.connectWithOdooConfig(overrides),
            disconnect: () => service.disconnect(),
            subscribe: (filter, callback, options) =>
                service.subscribe(filter, callback, options),
            unsubscribe: (filter, callback) => service.unsubscribe(filter, callback),
            publish: (topic, payload, options) =>
                service.publish(topic, payload, options),
            checkSubscribe: (filter, qos) => service.checkSubscribe(filter, qos),
            checkPublish: (topic, qos, retain) =>
                service.checkPublish(topic, qos, retain),
            /** The validated Odoo config (without reading it twice), or null */
            get odooConfig() {
                return service.odooConfig;
            },
        };
    },
};

registry.category("services").add("mqtt", mqttService);
