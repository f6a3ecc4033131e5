/** @odoo-module **/
// License LGPL-3.0 or later (https://www.gnu.org/licenses/lgpl).
import {reactive} from "@odoo/owl";
import {registry} from "@web/core/registry";

/**
 * The presence changes the listener (odoo-bin iot-listen) announces on
 * Odoo's bus, for the companies the user is allowed in: a reactive, read-only
 * map device id -> {presence_state, presence_since, presence_reason}, and a counter that
 * changes with each notification.
 */
export const presenceService = {
    dependencies: ["bus_service"],
    start(env, {bus_service}) {
        const state = reactive({devices: {}, version: 0});
        bus_service.subscribe("iot_base.presence", ({devices}) => {
            for (const device of devices || []) {
                state.devices[device.id] = {
                    presence_state: device.presence_state,
                    presence_since: device.presence_since,
                    presence_reason: device.presence_reason || false,
                };
            }
            state.version++;
        });
        bus_service.start();
        return state;
    },
};

registry.category("services").add("iot_base_presence", presenceService);
