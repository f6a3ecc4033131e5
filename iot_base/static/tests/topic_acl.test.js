import {describe, expect, test} from "@odoo/hoot";
import {
    authorize,
    filterCovers,
    isValidTopicFilter,
    isValidTopicName,
    topicMatches,
} from "@iot_base/utils/topic_acl.esm";

// The same tables as iot_base/tests/test_topic_acl.py: the browser must decide
// like the server (test_iot_app.py also compares both on generated cases).

describe.current.tags("headless");

function rule(permission, action, topic, {qos = null, retain = null} = {}) {
    return {permission, action, topic, qos, retain};
}

test("validation", () => {
    for (const name of ["a", "a/b", "/", "a//b", "$SYS/x", "é/ü"]) {
        expect(isValidTopicName(name)).toBe(true, {message: name});
    }
    for (const name of ["", "a/+", "#", "a\u0000b", "a".repeat(65536)]) {
        expect(isValidTopicName(name)).toBe(false, {message: name.slice(0, 10)});
    }
    for (const filter of ["#", "+", "a/#", "+/+", "a/+/b", "/", "a//#", "$SYS/#"]) {
        expect(isValidTopicFilter(filter)).toBe(true, {message: filter});
    }
    for (const filter of ["", "a/#/b", "a#", "a+/b", "#/", "a/b#", "\uD800"]) {
        expect(isValidTopicFilter(filter)).toBe(false, {message: filter});
    }
});

test("matching follows MQTT 3.1.1 section 4.7", () => {
    const table = [
        ["sport/tennis/player1/#", "sport/tennis/player1", true],
        ["sport/tennis/player1/#", "sport/tennis/player1/ranking", true],
        ["sport/#", "sport", true],
        ["#", "a/b/c", true],
        ["#", "/", true],
        ["sport/tennis/+", "sport/tennis/player1", true],
        ["sport/tennis/+", "sport/tennis/player1/ranking", false],
        ["sport/+", "sport", false],
        ["sport/+", "sport/", true],
        ["+/+", "/finance", true],
        ["/+", "/finance", true],
        ["+", "/finance", false],
        ["a/+/b", "a//b", true],
        ["#", "$SYS/x", false],
        ["+/x", "$SYS/x", false],
        ["+", "$SYS", false],
        ["$SYS/#", "$SYS", true],
        ["a/+", "a/$x", true],
        ["a", "a/b", false],
        ["a/#", "a+", false],
        ["a/#/b", "a/x/b", false],
    ];
    for (const [filter, topic, expected] of table) {
        expect(topicMatches(filter, topic)).toBe(expected, {
            message: `${filter} ${topic}`,
        });
    }
});

test("a rule covers a filter only if it matches all its topics", () => {
    const table = [
        ["a/+", "a/#", false],
        ["a/#", "a/+/b", true],
        ["a/#", "a", true],
        ["a/+", "a/b", true],
        ["a/b", "a/+", false],
        ["#", "$SYS/#", false],
        ["$SYS/#", "$SYS/+", true],
        ["+/#", "#", true],
        ["+", "#", false],
        ["#", "+/+", true],
        ["+/+", "#", false],
        ["a/+/#", "a/#", false],
        ["a", "a/#", false],
        ["a/+", "a/#/", false],
    ];
    for (const [ruleFilter, sub, expected] of table) {
        expect(filterCovers(ruleFilter, sub)).toBe(expected, {
            message: `${ruleFilter} ${sub}`,
        });
    }
});

test("publish: first match wins, qos and retain constraints, default deny", () => {
    const rules = [
        rule("deny", "all", "$SYS/#"),
        rule("deny", "publish", "devices/c1/secret"),
        rule("allow", "publish", "devices/c1/#", {qos: [0, 1]}),
        rule("allow", "publish", "retained/+", {retain: true}),
        rule("allow", "subscribe", "up/#"),
    ];
    expect(authorize(rules, "publish", "devices/c1/x")).toBe("allow");
    expect(authorize(rules, "publish", "devices/c1")).toBe("allow");
    expect(authorize(rules, "publish", "devices/c1/x", 2)).toBe("deny");
    expect(authorize(rules, "publish", "devices/c1/secret")).toBe("deny");
    expect(authorize(rules, "publish", "devices/c2/x")).toBe("deny");
    expect(authorize(rules, "publish", "retained/a", 0, true)).toBe("allow");
    expect(authorize(rules, "publish", "retained/a", 0, false)).toBe("deny");
    expect(authorize(rules, "publish", "up/x")).toBe("deny");
    expect(authorize(rules, "publish", "devices/c1/+")).toBe("deny");
    expect(authorize(rules, "publish", "devices/c1/x", 3)).toBe("deny");
    expect(authorize([], "publish", "a")).toBe("deny");
    expect(() => authorize(rules, "connect", "a")).toThrow();
});

test("subscribe: every topic of the filter must be allowed", () => {
    const rules = [
        rule("deny", "subscribe", "a/b"),
        rule("allow", "subscribe", "a/#"),
        rule("allow", "all", "c/+"),
        rule("allow", "subscribe", "d"),
        rule("allow", "subscribe", "d/+/#"),
        rule("allow", "subscribe", "q/#", {qos: [0]}),
        rule("allow", "subscribe", "$SYS/#"),
        rule("allow", "subscribe", "e/+"),
        rule("allow", "subscribe", "e/+/+"),
    ];
    const cases = [
        ["a/c", "allow"],
        ["a/b", "deny"],
        ["a/+", "deny"],
        ["a/#", "deny"],
        ["a/b/c", "allow"],
        ["a/+/c", "allow"],
        ["a", "allow"],
        ["c/x", "allow"],
        ["c/+", "allow"],
        ["c/#", "deny"],
        ["c", "deny"],
        ["d/#", "allow"],
        ["d/x/#", "allow"],
        ["e/#", "deny"],
        ["e/+/#", "deny"],
        ["e/+/+", "allow"],
        ["#", "deny"],
        ["+/#", "deny"],
        ["$SYS/#", "allow"],
        ["$SYS/+", "allow"],
        ["+", "deny"],
        ["q/#", "allow"],
        ["a/b/+/#/x", "deny"],
        ["", "deny"],
    ];
    for (const [filter, expected] of cases) {
        expect(authorize(rules, "subscribe", filter)).toBe(expected, {message: filter});
    }
    expect(authorize(rules, "subscribe", "q/#", 1)).toBe("deny");
    expect(authorize([], "subscribe", "a")).toBe("deny");
    expect(authorize([rule("allow", "subscribe", "#")], "subscribe", "#")).toBe(
        "allow"
    );
    expect(authorize([rule("allow", "subscribe", "#")], "subscribe", "$SYS/#")).toBe(
        "deny"
    );
    expect(authorize([rule("allow", "subscribe", "+/x")], "subscribe", "+/x")).toBe(
        "allow"
    );
});
