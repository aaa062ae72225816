// Methods of AgentiaClient that open, watch and reopen the WebSocket.
import { withAgent } from "./agent.js";
import { backoffDelay } from "./backoff.js";
import { PROTOCOL, isTerminalClose } from "./codes.js";
import { AgentiaError } from "./errors.js";
import { parseFrame, withSession } from "./frames.js";

export const connectionMethods = {
  async _open() {
    if (this._closed) return;
    const gen = ++this._openGen;
    const token = await this._getToken(gen);
    if (token === undefined) return;
    if (this._closed || gen !== this._openGen || this._ws || this._reconnectTimer) return;
    const url = withAgent(withSession(this.urls[this._urlIndex % this.urls.length], this.session),
      this._agentOption);
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
    this._attach(ws, url);
  },

  /** The token for this attempt; undefined if it could not be had (a reconnect is scheduled). */
  async _getToken(gen) {
    const attempt = this._attempt;
    const refresh = this._refresh;
    try {
      const token = typeof this._token === "function"
        ? await this._token({ refresh, attempt }) : this._token;
      return token ?? null;
    } catch (err) {
      this._report(new AgentiaError("token_unavailable", `could not get a token: ${err?.message ?? err}`,
        { retryable: true, willRetry: true }));
      if (!this._closed && gen === this._openGen) this._scheduleReconnect();
      return undefined;
    }
  },

  _attach(ws, url) {
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
  },

  _detach() {
    const ws = this._ws;
    this._ws = null;
    this._welcomed = false;
    this._connSynced = false;
    this._clearTimer(this._connectTimer);
    this._clearTimer(this._pingTimer);
    this._connectTimer = this._pingTimer = null;
    if (ws) ws.onmessage = ws.onclose = ws.onerror = null;
  },

  /** Give up on a socket that does not answer (no waiting for its close event). */
  _abandon(ws, reason) {
    if (ws !== this._ws) return;
    try { ws.close(); } catch { /* ignore */ }
    this._onClose(ws, 1006, reason);
  },

  _onClose(ws, code, reason) {
    if (ws !== this._ws) return;
    const welcomed = this._welcomed;
    const stable = welcomed && this._now() - this._welcomedAt >= this.stableMs;
    this._detach();
    this._seq.abort();
    for (const c of this._cancels) c.sent = false;
    for (const a of this._approvals.values()) a.sent = false;
    this.emit("close", { code, reason, url: this.url });
    if (this._closed) return;
    if (isTerminalClose(code)) {
      this._stop(new AgentiaError("closed", reason || `closed by the server (${code})`,
        { closeCode: code }));
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
  },

  /** A terminal close: report it, keep what is unacknowledged in storage, stop. */
  _stop(err) {
    this._report(err);
    this._closed = true;
    this._persist();
    this._rejectAll(err);
    this._setState("closed");
    for (const it of this._iterators) it.end();
  },

  _scheduleReconnect() {
    if (this._closed || this._reconnectTimer) return;
    const delay = backoffDelay(this._attempt, this.backoff, this._random);
    this._attempt += 1;
    this.nextRetryAt = this._now() + delay;
    this._reconnectTimer = this._after(delay, () => {
      this._reconnectTimer = null;
      this._open();
    });
  },

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
  },

  _onMessage(ws, data) {
    if (ws !== this._ws) return undefined;
    this._lastRecv = this._now();
    const parsed = parseFrame(data);
    if (parsed === null) {
      this._report(new AgentiaError("bad_server_frame", "the server sent a frame that is not JSON"));
      return undefined;
    }
    return this._dispatch(parsed.frame);
  },
};
