import { Component, onMounted, onWillUnmount, useState } from "@odoo/owl";
import { browser } from "@web/core/browser/browser";
import { _t } from "@web/core/l10n/translation";
import { useService } from "@web/core/utils/hooks";
import { MqttError, readOdooConfig, STATUS } from "../../services/mqtt_service.esm";

export const MAX_MESSAGES = 200;
export const MAX_PAYLOAD_CHARS = 4000;
const MAX_JSON_BYTES = 256 * 1024; // bigger payloads are not parsed, only cut
const decoder = new TextDecoder("utf-8", { fatal: true });

const STATUS_BADGES = {
    [STATUS.DISCONNECTED]: { label: _t("Disconnected"), className: "text-bg-secondary", icon: "fa-circle-o" },
    [STATUS.CONNECTING]: { label: _t("Connecting…"), className: "text-bg-info", icon: "fa-circle-o-notch fa-spin" },
    [STATUS.CONNECTED]: { label: _t("Connected"), className: "text-bg-success", icon: "fa-circle" },
    [STATUS.RECONNECTING]: { label: _t("Reconnecting…"), className: "text-bg-warning", icon: "fa-refresh" },
    [STATUS.ERROR]: { label: _t("Error"), className: "text-bg-danger", icon: "fa-exclamation-triangle" },
};

function pad(n, size = 2) {
    return String(n).padStart(size, "0");
}

export function formatTime(ms) {
    const d = new Date(ms);
    return `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}.${pad(d.getMilliseconds(), 3)}`;
}

/**
 * How a payload is shown: pretty JSON when it is JSON, text when it is
 * UTF-8, a hex preview otherwise; never more than MAX_PAYLOAD_CHARS.
 */
