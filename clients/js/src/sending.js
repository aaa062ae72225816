// Methods of AgentiaClient that write frames: sends kept until their ack, cancels, resumes.

const OPEN = 1; // WebSocket.OPEN

export const sendingMethods = {
  _pendingEntry(id, text) {
    let resolve;
    let reject;
    const promise = new Promise((res, rej) => { resolve = res; reject = rej; });
    promise.id = id;
    const entry = { id, text, resolve, reject, promise, timer: null };
    this._pending.set(id, entry);
    return entry;
  },

  _settle(p, ack) {
    if (!this._pending.has(p.id)) return;
    this._pending.delete(p.id);
    this._clearTimer(p.timer);
    this._persist();
    p.resolve(ack);
  },

  /** Reject every unacknowledged send, cancel and approve with `err`. */
  _rejectAll(err) {
    for (const p of this._pending.values()) { this._clearTimer(p.timer); p.reject(err); }
    for (const c of this._cancels) c.reject(err);
    for (const a of this._approvals.values()) a.reject(err);
    this._pending.clear();
    this._cancels = [];
    this._approvals.clear();
  },

  /** Send (again) and resend after `ackTimeoutMs` without an ack on the same connection. */
  _transmit(p) {
    if (!this._pending.has(p.id)) return;
    this._clearTimer(p.timer);
    p.timer = null;
    if (!this._frame({ type: "send", id: p.id, text: p.text })) return; // resent after welcome
    const ws = this._ws;
    p.timer = this._after(this.ackTimeoutMs, () => {
      if (this._ws === ws && this._pending.has(p.id)) this._transmit(p);
    });
  },

  _transmitCancel(c) {
    if (c.sent || !this._cancels.includes(c)) return;
    if (this._frame({ type: "cancel", turn: c.turn })) {
      c.sent = true;
      this._inflight.push("cancel");
    }
  },

  _sendResume() {
    const frame = this._seq.resumeFrame();
    if (this._frame(frame)) this._inflight.push("resume");
  },

  /** Write a frame if the connection is open and welcomed; false if it was not written. */
  _frame(obj) {
    const ws = this._ws;
    if (!ws || !this._welcomed || ws.readyState !== OPEN) return false;
    try {
      ws.send(JSON.stringify(obj));
      return true;
    } catch {
      return false;
    }
  },
};
