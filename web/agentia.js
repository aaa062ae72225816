// agentia.js: a dependency-free client for the `agentia.v1` WebSocket protocol (docs/protocol.md).
//
// Works as a plain ES module in browsers (no build step) and in Node 20+ (pass a WebSocket
// constructor, e.g. from the `ws` package, as `WebSocket`). What it does for you:
//
//   * connects with the token in the `bearer.<token>` subprotocol next to `agentia.v1`;
//   * reconnects with jittered exponential backoff, rotating over a list of URLs;
//   * resumes with {after, epoch}, buffers while resuming, dedupes by offset, detects gaps and
//     handles `resumed.recovered = false` (emits `reset`, then rebuilds the view);
//   * `send(text)` keeps every turn until its `ack`, resending it with the same id after
//     retryable errors, after reconnecting and after a page reload (it is persisted);
//   * pings every `heartbeat_s` and drops a connection that stopped answering;
//   * persists session id, epoch and last offset (sessionStorage per tab, the last session in
//     localStorage) so a reload or a new tab resumes the conversation.
//
//   const client = new AgentiaClient({urls: ["ws://127.0.0.1:8765/v1/ws"], token: getToken});
//   client.on("event", (ev) => render(ev));        // session log events, in order, each once
//   client.on("state", (state, previous) => ...);  // connecting | connected | reconnecting | resumed | closed
//   client.on("reset", () => clearView());         // the server lost history: rebuild from scratch
//   client.on("error", (err) => ...);              // AgentiaError (err.code, err.retryable, err.willRetry)
//   client.connect();
//   const ack = await client.send("hello");        // {id, offset, duplicate}; the promise has .id
//   for await (const ev of client) { ... }         // the same events as an async iterator

export const PROTOCOL = "agentia.v1";
export const STATES = Object.freeze(["connecting", "connected", "reconnecting", "resumed", "closed"]);
export const RETRYABLE_CODES = Object.freeze(
  // session_lost: the edge closes with 4004 next; the send goes again after the reconnect
  new Set(["rate_limited", "unavailable", "overloaded", "internal", "session_lost"]));
const CONTROL_TYPES = new Set(["welcome", "ack", "resumed", "cancelling", "pong", "error"]);
const SESSION_ID_RE = /^[A-Za-z0-9_.:-]{1,64}$/;
const OPEN = 1; // WebSocket.OPEN

/** An error reported by the server (an `error` frame) or by the client itself. */
export class AgentiaError extends Error {
  constructor(code, message, { retryable = false, ref = null, retryAfterMs = null, closeCode = null,
    willRetry = false } = {}) {
    super(message);
    this.name = "AgentiaError";
    this.code = code;
    this.retryable = retryable;
    this.ref = ref;
    this.retryAfterMs = retryAfterMs;
    this.closeCode = closeCode;
    this.willRetry = willRetry;
  }

  static fromFrame(f) {
    return new AgentiaError(String(f.code ?? "internal"), String(f.message ?? ""), {
      retryable: f.retryable === true || RETRYABLE_CODES.has(f.code),
      ref: f.ref ?? null,
      retryAfterMs: Number.isFinite(f.retry_after_ms) ? f.retry_after_ms : null,
    });
  }
}

// ---------------------------------------------------------------------------------------------
// Pure logic (exported for tests)

/**
 * The edge's close codes (docs/protocol.md, section 8): name and whether to reconnect.
 * 4005 (the user's connections over all edges) reconnects with backoff; 4501 (another user's
 * session), 4502 (too many new sessions this hour: the app may retry later) and 4503 (too many
 * live sessions) stop the client, which reports an AgentiaError with `closeCode`.
 */
export const CLOSE_CODES = Object.freeze({
  1000: ["NORMAL", true], 1001: ["GOING_AWAY", true], 1009: ["MESSAGE_TOO_BIG", true],
  1011: ["INTERNAL_ERROR", true], 1012: ["SERVICE_RESTART", true],
  1013: ["TRY_AGAIN_LATER", true], 4000: ["SLOW", true], 4001: ["IDLE", true],
  4002: ["FLOOD", true], 4003: ["TOKEN_EXPIRED", true], 4004: ["SESSION_LOST", true],
  4005: ["TOO_MANY_CONNECTIONS", true], 4501: ["FORBIDDEN", false],
  4502: ["NEW_SESSIONS_RATE", false], 4503: ["TOO_MANY_SESSIONS", false],
});

