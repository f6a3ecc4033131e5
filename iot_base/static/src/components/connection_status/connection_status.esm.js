import {Component, onMounted, onWillUnmount, useState} from "@odoo/owl";
import {STATUS} from "../../services/mqtt_service.esm";
import {_t} from "@web/core/l10n/translation";
import {browser} from "@web/core/browser/browser";
import {useService} from "@web/core/utils/hooks";

const STATUS_BADGES = {
    [STATUS.DISCONNECTED]: {
        label: _t("Disconnected"),
        className: "text-bg-secondary",
        icon: "fa-circle-o",
    },
    [STATUS.CONNECTING]: {
        label: _t("Connecting…"),
        className: "text-bg-info",
        icon: "fa-circle-o-notch fa-spin",
    },
    [STATUS.CONNECTED]: {
        label: _t("Connected"),
        className: "text-bg-success",
        icon: "fa-circle",
    },
    [STATUS.RECONNECTING]: {
        label: _t("Reconnecting…"),
        className: "text-bg-warning",
        icon: "fa-refresh",
    },
    [STATUS.ERROR]: {
        label: _t("Error"),
        className: "text-bg-danger",
        icon: "fa-exclamation-triangle",
    },
};

/**
 * The status of the "mqtt" service's connection as a badge, with the seconds
 * until the next automatic reconnection. Its data-* attributes are what the
 * tours wait for.
 */
export class ConnectionStatus extends Component {
    static template = "iot_base.ConnectionStatus";
    static props = {};

    setup() {
        this.mqttState = useState(useService("mqtt").state);
        this.clock = useState({now: Date.now()});
        onMounted(() => {
            this.clockInterval = browser.setInterval(
                () => (this.clock.now = Date.now()),
                1000
            );
        });
        onWillUnmount(() => browser.clearInterval(this.clockInterval));
    }

    get badge() {
        return STATUS_BADGES[this.mqttState.status];
    }

    get retryIn() {
        const at = this.mqttState.nextRetryAt;
        return at ? Math.max(0, Math.ceil((at - this.clock.now) / 1000)) : null;
    }
}
