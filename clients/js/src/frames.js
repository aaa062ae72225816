// Frames: which ones are session log events, and the small helpers around what is sent.

const CONTROL_TYPES = new Set(["welcome", "ack", "resumed", "cancelling", "pong", "error"]);
/** A running turn's reply text: frames without an offset, not session log events. */
const STREAM_TYPES = new Set(["chunk", "partial"]);

/** Session ids the edge accepts. */
export const SESSION_ID_RE = /^[A-Za-z0-9_.:-]{1,64}$/;

/** A session log event: a frame with an integer offset whose type is not a control frame. */
export function isLogEvent(f) {
  return f !== null && typeof f === "object" && Number.isInteger(f.offset) && f.offset > 0
    && typeof f.type === "string" && !CONTROL_TYPES.has(f.type) && !STREAM_TYPES.has(f.type);
}

/** A `chunk` or `partial` frame (a running turn's reply text; no offset, never replayed). */
export function isStreamFrame(f) {
  return f !== null && typeof f === "object" && STREAM_TYPES.has(f.type)
    && Number.isInteger(f.turn);
}

/**
 * An interim `transcript` (a voice call's caller speech so far): no offset, not a log event,
 * never replayed; the next one, or the caller's final `transcript` (a log event), replaces it.
 */
export function isCaption(f) {
  return f !== null && typeof f === "object" && f.type === "transcript" && f.offset === undefined
    && f.final === false && typeof f.text === "string";
}

/** Add `session=<id>` to a WebSocket URL. */
export function withSession(url, session) {
  if (!session) return url;
  return url + (url.includes("?") ? "&" : "?") + "session=" + encodeURIComponent(session);
}

/** Characters as the server counts them (code points, not UTF-16 units). */
export function countChars(text) {
  let n = 0;
  for (const _ of text) n++;
  return n;
}

/** Bytes of `text` in UTF-8 (the frame size the server checks). */
export function utf8Length(text) {
  return new TextEncoder().encode(text).length;
}

/** A fresh id for a `send` (the server dedupes resends by it). */
export function newClientId() {
  const c = globalThis.crypto;
  if (c && typeof c.randomUUID === "function") return "c-" + c.randomUUID().replaceAll("-", "");
  let s = "c-";
  for (let i = 0; i < 32; i++) s += Math.floor(Math.random() * 16).toString(16);
  return s;
}

/** Parse a server message (text or binary) into a frame object; null if it is not JSON. */
export function parseFrame(data) {
  try {
    if (typeof data !== "string") data = new TextDecoder().decode(data);
    return { frame: JSON.parse(data) };
  } catch {
    return null;
  }
}