export function formatPayload(bytes) {
    const size = bytes.length;
    let text;
    let kind = "text";
    try {
        text = decoder.decode(bytes);
    } catch {
        kind = "binary";
        const shown = bytes.slice(0, MAX_PAYLOAD_CHARS / 3);
        text = [...shown].map((b) => b.toString(16).padStart(2, "0")).join(" ");
        return { kind, text, size, truncated: shown.length < size };
    }
    if (size <= MAX_JSON_BYTES && /^\s*[[{"\d\-tfn]/.test(text)) {
        try {
            text = JSON.stringify(JSON.parse(text), null, 2);
            kind = "json";
        } catch {
            // not JSON: shown as text
        }
    }
    const truncated = text.length > MAX_PAYLOAD_CHARS;
    return { kind, text: truncated ? text.slice(0, MAX_PAYLOAD_CHARS) : text, size, truncated };
}

/**
 * The MQTT console: connection panel, subscriptions, live messages, publish
 * form. Everything about the connection lives in the "mqtt" service; this
 * component only shows its state and forwards the user's requests.
 */
export class MQTTSubscriber extends Component {
    static template = "iot_base.MQTTSubscriber";
    static props = {
        autoConnect: { type: Boolean, optional: true },
        maxMessages: { type: Number, optional: true },
    };
    static defaultProps = { autoConnect: true, maxMessages: MAX_MESSAGES };

    setup() {
        this.mqtt = useService("mqtt");
        this.mqttState = useState(this.mqtt.state);
        this.statusBadges = STATUS_BADGES;
        this.config = null;
        let configError = "";
        try {
            // the service's copy is the latest (renewed) one
            this.config = this.mqtt.odooConfig || readOdooConfig();
        } catch (error) {
            configError = error.message;
        }
        const config = this.config;
        this.form = useState({
            url: this.mqttState.brokerUrl || config?.broker_url || "",
            username: config?.credentials.username || "",
            password: config?.credentials.password || "",
            connectError: configError,
            filter: "",
            subscribeQos: 0,
            subscribeError: "",
            publishTopic: config?.default_publish_topic || "",
            publishPayload: '{\n  "hello": "world"\n}',
            publishQos: 0,
            publishRetain: false,
            publishError: "",
            publishInfo: "",
            search: "",
            paused: false,
        });
        this.log = useState({ messages: [], held: [], received: 0 });
        this.clock = useState({ now: Date.now() });
        this.nextMessageId = 1;
        this.ownFilters = new Set();
        this.onMessage = this.onMessage.bind(this);

        if (config && this.props.autoConnect && this.mqttState.status === STATUS.DISCONNECTED) {
            this.mqtt.connectWithOdooConfig();
        }
        onMounted(() => {
            this.clockInterval = browser.setInterval(() => (this.clock.now = Date.now()), 1000);
        });
        onWillUnmount(() => {
            browser.clearInterval(this.clockInterval);
            for (const filter of this.ownFilters) {
                this.mqtt.unsubscribe(filter, this.onMessage);
            }
        });
    }

    // ----------------------------------------------------------------------
    // Getters
    // ----------------------------------------------------------------------

    get badge() {
        return this.statusBadges[this.mqttState.status];
    }

    get isConnected() {
        return this.mqttState.status === STATUS.CONNECTED;
    }

    get isActive() {
        return [STATUS.CONNECTED, STATUS.CONNECTING, STATUS.RECONNECTING].includes(
            this.mqttState.status
        );
    }

    get retryIn() {
        const at = this.mqttState.nextRetryAt;
        return at ? Math.max(0, Math.ceil((at - this.clock.now) / 1000)) : null;
    }

    get expiresAtText() {
        const at = this.mqttState.expiresAt;
        if (!at) {
            return "";
        }
        const d = new Date(at);
        return `${pad(d.getHours())}:${pad(d.getMinutes())}`;
    }

    get subscriptions() {
        return Object.values(this.mqttState.subscriptions).sort((a, b) =>
            a.filter.localeCompare(b.filter)
        );
    }

    get suggestions() {
        const current = this.mqttState.subscriptions;
        return (this.config?.default_subscriptions || []).filter(
            (filter) => !current[filter] || current[filter].status === "refused"
        );
    }

    get rules() {
        return this.mqttState.acl || [];
    }

    get visibleMessages() {
        const search = this.form.search.trim().toLowerCase();
        if (!search) {
            return this.log.messages;
        }
        return this.log.messages.filter(
            (m) => m.topic.toLowerCase().includes(search) || m.text.toLowerCase().includes(search)
        );
    }

    ruleQos(rule) {
        return rule.qos ? rule.qos.join(", ") : _t("any");
    }

    // ----------------------------------------------------------------------
    // Connection
    // ----------------------------------------------------------------------

    onConnect() {
        const { url, username, password } = this.form;
        const config = this.config;
        this.form.connectError = "";
        try {
            if (
                config &&
                username === config.credentials.username &&
                password === config.credentials.password
            ) {
                // the page's own identity: its session secret gets renewed
                this.mqtt.connectWithOdooConfig({ url });
            } else {
                const sameUser = config && username === config.credentials.username;
                this.mqtt.connect({
                    url,
                    username,
                    password,
                    clientId: sameUser ? config.client_id : undefined,
                    isSuperuser: sameUser && config.credentials.is_superuser,
                    acl: sameUser ? config.acl : null,
                });
            }
        } catch (error) {
            if (!(error instanceof MqttError)) {
                throw error;
            }
            this.form.connectError = error.message;
        }
    }

    onDisconnect() {
        this.mqtt.disconnect();
    }

    // ----------------------------------------------------------------------
    // Subscriptions
    // ----------------------------------------------------------------------

    subscribeTo(filter, qos = 0) {
        this.form.subscribeError = "";
        try {
            this.mqtt.subscribe(filter, this.onMessage, { qos });
        } catch (error) {
            if (!(error instanceof MqttError)) {
                throw error;
            }
            this.form.subscribeError = error.message;
            return false;
        }
        this.ownFilters.add(filter);
        return true;
    }

    onSubscribe() {
        const filter = this.form.filter.trim();
        if (!filter) {
            this.form.subscribeError = _t("Type a topic filter, e.g. %s", "sensors/+/temperature");
            return;
        }
        if (this.subscribeTo(filter, Number(this.form.subscribeQos))) {
            this.form.filter = "";
        }
    }

    onUnsubscribe(filter) {
        this.ownFilters.delete(filter);
        // also forgets a refused filter (no longer known to the broker)
        this.mqtt.unsubscribe(filter, this.onMessage);
    }

    // ----------------------------------------------------------------------
    // Messages
    // ----------------------------------------------------------------------

    onMessage(message) {
        const entry = {
            id: this.nextMessageId++,
            time: formatTime(message.receivedAt),
            topic: message.topic,
            qos: message.qos,
            retain: message.retain,
            ...formatPayload(message.payload),
        };
        this.log.received++;
        const target = this.form.paused ? this.log.held : this.log.messages;
        target.unshift(entry);
        if (target.length > this.props.maxMessages) {
            target.length = this.props.maxMessages;
        }
    }

    onTogglePause() {
        if (this.form.paused) {
            const merged = [...this.log.held, ...this.log.messages];
            this.log.messages = merged.slice(0, this.props.maxMessages);
            this.log.held = [];
        }
        this.form.paused = !this.form.paused;
    }

    onClear() {
        this.log.messages = [];
        this.log.held = [];
    }

    // ----------------------------------------------------------------------
    // Publish
    // ----------------------------------------------------------------------

    async onPublish() {
        const topic = this.form.publishTopic.trim();
        const qos = Number(this.form.publishQos);
        const retain = this.form.publishRetain;
        this.form.publishError = "";
        this.form.publishInfo = "";
        try {
            await this.mqtt.publish(topic, this.form.publishPayload, { qos, retain });
        } catch (error) {
            if (!(error instanceof MqttError)) {
                throw error;
            }
            this.form.publishError = error.message;
            return;
        }
        this.form.publishInfo = _t("Published to %s", topic);
    }
}
