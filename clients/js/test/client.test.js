// Unit tests of the client with a fake WebSocket and a fake clock (node --test in clients/js)
import assert from "node:assert/strict";
import { describe, it } from "node:test";

import {
  AgentiaClient,
  CLOSE_CODES,
  EventSequencer,
  backoffDelay,
  isCaption,
  isLogEvent,
  isStreamFrame,
  withSession,
} from "../src/index.js";

import { FakeClock, setup, tick } from "./fakes.js";

const ev = (offset, type = "tool", extra = {}) => ({ offset, type, turn: 1, text: `t${offset}`, ...extra });

// -- pure logic --------------------------------------------------------------------------------

describe("backoffDelay", () => {
  it("doubles from the initial delay, with equal jitter, up to the cap", () => {
    const opts = { initialMs: 500, maxMs: 30000, factor: 2 };
    assert.equal(backoffDelay(0, opts, () => 0), 250);
    assert.equal(backoffDelay(0, opts, () => 1), 500);
    assert.equal(backoffDelay(1, opts, () => 1), 1000);
    assert.equal(backoffDelay(3, opts, () => 1), 4000);
    assert.equal(backoffDelay(20, opts, () => 1), 30000);
    assert.equal(backoffDelay(20, opts, () => 0), 15000);
    for (let a = 0; a < 12; a++) {
      const d = backoffDelay(a, opts);
      const base = Math.min(30000, 500 * 2 ** a);
      assert.ok(d >= base / 2 && d <= base, `attempt ${a}: ${d}`);
    }
  });
});

describe("per-user close codes", () => {
  it("stops on a 4502 before welcome, reports it and does not reconnect", async () => {
    const { client, sockets, clock, errors } = setup();
    client.connect();
    await tick();
    sockets[0].open();
    sockets[0].drop(4502, "too many new sessions for this user this hour: retry later");
    assert.equal(client.state, "closed");
    assert.equal(errors.at(-1).closeCode, 4502);
    clock.advance(60_000);
    await tick();
    assert.equal(sockets.length, 1);
  });
  it("reconnects after a 4005 before welcome", async () => {
    const { client, sockets, clock } = setup();
    client.connect();
    await tick();
    sockets[0].open();
    sockets[0].drop(4005, "too many connections for this user: reconnect later");
    assert.notEqual(client.state, "closed");
    clock.advance(60_000);
    await tick();
    assert.ok(sockets.length >= 2, String(sockets.length));
  });
});

describe("helpers", () => {
  it("recognises log events, including types added later", () => {
    assert.ok(isLogEvent({ offset: 3, type: "reply" }));
    assert.ok(isLogEvent({ offset: 3, type: "some_new_event" }));
    assert.ok(!isLogEvent({ offset: 3, type: "ack" }));
    assert.ok(!isLogEvent({ offset: 3, type: "resumed" }));
    assert.ok(!isLogEvent({ type: "pong" }));
    assert.ok(!isLogEvent({ offset: 3, type: "chunk", turn: 2, seq: 1 }));
    assert.ok(isStreamFrame({ type: "partial", turn: 2, attempt: 1, seq: 3, text: "abc" }));
    assert.ok(!isStreamFrame({ type: "chunk", turn: "2" }));
  });
  it("adds the session to the URL", () => {
    assert.equal(withSession("ws://h/v1/ws", "a:b"), "ws://h/v1/ws?session=a%3Ab");
    assert.equal(withSession("ws://h/v1/ws?x=1", "s"), "ws://h/v1/ws?x=1&session=s");
    assert.equal(withSession("ws://h/v1/ws", null), "ws://h/v1/ws");
  });
});

