import {Component, useState} from "@odoo/owl";
import {MqttError, STATUS} from "../../services/mqtt_service.esm";
import {ConnectionStatus} from "../connection_status/connection_status.esm";
import {useService} from "@web/core/utils/hooks";

function pad(n) {
    return String(n).padStart(2, "0");
}

/**
 * Broker URL and credentials (pre-filled from the page's config), connect and
 * disconnect, the client id, the password's expiry and the last error.
 */
export class ConnectionPanel extends Component {
    static template = "iot_base.ConnectionPanel";
    static components = {ConnectionStatus};
    static props = {
        // The page's validated config (null: none, see configError)
        config: {type: [Object, {value: null}]},
        configError: {type: String, optional: true},
    };

    setup() {
        this.mqtt = useService("mqtt");
        this.mqttState = useState(this.mqtt.state);
        const config = this.props.config;
        this.form = useState({
            url: this.mqttState.brokerUrl || config?.broker_url || "",
            username: config?.credentials.username || "",
            password: config?.credentials.password || "",
            connectError: this.props.configError || "",
        });
    }

    get isActive() {
        return [STATUS.CONNECTED, STATUS.CONNECTING, STATUS.RECONNECTING].includes(
            this.mqttState.status
        );
    }

    get expiresAtText() {
        const at = this.mqttState.expiresAt;
        if (!at) {
            return "";
        }
        const d = new Date(at);
        return `${pad(d.getHours())}:${pad(d.getMinutes())}`;
    }

    onConnect() {
        const {url, username, password} = this.form;
        const config = this.props.config;
        this.form.connectError = "";
        try {
            if (
                config &&
                username === config.credentials.username &&
                (!password || password === config.credentials.password)
            ) {
                // The page's own identity (its password is fetched, never
                // typed or shown): its session secret gets renewed
                this.mqtt.connectWithOdooConfig({url});
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
}
