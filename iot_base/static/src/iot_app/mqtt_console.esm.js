import {Component, useState} from "@odoo/owl";
import {MAX_MESSAGES, MessageLog} from "../components/message_list/message_log.esm";
import {STATUS, readOdooConfig} from "../services/mqtt_service.esm";
import {ConnectionPanel} from "../components/connection_panel/connection_panel.esm";
import {MessageList} from "../components/message_list/message_list.esm";
import {PublishForm} from "../components/publish_form/publish_form.esm";
import {SubscriptionsPanel} from "../components/subscriptions_panel/subscriptions_panel.esm";
import {useService} from "@web/core/utils/hooks";

/**
 * The MQTT console: connection panel, subscriptions, live messages, publish
 * form (static/src/components). Everything about the connection lives in the
 * "mqtt" service; the panels only show its state and forward the user's
 * requests. The console reads the page's config once, connects with it, and
 * keeps the message log the subscriptions feed.
 */
export class MqttConsole extends Component {
    static template = "iot_base.MqttConsole";
    static components = {ConnectionPanel, MessageList, PublishForm, SubscriptionsPanel};
    static props = {
        autoConnect: {type: Boolean, optional: true},
        maxMessages: {type: Number, optional: true},
    };
    static defaultProps = {autoConnect: true, maxMessages: MAX_MESSAGES};

    setup() {
        const mqtt = useService("mqtt");
        this.config = null;
        this.configError = "";
        try {
            // The service's copy is the latest (renewed) one
            this.config = mqtt.odooConfig || readOdooConfig();
        } catch (error) {
            this.configError = error.message;
        }
        this.log = useState(new MessageLog(this.props.maxMessages));
        this.onMessage = (message) => this.log.add(message);
        if (
            this.config &&
            this.props.autoConnect &&
            mqtt.state.status === STATUS.DISCONNECTED
        ) {
            mqtt.connectWithOdooConfig();
        }
    }
}
