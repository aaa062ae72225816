// The one error class of the client: server `error` frames and the client's own failures.
import { RETRYABLE_CODES } from "./codes.js";

/** An error reported by the server (an `error` frame) or by the client itself. */
export class AgentiaError extends Error {
  constructor(code, message, { retryable = false, ref = null, retryAfterMs = null, closeCode = null,
    willRetry = false } = {}) {
    super(message);
    this.name = "AgentiaError";
    this.code = code;
    this.retryable = retryable;
    this.ref = ref;
    this.retryAfterMs = retryAfterMs;
    this.closeCode = closeCode;
    this.willRetry = willRetry;
  }

  /** The error an `error` frame describes. */
  static fromFrame(f) {
    return new AgentiaError(String(f.code ?? "internal"), String(f.message ?? ""), {
      retryable: f.retryable === true || RETRYABLE_CODES.has(f.code),
      ref: f.ref ?? null,
      retryAfterMs: Number.isFinite(f.retry_after_ms) ? f.retry_after_ms : null,
    });
  }
}
