import {App} from "@odoo/owl";
import {rpcBus} from "@web/core/network/rpc";

// iot_base/tests/test_all_views.py: open every screen of the IoT app the
// test read from the database (every menu, every view type of its action,
// every window-opening button of the device and credential views), in the
// running web client, and fail on the first client error: an error dialog
// ("Oops!", an RPC's warning), a rejected action, a view that never renders.

const TIMEOUT = 30000;

const pendingRpc = new Set();
let lastRpcError = null;

function hasScheduledTask() {
    for (const app of App.apps) {
        if (app.scheduler.tasks.size) {
            return true;
        }
    }
    return false;
}

function errorDialog() {
    const dialog = document.querySelector(".o_error_dialog");
    if (!dialog) {
        return null;
    }
    const rpc = lastRpcError
        ? ` (last RPC error: ${JSON.stringify(lastRpcError)})`
        : "";
    return `error dialog: ${dialog.innerText.trim().slice(0, 2000)}${rpc}`;
}

/**
 * Wait until `ready()` holds with no RPC in flight and nothing left for Owl
 * to render; throw on an error dialog or after TIMEOUT.
 */
async function settle(ready, what) {
    const start = Date.now();
    for (;;) {
        const error = errorDialog();
        if (error) {
            throw new Error(error);
        }
        if (!pendingRpc.size && !hasScheduledTask() && ready()) {
            // one more frame: an error raised while rendering shows its dialog
            await new Promise((resolve) => requestAnimationFrame(resolve));
            const late = errorDialog();
            if (late) {
                throw new Error(late);
            }
            return;
        }
        if (Date.now() - start > TIMEOUT) {
            const rpcs = pendingRpc.size ? ` (${pendingRpc.size} RPC pending)` : "";
            const tasks = hasScheduledTask() ? " (Owl still rendering)" : "";
            throw new Error(`timeout waiting for ${what}${rpcs}${tasks}`);
        }
        await new Promise((resolve) => setTimeout(resolve, 25));
    }
}

function mainView(viewType) {
    return () =>
        Boolean(document.querySelector(`.o_action_manager .o_${viewType}_view`));
}

function clientAction() {
    return Boolean(document.querySelector(".o_action_manager > *"));
}

function dialogView() {
    // a target=new window renders its view inside a dialog
    return Boolean(document.querySelector(".o_dialog .o_view_controller"));
}

async function closeDialogs(action) {
    if (document.querySelector(".o_dialog")) {
        await action.doAction({type: "ir.actions.act_window_close"});
        await settle(() => !document.querySelector(".o_dialog"), "the dialog to close");
    }
}

async function openView(action, step) {
    const options = {
        clearBreadcrumbs: true,
        viewType: step.view_type,
        additionalContext: step.context || {},
    };
    if (step.res_id) {
        options.props = {resId: step.res_id};
    }
    await action.doAction(step.action_id, options);
    await settle(mainView(step.view_type), `the ${step.view_type} view`);
    for (const {selector, text} of step.expect || []) {
        const found = [...document.querySelectorAll(selector)].some((el) =>
            el.innerText.includes(text)
        );
        if (!found) {
            throw new Error(`no "${text}" in ${selector}`);
        }
    }
}

async function openMenu(menu, step) {
    await menu.selectMenu(step.menu_id);
    await settle(clientAction, "the menu's action");
}

async function clickButton(action, step) {
    // the record's form first, as a user sees the button
    await action.doAction(
        {
            type: "ir.actions.act_window",
            res_model: step.model,
            res_id: step.res_id,
            views: [[false, "form"]],
        },
        {clearBreadcrumbs: true}
    );
    await settle(mainView("form"), "the record's form");
    // what the form does on a click (a type=object button: the method's action)
    await action.doActionButton({
        type: step.type,
        name: step.name,
        resModel: step.model,
        resId: step.res_id,
        resIds: [step.res_id],
        context: {},
    });
    await settle(() => dialogView() || clientAction(), "the window the button opens");
    await closeDialogs(action);
}

export async function openAllViews(steps) {
    const env = odoo.__WOWL_DEBUG__.root.env;
    const {action, dialog, menu} = env.services;
    rpcBus.addEventListener("RPC:REQUEST", ({detail}) =>
        pendingRpc.add(detail.data.id)
    );
    rpcBus.addEventListener("RPC:RESPONSE", ({detail}) => {
        pendingRpc.delete(detail.data.id);
        if (detail.error) {
            lastRpcError = {url: detail.url, error: String(detail.error.message)};
        }
    });
    // every broken screen is reported, not only the first one
    const failures = [];
    for (const step of steps) {
        console.log(`iot_all_views: ${step.label}`);
        lastRpcError = null;
        try {
            if (step.kind === "menu") {
                await openMenu(menu, step);
            } else if (step.kind === "view") {
                await openView(action, step);
            } else if (step.kind === "button") {
                await clickButton(action, step);
            } else {
                throw new Error(`unknown step kind ${step.kind}`);
            }
        } catch (error) {
            const cause = error.cause ? ` (${error.cause.message || error.cause})` : "";
            failures.push(`${step.label}: ${error.message || error}${cause}`);
            dialog.closeAll();
            await settle(
                () => !document.querySelector(".o_dialog"),
                "the dialogs to close"
            );
        }
    }
    if (failures.length) {
        console.error(
            `iot_all_views: ${failures.length} screen(s) failed:\n${failures.join("\n")}`
        );
    } else {
        console.log("iot all views succeeded");
    }
}