/** Terminal close codes (do not reconnect): the table above, then 4500-4999. */
export function isTerminalClose(code) {
  if (Object.hasOwn(CLOSE_CODES, code)) return !CLOSE_CODES[code][1];
  return code >= 4500 && code <= 4999;
}

/**
 * Backoff before reconnect attempt `attempt` (0-based): exponential, capped, with "equal
 * jitter" (between half and all of the exponential delay, so never a tight loop).
 */
export function backoffDelay(attempt, { initialMs = 500, maxMs = 30000, factor = 2 } = {},
  random = Math.random) {
  const base = Math.min(maxMs, initialMs * factor ** Math.max(0, attempt));
  return Math.round(base / 2 + random() * (base / 2));
}

/** A session log event: a frame with an integer offset whose type is not a control frame. */
export function isLogEvent(f) {
  return f !== null && typeof f === "object" && Number.isInteger(f.offset) && f.offset > 0
    && typeof f.type === "string" && !CONTROL_TYPES.has(f.type);
}

/** Add `session=<id>` to a WebSocket URL. */
export function withSession(url, session) {
  if (!session) return url;
  return url + (url.includes("?") ? "&" : "?") + "session=" + encodeURIComponent(session);
}

/** Characters as the server counts them (code points, not UTF-16 units). */
export function countChars(text) {
  let n = 0;
  for (const _ of text) n++;
  return n;
}

function utf8Length(text) {
  return new TextEncoder().encode(text).length;
}

export function newClientId() {
  const c = globalThis.crypto;
  if (c && typeof c.randomUUID === "function") return "c-" + c.randomUUID().replaceAll("-", "");
  let s = "c-";
  for (let i = 0; i < 32; i++) s += Math.floor(Math.random() * 16).toString(16);
  return s;
}

/**
 * The resume algorithm of docs/protocol.md section 6, without I/O: feed it log events and
 * `resumed` frames, it says which events to apply (in order, each once) and when to resume.
 */
export class EventSequencer {
  constructor(last = 0, epoch = null) {
    this.last = last;
    this.epoch = epoch;
    this.resuming = false;
    this.buffer = new Map();
  }

  /** Start from a known point (e.g. `welcome.offset` when no history is wanted). */
  reset(last, epoch) {
    this.last = last;
    this.epoch = epoch;
    this.resuming = false;
    this.buffer.clear();
  }

  /** The `resume` frame to send; from now on log events are buffered until `resumed`. */
  resumeFrame() {
    this.resuming = true;
    const frame = { type: "resume", after: this.last };
    if (this.epoch !== null && this.last > 0) frame.epoch = this.epoch;
    return frame;
  }

  /** A log event arrived: returns {apply: [events], resume: bool (a gap: send resumeFrame())}. */
  onEvent(ev) {
    if (this.resuming) {
      this.buffer.set(ev.offset, ev);
      return { apply: [], resume: false };
    }
    if (ev.offset <= this.last) return { apply: [], resume: false };
    if (ev.offset === this.last + 1) {
      this.last = ev.offset;
      return { apply: [ev], resume: false };
    }
    this.buffer.set(ev.offset, ev);
    return { apply: [], resume: true };
  }

  /**
   * A `resumed` frame arrived. Returns {requested, reset, apply, behind}: `reset` means clear
   * the view before applying; `behind` means `last` is still below the server's offset.
   */
  onResumed(f) {
    if (!this.resuming) { // unrequested: Redis lost the session and it was opened again
      if (f.recovered === false) {
        this.reset(f.offset, f.epoch);
        return { requested: false, reset: true, apply: [], behind: false };
      }
      return { requested: false, reset: false, apply: [], behind: false };
    }
    this.resuming = false;
    const sorted = [...this.buffer.values()].sort((a, b) => a.offset - b.offset);
    this.buffer.clear();
    const apply = [];
    let reset = false;
    if (f.recovered === false) {
      reset = true;
      this.epoch = f.epoch;
      for (const ev of sorted) if (ev.offset <= f.offset) apply.push(ev);
      this.last = f.offset;
      for (const ev of sorted) {
        if (ev.offset === this.last + 1) { apply.push(ev); this.last = ev.offset; }
      }
    } else {
      if (this.epoch === null) this.epoch = f.epoch;
      for (const ev of sorted) {
        if (ev.offset <= this.last) continue;
        if (ev.offset !== this.last + 1) break; // the rest will come again
        apply.push(ev);
        this.last = ev.offset;
      }
    }
    return { requested: true, reset, apply, behind: this.last < f.offset };
  }
}

