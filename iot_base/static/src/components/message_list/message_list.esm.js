import {Component, useState} from "@odoo/owl";
import {MessageLog} from "./message_log.esm";
import {useService} from "@web/core/utils/hooks";

/** The live messages of a MessageLog: text filter, pause, clear. */
export class MessageList extends Component {
    static template = "iot_base.MessageList";
    static props = {
        log: MessageLog,
    };

    setup() {
        this.mqttState = useState(useService("mqtt").state);
        this.filter = useState({search: ""});
    }

    get hasSubscriptions() {
        return Object.keys(this.mqttState.subscriptions).length > 0;
    }

    get visibleMessages() {
        return this.props.log.search(this.filter.search);
    }
}
