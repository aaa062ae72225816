// Fakes of the client's unit tests: a WebSocket, a clock and a storage (no I/O, no timers).
import { AgentiaClient } from "../src/index.js";

// -- fakes -------------------------------------------------------------------------------------

export class FakeClock {
  constructor() { this.t = 1_000_000; this.timers = new Map(); this.seq = 0; }
  now = () => this.t;
  setTimeout = (fn, ms) => {
    const id = ++this.seq;
    this.timers.set(id, { at: this.t + Math.max(0, ms), fn });
    return id;
  };
  clearTimeout = (id) => { this.timers.delete(id); };
  /** Run every timer due within `ms`, in time order (timers may add timers). */
  advance(ms) {
    const end = this.t + ms;
    for (;;) {
      let next = null;
      for (const [id, tm] of this.timers) {
        if (tm.at <= end && (next === null || tm.at < next[1].at)) next = [id, tm];
      }
      if (next === null) break;
      this.timers.delete(next[0]);
      this.t = next[1].at;
      next[1].fn();
    }
    this.t = end;
  }
  pendingDelays() { return [...this.timers.values()].map((tm) => tm.at - this.t); }
}

export class MemoryStorage {
  constructor() { this.map = new Map(); }
  getItem(k) { return this.map.has(k) ? this.map.get(k) : null; }
  setItem(k, v) { this.map.set(k, String(v)); }
  removeItem(k) { this.map.delete(k); }
}

export function fakeSocketClass() {
  const sockets = [];
  class FakeSocket {
    constructor(url, protocols) {
      this.url = url;
      this.protocols = protocols;
      this.readyState = 0;
      this.sent = [];
      this.closedWith = null;
      sockets.push(this);
    }
    send(data) {
      if (this.readyState !== 1) throw new Error("not open");
      this.sent.push(JSON.parse(data));
    }
    close(code = 1000, reason = "") { this.closedWith = { code, reason }; this.readyState = 2; }
    // test side
    open() { this.readyState = 1; this.onopen?.({}); }
    receive(frame) { this.onmessage?.({ data: JSON.stringify(frame) }); }
    welcome({ session = "s1", epoch = "e1", offset = 0, heartbeat_s = 25, limits = {}, ...extra } = {}) {
      this.open();
      this.receive({
        type: "welcome", protocol: "agentia.v1", node: "n1", session, epoch, offset,
        limits: { heartbeat_s, max_text_chars: 100, max_frame_bytes: 65536, ...limits }, ...extra,
      });
    }
    drop(code = 1006, reason = "") { this.readyState = 3; this.onclose?.({ code, reason }); }
    sentOf(type) { return this.sent.filter((f) => f.type === type); }
  }
  return { FakeSocket, sockets };
}

export const tick = () => new Promise((r) => setImmediate(r));

export function setup(overrides = {}) {
  const clock = new FakeClock();
  const { FakeSocket, sockets } = fakeSocketClass();
  const storage = overrides.storage ?? new MemoryStorage();
  const shared = overrides.sharedStorage ?? new MemoryStorage();
  const client = new AgentiaClient({
    urls: ["ws://a/v1/ws", "ws://b/v1/ws"],
    token: "tok",
    WebSocket: FakeSocket,
    storage,
    sharedStorage: shared,
    random: () => 0, // first URL, minimum jitter
    setTimeout: clock.setTimeout,
    clearTimeout: clock.clearTimeout,
    now: clock.now,
    ...overrides,
  });
  const events = [];
  const states = [];
  const errors = [];
  client.on("event", (e) => events.push(e));
  client.on("state", (s) => states.push(s));
  client.on("error", (e) => errors.push(e));
  return { client, clock, sockets, events, states, errors, storage, shared };
}

