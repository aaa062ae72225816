// The agent's own log events (tool calls, results, state, handoffs, approvals) and the
// `approve` frame that answers an approval request (docs/protocol.md).
import { AgentiaError } from "./errors.js";
import { countChars } from "./frames.js";

/**
 * Log event types the client also emits under their own name (after "event"). The `state`
 * event is emitted as "agent_state": "state" is the client's connection state.
 */
export const AGENT_EVENTS = Object.freeze({
  tool_call: "tool_call", tool_result: "tool_result", state: "agent_state",
  handoff: "handoff", approval_request: "approval_request",
  approval_result: "approval_result",
});

/** Agent names the edge accepts in `?agent=`. */
export const AGENT_NAME_RE = /^[a-z0-9][a-z0-9_-]{0,31}$/;

/** Characters of an `approve` frame's `message` the edge accepts. */
export const MAX_APPROVE_MESSAGE = 1000;

/** Add `agent=<name>` to a WebSocket URL (no name: the URL as is). */
export function withAgent(url, agent) {
  if (!agent) return url;
  return url + (url.includes("?") ? "&" : "?") + "agent=" + encodeURIComponent(agent);
}

/** Why an `approve(callId, approved, message)` cannot be sent; null when it can. */
export function checkApprove(callId, approved, message) {
  if (typeof callId !== "string" || callId === "") {
    return new AgentiaError("bad_frame", "callId must be a non-empty string");
  }
  if (typeof approved !== "boolean") {
    return new AgentiaError("bad_frame", "approved must be true or false");
  }
  if (message !== null && typeof message !== "string") {
    return new AgentiaError("bad_frame", "message must be a string");
  }
  if (message !== null && countChars(message) > MAX_APPROVE_MESSAGE) {
    return new AgentiaError("bad_frame", `message is longer than ${MAX_APPROVE_MESSAGE} characters`);
  }
  return null;
}

/** Methods of AgentiaClient for `approve`: kept until its ack or error, like a send. */
export const approvalMethods = {
  /** Write an approve that is not on the wire yet (it goes after the next welcome if not). */
  _transmitApprove(a) {
    if (a.sent || !this._approvals.has(a.id)) return;
    const frame = { type: "approve", id: a.id, call_id: a.callId, approved: a.approved };
    if (a.message !== null) frame.message = a.message;
    a.sent = this._frame(frame);
  },

  /** An `ack`: true when it answers an approve. */
  _onApproveAck(f) {
    const a = this._approvals.get(f.id);
    if (!a) return false;
    this._approvals.delete(a.id);
    a.resolve({ id: f.id, offset: Number.isInteger(f.offset) ? f.offset : 0,
      duplicate: f.duplicate === true });
    return true;
  },

  /** An `error` about an approve: retried when retryable, else its promise rejects. */
  _onApproveError(a, err) {
    if (err.retryable) {
      err.willRetry = true;
      a.sent = false;
      this._after(err.retryAfterMs ?? 1000, () => this._transmitApprove(a));
      return;
    }
    this._approvals.delete(a.id);
    a.reject(err);
  },
};
