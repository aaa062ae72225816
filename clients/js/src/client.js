// AgentiaClient: the public API. The work is done by the methods of connection.js (the
// socket), inbound.js (what the server sends), sending.js (what the client writes),
// agent.js (approvals) and persistence.js (storage), mixed into the class below.
import { AGENT_NAME_RE, approvalMethods, checkApprove } from "./agent.js";
import { DEFAULT_BACKOFF } from "./backoff.js";
import { connectionMethods } from "./connection.js";
import { EventSequencer } from "./cursor.js";
import { Emitter } from "./emitter.js";
import { AgentiaError } from "./errors.js";
import { SESSION_ID_RE, countChars, newClientId, utf8Length } from "./frames.js";
import { inboundMethods } from "./inbound.js";
import { eventIterator } from "./iterator.js";
import { persistenceMethods } from "./persistence.js";
import { ReplyTexts } from "./replies.js";
import { sendingMethods } from "./sending.js";
import { defaultStorage } from "./storage.js";

/** Client states, in the order a first connection goes through them. */
export const STATES = Object.freeze(["connecting", "connected", "reconnecting", "resumed", "closed"]);

function closedError() {
  return new AgentiaError("closed", "the client was closed");
}

/**
 * One session over one WebSocket at a time, reconnected and resumed as needed. The options
 * are described in index.d.ts (ClientOptions) and README.md.
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
    if (options.agent != null && !AGENT_NAME_RE.test(options.agent)) {
      throw new TypeError("AgentiaClient: agent must match [a-z0-9][a-z0-9_-]{0,31}");
    }
    this._configure(options);
    this._initState();
    this._restore(options.session ?? null);
  }

  _configure(options) {
    this._token = options.token ?? null;
    this.history = options.history ?? "replay";
    this.backoff = { ...DEFAULT_BACKOFF, ...(options.backoff ?? {}) };
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
    this._agentOption = options.agent ?? null;
  }

  _initState() {
    this.state = "idle";
    this.session = null;
    this.epoch = null;
    this.node = null;
    this.url = null;         // URL of the current (or last) connection
    this.limits = null;
    this.agent = this._agentOption; // welcome.agent once connected
    this.nextRetryAt = null;
    this._seq = new EventSequencer();
    this._texts = new ReplyTexts(); // each turn's streamed text (chunk/partial rules)
    this._pending = new Map(); // client id -> {id, text, resolve, reject, promise, timer}
    this._cancels = [];        // {turn, resolve, reject, sent}
    this._approvals = new Map(); // client id -> {id, callId, approved, message, resolve, reject, sent}
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
  }

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
    this._rejectAll(closedError());
    this._setState("closed");
    for (const it of this._iterators) it.end();
  }

  /**
   * Submit a user turn. Resolves with the ack {id, offset, duplicate} once the turn is durably
   * stored (resending with the same id as long as needed); rejects only on a non-retryable
   * error (e.g. bad_frame) or close(). The returned promise has the client id as `.id`.
   */
  send(text, { id } = {}) {
    const cid = id ?? newClientId();
    const error = this._checkSend(text, cid);
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

  _checkSend(text, cid) {
    const maxChars = this.limits?.max_text_chars ?? 16000;
    const maxBytes = this.limits?.max_frame_bytes ?? 65536;
    if (typeof text !== "string" || text.trim() === "") {
      return new AgentiaError("bad_frame", "text must be a non-empty string");
    }
    if (countChars(text) > maxChars) {
      return new AgentiaError("bad_frame", `text is longer than ${maxChars} characters`);
    }
    if (utf8Length(JSON.stringify({ type: "send", id: cid, text })) > maxBytes) {
      // the server would close the connection with 1009
      return new AgentiaError("bad_frame", `the message is larger than ${maxBytes} bytes`);
    }
    return this._closed ? closedError() : null;
  }

  /** Cancel a turn (its ack offset), or the oldest unfinished one. Resolves with the turn. */
  cancel(turn = null) {
    if (this._closed) return Promise.reject(closedError());
    return new Promise((resolve, reject) => {
      const c = { turn: turn ?? null, resolve, reject, sent: false };
      this._cancels.push(c);
      this._transmitCancel(c);
    });
  }

  /**
   * Answer the approval request `callId` (an `approval_request` event): approve or reject the
   * tool call, with an optional `message` (at most 1,000 characters). Resolves with the ack
   * {id, offset, duplicate} once the edge recorded the decision (`offset`: the
   * `approval_result` event's, which follows like any event). Rejects with an
   * AgentiaError: `no_such_approval` when nothing with that `callId` is pending (unknown,
   * answered, expired), `bad_frame`, or `closed`. Retryable refusals are retried, and an
   * approve not answered before a reconnect is sent again with the same id (its answer may
   * then be `no_such_approval`: the first one was recorded, the `approval_result` says so).
   */
  approve(callId, approved, message = null) {
    if (this._closed) return Promise.reject(closedError());
    const error = checkApprove(callId, approved, message);
    if (error) return Promise.reject(error);
    return new Promise((resolve, reject) => {
      const a = { id: newClientId(), callId, approved, message, resolve, reject, sent: false };
      this._approvals.set(a.id, a);
      this._transmitApprove(a);
    });
  }

  /** Switch to another session (null: a new one). Unacknowledged sends of the old one are kept. */
  switchSession(session = null) {
    if (this._closed) throw closedError();
    if (session !== null && !SESSION_ID_RE.test(session)) {
      throw new TypeError("session id must match [A-Za-z0-9_.:-]{1,64}");
    }
    this._persist(); // the old session's unacknowledged sends, before they are dropped here
    this._rejectAll(new AgentiaError("switched", "the client switched sessions"));
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

  /** Reconnect now if waiting (e.g. the browser came back online). */
  reconnectNow() {
    if (this._closed || !this._reconnectTimer) return;
    this._clearTimer(this._reconnectTimer);
    this._reconnectTimer = null;
    this._open();
  }

  /** Unacknowledged sends, oldest first: [{id, text}] (e.g. to render them after a reload). */
  get pending() {
    return [...this._pending.values()].map(({ id, text }) => ({ id, text }));
  }

  /** The highest offset applied (all lower ones applied too). */
  get lastOffset() { return this._seq.last; }

  /** A turn's reply text so far (its final text once it ended); null if nothing was seen. */
  replyText(turn) { return this._texts.get(turn)?.text ?? null; }

  get connected() { return this.state === "connected" || this.state === "resumed"; }

  /** Log events as an async iterator (ends at close()). */
  events() { return eventIterator(this); }

  [Symbol.asyncIterator]() { return this.events(); }

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

Object.assign(AgentiaClient.prototype, connectionMethods, inboundMethods, sendingMethods,
  persistenceMethods, approvalMethods);
