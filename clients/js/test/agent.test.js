// The agent-native events and approve() (docs/protocol.md, issue 14) with a fake WebSocket.
import assert from "node:assert/strict";
import { describe, it } from "node:test";

import { AGENT_EVENTS, AgentiaClient, isTerminalClose, withAgent } from "../src/index.js";

import { fakeSocketClass, setup, tick } from "./fakes.js";

const NAMES = Object.values(AGENT_EVENTS);

function listen(client) {
  const got = [];
  for (const name of NAMES) client.on(name, (ev) => got.push([name, ev.offset]));
  return got;
}

describe("agent events", () => {
  it("emits each agent event under its own name after 'event', in offset order", async () => {
    const { client, sockets, events } = setup();
    const got = listen(client);
    const states = [];
    client.on("state", (s) => states.push(s)); // the connection's state, unchanged
    client.connect();
    await tick();
    sockets[0].welcome({ agent: "triage" });
    assert.equal(client.agent, "triage");
    const turn = [
      { offset: 1, type: "user", id: "u", text: "book a table", source: "chat", user: "al", ts: 1 },
      { offset: 2, type: "turn_start", turn: 1, attempt: 1 },
      { offset: 3, type: "state", turn: 1, state: "thinking", agent: "triage" },
      { offset: 4, type: "handoff", turn: 1, from: "triage", to: "demo" },
      { offset: 5, type: "tool_call", turn: 1, call_id: "b1", name: "book_table",
        arguments: { people: 2, time: "19:00" }, agent: "demo" },
      { offset: 6, type: "approval_request", turn: 1, call_id: "b1", name: "book_table",
        arguments: { people: 2 }, agent: "demo", expires: 2e9 },
      { offset: 7, type: "approval_result", turn: 1, call_id: "b1", approved: true, by: "al" },
      { offset: 8, type: "tool_result", turn: 1, call_id: "b1", name: "book_table",
        output: "booked", is_error: false },
      { offset: 9, type: "reply", turn: 1, text: "Booked", agent: "demo" },
    ];
    for (const e of turn) sockets[0].receive(e);
    sockets[0].receive(turn[4]); // a duplicate is applied (and emitted) once
    assert.deepEqual(events.map((e) => e.offset), [1, 2, 3, 4, 5, 6, 7, 8, 9]);
    assert.deepEqual(got, [["agent_state", 3], ["handoff", 4], ["tool_call", 5],
      ["approval_request", 6], ["approval_result", 7], ["tool_result", 8]]);
    assert.deepEqual(states, ["connecting", "connected"]);
    client.close();
  });

  it("asks for the agent in the URL; an unknown one (4504) stops the client", async () => {
    const { FakeSocket } = fakeSocketClass();
    assert.throws(() => new AgentiaClient({ url: "ws://x", WebSocket: FakeSocket, agent: "Bad" }),
      /agent must match/);
    assert.equal(withAgent("ws://x/v1/ws?session=s", "demo"), "ws://x/v1/ws?session=s&agent=demo");
    assert.equal(withAgent("ws://x/v1/ws", null), "ws://x/v1/ws");
    assert.ok(isTerminalClose(4504) && isTerminalClose(4505));
    const { client, sockets, errors, states } = setup({ agent: "nobody" });
    client.connect();
    await tick();
    assert.match(sockets[0].url, /[?&]agent=nobody$/);
    assert.equal(client.agent, "nobody");
    sockets[0].open();
    sockets[0].drop(4504, "no such agent: nobody");
    assert.equal(states.at(-1), "closed");
    assert.equal(errors.at(-1).closeCode, 4504);
    assert.equal(sockets.length, 1);
  });
});

describe("approve", () => {
  it("resolves on its ack and rejects with the code of its error", async () => {
    const { client, sockets } = setup();
    client.connect();
    await tick();
    sockets[0].welcome();
    const ok = client.approve("b1", true, "go ahead");
    const no = client.approve("zz", false);
    const [a, b] = sockets[0].sentOf("approve");
    assert.deepEqual({ ...a, id: "" }, { type: "approve", id: "", call_id: "b1", approved: true,
      message: "go ahead" });
    assert.equal(b.message, undefined);
    assert.notEqual(a.id, b.id);
    sockets[0].receive({ type: "error", code: "no_such_approval", message: "nothing pending",
      retryable: false, ref: b.id });
    sockets[0].receive({ type: "ack", id: a.id, offset: 12, duplicate: false });
    assert.deepEqual(await ok, { id: a.id, offset: 12, duplicate: false });
    await assert.rejects(no, (err) => err.code === "no_such_approval" && err.ref === b.id);
    await assert.rejects(client.approve("b1", true, "x".repeat(1001)), { code: "bad_frame" });
    await assert.rejects(client.approve("", true), { code: "bad_frame" });
    await assert.rejects(client.approve("b1", "yes"), { code: "bad_frame" });
    assert.equal(sockets[0].sentOf("approve").length, 2);
    client.close();
  });

  it("is retried after rate_limited and sent again (same id) after a reconnect", async () => {
    const { client, sockets, clock } = setup();
    client.connect();
    await tick();
    sockets[0].welcome();
    const p = client.approve("b1", false);
    const first = sockets[0].sentOf("approve")[0];
    sockets[0].receive({ type: "error", code: "rate_limited", message: "slow down",
      retryable: true, ref: first.id, retry_after_ms: 200 });
    clock.advance(200);
    assert.equal(sockets[0].sentOf("approve").length, 2);
    sockets[0].drop(1006);
    clock.advance(60_000);
    await tick();
    sockets[1].welcome();
    const again = sockets[1].sentOf("approve");
    assert.equal(again.length, 1);
    assert.equal(again[0].id, first.id);
    sockets[1].receive({ type: "ack", id: first.id });
    await p;
    client.close();
  });

  it("waits for a connection, and rejects on close()", async () => {
    const { client, sockets } = setup();
    client.connect();
    await tick();
    const p = client.approve("b1", true);
    assert.equal(sockets[0].sent.length, 0);
    sockets[0].welcome();
    assert.equal(sockets[0].sentOf("approve").length, 1);
    client.close();
    await assert.rejects(p, { code: "closed" });
    await assert.rejects(client.approve("b1", true), { code: "closed" });
  });
});
