export const MAX_MESSAGES = 200;
export const MAX_PAYLOAD_CHARS = 4000;
// Bigger payloads are not parsed, only cut
const MAX_JSON_BYTES = 256 * 1024;
const decoder = new TextDecoder("utf-8", {fatal: true});

function pad(n, size = 2) {
    return String(n).padStart(size, "0");
}

export function formatTime(ms) {
    const d = new Date(ms);
    const time = `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
    return `${time}.${pad(d.getMilliseconds(), 3)}`;
}

function hexPreview(bytes) {
    const shown = bytes.slice(0, MAX_PAYLOAD_CHARS / 3);
    return {
        kind: "binary",
        text: [...shown].map((b) => b.toString(16).padStart(2, "0")).join(" "),
        size: bytes.length,
        truncated: shown.length < bytes.length,
    };
}

/**
 * How a payload is shown: pretty JSON when it is JSON, text when it is
 * UTF-8, a hex preview otherwise; never more than MAX_PAYLOAD_CHARS.
 */
export function formatPayload(bytes) {
    const size = bytes.length;
    let text = "";
    try {
        text = decoder.decode(bytes);
    } catch {
        return hexPreview(bytes);
    }
    let kind = "text";
    if (size <= MAX_JSON_BYTES && /^\s*[[{"\d\-tfn]/.test(text)) {
        try {
            text = JSON.stringify(JSON.parse(text), null, 2);
            kind = "json";
        } catch {
            // Not JSON: shown as text
        }
    }
    const truncated = text.length > MAX_PAYLOAD_CHARS;
    return {
        kind,
        text: truncated ? text.slice(0, MAX_PAYLOAD_CHARS) : text,
        size,
        truncated,
    };
}

/**
 * The console's received messages, newest first, at most `maxMessages`;
 * while paused, new ones are held aside. Use it through useState().
 */
export class MessageLog {
    constructor(maxMessages = MAX_MESSAGES) {
        this.maxMessages = maxMessages;
        this.messages = [];
        this.held = [];
        this.received = 0;
        this.paused = false;
        this.nextId = 1;
    }

    /** Add a message of the "mqtt" service (see its subscribe()). */
    add(message) {
        const entry = {
            id: this.nextId++,
            time: formatTime(message.receivedAt),
            topic: message.topic,
            qos: message.qos,
            retain: message.retain,
            ...formatPayload(message.payload),
        };
        this.received++;
        const target = this.paused ? this.held : this.messages;
        target.unshift(entry);
        if (target.length > this.maxMessages) {
            target.length = this.maxMessages;
        }
    }

    togglePause() {
        if (this.paused) {
            const merged = [...this.held, ...this.messages];
            this.messages = merged.slice(0, this.maxMessages);
            this.held = [];
        }
        this.paused = !this.paused;
    }

    clear() {
        this.messages = [];
        this.held = [];
    }

    /** The messages whose topic or payload contains `search` (any case). */
    search(search) {
        const needle = search.trim().toLowerCase();
        if (!needle) {
            return this.messages;
        }
        return this.messages.filter(
            (m) =>
                m.topic.toLowerCase().includes(needle) ||
                m.text.toLowerCase().includes(needle)
        );
    }
}
