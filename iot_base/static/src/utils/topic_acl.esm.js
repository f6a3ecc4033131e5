/**
 * MQTT topic ACLs in the browser: the same decisions as the server's
 * iot_base/tools/topic_acl.py (authorize), so that the console refuses a
 * filter or a topic before the broker has to.
 *
 * Semantics (MQTT 3.1.1 section 4.7): "+" matches exactly one (possibly
 * empty) level, "#" its own level and every level below *including the
 * parent* ("a/#" matches "a"), a wildcard in the first level never matches a
 * topic starting with "$". Rules are tried first-match, default deny. A
 * SUBSCRIBE filter is allowed only if every topic it can match is allowed.
 *
 * A rule is {permission: "allow"|"deny", action: "publish"|"subscribe"|"all",
 * topic, qos: null|number[], retain: null|boolean} (placeholders already
 * expanded by the server).
 */

export const ALLOW = "allow";
export const DENY = "deny";
export const MAX_TOPIC_LENGTH = 65535; // bytes of UTF-8

// A word that cannot be a real topic level (levels never contain NUL): stands
// for "any level that is not one of the literals under consideration".
const FRESH = "\u0000";
const encoder = new TextEncoder();

function utf8LengthOk(s) {
    // lone surrogates are not valid UTF-8
    if (
        /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/.test(s)
    ) {
        return false;
    }
    return s.length <= MAX_TOPIC_LENGTH && encoder.encode(s).length <= MAX_TOPIC_LENGTH;
}

/** A valid topic *name* (what PUBLISH carries): no wildcard, not empty. */
export function isValidTopicName(s) {
    return (
        typeof s === "string" &&
        s !== "" &&
        !s.includes("+") &&
        !s.includes("#") &&
        !s.includes("\u0000") &&
        utf8LengthOk(s)
    );
}

/** A valid topic *filter*: "+" a whole level, "#" only as the whole last level. */
export function isValidTopicFilter(s) {
    if (typeof s !== "string" || s === "" || s.includes("\u0000") || !utf8LengthOk(s)) {
        return false;
    }
    const levels = s.split("/");
    const last = levels.length - 1;
    return levels.every((level, i) => {
        if (level === "+" || level === "") {
            return true;
        }
        if (level === "#") {
            return i === last;
        }
        return !level.includes("+") && !level.includes("#");
    });
}

function isWild(token) {
    return token === "+" || token === "#";
}

function isDollarLiteral(token) {
    return !isWild(token) && token.startsWith("$");
}

/** Does filter `flt` match topic name `topic` (both level arrays)? */
function match(flt, topic) {
    const n = topic.length;
    for (let i = 0; i < flt.length; i++) {
        const f = flt[i];
        if (f === "#") {
            return !(i === 0 && topic[0].startsWith("$"));
        }
        if (i >= n) {
            return false;
        }
        const t = topic[i];
        if (f === "+") {
            if (i === 0 && t.startsWith("$")) {
                return false;
            }
        } else if (f !== t) {
            return false;
        }
    }
    return flt.length === n;
}

/** Is there a topic name matched by both filters? */
function intersects(f1, f2) {
    for (let i = 0; ; i++) {
        const a = i < f1.length ? f1[i] : null;
        const b = i < f2.length ? f2[i] : null;
        if (a === "#" || b === "#") {
            const other = a === "#" ? b : a;
            return !(i === 0 && other !== null && isDollarLiteral(other));
        }
        if (a === null || b === null) {
            return a === null && b === null;
        }
        if (a === "+" || b === "+") {
            const lit = a === "+" ? b : a;
            if (i === 0 && lit !== "+" && lit.startsWith("$")) {
                return false;
            }
        } else if (a !== b) {
            return false;
        }
    }
}

/** Is every topic name matched by `sub` matched by `rule`? */
function covers(rule, sub) {
    const nr = rule.length;
    for (let i = 0; i < sub.length; i++) {
        if (i >= nr) {
            return false;
        }
        const r = rule[i];
        const s = sub[i];
        if (r === "#") {
            return !(i === 0 && isDollarLiteral(s));
        }
        if (s === "#") {
            // "#" in sub also matches the parent, which a rule needing more
            // levels misses, except at level 0 where rule "+/#" covers "#"
            return i === 0 && r === "+" && nr === 2 && rule[1] === "#";
        }
        if (s === "+") {
            if (r !== "+") {
                return false;
            }
        } else if (r === "+") {
            if (i === 0 && s.startsWith("$")) {
                return false;
            }
        } else if (r !== s) {
            return false;
        }
    }
    const n = sub.length;
    return nr === n || (nr === n + 1 && rule[n] === "#");
}

/** Public helpers on strings (false when either side is invalid). */
export function topicMatches(topicFilter, topic) {
    if (!isValidTopicFilter(topicFilter) || !isValidTopicName(topic)) {
        return false;
    }
    return match(topicFilter.split("/"), topic.split("/"));
}

export function filterCovers(ruleFilter, subFilter) {
    if (!isValidTopicFilter(ruleFilter) || !isValidTopicFilter(subFilter)) {
        return false;
    }
    return covers(ruleFilter.split("/"), subFilter.split("/"));
}

