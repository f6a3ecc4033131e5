/** @odoo-module **/
// License LGPL-3.0 or later (https://www.gnu.org/licenses/lgpl).
import {Component, useState} from "@odoo/owl";
import {registry} from "@web/core/registry";
import {standardFieldProps} from "@web/views/fields/standard_field_props";
import {useService} from "@web/core/utils/hooks";

const COLORS = {
    online: "text-bg-success",
    offline: "text-bg-danger",
    stale: "text-bg-warning",
    unknown: "text-bg-secondary",
};

/** A device's presence as a badge, updated live from the bus. */
export class PresenceBadge extends Component {
    static template = "iot_base.PresenceBadge";
    static props = {...standardFieldProps};

    setup() {
        this.presence = useState(useService("iot_base_presence"));
    }

    get live() {
        return this.presence.devices[this.props.record.resId];
    }

    get value() {
        return this.live
            ? this.live.presence_state
            : this.props.record.data[this.props.name];
    }

    /** Why Odoo ended the connection (revoked, new broker token...), if so. */
    get reason() {
        const reason = this.live
            ? this.live.presence_reason
            : this.props.record.data.presence_reason;
        if (!reason) {
            return "";
        }
        const selection = this.props.record.fields.presence_reason?.selection || [];
        const option = selection.find(([key]) => key === reason);
        return option ? option[1] : reason;
    }

    get label() {
        const selection = this.props.record.fields[this.props.name].selection || [];
        const option = selection.find(([key]) => key === this.value);
        return option ? option[1] : this.value;
    }

    get colorClass() {
        return COLORS[this.value] || COLORS.unknown;
    }
}

registry.category("fields").add("iot_presence_badge", {
    component: PresenceBadge,
    displayName: "IoT Presence",
    supportedTypes: ["selection"],
});
