import {Component, whenReady} from "@odoo/owl";
import {MainComponentsContainer} from "@web/core/main_components_container";
import {user} from "@web/core/user";
import {mountComponent} from "@web/env";
import {MqttConsole} from "./mqtt_console.esm";

/** The /iot/app page: an Odoo-looking frame around the MQTT console. */
export class IotApp extends Component {
    static template = "iot_base.IotApp";
    static components = {MainComponentsContainer, MqttConsole};
    static props = {};

    setup() {
        this.userName = user.name;
    }
}

whenReady(() => {
    // only on the page rendered by the iot_base.iot_app_page template
    if (document.body.classList.contains("o_iot_app_page")) {
        mountComponent(IotApp, document.body);
    }
});