function ruleApplies(rule, action, qos, retain) {
    if (rule.action !== "all" && rule.action !== action) {
        return false;
    }
    if (Array.isArray(rule.qos) && !rule.qos.includes(qos)) {
        return false;
    }
    if (
        action === "publish" &&
        rule.retain !== null &&
        rule.retain !== undefined &&
        rule.retain !== retain
    ) {
        return false;
    }
    return true;
}

/**
 * Is some topic name matched by `sub` not first-match allowed? Depth-first
 * over the levels of the topics of `sub`, branching on the literals of the
 * rules still alive plus one fresh word, memoised on (depth, alive rules);
 * see _find_denied_topic in topic_acl.py for why this is exact and finite.
 */
function findDeniedTopic(rules, sub) {
    const n = sub.length;
    const hashPos = sub[n - 1] === "#" ? n - 1 : null;
    const memo = new Map();

    function step(r, k, w) {
        const nr = r.length;
        if (r[nr - 1] === "#" && nr - 1 < k) {
            return true;
        }
        if (nr <= k) {
            return false;
        }
        const t = r[k];
        if (t === "+" || t === "#") {
            return !(k === 0 && w.startsWith("$"));
        }
        return t === w;
    }

    function bad(k, alive) {
        const key = `${k}|${alive.join(",")}`;
        if (!memo.has(key)) {
            // eslint-disable-next-line no-use-before-define -- mutual recursion (hoisted)
            memo.set(key, computeBad(k, alive));
        }
        return memo.get(key);
    }

    function computeBad(k, alive) {
        if (!alive.length) {
            return true;
        }
        const [perm0, r0] = rules[alive[0]];
        if (k >= 1 && r0[r0.length - 1] === "#" && r0.length - 1 <= k) {
            // the first alive rule matches this topic and all continuations
            return perm0 !== ALLOW;
        }
        const inHash = hashPos !== null && k >= hashPos;
        const canEnd = k >= 1 && (hashPos !== null ? inHash : k === n);
        if (canEnd) {
            let decided = false;
            for (const i of alive) {
                const [perm, r] = rules[i];
                const nr = r.length;
                if (nr === k || (r[nr - 1] === "#" && nr - 1 <= k)) {
                    if (perm !== ALLOW) {
                        return true;
                    }
                    decided = true;
                    break;
                }
            }
            if (!decided) {
                return true;
            }
        }
        if (inHash || k < n) {
            let words = [sub[k]];
            if (inHash || sub[k] === "+") {
                const lits = new Set();
                for (const i of alive) {
                    const r = rules[i][1];
                    if (r.length > k && !isWild(r[k])) {
                        // a wildcard at level 0 never yields "$" topics
                        if (!(k === 0 && r[k].startsWith("$"))) {
                            lits.add(r[k]);
                        }
                    }
                }
                words = [...lits].sort();
                words.push(FRESH);
            }
            const seen = new Set();
            for (const w of words) {
                const next = alive.filter((i) => step(rules[i][1], k, w));
                const key = next.join(",");
                if (seen.has(key)) {
                    continue;
                }
                seen.add(key);
                if (bad(k + 1, next)) {
                    return true;
                }
            }
        }
        return false;
    }

    return bad(
        0,
        rules.map((_, i) => i)
    );
}

/**
 * Exact SUBSCRIBE decision, as in topic_acl.py: the first rule that meets
 * `sub` decides when it covers it or is a deny; an allow that only meets it
 * needs a search for a topic of `sub` that first-match denies.
 *
 * @param {Array<[string, string[]]>} rules [permission, levels] applicable
 * @param {string[]} sub
 */
function subscribeAllowed(rules, sub) {
    for (let idx = 0; idx < rules.length; idx++) {
        const [perm, r] = rules[idx];
        if (!intersects(r, sub)) {
            continue;
        }
        if (covers(r, sub)) {
            return perm === ALLOW;
        }
        if (perm === DENY) {
            return false;
        }
        return !findDeniedTopic(rules.slice(idx), sub);
    }
    return false;
}

/**
 * "allow" or "deny" for one request, rules tried in order, default deny.
 *
 * @param {Object[]} rules
 * @param {"publish"|"subscribe"} action
 * @param {string} topic a topic name (publish) or filter (subscribe)
 * @param {number} [qos]
 * @param {boolean} [retain] publish only
 */
export function authorize(rules, action, topic, qos = 0, retain = false) {
    if (action !== "publish" && action !== "subscribe") {
        throw new Error(`invalid action ${action}`);
    }
    if (![0, 1, 2].includes(qos)) {
        return DENY;
    }
    if (action === "publish") {
        if (!isValidTopicName(topic)) {
            return DENY;
        }
        const levels = topic.split("/");
        for (const rule of rules) {
            if (
                ruleApplies(rule, "publish", qos, Boolean(retain)) &&
                match(rule.topic.split("/"), levels)
            ) {
                return rule.permission;
            }
        }
        return DENY;
    }
    if (!isValidTopicFilter(topic)) {
        return DENY;
    }
    const applicable = rules
        .filter((rule) => ruleApplies(rule, "subscribe", qos))
        .map((rule) => [rule.permission, rule.topic.split("/")]);
    return subscribeAllowed(applicable, topic.split("/")) ? ALLOW : DENY;
}
