import {Component, useState} from "@odoo/owl";
import {MqttError, STATUS} from "../../services/mqtt_service.esm";
import {_t} from "@web/core/l10n/translation";
import {useService} from "@web/core/utils/hooks";

/** Publish a payload to a topic (checked against the topic rules first). */
export class PublishForm extends Component {
    static template = "iot_base.PublishForm";
    static props = {
        config: {type: [Object, {value: null}]},
    };

    setup() {
        this.mqtt = useService("mqtt");
        this.mqttState = useState(this.mqtt.state);
        this.form = useState({
            topic: this.props.config?.default_publish_topic || "",
            payload: '{\n  "hello": "world"\n}',
            qos: 0,
            retain: false,
            error: "",
            info: "",
        });
    }

    get isConnected() {
        return this.mqttState.status === STATUS.CONNECTED;
    }

    async onPublish() {
        const topic = this.form.topic.trim();
        const qos = Number(this.form.qos);
        const retain = this.form.retain;
        this.form.error = "";
        this.form.info = "";
        try {
            await this.mqtt.publish(topic, this.form.payload, {qos, retain});
        } catch (error) {
            if (!(error instanceof MqttError)) {
                throw error;
            }
            this.form.error = error.message;
            return;
        }
        this.form.info = _t("Published to %s", topic);
    }
}
