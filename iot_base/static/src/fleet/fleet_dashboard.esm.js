/** @odoo-module **/
// License LGPL-3.0 or later (https://www.gnu.org/licenses/lgpl).
import {Component, onWillStart, onWillUnmount, useEffect, useState} from "@odoo/owl";
import {_t} from "@web/core/l10n/translation";
import {registry} from "@web/core/registry";
import {useService} from "@web/core/utils/hooks";

const REFRESH_MS = 30000;
const BUS_DEBOUNCE_MS = 500;

/**
 * IoT > Fleet: devices online / offline / stale, messages per minute and
 * recent refused logins, each with a link to the list behind it. Read with
 * the user's rights (iot.mqtt.device.get_fleet_dashboard); refreshed when
 * the bus announces a presence change, and every 30 seconds.
 */
export class FleetDashboard extends Component {
    static template = "iot_base.FleetDashboard";
    static props = ["*"];

    setup() {
        this.orm = useService("orm");
        this.action = useService("action");
        this.presence = useState(useService("iot_base_presence"));
        this.state = useState({data: null});
        onWillStart(() => this.load());
        const timer = setInterval(() => this.load(), REFRESH_MS);
        let pending = null;
        useEffect(
            (version) => {
                if (version) {
                    clearTimeout(pending);
                    pending = setTimeout(() => this.load(), BUS_DEBOUNCE_MS);
                }
            },
            () => [this.presence.version]
        );
        onWillUnmount(() => {
            clearInterval(timer);
            clearTimeout(pending);
        });
    }

    async load() {
        this.state.data = await this.orm.call(
            "iot.mqtt.device",
            "get_fleet_dashboard",
            []
        );
    }

    get bars() {
        const series = this.state.data.series;
        const max = Math.max(1, ...series.map((point) => point.messages));
        return series.map((point, index) => ({
            x: index * 5,
            height: Math.round((point.messages / max) * 60),
            title: `${point.minute} UTC: ${point.messages}`,
        }));
    }

    openDevices(state) {
        this.action.doAction({
            type: "ir.actions.act_window",
            name: _t("Devices: %s", this.state.data.labels[state]),
            res_model: "iot.mqtt.device",
            views: [
                [false, "list"],
                [false, "kanban"],
                [false, "form"],
            ],
            domain: [["presence_state", "=", state]],
        });
    }

    openThroughput() {
        this.action.doAction("iot_base.iot_throughput_action");
    }

    openRefusedLogins() {
        this.action.doAction({
            type: "ir.actions.act_window",
            name: _t("Refused Logins"),
            res_model: "iot.auth.log",
            views: [
                [false, "list"],
                [false, "form"],
            ],
            domain: [
                ["result", "=", "deny"],
                ["action", "=", false],
            ],
        });
    }

    openLogin(id) {
        this.action.doAction({
            type: "ir.actions.act_window",
            res_model: "iot.auth.log",
            res_id: id,
            views: [[false, "form"]],
        });
    }
}

registry.category("actions").add("iot_base.fleet_dashboard", FleetDashboard);
