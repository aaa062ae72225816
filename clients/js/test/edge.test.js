// The client against a real edge, worker and Redis. Skipped unless tests/e2e/test_client_js.py
// runs it with AGENTIA_TEST_WS_URLS (comma list), AGENTIA_TEST_TOKEN and AGENTIA_TEST_TOKEN_OTHER
// (a second user); under Node 20 it needs --experimental-websocket (a global WebSocket).
import assert from "node:assert/strict";
import { after, describe, it } from "node:test";

import { AgentiaClient } from "../src/index.js";

const env = globalThis.process?.env ?? {};
const urls = (env.AGENTIA_TEST_WS_URLS ?? "").split(",").filter(Boolean);
const skip = urls.length === 0 ? "no edge (run by tests/e2e/test_client_js.py)" : false;
const TIMEOUT_MS = 20000;
const clients = [];

function open(options) {
  const client = new AgentiaClient({
    urls, storage: null, sharedStorage: null, backoff: { initialMs: 50, maxMs: 500 }, ...options,
  });
  clients.push(client);
  const seen = { events: [], errors: [], states: [], resets: 0, chunks: [] };
  client.on("event", (e) => seen.events.push(e));
  client.on("chunk", (f) => seen.chunks.push(f));
  client.on("error", (e) => seen.errors.push(e));
  client.on("state", (s) => seen.states.push(s));
  client.on("reset", () => { seen.resets += 1; });
  return { client, seen };
}

/** Resolve when `pred()` holds, checked on every client emission; reject after TIMEOUT_MS. */
function until(client, pred, what) {
  return new Promise((resolve, reject) => {
    const names = ["event", "state", "error", "close"];
    const offs = [];
    const done = (fn, v) => { clearTimeout(timer); for (const off of offs) off(); fn(v); };
    const timer = setTimeout(() => done(reject, new Error(`timed out waiting for ${what}`)),
      TIMEOUT_MS);
    const check = () => { if (pred()) done(resolve); };
    for (const n of names) offs.push(client.on(n, check));
    check();
  });
}

const replyOf = (events, turn) => events.find((e) => e.type === "reply" && e.turn === turn);

function assertContiguous(events) {
  events.forEach((e, i) => assert.equal(e.offset, i + 1, `event ${i} has offset ${e.offset}`));
}

describe("against a real edge", { skip }, () => {
  after(() => { for (const c of clients) c.close(); }); // a failed test must not hang node

  it("sends, streams, resumes after a dropped connection and replays for a new client", async () => {
    const a = open({ token: env.AGENTIA_TEST_TOKEN });
    a.client.connect();
    // (the ack may say duplicate: the turn's `user` event can arrive before its ack)
    const ack = await a.client.send("hello");
    assert.ok(Number.isInteger(ack.offset) && ack.offset > 0);
    await until(a.client, () => replyOf(a.seen.events, ack.offset), "the first reply");
    assert.equal(a.client.state, "connected");
    // its text streamed as chunks (not log events), in seq order, making up the reply
    const chunks = a.seen.chunks.filter((f) => f.turn === ack.offset);
    assert.ok(chunks.length >= 1);
    assert.deepEqual(chunks.map((f) => f.seq), chunks.map((_, i) => i + 1));
    assert.equal(chunks.map((f) => f.text).join(""), replyOf(a.seen.events, ack.offset).text);
    assert.equal(a.client.replyText(ack.offset), replyOf(a.seen.events, ack.offset).text);
    assert.ok(!a.seen.events.some((e) => e.type === "chunk" || e.type === "delta"));

    // the socket goes away under the client: it reconnects (any URL) and resumes
    a.client._ws.close();
    await until(a.client, () => a.client.state === "resumed", "the resume");
    const ack2 = await a.client.send("and again");
    await until(a.client, () => replyOf(a.seen.events, ack2.offset), "the second reply");
    assertContiguous(a.seen.events);
    assert.equal(a.seen.resets, 0);
    const session = a.client.session;
    a.client.close();

    // a fresh client of the same user rebuilds the view: the same events, in order, once
    const b = open({ token: env.AGENTIA_TEST_TOKEN, session });
    b.client.connect();
    await until(b.client, () => b.seen.events.length >= a.seen.events.length, "the replay");
    assert.deepEqual(b.seen.events.map((e) => [e.offset, e.type]),
      a.seen.events.map((e) => [e.offset, e.type]));
    b.client.close();

    // another user's client is refused with 4501 and stops for good
    const c = open({ token: env.AGENTIA_TEST_TOKEN_OTHER, session });
    c.client.connect();
    await until(c.client, () => c.client.state === "closed", "the 4501 close");
    assert.ok(c.seen.errors.some((e) => e.closeCode === 4501), JSON.stringify(c.seen.errors));
    assert.equal(c.seen.events.length, 0);
  });
});