describe("EventSequencer", () => {
  it("applies in order, ignores duplicates, asks to resume on a gap", () => {
    const s = new EventSequencer(0, "e");
    assert.deepEqual(s.onEvent(ev(1)).apply.map((e) => e.offset), [1]);
    assert.deepEqual(s.onEvent(ev(1)).apply, []);
    assert.deepEqual(s.onEvent(ev(2)).apply.map((e) => e.offset), [2]);
    const gap = s.onEvent(ev(5));
    assert.deepEqual(gap, { apply: [], resume: true });
    assert.deepEqual(s.resumeFrame(), { type: "resume", after: 2, epoch: "e" });
  });

  it("buffers while resuming and applies the contiguous run on resumed", () => {
    const s = new EventSequencer(2, "e");
    s.resumeFrame();
    for (const o of [6, 3, 2, 4, 3, 8]) assert.deepEqual(s.onEvent(ev(o)).apply, []);
    const out = s.onResumed({ type: "resumed", recovered: true, offset: 4, epoch: "e" });
    assert.equal(out.requested, true);
    assert.equal(out.reset, false);
    assert.deepEqual(out.apply.map((e) => e.offset), [3, 4]);
    assert.equal(s.last, 4);
    assert.equal(out.behind, false);
    assert.deepEqual(s.onEvent(ev(5)).apply.map((e) => e.offset), [5]);
  });

  it("rebuilds the view on recovered: false", () => {
    const s = new EventSequencer(40, "old");
    s.resumeFrame();
    for (const o of [1, 2, 3]) s.onEvent(ev(o));
    const out = s.onResumed({ type: "resumed", recovered: false, offset: 3, epoch: "new" });
    assert.equal(out.reset, true);
    assert.deepEqual(out.apply.map((e) => e.offset), [1, 2, 3]);
    assert.equal(s.epoch, "new");
    assert.equal(s.last, 3);
  });

  it("resets on an unrequested resumed with recovered: false", () => {
    const s = new EventSequencer(10, "old");
    const out = s.onResumed({ type: "resumed", recovered: false, offset: 0, epoch: "new" });
    assert.deepEqual(out, { requested: false, reset: true, apply: [], stream: [], behind: false });
    assert.equal(s.last, 0);
    assert.equal(s.epoch, "new");
    assert.deepEqual(s.onEvent(ev(1)).apply.map((e) => e.offset), [1]);
  });

  it("asks for the whole log without an epoch when it has nothing", () => {
    const s = new EventSequencer();
    assert.deepEqual(s.resumeFrame(), { type: "resume", after: 0 });
    s.onEvent(ev(1));
    const out = s.onResumed({ type: "resumed", recovered: true, offset: 2, epoch: "e" });
    assert.equal(s.epoch, "e");
    assert.equal(out.behind, true);
  });
});

// -- the client --------------------------------------------------------------------------------

