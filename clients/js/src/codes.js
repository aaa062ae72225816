// Close and error codes of the agentia.v1 protocol (docs/protocol.md, section 8), as data.
// Mirrors agentia/codes.py and the Python client's policy; tests/browser/test_sdk.py checks it.

/** The WebSocket subprotocol spoken by the edge. */
export const PROTOCOL = "agentia.v1";

/**
 * The edge's close codes: code -> [name, reconnect]. `reconnect` false means the client stops
 * (and reports an AgentiaError with `closeCode`); true means reconnect with backoff and resume.
 * 4005 (the user's connections over all edges) reconnects with backoff; 4501 (another user's
 * session), 4502 (too many new sessions this hour: the app may retry later), 4503 (too many
 * live sessions), 4504 (no such agent), 4505 (the session talks to another agent) and 4506
 * (the session was deleted) stop the client.
 */
export const CLOSE_CODES = Object.freeze({
  1000: ["NORMAL", true], 1001: ["GOING_AWAY", true], 1009: ["MESSAGE_TOO_BIG", true],
  1011: ["INTERNAL_ERROR", true], 1012: ["SERVICE_RESTART", true],
  1013: ["TRY_AGAIN_LATER", true], 4000: ["SLOW", true], 4001: ["IDLE", true],
  4002: ["FLOOD", true], 4003: ["TOKEN_EXPIRED", true], 4004: ["SESSION_LOST", true],
  4005: ["TOO_MANY_CONNECTIONS", true], 4501: ["FORBIDDEN", false],
  4502: ["NEW_SESSIONS_RATE", false], 4503: ["TOO_MANY_SESSIONS", false],
  4504: ["UNKNOWN_AGENT", false], 4505: ["AGENT_MISMATCH", false],
  4506: ["SESSION_DELETED", false],
});

/**
 * Standard codes that mean the client broke the protocol (1002 a bad WebSocket frame, 1007 a
 * text message that is not UTF-8, ...): reconnecting would only repeat it, so the client stops.
 */
export const PROTOCOL_VIOLATIONS = Object.freeze([1002, 1003, 1007, 1008, 1010]);

/** True when a close code means "do not reconnect": the table, the violations, 4500-4999. */
export function isTerminalClose(code) {
  if (Object.hasOwn(CLOSE_CODES, code)) return !CLOSE_CODES[code][1];
  if (PROTOCOL_VIOLATIONS.includes(code)) return true;
  return code >= 4500 && code <= 4999;
}

/** The name of a close code ("SLOW"), or null for one the edge does not send. */
export function closeName(code) {
  return Object.hasOwn(CLOSE_CODES, code) ? CLOSE_CODES[code][0] : null;
}

/** Codes carried by `error` frames and `turn_error` events (agentia/codes.py ErrorCode). */
export const ERROR_CODES = Object.freeze([
  "bad_json", "bad_frame", "rate_limited", "unavailable", "overloaded", "turn_not_active",
  "no_such_approval", "turn_failed", "turn_timeout", "guardrail", "session_lost", "internal",
]);

/**
 * Error codes after which the client retries by itself. The server's retryable set, plus
 * session_lost: the edge closes with 4004 next and the send goes again after the reconnect.
 */
export const RETRYABLE_CODES = Object.freeze(
  new Set(["rate_limited", "unavailable", "overloaded", "internal", "session_lost"]));
