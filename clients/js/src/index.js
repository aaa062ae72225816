// @agentia/client: a dependency-free client for the `agentia.v1` WebSocket protocol
// (docs/protocol.md). A plain ES module for browsers (no build step) and Node 20+ (pass a
// WebSocket constructor, e.g. from the `ws` package, as `WebSocket`). Usage: README.md.
export {
  AGENT_EVENTS, AGENT_NAME_RE, MAX_APPROVE_MESSAGE, checkApprove, withAgent,
} from "./agent.js";
export { backoffDelay, DEFAULT_BACKOFF } from "./backoff.js";
export { AgentiaClient, STATES } from "./client.js";
export {
  CLOSE_CODES, ERROR_CODES, PROTOCOL, PROTOCOL_VIOLATIONS, RETRYABLE_CODES, closeName,
  isTerminalClose,
} from "./codes.js";
export { EventSequencer, STREAM_BUFFER_LIMIT } from "./cursor.js";
export { Emitter } from "./emitter.js";
export { AgentiaError } from "./errors.js";
export { countChars, isCaption, isLogEvent, isStreamFrame, newClientId, withSession } from "./frames.js";
export { ReplyTexts, TurnText } from "./replies.js";
export { AgentiaClient as default } from "./client.js";
