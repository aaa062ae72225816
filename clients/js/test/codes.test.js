// The close and error code tables (their parity with the server is checked by
// tests/browser/test_sdk.py against agentia/codes.py).
import assert from "node:assert/strict";
import { describe, it } from "node:test";

import {
  AgentiaError, CLOSE_CODES, RETRYABLE_CODES, closeName, isTerminalClose,
} from "../src/index.js";

describe("close codes", () => {
  it("reconnects on the standard codes and 4000-4499", () => {
    for (const code of [1000, 1001, 1006, 1009, 1011, 1012, 1013, 4000, 4001, 4002, 4003, 4004,
      4499]) {
      assert.equal(isTerminalClose(code), false, String(code));
    }
  });

  it("reconnects on 4005 and stops on the per-user session limits", () => {
    assert.equal(isTerminalClose(4005), false); // too many connections: retry with backoff
    for (const code of [4501, 4502, 4503, 4504, 4505, 4506]) assert.equal(isTerminalClose(code), true, String(code));
    assert.deepEqual(CLOSE_CODES[4502], ["NEW_SESSIONS_RATE", false]);
  });

  it("stops on 4500-4999 and on the protocol violations", () => {
    for (const code of [4500, 4501, 4700, 4999, 1002, 1003, 1007, 1008, 1010]) {
      assert.equal(isTerminalClose(code), true, String(code));
    }
  });

  it("names the codes the edge sends, and agrees with its own table", () => {
    assert.equal(closeName(4001), "IDLE");
    assert.equal(closeName(4501), "FORBIDDEN");
    assert.equal(closeName(1006), null);
    for (const [code, [, reconnect]] of Object.entries(CLOSE_CODES)) {
      assert.equal(isTerminalClose(Number(code)), !reconnect, code);
    }
  });
});

describe("errors", () => {
  it("marks the retryable codes of an error frame", () => {
    for (const code of RETRYABLE_CODES) {
      assert.equal(AgentiaError.fromFrame({ type: "error", code }).retryable, true, code);
    }
    const err = AgentiaError.fromFrame({ type: "error", code: "bad_frame", message: "no", ref: "c1" });
    assert.equal(err.retryable, false);
    assert.equal(err.ref, "c1");
    assert.ok(err instanceof Error);
  });

  it("keeps retry_after_ms only when it is a number", () => {
    const f = { type: "error", code: "rate_limited", retry_after_ms: 250 };
    assert.equal(AgentiaError.fromFrame(f).retryAfterMs, 250);
    assert.equal(AgentiaError.fromFrame({ ...f, retry_after_ms: "x" }).retryAfterMs, null);
  });
});
