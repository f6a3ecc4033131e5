/** @odoo-module **/
// License LGPL-3.0 or later (https://www.gnu.org/licenses/lgpl).
import {
    Component,
    onMounted,
    onWillDestroy,
    onWillStart,
    status,
    useEffect,
    useRef,
    useState,
} from "@odoo/owl";
import {ConfirmationDialog} from "@web/core/confirmation_dialog/confirmation_dialog";
import {deserializeDateTime, formatDateTime} from "@web/core/l10n/dates";
import {_t} from "@web/core/l10n/translation";
import {loadBundle} from "@web/core/assets";
import {registry} from "@web/core/registry";
import {useService} from "@web/core/utils/hooks";

const REFRESH_MS = 30000;
const CLOCK_MS = 30000;
const BUS_DEBOUNCE_MS = 500;
const DEVICE_LIMIT = 80;
const COLORS = {
    online: "#28a745",
    offline: "#dc3545",
    stale: "#ffc107",
    unknown: "#adb5bd",
    messages: "#017e84",
    partial: "rgba(1, 126, 132, 0.35)",
    logins: "#dc3545",
};
const DEVICE_FIELDS = {
    name: {},
    hardware_id: {},
    presence_state: {},
    presence_reason: {},
    last_seen: {},
    firmware_version: {},
    state: {},
    fleet_id: {fields: {display_name: {}}},
    company_id: {fields: {display_name: {}}},
    tag_ids: {fields: {display_name: {}}},
};

/**
 * Relative time ("2 minutes ago") of a UTC datetime string, as Odoo's
 * RelativeTime does (mail): "now" under 45 seconds.
 */
export function relativeTime(value, now = Date.now()) {
    if (!value) {
        return "";
    }
    const datetime = deserializeDateTime(value);
    if (Math.abs(now - datetime.ts) < 45000) {
        return _t("now");
    }
    return datetime.toRelative({base: datetime.constructor.fromMillis(now)});
}

/**
 * IoT > Fleet: presence counts, charts (messages per minute over the last
 * hour with the current minute marked partial, presence, refused logins per
 * hour), the last refused logins, and the device list with live "last seen".
 * Read with the user's rights (iot.fleet.dashboard.get_dashboard_data and
 * the ORM); refreshed when the bus announces a presence change, and every 30
 * seconds; the relative times tick every 30 seconds.
 */
export class FleetDashboard extends Component {
    static template = "iot_base.FleetDashboard";
    static props = ["*"];

    setup() {
        this.orm = useService("orm");
        this.action = useService("action");
        this.dialog = useService("dialog");
        this.presence = useState(useService("iot_base_presence"));
        this.state = useState({
            data: null,
            devices: [],
            deviceCount: 0,
            selected: new Set(),
            now: Date.now(),
            search: "",
            presence: "",
            fleet: "",
            tag: "",
            company: "",
        });
        this.canvases = {
            messages: useRef("messagesChart"),
            presence: useRef("presenceChart"),
            logins: useRef("loginsChart"),
        };
        this.charts = {};
        onWillStart(async () => {
            await loadBundle("web.chartjs_lib");
            await this.load();
        });
        onMounted(() => this.renderCharts());
        useEffect(
            () => this.renderCharts(),
            () => [this.state.data]
        );
        const timer = setInterval(() => this.load(), REFRESH_MS);
        const clock = setInterval(() => (this.state.now = Date.now()), CLOCK_MS);
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
        // (also when the page is left before it was mounted: then no
        // onWillUnmount runs, and the timers would call a dead component)
        onWillDestroy(() => {
            clearInterval(timer);
            clearInterval(clock);
            clearTimeout(pending);
            for (const chart of Object.values(this.charts)) {
                chart.destroy();
            }
        });
    }

    async load() {
        if (status(this) === "destroyed") {
            // left while the chart library loaded, or a late timer
            return;
        }
        const [data] = await Promise.all([
            this.orm.call("iot.fleet.dashboard", "get_dashboard_data", []),
            this.loadDevices(),
        ]);
        this.state.data = data;
        this.state.now = Date.now();
    }

    // ------------------------------------------------------------------
    // Device list
    // ------------------------------------------------------------------

    get deviceDomain() {
        const domain = [];
        const {search, presence, fleet, tag, company} = this.state;
        if (search) {
            domain.push("|", "|");
            domain.push(["name", "ilike", search]);
            domain.push(["hardware_id", "ilike", search]);
            domain.push(["username", "ilike", search]);
        }
        if (presence) {
            domain.push(["presence_state", "=", presence]);
        }
        if (fleet) {
            domain.push(["fleet_id", "=", Number(fleet)]);
        }
        if (tag) {
            domain.push(["tag_ids", "in", [Number(tag)]]);
        }
        if (company) {
            domain.push(["company_id", "=", Number(company)]);
        }
        return domain;
    }

    async loadDevices() {
        const {length, records} = await this.orm.webSearchRead(
            "iot.mqtt.device",
            this.deviceDomain,
            {specification: DEVICE_FIELDS, limit: DEVICE_LIMIT, order: "name, id"}
        );
        const peers = records.length
            ? await this.orm.call("iot.fleet.dashboard", "get_device_peers", [
                  records.map((device) => device.id),
              ])
            : {};
        for (const device of records) {
            device.peer = peers[device.id] || "";
        }
        this.state.devices = records;
        this.state.deviceCount = length;
        const ids = new Set(records.map((device) => device.id));
        this.state.selected = new Set(
            [...this.state.selected].filter((id) => ids.has(id))
        );
    }

    onFilter(key, ev) {
        this.state[key] = ev.target.value;
        this.loadDevices();
    }

    lastSeen(device) {
        // state.now is read: the text is rendered again when the clock ticks
        return relativeTime(device.last_seen, this.state.now);
    }

