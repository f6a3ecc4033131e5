import {Component, onWillUnmount, useState} from "@odoo/owl";
import {MqttError} from "../../services/mqtt_service.esm";
import {_t} from "@web/core/l10n/translation";
import {useService} from "@web/core/utils/hooks";

/**
 * Subscribe to a topic filter (or a suggested one), the subscriptions and
 * their status, the topic rules of the identity. The messages of the filters
 * subscribed here go to `onMessage`; they are unsubscribed on unmount.
 */
export class SubscriptionsPanel extends Component {
    static template = "iot_base.SubscriptionsPanel";
    static props = {
        config: {type: [Object, {value: null}]},
        // (message) => void, see the service's subscribe()
        onMessage: Function,
    };

    setup() {
        this.mqtt = useService("mqtt");
        this.mqttState = useState(this.mqtt.state);
        this.form = useState({filter: "", qos: 0, error: ""});
        this.ownFilters = new Set();
        // One callback for the component's life: unsubscribe() finds it
        this.onMessage = (message) => this.props.onMessage(message);
        onWillUnmount(() => {
            for (const filter of this.ownFilters) {
                this.mqtt.unsubscribe(filter, this.onMessage);
            }
        });
    }

    get subscriptions() {
        return Object.values(this.mqttState.subscriptions).sort((a, b) =>
            a.filter.localeCompare(b.filter)
        );
    }

    get suggestions() {
        const current = this.mqttState.subscriptions;
        return (this.props.config?.default_subscriptions || []).filter(
            (filter) => !current[filter] || current[filter].status === "refused"
        );
    }

    /**
     * An example filter the rules allow: the first suggestion (the server
     * checked each against the rules), never a made-up topic.
     */
    get example() {
        return (this.props.config?.default_subscriptions || [])[0] || "";
    }

    get placeholder() {
        return this.example ? _t("e.g. %s", this.example) : "";
    }

    get rules() {
        return this.mqttState.acl || [];
    }

    ruleQos(rule) {
        return rule.qos ? rule.qos.join(", ") : _t("any");
    }

    subscribeTo(filter, qos = 0) {
        this.form.error = "";
        try {
            this.mqtt.subscribe(filter, this.onMessage, {qos});
        } catch (error) {
            if (!(error instanceof MqttError)) {
                throw error;
            }
            this.form.error = error.message;
            return false;
        }
        this.ownFilters.add(filter);
        return true;
    }

    onSubscribe() {
        const filter = this.form.filter.trim();
        if (!filter) {
            this.form.error = this.example
                ? _t("Type a topic filter, e.g. %s", this.example)
                : _t("Type a topic filter your topic rules allow.");
            return;
        }
        if (this.subscribeTo(filter, Number(this.form.qos))) {
            this.form.filter = "";
        }
    }

    onUnsubscribe(filter) {
        this.ownFilters.delete(filter);
        // Also forgets a refused filter (no longer known to the broker)
        this.mqtt.unsubscribe(filter, this.onMessage);
    }
}