describe("AgentiaClient", () => {
  it("connects with the token subprotocol, gets connected and dedupes events", async () => {
    const { client, sockets, events, states } = setup();
    client.connect();
    await tick();
    assert.equal(sockets.length, 1);
    assert.equal(sockets[0].url, "ws://a/v1/ws");
    assert.deepEqual(sockets[0].protocols, ["agentia.v1", "bearer.tok"]);
    sockets[0].welcome({ session: "s1", epoch: "e1", offset: 0 });
    assert.deepEqual(states, ["connecting", "connected"]);
    assert.equal(client.session, "s1");
    for (const o of [1, 2, 2, 1, 3]) sockets[0].receive(ev(o));
    assert.deepEqual(events.map((e) => e.offset), [1, 2, 3]);
    assert.deepEqual(sockets[0].sentOf("resume"), []);
    client.close();
    assert.equal(client.state, "closed");
  });

  it("reconnects with backoff to the next URL and resumes without gaps or duplicates", async () => {
    const { client, clock, sockets, events, states } = setup();
    client.connect();
    await tick();
    sockets[0].welcome({ offset: 0 });
    for (const o of [1, 2, 3]) sockets[0].receive(ev(o));
    sockets[0].drop(1006);
    assert.equal(client.state, "reconnecting");
    assert.deepEqual(clock.pendingDelays(), [250]); // attempt 0, random 0: half of 500 ms
    clock.advance(250);
    await tick();
    assert.equal(sockets.length, 2);
    assert.equal(sockets[1].url, "ws://b/v1/ws?session=s1");
    sockets[1].welcome({ offset: 6 });
    assert.deepEqual(sockets[1].sentOf("resume"), [{ type: "resume", after: 3, epoch: "e1" }]);
    // replay mixed with live events
    for (const o of [7, 4, 5, 5, 6]) sockets[1].receive(ev(o));
    assert.deepEqual(events.map((e) => e.offset), [1, 2, 3]);
    sockets[1].receive({ type: "resumed", recovered: true, offset: 7, epoch: "e1" });
    assert.deepEqual(events.map((e) => e.offset), [1, 2, 3, 4, 5, 6, 7]);
    assert.deepEqual(states, ["connecting", "connected", "reconnecting", "resumed"]);
    sockets[1].receive(ev(7));
    sockets[1].receive(ev(8));
    assert.deepEqual(events.map((e) => e.offset), [1, 2, 3, 4, 5, 6, 7, 8]);
    client.close();
  });

  it("backs off exponentially while connections fail (HTTP refusals look like this)", async () => {
    const { client, clock, sockets } = setup();
    client.connect();
    await tick();
    const delays = [];
    for (let i = 0; i < 8; i++) {
      sockets.at(-1).drop(1006); // never opened: refused at the handshake or unreachable
      delays.push(clock.pendingDelays()[0]);
      clock.advance(delays.at(-1));
      await tick();
    }
    assert.deepEqual(delays, [250, 500, 1000, 2000, 4000, 8000, 15000, 15000]);
    assert.deepEqual(sockets.slice(0, 4).map((s) => s.url),
      ["ws://a/v1/ws", "ws://b/v1/ws", "ws://a/v1/ws", "ws://b/v1/ws"]);
    assert.equal(client.state, "connecting");
    client.close();
  });

  it("resets the backoff only after a stable connection", async () => {
    const { client, clock, sockets } = setup();
    client.connect();
    await tick();
    sockets[0].drop();
    clock.advance(250);
    await tick();
    sockets[1].welcome();
    sockets[1].drop(4002); // accepted then closed at once: keeps backing off
    assert.deepEqual(clock.pendingDelays(), [500]);
    clock.advance(500);
    await tick();
    sockets[2].welcome();
    clock.advance(6000);
    sockets[2].drop(1012);
    assert.deepEqual(clock.pendingDelays(), [250]);
    client.close();
  });

  it("stops on a protocol violation (1007) instead of repeating it", async () => {
    const { client, clock, sockets, errors } = setup();
    client.connect();
    await tick();
    sockets[0].welcome();
    sockets[0].drop(1007, "invalid UTF-8");
    assert.equal(client.state, "closed");
    assert.ok(errors.some((e) => e.code === "closed" && e.closeCode === 1007));
    clock.advance(120000);
    await tick();
    assert.equal(sockets.length, 1);
  });

  it("stops for good on a terminal close code", async () => {
    const { client, clock, sockets, errors, states } = setup();
    client.connect();
    await tick();
    sockets[0].welcome();
    const p = client.send("hi");
    sockets[0].drop(4500, "banned");
    await assert.rejects(p, (e) => e.code === "closed" && e.closeCode === 4500);
    assert.equal(client.state, "closed");
    assert.equal(states.at(-1), "closed");
    assert.ok(errors.some((e) => e.closeCode === 4500));
    clock.advance(120000);
    await tick();
    assert.equal(sockets.length, 1);
  });

  it("reconnects after a normal close it did not ask for", async () => {
    const { client, clock, sockets } = setup();
    client.connect();
    await tick();
    sockets[0].welcome();
    sockets[0].drop(1000);
    assert.equal(client.state, "reconnecting");
    clock.advance(500);
    await tick();
    assert.equal(sockets.length, 2);
    client.close();
  });

  it("keeps a send until acked: same id after a retryable error and after reconnecting", async () => {
    const { client, clock, sockets, errors } = setup();
    const p = client.send("hello");
    assert.match(p.id, /^c-[0-9a-f]{32}$/);
    client.connect();
    await tick();
    sockets[0].welcome();
    assert.deepEqual(sockets[0].sentOf("send"), [{ type: "send", id: p.id, text: "hello" }]);
    sockets[0].receive({ type: "error", code: "rate_limited", message: "slow down", retryable: true,
      ref: p.id, retry_after_ms: 200 });
    assert.equal(errors.at(-1).willRetry, true);
    clock.advance(199);
    assert.equal(sockets[0].sentOf("send").length, 1);
    clock.advance(1);
    assert.equal(sockets[0].sentOf("send").length, 2);
    sockets[0].drop(1006);
    clock.advance(250);
    await tick();
    sockets[1].welcome();
    assert.deepEqual(sockets[1].sentOf("send"), [{ type: "send", id: p.id, text: "hello" }]);
    sockets[1].receive({ type: "ack", id: p.id, offset: 1, duplicate: true });
    assert.deepEqual(await p, { id: p.id, offset: 1, duplicate: true });
    assert.deepEqual(client.pending, []);
    client.close();
  });

  it("resends a send whose ack does not come", async () => {
    const { client, clock, sockets } = setup({ ackTimeoutMs: 5000 });
    client.connect();
    await tick();
    sockets[0].welcome({ heartbeat_s: 1000 });
    const p = client.send("x");
    clock.advance(5000);
    assert.deepEqual(sockets[0].sentOf("send").map((f) => f.id), [p.id, p.id]);
    sockets[0].receive({ type: "ack", id: p.id, offset: 1, duplicate: false });
    clock.advance(20000);
    assert.equal(sockets[0].sentOf("send").length, 2);
    await p;
    client.close();
  });

  it("rejects a send on a non-retryable error and refuses bad text locally", async () => {
    const { client, sockets } = setup();
    client.connect();
    await tick();
    sockets[0].welcome();
    await assert.rejects(client.send("   "), (e) => e.code === "bad_frame");
    await assert.rejects(client.send("x".repeat(101)), (e) => e.code === "bad_frame");
    const emoji = client.send("😀".repeat(100)); // 100 code points: allowed
    assert.equal(sockets[0].sentOf("send").at(-1).id, emoji.id);
    emoji.catch(() => {});
    assert.equal(sockets[0].sentOf("send").length, 1);
    const p = client.send("ok");
    sockets[0].receive({ type: "error", code: "bad_frame", message: "no", retryable: false, ref: p.id });
    await assert.rejects(p, (e) => e.code === "bad_frame");
    client.close();
  });

  it("refuses locally a frame the server would close the connection for (1009)", async () => {
    const { client, sockets } = setup();
    client.connect();
    await tick();
    sockets[0].welcome({ limits: { max_frame_bytes: 300 } });
    // 60 characters, but each is escaped to 6 bytes of JSON
    await assert.rejects(client.send("\u0001".repeat(60)), (e) => e.code === "bad_frame");
    assert.equal(sockets[0].sentOf("send").length, 0);
    client.close();
  });

  it("settles a send when its user event arrives before (or without) the ack", async () => {
    const { client, sockets } = setup();
    client.connect();
    await tick();
    sockets[0].welcome();
    const p = client.send("hi");
    sockets[0].receive({ offset: 1, type: "user", id: p.id, text: "hi" });
    assert.equal((await p).offset, 1);
    client.close();
  });

  it("pings every heartbeat and drops a connection that stopped answering", async () => {
    const { client, clock, sockets, states } = setup();
    client.connect();
    await tick();
    sockets[0].welcome({ heartbeat_s: 10 });
    clock.advance(10000);
    assert.equal(sockets[0].sentOf("ping").length, 1);
    sockets[0].receive({ type: "pong", data: 1 });
    clock.advance(10000);
    assert.equal(sockets[0].sentOf("ping").length, 2);
    sockets[0].receive({ type: "pong", data: 2 });
    clock.advance(10000);
    assert.equal(sockets[0].sentOf("ping").length, 3);
    assert.equal(client.state, "connected");
    clock.advance(10000); // the third ping got no answer within a heartbeat
    assert.equal(states.at(-1), "reconnecting");
    assert.ok(sockets[0].closedWith);
    client.close();
  });

  it("does not drop a quiet connection whose pings are answered late by throttled timers", async () => {
    const clock = new FakeClock();
    const { client, sockets } = setup({
      setTimeout: (fn, ms) => clock.setTimeout(fn, Math.max(ms, 60000)), // Chrome's 1-min alignment
      clearTimeout: clock.clearTimeout,
      now: clock.now,
    });
    client.connect();
    await tick();
    sockets[0].welcome({ heartbeat_s: 25 });
    for (let i = 0; i < 5; i++) {
      clock.advance(60000);
      const pings = sockets[0].sentOf("ping");
      sockets[0].receive({ type: "pong", data: pings.at(-1).data });
    }
    assert.equal(sockets[0].sentOf("ping").length, 5);
    assert.equal(client.state, "connected");
    client.close();
  });

  it("gives up on a handshake that does not finish", async () => {
    const { client, clock, sockets } = setup({ connectTimeoutMs: 3000 });
    client.connect();
    await tick();
    clock.advance(3000);
    assert.ok(sockets[0].closedWith);
    clock.advance(250);
    await tick();
    assert.equal(sockets.length, 2);
    client.close();
  });

  it("asks for a fresh token after 4003 and after a failed handshake", async () => {
    const calls = [];
    const { client, clock, sockets } = setup({
      token: async (ctx) => { calls.push(ctx.refresh); return `t${calls.length}`; },
    });
    client.connect();
    await tick();
    sockets[0].welcome();
    clock.advance(6000);
    sockets[0].drop(4003, "token expired: reconnect");
    clock.advance(250);
    await tick();
    assert.deepEqual(sockets[1].protocols, ["agentia.v1", "bearer.t2"]);
    sockets[1].welcome();
    clock.advance(6000);
    sockets[1].drop(1012);
    clock.advance(250);
    await tick();
    sockets[2].drop(1006);
    clock.advance(500);
    await tick();
    assert.deepEqual(calls, [false, true, false, true]);
    client.close();
  });

  it("retries a resume answered by a retryable error, buffering meanwhile", async () => {
    const { client, clock, sockets, events } = setup();
    client.connect();
    await tick();
    sockets[0].welcome();
    sockets[0].receive(ev(1));
    sockets[0].receive(ev(3)); // gap
    assert.deepEqual(sockets[0].sentOf("resume"), [{ type: "resume", after: 1, epoch: "e1" }]);
    sockets[0].receive({ type: "error", code: "unavailable", message: "x", retryable: true,
      ref: null, retry_after_ms: 1000 });
    sockets[0].receive(ev(4));
    clock.advance(1000);
    assert.equal(sockets[0].sentOf("resume").length, 2);
    for (const o of [2, 3]) sockets[0].receive(ev(o));
    sockets[0].receive({ type: "resumed", recovered: true, offset: 4, epoch: "e1" });
    assert.deepEqual(events.map((e) => e.offset), [1, 2, 3, 4]);
    assert.equal(client.state, "connected");
    client.close();
  });

  it("emits reset and rebuilds when the server lost the history", async () => {
    const { client, sockets, events } = setup();
    const resets = [];
    client.on("reset", (r) => resets.push(r));
    client.connect();
    await tick();
    sockets[0].welcome();
    sockets[0].receive(ev(1));
    sockets[0].receive({ type: "resumed", recovered: false, offset: 0, epoch: "e2" });
    assert.equal(resets.length, 1);
    sockets[0].receive(ev(1, "user"));
    assert.deepEqual(events.map((e) => [e.offset, e.type]), [[1, "tool"], [1, "user"]]);
    assert.equal(client.epoch, "e2");
    client.close();
  });

  it("persists the session so a new client replays the history from 0", async () => {
    const first = setup();
    first.client.connect();
    await tick();
    first.sockets[0].welcome({ session: "abc", epoch: "e1" });
    first.sockets[0].receive(ev(1));
    first.sockets[0].receive(ev(2));
    const p = first.client.send("unacked");
    p.catch(() => {});
    first.client.close();

    // a reload: same per-tab and shared storage
    const again = setup({ storage: first.storage, sharedStorage: first.shared });
    assert.equal(again.client.session, "abc");
    assert.deepEqual(again.client.pending, [{ id: p.id, text: "unacked" }]);
    again.client.connect();
    await tick();
    assert.equal(again.sockets[0].url, "ws://a/v1/ws?session=abc");
    again.sockets[0].welcome({ session: "abc", epoch: "e1", offset: 2 });
    assert.deepEqual(again.sockets[0].sentOf("resume"), [{ type: "resume", after: 0 }]);
    assert.deepEqual(again.sockets[0].sentOf("send").map((f) => f.id), [p.id]);
    assert.equal(again.client.state, "connecting");
    again.sockets[0].receive(ev(1));
    again.sockets[0].receive(ev(2));
    again.sockets[0].receive({ type: "resumed", recovered: true, offset: 2, epoch: "e1" });
    assert.equal(again.client.state, "connected");
    assert.deepEqual(again.events.map((e) => e.offset), [1, 2]);
    again.client.close();

    // another tab: only the shared storage
    const tab = setup({ sharedStorage: first.shared });
    assert.equal(tab.client.session, "abc");
    assert.deepEqual(tab.client.pending, []);
    tab.client.close();
  });

  it("continues from the stored offset with history: continue", async () => {
    const first = setup();
    first.client.connect();
    await tick();
    first.sockets[0].welcome({ session: "abc", epoch: "e1" });
    first.sockets[0].receive(ev(1));
    first.client.close();
    const again = setup({ storage: first.storage, sharedStorage: first.shared, history: "continue" });
    again.client.connect();
    await tick();
    again.sockets[0].welcome({ session: "abc", epoch: "e1", offset: 5 });
    assert.deepEqual(again.sockets[0].sentOf("resume"), [{ type: "resume", after: 1, epoch: "e1" }]);
    again.client.close();
  });

  it("cancels a turn: resolves on cancelling, rejects on turn_not_active", async () => {
    const { client, sockets } = setup();
    client.connect();
    await tick();
    sockets[0].welcome();
    const ok = client.cancel(7);
    sockets[0].receive({ type: "cancelling", turn: 7 });
    assert.equal(await ok, 7);
    const bad = client.cancel(9);
    sockets[0].receive({ type: "error", code: "turn_not_active", message: "no", retryable: false, ref: null });
    await assert.rejects(bad, (e) => e.code === "turn_not_active");
    assert.deepEqual(sockets[0].sentOf("cancel"), [{ type: "cancel", turn: 7 }, { type: "cancel", turn: 9 }]);
    client.close();
  });

  it("switches to a new session", async () => {
    const { client, clock, sockets, states } = setup();
    client.connect();
    await tick();
    sockets[0].welcome({ session: "one" });
    client.switchSession(null);
    await tick();
    assert.equal(sockets.length, 2);
    assert.equal(sockets[1].url.includes("session="), false);
    assert.equal(sockets[0].closedWith.code, 1000);
    sockets[1].welcome({ session: "two", epoch: "e9", offset: 0 });
    assert.equal(client.session, "two");
    assert.deepEqual(sockets[1].sentOf("resume"), []);
    assert.equal(states.at(-1), "connected");
    clock.advance(20000);
    assert.equal(sockets.length, 2);
    client.close();
  });

  it("is an async iterator of events", async () => {
    const { client, sockets } = setup();
    client.connect();
    await tick();
    sockets[0].welcome();
    const seen = [];
    const done = (async () => { for await (const e of client) seen.push(e.offset); })();
    sockets[0].receive(ev(1));
    sockets[0].receive(ev(2));
    await tick();
    client.close();
    await done;
    assert.deepEqual(seen, [1, 2]);
  });

  it("ignores unknown frame types and fields", async () => {
    const { client, sockets, events, errors } = setup();
    client.connect();
    await tick();
    sockets[0].welcome();
    sockets[0].receive({ type: "something_new", x: 1 });
    sockets[0].onmessage({ data: "not json" });
    sockets[0].receive({ offset: 1, type: "tool", turn: 1, name: "a", extra: true });
    sockets[0].receive({ type: "chunk", turn: "x", seq: 1, text: "not a turn" });
    assert.equal(events.length, 1);
    assert.equal(errors.length, 1);
    client.close();
  });

  it("needs a WebSocket constructor in Node 20", () => {
    const had = globalThis.WebSocket;
    if (had) return; // Node 22+ has one
    assert.throws(() => new AgentiaClient({ urls: "ws://x/v1/ws" }), /WebSocket/);
  });
});

