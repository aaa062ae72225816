// The agent events and approve() against a real edge, a worker with the demo agent and Redis.
// Skipped unless tests/e2e/test_client_js.py runs it with AGENTIA_TEST_WS_URLS (two edges) and
// AGENTIA_TEST_TOKEN; under Node 20 it needs --experimental-websocket.
import assert from "node:assert/strict";
import { after, describe, it } from "node:test";

import { AgentiaClient } from "../src/index.js";

const env = globalThis.process?.env ?? {};
const urls = (env.AGENTIA_TEST_WS_URLS ?? "").split(",").filter(Boolean);
const skip = urls.length === 0 ? "no edge (run by tests/e2e/test_client_js.py)" : false;
const TIMEOUT_MS = 30000;
const clients = [];

function open(options) {
  const client = new AgentiaClient({
    urls, token: env.AGENTIA_TEST_TOKEN, storage: null, sharedStorage: null,
    backoff: { initialMs: 50, maxMs: 500 }, ...options,
  });
  clients.push(client);
  const seen = { events: [], named: [] };
  client.on("event", (e) => seen.events.push(e));
  for (const name of ["tool_call", "tool_result", "agent_state", "handoff", "approval_request",
    "approval_result"]) {
    client.on(name, (e) => seen.named.push([name, e]));
  }
  client.connect();
  return { client, seen };
}

function until(client, pred, what) {
  return new Promise((resolve, reject) => {
    const offs = [];
    const done = (fn, v) => { clearTimeout(timer); for (const off of offs) off(); fn(v); };
    const timer = setTimeout(() => done(reject, new Error(`timed out waiting for ${what}`)),
      TIMEOUT_MS);
    const check = () => { const v = pred(); if (v) done(resolve, v); };
    for (const n of ["event", "state", "close"]) offs.push(client.on(n, check));
    check();
  });
}

const find = (events, type, turn) => events.find((e) => e.type === type && e.turn === turn);

describe("agent events against a real edge", { skip }, () => {
  after(() => { for (const c of clients) c.close(); });

  it("shows a tool call, pauses a booking and approves it from a second client", async () => {
    const a = open({});
    const sum = await a.client.send("what is 6 * 7");
    await until(a.client, () => find(a.seen.events, "reply", sum.offset), "the sum's reply");
    const call = find(a.seen.events, "tool_call", sum.offset);
    assert.equal(call.name, "calculate");
    assert.deepEqual(call.arguments, { expression: "6 * 7" });
    const result = find(a.seen.events, "tool_result", sum.offset);
    assert.equal(result.call_id, call.call_id);
    assert.match(result.output, /42/);
    const named = a.seen.named.filter(([, e]) => e.turn === sum.offset).map(([n]) => n);
    assert.ok(named.includes("tool_call") && named.includes("agent_state"), named.join());
    assert.ok(!named.includes("state"));

    const booking = await a.client.send("book a table for two at seven");
    const request = await until(a.client,
      () => find(a.seen.events, "approval_request", booking.offset), "the approval request");
    assert.equal(request.name, "book_table");
    const session = a.client.session;
    a.client.close();

    // a second client (the other URL first) rebuilds the view: the request is still open
    const b = open({ session, urls: [...urls].reverse() });
    await until(b.client, () => find(b.seen.events, "approval_request", booking.offset),
      "the replayed request");
    assert.equal(find(b.seen.events, "approval_result", booking.offset), undefined);
    const ack = await b.client.approve(request.call_id, true);
    assert.ok(ack.offset > request.offset);
    const reply = await until(b.client, () => find(b.seen.events, "reply", booking.offset),
      "the booked reply");
    assert.match(reply.text, /Booked a table for 2 at 7:00/);
    const outcome = find(b.seen.events, "approval_result", booking.offset);
    assert.equal(outcome.approved, true);
    assert.equal(outcome.offset, ack.offset);
    await assert.rejects(b.client.approve(request.call_id, false), { code: "no_such_approval" });
  });
});