    lastSeenTitle(device) {
        return device.last_seen
            ? formatDateTime(deserializeDateTime(device.last_seen))
            : "";
    }

    toggle(device, ev) {
        const selected = new Set(this.state.selected);
        if (ev.target.checked) {
            selected.add(device.id);
        } else {
            selected.delete(device.id);
        }
        this.state.selected = selected;
    }

    toggleAll(ev) {
        this.state.selected = new Set(
            ev.target.checked ? this.state.devices.map((device) => device.id) : []
        );
    }

    openDevice(device) {
        this.action.doAction({
            type: "ir.actions.act_window",
            res_model: "iot.mqtt.device",
            res_id: device.id,
            views: [[false, "form"]],
        });
    }

    openDeviceList() {
        // the Devices list, filtered as here: its own actions apply
        this.action.doAction({
            type: "ir.actions.act_window",
            name: _t("Devices"),
            res_model: "iot.mqtt.device",
            views: [
                [false, "list"],
                [false, "kanban"],
                [false, "form"],
            ],
            domain: this.deviceDomain,
        });
    }

    async sendCommand() {
        // the device's own action: the Send Command wizard
        const action = await this.orm.call("iot.mqtt.device", "action_send_command", [
            [...this.state.selected],
        ]);
        await this.action.doAction(action, {onClose: () => this.load()});
    }

    revoke() {
        const ids = [...this.state.selected];
        this.dialog.add(ConfirmationDialog, {
            title: _t("Revoke devices"),
            body: _t(
                "Revoke %s device(s)? The broker refuses them from now on; a revoked device is restored from its form, with a new secret.",
                ids.length
            ),
            confirmLabel: _t("Revoke"),
            confirm: async () => {
                await this.orm.call("iot.mqtt.device", "action_revoke", [ids]);
                this.state.selected = new Set();
                await this.load();
            },
            cancel: () => undefined,
        });
    }

    // ------------------------------------------------------------------
    // Charts (Odoo's Chart.js, with its luxon adapter: web.chartjs_lib)
    // ------------------------------------------------------------------

    renderCharts() {
        const data = this.state.data;
        if (!data) {
            return;
        }
        if (this.canvases.messages.el) {
            this.drawChart("messages", this.messagesChart(data));
        }
        if (this.canvases.presence.el) {
            this.drawChart("presence", this.presenceChart(data));
        }
        if (this.canvases.logins.el) {
            this.drawChart("logins", this.loginsChart(data));
        }
    }

    drawChart(key, config) {
        const canvas = this.canvases[key].el;
        const chart = this.charts[key];
        if (chart && chart.canvas === canvas) {
            chart.data = config.data;
            chart.update("none");
            return;
        }
        if (chart) {
            chart.destroy();
        }
        // eslint-disable-next-line no-undef
        this.charts[key] = new Chart(canvas, config);
    }

    timeScale(unit, title) {
        return {
            type: "time",
            time: {unit, tooltipFormat: unit === "hour" ? "DD HH:mm" : "HH:mm"},
            ticks: {maxRotation: 0, autoSkip: true},
            title: {display: true, text: title},
        };
    }

    messagesChart(data) {
        const points = data.series;
        return {
            type: "bar",
            data: {
                labels: points.map((p) => deserializeDateTime(p.minute).toMillis()),
                datasets: [
                    {
                        label: _t("Messages"),
                        data: points.map((p) => p.messages),
                        backgroundColor: points.map((p) =>
                            p.partial ? COLORS.partial : COLORS.messages
                        ),
                        borderColor: COLORS.messages,
                        borderWidth: points.map((p) => (p.partial ? 1 : 0)),
                        borderDash: [3, 3],
                    },
                ],
            },
            options: {
                maintainAspectRatio: false,
                animation: false,
                scales: {
                    x: this.timeScale("minute", _t("Time (minute)")),
                    y: {
                        beginAtZero: true,
                        ticks: {precision: 0},
                        title: {display: true, text: _t("Messages / minute")},
                    },
                },
                plugins: {
                    legend: {display: false},
                    tooltip: {
                        callbacks: {
                            afterLabel: (item) =>
                                points[item.dataIndex].partial
                                    ? _t("(this minute, still counting)")
                                    : "",
                        },
                    },
                },
            },
        };
    }

    presenceChart(data) {
        const keys = ["online", "offline", "stale", "unknown"];
        return {
            type: "doughnut",
            data: {
                labels: keys.map((key) => data.labels[key]),
                datasets: [
                    {
                        data: keys.map((key) => data.presence[key]),
                        backgroundColor: keys.map((key) => COLORS[key]),
                    },
                ],
            },
            options: {
                maintainAspectRatio: false,
                animation: false,
                plugins: {legend: {position: "right"}},
            },
        };
    }

    loginsChart(data) {
        const points = data.logins_per_hour;
        return {
            type: "bar",
            data: {
                labels: points.map((p) => deserializeDateTime(p.hour).toMillis()),
                datasets: [
                    {
                        label: _t("Refused logins"),
                        data: points.map((p) => p.count),
                        backgroundColor: COLORS.logins,
                    },
                ],
            },
            options: {
                maintainAspectRatio: false,
                animation: false,
                scales: {
                    x: this.timeScale("hour", _t("Time (hour)")),
                    y: {
                        beginAtZero: true,
                        ticks: {precision: 0},
                        title: {display: true, text: _t("Refused logins / hour")},
                    },
                },
                plugins: {legend: {display: false}},
            },
        };
    }

    // ------------------------------------------------------------------
    // Links
    // ------------------------------------------------------------------

    formatTime(value) {
        return formatDateTime(deserializeDateTime(value));
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