// -- interim transcripts (docs/protocol.md, `transcript` with `final: false`) -----------------

describe("captions", () => {
  const cap = (text, utterance = "u1") => ({ type: "transcript", text, final: false, source: "voice", role: "user", utterance });

  it("emits interim transcripts live, never as log events, none while resuming", async () => {
    const { client, sockets } = setup();
    const seen = [];
    const logged = [];
    client.on("caption", (f) => seen.push(f.text));
    client.on("event", (e) => logged.push(e.type));
    client.connect();
    await tick();
    sockets[0].welcome();
    assert.ok(isCaption(cap("wh")) && !isCaption({ ...cap("x"), offset: 3, final: true }));
    assert.ok(!isLogEvent(cap("wh")));
    sockets[0].receive(cap("wh"));
    sockets[0].receive(cap("what time"));
    sockets[0].receive(ev(1, "transcript", { final: true, text: "what time is it", turn: undefined }));
    assert.deepEqual(seen, ["wh", "what time"]);
    assert.deepEqual(logged, ["transcript"]);
    client._seq.resumeFrame(); // a resume being answered: interims are not shown
    sockets[0].receive(cap("late", "u2"));
    assert.deepEqual(seen, ["wh", "what time"]);
    client.close();
  });
});

// -- reply text: chunk and partial frames (docs/protocol.md, `chunk`, section 6 steps 2 and 6) --

