// Methods of AgentiaClient that handle what the server sends.
import { AGENT_EVENTS } from "./agent.js";
import { AgentiaError } from "./errors.js";
import { isCaption, isLogEvent, isStreamFrame } from "./frames.js";

export const inboundMethods = {
  _dispatch(f) {
    if (f === null || typeof f !== "object") return undefined;
    switch (f.type) {
      case "welcome": return this._onWelcome(f);
      case "ack": return this._onAck(f);
      case "resumed": return this._onResumed(f);
      case "cancelling": return this._onCancelling(f);
      case "error": return this._onError(f);
      case "pong": return undefined;
      case "chunk": case "partial":
        if (isStreamFrame(f)) return this._onStreamFrame(f);
        return undefined;
      default:
        if (isLogEvent(f)) return this._onLogEvent(f);
        if (isCaption(f)) return this._onCaption(f);
        return undefined; // unknown frame types are ignored (protocol versioning rule)
    }
  },

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
    this.agent = typeof f.agent === "string" ? f.agent : this._agentOption;
    this._savedPending = undefined;
    this._persistShared();
    this.emit("welcome", f);
    this._startPing(ws);
    const seq = this._seq;
    if (seq.epoch !== null && f.epoch === seq.epoch && f.offset === seq.last) {
      this._synced(); // nothing was missed: no resume needed
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
    for (const a of this._approvals.values()) this._transmitApprove(a);
  },

  /** Ping every `heartbeat_s`; drop the connection when a ping stays unanswered. */
  _startPing(ws) {
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
  },

  _synced() {
    this.epoch = this._seq.epoch;
    if (this._connSynced) return; // a later resume on the same connection (a gap)
    this._connSynced = true;
    this._setState(this._everSynced ? "resumed" : "connected");
    this._everSynced = true;
  },

  _onLogEvent(ev) {
    const out = this._seq.onEvent(ev);
    for (const e of out.apply) this._apply(e);
    if (out.resume) this._sendResume();
    if (out.apply.length) this._persist();
  },

  _apply(ev) {
    if (ev.type === "user" && typeof ev.id === "string") {
      // the turn is stored: settles a send whose ack was lost with a connection or a reload
      const p = this._pending.get(ev.id);
      if (p) this._settle(p, { id: ev.id, offset: ev.offset, duplicate: true });
    }
    this._texts.apply(ev); // turn_start clears a turn's text, its ending event sets it
    this.emit("event", ev);
    if (Object.hasOwn(AGENT_EVENTS, ev.type)) this.emit(AGENT_EVENTS[ev.type], ev);
  },

  /** An interim transcript: emitted live only (none during a resume: the final is in the log). */
  _onCaption(f) {
    if (!this._seq.resuming) this.emit("caption", f);
  },

  _onStreamFrame(f) {
    for (const g of this._seq.onStream(f)) this._applyStream(g);
  },

  /** A `chunk` or `partial` in the order to apply it: emitted only when it changes the text. */
  _applyStream(f) {
    const t = this._texts.apply(f);
    if (!t) return; // a duplicate, a hole, an older attempt, or after the turn's end
    this.emit(f.type, f);
    this.emit("text", { turn: t.turn, attempt: t.attempt, seq: t.seq, text: t.text });
  },

  _onResumed(f) {
    this._answered("resume");
    const out = this._seq.onResumed(f);
    if (out.reset) {
      this.epoch = f.epoch;
      this._texts.clear();
      this.emit("reset", { epoch: f.epoch, offset: f.offset, requested: out.requested });
    }
    for (const e of out.apply) this._apply(e);
    for (const g of out.stream) this._applyStream(g);
    this._persist();
    if (!out.requested) return;
    this._synced();
    if (out.behind) {
      // recovered, but events up to f.offset are still missing: ask again shortly
      const ws = this._ws;
      this._after(1000, () => {
        if (this._ws === ws && !this._seq.resuming) this._sendResume();
      });
    }
  },

  /** A request without an id ("resume" or "cancel") was answered. */
  _answered(kind) {
    const i = this._inflight.indexOf(kind);
    if (i >= 0) this._inflight.splice(i, 1);
  },

  _onAck(f) {
    if (this._onApproveAck(f)) return;
    const p = this._pending.get(f.id);
    if (p) this._settle(p, { id: f.id, offset: f.offset, duplicate: f.duplicate === true });
    this.emit("ack", f);
  },

  _onCancelling(f) {
    this._answered("cancel");
    const c = this._cancels.find((x) => x.sent && (x.turn === null || x.turn === f.turn))
      ?? this._cancels.find((x) => x.sent);
    if (c) {
      this._cancels.splice(this._cancels.indexOf(c), 1);
      c.resolve(f.turn);
    }
  },

  _onError(f) {
    const err = AgentiaError.fromFrame(f);
    if (err.ref !== null && this._pending.has(err.ref)) {
      this._onSendError(this._pending.get(err.ref), err);
    } else if (err.ref !== null && this._approvals.has(err.ref)) {
      this._onApproveError(this._approvals.get(err.ref), err);
    } else if (err.ref === null) {
      // answers a resume or a cancel (those carry no id); requests are answered in order
      const kind = err.code === "turn_not_active" ? "cancel" : this._inflight[0];
      this._answered(kind);
      if (kind === "resume") this._onResumeError(err);
      else if (kind === "cancel") this._onCancelError(err);
    }
    this._report(err);
  },

  _onSendError(p, err) {
    if (err.retryable) {
      err.willRetry = true;
      this._clearTimer(p.timer);
      p.timer = this._after(err.retryAfterMs ?? 1000, () => this._transmit(p));
      return;
    }
    this._pending.delete(p.id);
    this._clearTimer(p.timer);
    this._persist();
    p.reject(err);
  },

  _onResumeError(err) {
    // keep buffering and ask again (a non-retryable answer would be a client bug: reconnect)
    const ws = this._ws;
    err.willRetry = true;
    this._after(err.retryAfterMs ?? 1000, () => {
      if (this._ws !== ws || !this._seq.resuming) return;
      if (err.retryable) this._sendResume(); else this._abandon(ws, "resume refused");
    });
  },

  _onCancelError(err) {
    const c = this._cancels.find((x) => x.sent);
    if (c && err.retryable) {
      err.willRetry = true;
      c.sent = false;
      this._after(err.retryAfterMs ?? 1000, () => this._transmitCancel(c));
    } else if (c) {
      this._cancels.splice(this._cancels.indexOf(c), 1);
      c.reject(err);
    }
  },
};
