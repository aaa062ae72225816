// Methods of AgentiaClient that keep the session id, epoch, last offset and unacknowledged
// sends in storage, so a reload or a new tab resumes the conversation.
import { EventSequencer } from "./cursor.js";
import { SESSION_ID_RE } from "./frames.js";
import { readJson, writeJson } from "./storage.js";

export const persistenceMethods = {
  _tabKey() { return `${this.storageKey}:tab`; },

  _sharedKey() { return `${this.storageKey}:session`; },

  _pendingKey(session) { return `${this.storageKey}:pending:${session}`; },

  /** Take up `session` (null: the stored one, unless `explicit`) and its saved state. */
  _restore(session, explicit = false) {
    const tab = readJson(this._storage, this._tabKey());
    const shared = readJson(this._shared, this._sharedKey());
    if (!explicit && session === null) session = tab?.session ?? shared?.session ?? null;
    if (session !== null && !SESSION_ID_RE.test(session)) session = null;
    this.session = session;
    this.epoch = null;
    this._seq = new EventSequencer();
    this._texts.clear();
    const same = session !== null && tab?.session === session;
    if (same && this.history === "continue" && Number.isInteger(tab.last) && tab.epoch) {
      this._seq = new EventSequencer(tab.last, tab.epoch);
      this.epoch = tab.epoch;
    }
    this._restorePending(session);
  },

  _restorePending(session) {
    const saved = session === null ? null : readJson(this._storage, this._pendingKey(session));
    if (!Array.isArray(saved)) return;
    for (const p of saved) {
      if (p && typeof p.id === "string" && typeof p.text === "string" && !this._pending.has(p.id)) {
        this._pendingEntry(p.id, p.text).promise.catch(() => {});
      }
    }
  },

  _persist() {
    writeJson(this._storage, this._tabKey(),
      { session: this.session, epoch: this._seq.epoch, last: this._seq.last });
    if (this.session === null) return;
    // per session, so unacknowledged sends survive a reload and switching sessions in this tab
    const pending = this.pending;
    const text = JSON.stringify(pending);
    if (text !== this._savedPending) {
      writeJson(this._storage, this._pendingKey(this.session), pending.length ? pending : null);
      this._savedPending = text;
    }
  },

  /** The session new tabs open: the one this client used last. */
  _persistShared() {
    if (this.session !== null) writeJson(this._shared, this._sharedKey(), { session: this.session });
  },
};