const chunk = (seq, text, attempt = 1, turn = 1) => ({ type: "chunk", turn, attempt, seq, text });
const partial = (seq, text, attempt = 1, turn = 1) => ({ type: "partial", turn, attempt, seq, text });

function watchText(client) {
  const seen = { texts: [], frames: [] };
  client.on("text", (t) => seen.texts.push(t.text));
  client.on("chunk", (f) => seen.frames.push(["chunk", f.seq]));
  client.on("partial", (f) => seen.frames.push(["partial", f.seq]));
  return seen;
}

describe("reply text", () => {
  it("holds stream frames while resuming and applies them after the replayed events", () => {
    const s = new EventSequencer(2, "e");
    assert.deepEqual(s.onStream(chunk(1, "a")), [chunk(1, "a")]);
    s.resumeFrame();
    assert.deepEqual(s.onStream(chunk(2, "b")), []);
    s.onEvent(ev(3, "turn_start"));
    assert.deepEqual(s.onStream(partial(3, "abc")), []);
    const out = s.onResumed({ type: "resumed", recovered: true, offset: 3, epoch: "e" });
    assert.deepEqual(out.apply.map((e) => e.offset), [3]);
    assert.deepEqual(out.stream, [chunk(2, "b"), partial(3, "abc")]);
    s.resumeFrame();
    s.onStream(chunk(4, "d"));
    s.abort(); // the connection died: what it held goes with it
    s.resumeFrame();
    assert.deepEqual(s.onResumed({ type: "resumed", recovered: true, offset: 3, epoch: "e" }).stream, []);
  });

  it("streams a turn's text, dropping duplicates, holes and older attempts", async () => {
    const { client, sockets } = setup();
    const seen = watchText(client);
    client.connect();
    await tick();
    sockets[0].welcome();
    sockets[0].receive(ev(1, "user", { turn: undefined, id: "m1" }));
    sockets[0].receive(ev(2, "turn_start", { attempt: 1 }));
    for (const f of [chunk(1, "He"), chunk(1, "He"), chunk(3, "!"), chunk(2, "llo")]) {
      sockets[0].receive(f);
    }
    assert.deepEqual(seen.texts, ["He", "Hello"]);
    assert.equal(client.replyText(1), "Hello");
    sockets[0].receive(ev(3, "turn_start", { attempt: 2 }));
    assert.equal(client.replyText(1), "");
    sockets[0].receive(chunk(3, "!", 1)); // the failed attempt's straggler
    sockets[0].receive(chunk(1, "Hi", 2));
    sockets[0].receive(ev(4, "reply", { text: "Hi there" }));
    sockets[0].receive(chunk(2, " there", 2)); // after the end: ignored
    assert.deepEqual(seen.texts, ["He", "Hello", "Hi"]);
    assert.deepEqual(seen.frames, [["chunk", 1], ["chunk", 2], ["chunk", 1]]);
    assert.equal(client.replyText(1), "Hi there");
    client.close();
  });

  it("after a reconnect mid-reply, the resume's partial gives the text it missed", async () => {
    const { client, clock, sockets, events } = setup();
    const seen = watchText(client);
    client.connect();
    await tick();
    sockets[0].welcome();
    sockets[0].receive(ev(1, "user", { turn: undefined, id: "m1" }));
    sockets[0].receive(ev(2, "turn_start", { attempt: 1 }));
    sockets[0].receive(chunk(1, "It is "));
    sockets[0].drop(1006);
    clock.advance(250);
    await tick();
    sockets[1].welcome({ offset: 2 });
    assert.deepEqual(sockets[1].sentOf("resume"), []); // nothing of the log was missed
    sockets[1].receive(chunk(4, "UTC.")); // a hole: the edge sends a partial instead ...
    sockets[1].receive(partial(3, "It is 09:14 ")); // ... like this one
    sockets[1].receive(chunk(4, "UTC."));
    assert.deepEqual(seen.texts, ["It is ", "It is 09:14 ", "It is 09:14 UTC."]);
    sockets[1].drop(1006);
    clock.advance(500);
    await tick();
    sockets[2].welcome({ offset: 3 }); // a tool event was missed: a resume
    assert.equal(sockets[2].sentOf("resume").length, 1);
    sockets[2].receive(chunk(5, " Bye")); // live, before the answer: held
    sockets[2].receive(ev(3, "tool", { name: "clock" }));
    sockets[2].receive(partial(5, "It is 09:14 UTC. Bye")); // the answer's: a duplicate here
    assert.equal(seen.texts.length, 3);
    sockets[2].receive({ type: "resumed", recovered: true, offset: 3, epoch: "e1" });
    assert.deepEqual(events.map((e) => e.offset), [1, 2, 3]);
    sockets[2].receive(chunk(6, " More"));
    assert.deepEqual(seen.texts.slice(3), ["It is 09:14 UTC. Bye", "It is 09:14 UTC. Bye More"]);
    assert.deepEqual(seen.frames.slice(3), [["chunk", 5], ["chunk", 6]]);
    client.close();
  });

  it("a reload mid-reply shows the text so far from the replay's partial", async () => {
    const first = setup();
    first.client.connect();
    await tick();
    first.sockets[0].welcome({ session: "abc" });
    first.client.close();
    const again = setup({ storage: first.storage, sharedStorage: first.shared });
    const seen = watchText(again.client);
    again.client.connect();
    await tick();
    again.sockets[0].welcome({ session: "abc", offset: 2 });
    assert.deepEqual(again.sockets[0].sentOf("resume"), [{ type: "resume", after: 0 }]);
    again.sockets[0].receive(ev(1, "user", { turn: undefined, id: "m1" }));
    again.sockets[0].receive(ev(2, "turn_start", { attempt: 1 }));
    again.sockets[0].receive(partial(2, "Once upon"));
    again.sockets[0].receive(chunk(3, " a time"));
    assert.deepEqual(seen.texts, []);
    again.sockets[0].receive({ type: "resumed", recovered: true, offset: 2, epoch: "e1" });
    assert.deepEqual(seen.texts, ["Once upon", "Once upon a time"]);
    again.client.close();
  });

  it("forgets the texts on a reset", async () => {
    const { client, sockets } = setup();
    client.connect();
    await tick();
    sockets[0].welcome();
    sockets[0].receive(ev(1, "turn_start", { attempt: 1 }));
    sockets[0].receive(chunk(1, "a"));
    assert.equal(client.replyText(1), "a");
    sockets[0].receive({ type: "resumed", recovered: false, offset: 0, epoch: "e2" });
    assert.equal(client.replyText(1), null);
    client.close();
  });
});