/** A minimal event emitter; listeners that throw are reported, never break the client. */
export class Emitter {
  constructor() { this._listeners = new Map(); }

  on(name, fn) {
    if (!this._listeners.has(name)) this._listeners.set(name, new Set());
    this._listeners.get(name).add(fn);
    return () => this.off(name, fn);
  }

  once(name, fn) {
    const off = this.on(name, (...args) => { off(); fn(...args); });
    return off;
  }

  off(name, fn) { this._listeners.get(name)?.delete(fn); }

  emit(name, ...args) {
    const set = this._listeners.get(name);
    if (!set) return;
    for (const fn of [...set]) {
      try { fn(...args); } catch (err) { setTimeout(() => { throw err; }, 0); }
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Storage of the session, epoch, last offset and unacknowledged sends

function defaultStorage(name) {
  try {
    const s = globalThis[name];
    if (s && typeof s.getItem === "function") return s;
  } catch { /* storage disabled (e.g. privacy settings) */ }
  return null;
}

function readJson(storage, key) {
  if (!storage) return null;
  try {
    const v = storage.getItem(key);
    return v ? JSON.parse(v) : null;
  } catch { return null; }
}

function writeJson(storage, key, value) {
  if (!storage) return;
  try {
    if (value === null) storage.removeItem(key); else storage.setItem(key, JSON.stringify(value));
  } catch { /* quota or disabled: persistence is best effort */ }
}

// ---------------------------------------------------------------------------------------------
// The client

/**
 * Options:
 *   urls            WebSocket URL or list of them (`ws://host:port/v1/ws`); rotated on reconnect
 *   token           a string, or a function ({refresh, attempt}) => token | Promise<token>;
 *                   `refresh` is true after 4003 TOKEN_EXPIRED or a failed handshake
 *   session         session id to open (default: the stored one, else a new session)
 *   history         "replay" (default: a fresh client resumes from 0 to rebuild the view),
 *                   "continue" (resume from the stored offset: for apps that persist their view),
 *                   "none" (only live events)
 *   storageKey      key prefix for persistence (default "agentia"); use one per user
 *   storage         per-tab storage (default sessionStorage), null to disable
 *   sharedStorage   storage shared by tabs for the last session (default localStorage)
 *   WebSocket       WebSocket constructor (default globalThis.WebSocket)
 *   backoff         {initialMs: 500, maxMs: 30000, factor: 2}
 *   connectTimeoutMs  opening handshake + welcome deadline (default 15000)
 *   ackTimeoutMs    resend an unacknowledged send after this long (default 15000)
 *   stableMs        a connection lasting this long resets the backoff (default 5000)
 *   random, setTimeout, clearTimeout, now   injectable for tests
 */
export class AgentiaClient extends Emitter {
  constructor(options = {}) {
    super();
    const urls = Array.isArray(options.urls) ? options.urls : [options.urls ?? options.url];
    this.urls = urls.filter((u) => typeof u === "string" && u.length > 0);
    if (this.urls.length === 0) throw new TypeError("AgentiaClient: at least one URL is required");
    this._WebSocket = options.WebSocket ?? globalThis.WebSocket;
    if (typeof this._WebSocket !== "function") {
      throw new TypeError("AgentiaClient: no WebSocket constructor (pass options.WebSocket)");
    }
    this._token = options.token ?? null;
    this.history = options.history ?? "replay";
    this.backoff = { initialMs: 500, maxMs: 30000, factor: 2, ...(options.backoff ?? {}) };
    this.connectTimeoutMs = options.connectTimeoutMs ?? 15000;
    this.ackTimeoutMs = options.ackTimeoutMs ?? 15000;
    this.stableMs = options.stableMs ?? 5000;
    this._random = options.random ?? Math.random;
    this._setTimeout = options.setTimeout ?? ((fn, ms) => globalThis.setTimeout(fn, ms));
    this._clearTimeout = options.clearTimeout ?? ((t) => globalThis.clearTimeout(t));
    this._now = options.now ?? (() => Date.now());
    this._storage = options.storage !== undefined ? options.storage : defaultStorage("sessionStorage");
    this._shared = options.sharedStorage !== undefined
      ? options.sharedStorage : defaultStorage("localStorage");
    this.storageKey = options.storageKey ?? "agentia";

    this.state = "idle";
    this.session = null;
    this.epoch = null;
    this.node = null;
    this.url = null;         // URL of the current (or last) connection
    this.limits = null;
    this._seq = new EventSequencer();
    this._pending = new Map(); // client id -> {id, text, resolve, reject, promise, timer}
    this._cancels = [];        // {turn, resolve, reject, sent}
    this._inflight = [];       // "resume" | "cancel", requests answered by ref-less frames
    this._ws = null;
    this._welcomed = false;
    this._everSynced = false;
    this._attempt = 0;
    this._urlIndex = Math.floor(this._random() * this.urls.length) % this.urls.length;
    this._refresh = false;
    this._timers = new Set();
    this._reconnectTimer = null;
    this._started = false;
    this._closed = false;
    this._openGen = 0;
    this._iterators = new Set();
    this._restore(options.session ?? null);
  }

  // -- public API ------------------------------------------------------------------------------

  /** Open the connection (reconnects by itself until close()). */
  connect() {
    if (this._started || this._closed) return this;
    this._started = true;
    this._setState("connecting");
    this._open();
    this._watchOnline(true);
    return this;
  }

  /** Close for good: no reconnect. Unacknowledged sends stay persisted for the next client. */
  close() {
    if (this._closed) return;
    this._closed = true;
    this._watchOnline(false);
    this._persist();
    this._clearAllTimers();
    const ws = this._ws;
    this._detach();
    if (ws) { try { ws.close(1000, "client closed"); } catch { /* already closing */ } }
    const err = new AgentiaError("closed", "the client was closed");
    for (const p of this._pending.values()) p.reject(err);
    for (const c of this._cancels) c.reject(err);
    this._pending.clear();
    this._cancels = [];
    this._setState("closed");
    for (const it of this._iterators) it.end();
  }

  /**
   * Submit a user turn. Resolves with the ack {id, offset, duplicate} once the turn is durably
   * stored (resending with the same id as long as needed); rejects only on a non-retryable
   * error (e.g. bad_frame) or close(). The returned promise has the client id as `.id`.
   */
  send(text, { id } = {}) {
    const maxChars = this.limits?.max_text_chars ?? 16000;
    const maxBytes = this.limits?.max_frame_bytes ?? 65536;
    const cid = id ?? newClientId();
    let error = null;
    if (typeof text !== "string" || text.trim() === "") {
      error = new AgentiaError("bad_frame", "text must be a non-empty string");
    } else if (countChars(text) > maxChars) {
      error = new AgentiaError("bad_frame", `text is longer than ${maxChars} characters`);
    } else if (utf8Length(JSON.stringify({ type: "send", id: cid, text })) > maxBytes) {
      // the server would close the connection with 1009
      error = new AgentiaError("bad_frame", `the message is larger than ${maxBytes} bytes`);
    } else if (this._closed) {
      error = new AgentiaError("closed", "the client was closed");
    }
    if (error) {
      const p = Promise.reject(error);
      p.id = cid;
      return p;
    }
    const existing = this._pending.get(cid);
    if (existing) return existing.promise;
    const entry = this._pendingEntry(cid, text);
    this._persist();
    this._transmit(entry);
    return entry.promise;
  }

  /** Cancel a turn (its ack offset), or the oldest unfinished one. Resolves with the turn. */
  cancel(turn = null) {
    if (this._closed) return Promise.reject(new AgentiaError("closed", "the client was closed"));
    return new Promise((resolve, reject) => {
      const c = { turn: turn ?? null, resolve, reject, sent: false };
      this._cancels.push(c);
      this._transmitCancel(c);
    });
  }

  /** Switch to another session (null: a new one). Unacknowledged sends of the old one are kept. */
  switchSession(session = null) {
    if (this._closed) throw new AgentiaError("closed", "the client was closed");
    if (session !== null && !SESSION_ID_RE.test(session)) {
      throw new TypeError("session id must match [A-Za-z0-9_.:-]{1,64}");
    }
    const err = new AgentiaError("switched", "the client switched sessions");
    for (const c of this._cancels) c.reject(err);
    this._cancels = [];
    this._persist();
    for (const p of this._pending.values()) { this._clearTimer(p.timer); p.reject(err); }
    this._pending.clear();
    this._restore(session, true);
    this._savedPending = undefined;
    this._persist();
    if (session !== null) this._persistShared();
    const ws = this._ws;
    this._detach();
    if (ws) { try { ws.close(1000, "switching session"); } catch { /* closing */ } }
    this._clearTimer(this._reconnectTimer);
    this._reconnectTimer = null;
    this._everSynced = false;
    this._attempt = 0;
    if (this._started) {
      this._setState("connecting");
      this._open();
    }
  }

  /** Unacknowledged sends, oldest first: [{id, text}] (e.g. to render them after a reload). */
  get pending() {
    return [...this._pending.values()].map(({ id, text }) => ({ id, text }));
  }

  /** The highest offset applied (all lower ones applied too). */
  get lastOffset() { return this._seq.last; }

  get connected() { return this.state === "connected" || this.state === "resumed"; }

  /** Log events as an async iterator (ends at close()). */
  events() {
    const queue = [];
    let wake = null;
    let done = this._closed;
    const it = {
      push: (ev) => { queue.push(ev); if (wake) { wake(); wake = null; } },
      end: () => { done = true; if (wake) { wake(); wake = null; } },
    };
    const off = this.on("event", it.push);
    this._iterators.add(it);
    const self = this;
    return {
      async next() {
        while (queue.length === 0 && !done) await new Promise((r) => { wake = r; });
        if (queue.length > 0) return { value: queue.shift(), done: false };
        return this.return();
      },
      async return() {
        off();
        self._iterators.delete(it);
        done = true;
        return { value: undefined, done: true };
      },
      [Symbol.asyncIterator]() { return this; },
    };
  }

  [Symbol.asyncIterator]() { return this.events(); }

  // -- persistence -------------------------------------------------------------------------------

  get _tabKey() { return `${this.storageKey}:tab`; }
  get _sharedKey() { return `${this.storageKey}:session`; }

  _pendingKey(session) { return `${this.storageKey}:pending:${session}`; }

  _restore(session, explicit = false) {
    const tab = readJson(this._storage, this._tabKey);
    const shared = readJson(this._shared, this._sharedKey);
    if (!explicit && session === null) session = tab?.session ?? shared?.session ?? null;
    if (session !== null && !SESSION_ID_RE.test(session)) session = null;
    this.session = session;
    this.epoch = null;
    this._seq = new EventSequencer();
    const same = session !== null && tab?.session === session;
    if (same && this.history === "continue" && Number.isInteger(tab.last) && tab.epoch) {
      this._seq = new EventSequencer(tab.last, tab.epoch);
      this.epoch = tab.epoch;
    }
    const saved = session === null ? null : readJson(this._storage, this._pendingKey(session));
    if (Array.isArray(saved)) {
      for (const p of saved) {
        if (p && typeof p.id === "string" && typeof p.text === "string" && !this._pending.has(p.id)) {
          this._pendingEntry(p.id, p.text).promise.catch(() => {});
        }
      }
    }
  }

  _persist() {
    writeJson(this._storage, this._tabKey,
      { session: this.session, epoch: this._seq.epoch, last: this._seq.last });
    if (this.session === null) return;
    // per session, so unacknowledged sends survive a reload and switching sessions in this tab
    const pending = this.pending;
    const text = JSON.stringify(pending);
    if (text !== this._savedPending) {
      writeJson(this._storage, this._pendingKey(this.session), pending.length ? pending : null);
      this._savedPending = text;
    }
  }

  /** The session new tabs open: the one this client used last. */
  _persistShared() {
    if (this.session !== null) writeJson(this._shared, this._sharedKey, { session: this.session });
  }

  // -- connection --------------------------------------------------------------------------------

  async _open() {
    if (this._closed) return;
    const gen = ++this._openGen;
    const attempt = this._attempt;
    const refresh = this._refresh;
    let token = null;
    try {
      token = typeof this._token === "function"
        ? await this._token({ refresh, attempt }) : this._token;
    } catch (err) {
      this._report(new AgentiaError("token_unavailable", `could not get a token: ${err?.message ?? err}`,
        { retryable: true, willRetry: true }));
      if (!this._closed && gen === this._openGen) this._scheduleReconnect();
      return;
    }
    if (this._closed || gen !== this._openGen || this._ws || this._reconnectTimer) return;
    const url = withSession(this.urls[this._urlIndex % this.urls.length], this.session);
    const protocols = token ? [PROTOCOL, `bearer.${token}`] : [PROTOCOL];
    let ws;
    try {
      ws = new this._WebSocket(url, protocols);
    } catch (err) {
      this._report(new AgentiaError("bad_url", `cannot open ${url}: ${err?.message ?? err}`,
        { willRetry: true }));
      this._scheduleReconnect();
      return;
    }
    this._ws = ws;
    this._welcomed = false;
    this._welcomedAt = 0;
    this._lastRecv = this._now();
    this._inflight = [];
    this.url = url;
    try { ws.binaryType = "arraybuffer"; } catch { /* not supported by this implementation */ }
    ws.onmessage = (m) => this._onMessage(ws, m.data);
    ws.onclose = (e) => this._onClose(ws, e?.code ?? 1006, e?.reason ?? "");
    ws.onerror = () => { /* a close event follows */ };
    this._connectTimer = this._after(this.connectTimeoutMs, () => {
      if (this._ws === ws && !this._welcomed) this._abandon(ws, "connect timeout");
    });
  }

  _detach() {
    const ws = this._ws;
    this._ws = null;
    this._welcomed = false;
    this._connSynced = false;
    this._clearTimer(this._connectTimer);
    this._clearTimer(this._pingTimer);
    this._connectTimer = this._pingTimer = null;
    if (ws) ws.onmessage = ws.onclose = ws.onerror = null;
  }

  /** Give up on a socket that does not answer (no waiting for its close event). */
  _abandon(ws, reason) {
    if (ws !== this._ws) return;
    try { ws.close(); } catch { /* ignore */ }
    this._onClose(ws, 1006, reason);
  }

  _onClose(ws, code, reason) {
    if (ws !== this._ws) return;
    const welcomed = this._welcomed;
    const stable = welcomed && this._now() - this._welcomedAt >= this.stableMs;
    this._detach();
    this._seq.resuming = false; // a resume in flight died with the socket: start afresh
    this._seq.buffer.clear();
    for (const c of this._cancels) c.sent = false;
    this.emit("close", { code, reason, url: this.url });
    if (this._closed) return;
    if (isTerminalClose(code)) {
      const err = new AgentiaError("closed", reason || `closed by the server (${code})`,
        { closeCode: code });
      this._report(err);
      this._closed = true;
      this._persist();
      for (const p of this._pending.values()) p.reject(err);
      for (const c of this._cancels) c.reject(err);
      this._pending.clear();
      this._cancels = [];
      this._setState("closed");
      for (const it of this._iterators) it.end();
      return;
    }
    if (code === 1009) {
      this._report(new AgentiaError("message_too_big", "a frame exceeded the server's size limit",
        { closeCode: code, willRetry: true }));
    }
    // a handshake refused by HTTP (401, 403, 429, 503) is seen only as a failed connection
    this._refresh = code === 4003 || !welcomed;
    // the backoff resets only after a connection lasted `stableMs`, not at each welcome, so a
    // server that accepts and closes at once is not hammered
    if (stable) this._attempt = 0;
    this._urlIndex = (this._urlIndex + 1) % this.urls.length;
    this._setState(this._everSynced ? "reconnecting" : "connecting");
    this._scheduleReconnect();
  }

  _scheduleReconnect() {
    if (this._closed || this._reconnectTimer) return;
    const delay = backoffDelay(this._attempt, this.backoff, this._random);
    this._attempt += 1;
    this.nextRetryAt = this._now() + delay;
    this._reconnectTimer = this._after(delay, () => {
      this._reconnectTimer = null;
      this._open();
    });
  }

  /** Reconnect now if waiting (e.g. the browser came back online). */
  reconnectNow() {
    if (this._closed || !this._reconnectTimer) return;
    this._clearTimer(this._reconnectTimer);
    this._reconnectTimer = null;
    this._open();
  }

  _watchOnline(on) {
    const g = globalThis;
    if (typeof g.addEventListener !== "function" || typeof g.removeEventListener !== "function") return;
    if (on && !this._onlineHandler) {
      this._onlineHandler = () => this.reconnectNow();
      g.addEventListener("online", this._onlineHandler);
    } else if (!on && this._onlineHandler) {
      g.removeEventListener("online", this._onlineHandler);
      this._onlineHandler = null;
    }
  }

  _onMessage(ws, data) {
    if (ws !== this._ws) return;
    this._lastRecv = this._now();
    let f;
    try {
      if (typeof data !== "string") data = new TextDecoder().decode(data);
      f = JSON.parse(data);
    } catch {
      this._report(new AgentiaError("bad_server_frame", "the server sent a frame that is not JSON"));
      return;
    }
    if (f === null || typeof f !== "object") return;
    switch (f.type) {
      case "welcome": return this._onWelcome(f);
      case "ack": return this._onAck(f);
      case "resumed": return this._onResumed(f);
      case "cancelling": return this._onCancelling(f);
      case "error": return this._onError(f);
      case "pong": return undefined;
      default:
        if (isLogEvent(f)) return this._onLogEvent(f);
        return undefined; // unknown frame types are ignored (protocol versioning rule)
    }
  }

  _onWelcome(f) {
    const ws = this._ws;
    this._welcomed = true;
    this._welcomedAt = this._now();
    this._clearTimer(this._connectTimer);
    this._connectTimer = null;
    const fresh = this.session === null;
    this.session = f.session;
    this.node = f.node ?? null;
    this.limits = f.limits ?? null;
    this._savedPending = undefined;
    this._persistShared();
    this.emit("welcome", f);
    const heartbeatMs = Math.max(1000, (Number(this.limits?.heartbeat_s) || 25) * 1000);
    let pingSentAt = null;
    const ping = () => {
      if (this._ws !== ws) return;
      const now = this._now();
      const unanswered = pingSentAt !== null && this._lastRecv < pingSentAt;
      // a ping unanswered for a heartbeat means a dead connection (TCP may not say so for
      // minutes); judged per ping, not by wall time, so throttled background timers are fine
      if (unanswered && now - pingSentAt >= Math.max(5000, heartbeatMs * 0.9)) {
        this._abandon(ws, "no answer to ping");
        return;
      }
      if (!unanswered && this._frame({ type: "ping", data: now })) pingSentAt = now;
      this._pingTimer = this._after(heartbeatMs, ping);
    };
    this._pingTimer = this._after(heartbeatMs, ping);

    const seq = this._seq;
    if (seq.epoch !== null && f.epoch === seq.epoch && f.offset === seq.last) {
      // nothing was missed: no resume needed
      this._synced();
    } else if (seq.epoch !== null || (!fresh && this.history !== "none")) {
      this._sendResume();
    } else {
      seq.reset(f.offset, f.epoch);
      this.epoch = f.epoch;
      this._synced();
    }
    this._persist();
    for (const p of this._pending.values()) this._transmit(p);
    for (const c of this._cancels) this._transmitCancel(c);
  }

  _synced() {
    this.epoch = this._seq.epoch;
    if (this._connSynced) return; // a later resume on the same connection (a gap)
    this._connSynced = true;
    this._setState(this._everSynced ? "resumed" : "connected");
    this._everSynced = true;
  }

  _sendResume() {
    const frame = this._seq.resumeFrame();
    if (this._frame(frame)) this._inflight.push("resume");
  }

  _onLogEvent(ev) {
    const out = this._seq.onEvent(ev);
    for (const e of out.apply) this._apply(e);
    if (out.resume) this._sendResume();
    if (out.apply.length) this._persist();
  }

  _apply(ev) {
    if (ev.type === "user" && typeof ev.id === "string") {
      // the turn is stored: settles a send whose ack was lost with a connection or a reload
      const p = this._pending.get(ev.id);
      if (p) this._settle(p, { id: ev.id, offset: ev.offset, duplicate: true });
    }
    this.emit("event", ev);
  }

  _onResumed(f) {
    const i = this._inflight.indexOf("resume");
    if (i >= 0) this._inflight.splice(i, 1);
    const out = this._seq.onResumed(f);
    if (out.reset) {
      this.epoch = f.epoch;
      this.emit("reset", { epoch: f.epoch, offset: f.offset, requested: out.requested });
    }
    for (const e of out.apply) this._apply(e);
    this._persist();
    if (out.requested) {
      this._synced();
      if (out.behind) {
        // recovered, but events up to f.offset are still missing: ask again shortly
        const ws = this._ws;
        this._after(1000, () => {
          if (this._ws === ws && !this._seq.resuming) this._sendResume();
        });
      }
    }
  }

  _onAck(f) {
    const p = this._pending.get(f.id);
    if (p) this._settle(p, { id: f.id, offset: f.offset, duplicate: f.duplicate === true });
    this.emit("ack", f);
  }

  _onCancelling(f) {
    const i = this._inflight.indexOf("cancel");
    if (i >= 0) this._inflight.splice(i, 1);
    const c = this._cancels.find((x) => x.sent && (x.turn === null || x.turn === f.turn))
      ?? this._cancels.find((x) => x.sent);
    if (c) {
      this._cancels.splice(this._cancels.indexOf(c), 1);
      c.resolve(f.turn);
    }
  }

  _onError(f) {
    const err = AgentiaError.fromFrame(f);
    if (err.ref !== null && this._pending.has(err.ref)) {
      const p = this._pending.get(err.ref);
      if (err.retryable) {
        err.willRetry = true;
        this._clearTimer(p.timer);
        p.timer = this._after(err.retryAfterMs ?? 1000, () => this._transmit(p));
      } else {
        this._pending.delete(p.id);
        this._clearTimer(p.timer);
        this._persist();
        p.reject(err);
      }
    } else if (err.ref === null) {
      // answers a resume or a cancel (those carry no id); requests are answered in order
      const kind = err.code === "turn_not_active" ? "cancel" : this._inflight[0];
      const i = this._inflight.indexOf(kind);
      if (i >= 0) this._inflight.splice(i, 1);
      const ws = this._ws;
      if (kind === "resume") {
        // keep buffering and ask again (a non-retryable answer would be a client bug: reconnect)
        err.willRetry = true;
        this._after(err.retryAfterMs ?? 1000, () => {
          if (this._ws !== ws || !this._seq.resuming) return;
          if (err.retryable) this._sendResume(); else this._abandon(ws, "resume refused");
        });
      } else if (kind === "cancel") {
        const c = this._cancels.find((x) => x.sent);
        if (c && err.retryable) {
          err.willRetry = true;
          c.sent = false;
          this._after(err.retryAfterMs ?? 1000, () => this._transmitCancel(c));
        } else if (c) {
          this._cancels.splice(this._cancels.indexOf(c), 1);
          c.reject(err);
        }
      }
    }
    this._report(err);
  }

  // -- sending -----------------------------------------------------------------------------------

  _pendingEntry(id, text) {
    let resolve;
    let reject;
    const promise = new Promise((res, rej) => { resolve = res; reject = rej; });
    promise.id = id;
    const entry = { id, text, resolve, reject, promise, timer: null };
    this._pending.set(id, entry);
    return entry;
  }

  _settle(p, ack) {
    if (!this._pending.has(p.id)) return;
    this._pending.delete(p.id);
    this._clearTimer(p.timer);
    this._persist();
    p.resolve(ack);
  }

  _transmit(p) {
    if (!this._pending.has(p.id)) return;
    this._clearTimer(p.timer);
    p.timer = null;
    if (!this._frame({ type: "send", id: p.id, text: p.text })) return; // resent after welcome
    const ws = this._ws;
    p.timer = this._after(this.ackTimeoutMs, () => {
      if (this._ws === ws && this._pending.has(p.id)) this._transmit(p);
    });
  }

  _transmitCancel(c) {
    if (c.sent || !this._cancels.includes(c)) return;
    if (this._frame({ type: "cancel", turn: c.turn })) {
      c.sent = true;
      this._inflight.push("cancel");
    }
  }

  _frame(obj) {
    const ws = this._ws;
    if (!ws || !this._welcomed || ws.readyState !== OPEN) return false;
    try {
      ws.send(JSON.stringify(obj));
      return true;
    } catch {
      return false;
    }
  }

  // -- helpers -----------------------------------------------------------------------------------

  _setState(state) {
    if (state === this.state) return;
    const previous = this.state;
    this.state = state;
    this.emit("state", state, previous);
  }

  _report(err) {
    this.emit("error", err);
  }

  _after(ms, fn) {
    const t = this._setTimeout(() => { this._timers.delete(t); fn(); }, ms);
    this._timers.add(t);
    return t;
  }

  _clearTimer(t) {
    if (t === null || t === undefined) return;
    this._timers.delete(t);
    this._clearTimeout(t);
  }

  _clearAllTimers() {
    for (const t of this._timers) this._clearTimeout(t);
    this._timers.clear();
    this._reconnectTimer = this._connectTimer = this._pingTimer = null;
    for (const p of this._pending.values()) p.timer = null;
  }
}

export default AgentiaClient;
