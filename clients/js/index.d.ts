// Types of @agentia/client (hand-written; `npm run typecheck` checks them with test/types.ts).

/** The WebSocket subprotocol spoken by the edge. */
export const PROTOCOL: "agentia.v1";

export type ClientState = "idle" | "connecting" | "connected" | "reconnecting" | "resumed" | "closed";
export const STATES: readonly ClientState[];

/** code -> [name, reconnect]; reconnect false means the client stops. */
export const CLOSE_CODES: Readonly<Record<number, readonly [string, boolean]>>;
/** Standard close codes that mean the client broke the protocol: the client stops. */
export const PROTOCOL_VIOLATIONS: readonly number[];
export function isTerminalClose(code: number): boolean;
export function closeName(code: number): string | null;

/** Codes of `error` frames and `turn_error` events. */
export type ServerErrorCode =
  | "bad_json" | "bad_frame" | "rate_limited" | "unavailable" | "overloaded"
  | "turn_not_active" | "no_such_approval" | "turn_failed" | "turn_timeout" | "guardrail"
  | "session_lost" | "internal";
/** Codes of errors the client raises itself. */
export type ClientErrorCode =
  | "closed" | "switched" | "token_unavailable" | "bad_url" | "message_too_big"
  | "bad_server_frame";
export const ERROR_CODES: readonly ServerErrorCode[];
export const RETRYABLE_CODES: ReadonlySet<string>;

export interface AgentiaErrorOptions {
  retryable?: boolean;
  ref?: string | null;
  retryAfterMs?: number | null;
  closeCode?: number | null;
  willRetry?: boolean;
}

/** An error reported by the server (an `error` frame) or by the client itself. */
export class AgentiaError extends Error {
  constructor(code: string, message: string, options?: AgentiaErrorOptions);
  readonly name: "AgentiaError";
  code: ServerErrorCode | ClientErrorCode | (string & {});
  /** The server (or the client's table) says the same request may succeed later. */
  retryable: boolean;
  /** The id of the `send` this error answers, if any. */
  ref: string | null;
  retryAfterMs: number | null;
  /** The close code, for errors reported because the server closed the connection. */
  closeCode: number | null;
  /** The client retries by itself (the error is informational). */
  willRetry: boolean;
  static fromFrame(frame: ErrorFrame): AgentiaError;
}

export interface ErrorFrame {
  type: "error";
  code: string;
  message?: string;
  ref?: string | null;
  retryable?: boolean;
  retry_after_ms?: number;
}

export interface Limits {
  max_frame_bytes?: number;
  max_text_chars?: number;
  heartbeat_s?: number;
  idle_timeout_s?: number;
  [key: string]: unknown;
}

export interface WelcomeFrame {
  type: "welcome";
  session: string;
  epoch: string;
  offset: number;
  node?: string;
  limits?: Limits;
  /** The agent this session talks to (chosen at its creation with `?agent=`). */
  agent?: string;
  [key: string]: unknown;
}

export interface AckFrame {
  type: "ack";
  id: string;
  offset: number;
  duplicate?: boolean;
}

export interface ResumedFrame {
  type: "resumed";
  epoch: string;
  offset: number;
  recovered: boolean;
  [key: string]: unknown;
}

/** A session log event (user, turn_start, tool, reply, ...): each offset once, in order. */
export interface LogEvent {
  type: string;
  offset: number;
  [key: string]: unknown;
}

/** `tool_call`: the agent called a tool. A private tool has no `arguments`, and `private: true`. */
export interface ToolCallEvent extends LogEvent {
  type: "tool_call";
  turn: number;
  call_id: string;
  name: string;
  /** The parsed JSON object the model gave (text that is not JSON: `{_raw: text}`). */
  arguments?: Record<string, unknown>;
  agent: string;
  private?: boolean;
}

/** `tool_result`: what the tool returned. A private tool has no `output`, and `private: true`. */
export interface ToolResultEvent extends LogEvent {
  type: "tool_result";
  turn: number;
  call_id: string;
  name: string;
  /** At most 4,096 characters; `truncated: true` when cut. */
  output?: string;
  is_error: boolean;
  truncated?: boolean;
  private?: boolean;
}

export type AgentStateName = "thinking" | "tool" | "speaking" | "listening" | "idle";

/** `state`: what the agent does now (emitted as "agent_state"; written only on change). */
export interface AgentStateEvent extends LogEvent {
  type: "state";
  /** Absent for a voice `listening` that belongs to no turn. */
  turn?: number;
  state: AgentStateName | (string & {});
  agent: string;
}

/** `handoff`: agent `from` handed the conversation to agent `to`. */
export interface HandoffEvent extends LogEvent {
  type: "handoff";
  turn: number;
  from: string;
  to: string;
}

/** `approval_request`: the turn waits for approve(call_id, ...) until `expires`. */
export interface ApprovalRequestEvent extends LogEvent {
  type: "approval_request";
  turn: number;
  call_id: string;
  name: string;
  arguments?: Record<string, unknown>;
  agent: string;
  /** Unix seconds: not answered by then, the request is rejected by timeout. */
  expires: number;
}

/** `approval_result`: the request `call_id` was answered, once. */
export interface ApprovalResultEvent extends LogEvent {
  type: "approval_result";
  turn: number;
  call_id: string;
  approved: boolean;
  /** The `sub` of the user who answered, or "timeout". */
  by: string;
  message?: string;
}

/** The next piece of a running turn's reply text (no offset, not a log event, never replayed). */
export interface ChunkFrame {
  type: "chunk";
  /** The turn (offset of its `user` event). */
  turn: number;
  /** The attempt that produced it (as in `turn_start`). */
  attempt: number;
  /** 1, 2, 3, ... within one run of the attempt. */
  seq: number;
  text: string;
}

/** A running turn's text so far (chunks 1 .. seq): replaces the turn's text. */
export interface PartialFrame {
  type: "partial";
  turn: number;
  attempt: number;
  /** The number of chunks `text` holds: the next chunk has `seq + 1`. */
  seq: number;
  text: string;
}

export type StreamFrame = ChunkFrame | PartialFrame;

/** `transcript` (a log event): speech in a voice call, the caller's or the agent's as played. */
export interface TranscriptEvent extends LogEvent {
  type: "transcript";
  text: string;
  final: true;
  source: "voice";
  role: "user" | "agent";
  /** The turn whose reply is spoken (agent only, when known). */
  turn?: number;
}

/**
 * An interim `transcript`: the caller's utterance so far (no offset, not a log event, never
 * replayed). Show it as a live caption; the next one replaces it (`text` "" clears it), and the
 * caller's next final `transcript` event replaces it.
 */
export interface CaptionFrame {
  type: "transcript";
  text: string;
  final: false;
  source: "voice";
  role: "user";
  /** Names the utterance (a new one starts the next caption). */
  utterance: string;
}

/** A turn's streamed text after a `chunk` or `partial` changed it. */
export interface TextInfo {
  turn: number;
  attempt: number;
  /** Chunks applied to this run of the attempt. */
  seq: number;
  /** The reply so far. */
  text: string;
}

export interface Ack {
  id: string;
  offset: number;
  /** The turn was stored before (a resend, or settled from the log after a reconnect). */
  duplicate: boolean;
}

/** The promise `send()` returns: it carries the client id of the turn. */
export interface SendPromise extends Promise<Ack> {
  id: string;
}

export interface ResetInfo {
  epoch: string;
  offset: number;
  /** false: the server re-opened a lost session on its own (an unrequested `resumed`). */
  requested: boolean;
}

export interface CloseInfo {
  code: number;
  reason: string;
  url: string | null;
}

export interface TokenRequest {
  /** true after 4003 TOKEN_EXPIRED or a failed handshake: get a fresh token. */
  refresh: boolean;
  attempt: number;
}

export interface BackoffOptions {
  initialMs?: number;
  maxMs?: number;
  factor?: number;
}
export const DEFAULT_BACKOFF: Readonly<Required<BackoffOptions>>;
export function backoffDelay(attempt: number, options?: BackoffOptions, random?: () => number): number;

/** The part of the Web Storage API the client uses. */
export interface StorageLike {
  getItem(key: string): string | null;
  setItem(key: string, value: string): void;
  removeItem(key: string): void;
}

/** The part of a WebSocket the client uses (the browser's, or e.g. the `ws` package's). */
export interface WebSocketLike {
  readonly readyState: number;
  binaryType?: string;
  onmessage: ((ev: { data: unknown }) => void) | null;
  onclose: ((ev: { code?: number; reason?: string }) => void) | null;
  onerror: ((ev: unknown) => void) | null;
  send(data: string): void;
  close(code?: number, reason?: string): void;
}
export type WebSocketConstructor = new (url: string, protocols: string[]) => WebSocketLike;

export interface ClientOptions {
  /** The agent a new session talks to (`?agent=`; default: the deployment's first). An
   * unknown name closes with 4504, another agent's session with 4505: the client stops. */
  agent?: string | null;
  /** WebSocket URL(s), `ws://host:port/v1/ws`; rotated on reconnect. */
  urls?: string | string[];
  url?: string;
  /** A token, or a function called before every attempt. */
  token?: string | null | ((req: TokenRequest) => string | null | Promise<string | null>);
  /** Session id to open (default: the stored one, else a new session). */
  session?: string | null;
  /**
   * "replay" (default: a fresh client resumes from 0 to rebuild the view), "continue" (resume
   * from the stored offset), "none" (only live events).
   */
  history?: "replay" | "continue" | "none";
  /** Key prefix for persistence (default "agentia"); use one per user. */
  storageKey?: string;
  /** Per-tab storage (default sessionStorage); null disables persistence. */
  storage?: StorageLike | null;
  /** Storage shared by tabs for the last session (default localStorage). */
  sharedStorage?: StorageLike | null;
  /** WebSocket constructor (default globalThis.WebSocket). */
  WebSocket?: WebSocketConstructor | typeof globalThis.WebSocket;
  backoff?: BackoffOptions;
  /** Opening handshake + welcome deadline (default 15000). */
  connectTimeoutMs?: number;
  /** Resend an unacknowledged send after this long (default 15000). */
  ackTimeoutMs?: number;
  /** A connection lasting this long resets the backoff (default 5000). */
  stableMs?: number;
  random?: () => number;
  setTimeout?: (fn: () => void, ms: number) => unknown;
  clearTimeout?: (timer: unknown) => void;
  now?: () => number;
}

export type ClientEvents = {
  event: (ev: LogEvent) => void;
  /** A turn's reply text changed (a chunk appended, a partial replaced it). */
  text: (info: TextInfo) => void;
  /** A chunk that was applied (duplicates, holes, older attempts and late ones are not emitted). */
  chunk: (frame: ChunkFrame) => void;
  /** A partial that was applied (in a resume's answer, or for a connection that joined mid-turn). */
  partial: (frame: PartialFrame) => void;
  /** An interim transcript of a voice call's caller (live only; the final one is an `event`). */
  caption: (frame: CaptionFrame) => void;
  state: (state: ClientState, previous: ClientState) => void;
  tool_call: (ev: ToolCallEvent) => void;
  tool_result: (ev: ToolResultEvent) => void;
  /** The `state` log event (the name "state" is the client's connection state). */
  agent_state: (ev: AgentStateEvent) => void;
  handoff: (ev: HandoffEvent) => void;
  approval_request: (ev: ApprovalRequestEvent) => void;
  approval_result: (ev: ApprovalResultEvent) => void;
  reset: (info: ResetInfo) => void;
  error: (err: AgentiaError) => void;
  welcome: (frame: WelcomeFrame) => void;
  ack: (frame: AckFrame) => void;
  close: (info: CloseInfo) => void;
};

/** A minimal event emitter; listeners that throw never break the client. */
export class Emitter<Events extends { [name: string]: (...args: any[]) => void }> {
  /** Returns a function that removes the listener. */
  on<K extends keyof Events>(name: K, fn: Events[K]): () => void;
  once<K extends keyof Events>(name: K, fn: Events[K]): () => void;
  off<K extends keyof Events>(name: K, fn: Events[K]): void;
  emit<K extends keyof Events>(name: K, ...args: Parameters<Events[K]>): void;
}

/** One session over one WebSocket at a time, reconnected and resumed as needed. */
export class AgentiaClient extends Emitter<ClientEvents> implements AsyncIterable<LogEvent> {
  constructor(options: ClientOptions);
  readonly urls: string[];
  readonly state: ClientState;
  readonly session: string | null;
  readonly epoch: string | null;
  readonly node: string | null;
  /** URL of the current (or last) connection. */
  readonly url: string | null;
  readonly limits: Limits | null;
  /** The session's agent: `welcome.agent` once connected, else the `agent` option. */
  readonly agent: string | null;
  readonly history: "replay" | "continue" | "none";
  readonly storageKey: string;
  /** When the pending reconnect will be tried (ms since the epoch). */
  readonly nextRetryAt: number | null;
  /** Open the connection (reconnects by itself until close()). */
  connect(): this;
  /** Close for good; unacknowledged sends stay persisted for the next client. */
  close(): void;
  /** Submit a user turn; resolves once it is durably stored. */
  send(text: string, options?: { id?: string }): SendPromise;
  /** Cancel a turn (its ack offset), or the oldest unfinished one; resolves with the turn. */
  cancel(turn?: number | null): Promise<number>;
  /** Answer an approval request; resolves once recorded (rejects: no_such_approval, ...). */
  approve(callId: string, approved: boolean, message?: string | null): Promise<Ack>;
  /** Switch to another session (null: a new one). */
  switchSession(session?: string | null): void;
  /** Reconnect now if waiting (e.g. the browser came back online). */
  reconnectNow(): void;
  /** Unacknowledged sends, oldest first. */
  readonly pending: { id: string; text: string }[];
  /** The highest offset applied (all lower ones applied too). */
  readonly lastOffset: number;
  /** A turn's reply text so far (its final text once it ended); null if nothing was seen. */
  replyText(turn: number): string | null;
  readonly connected: boolean;
  /** Log events as an async iterator (ends at close()). */
  events(): AsyncIterableIterator<LogEvent>;
  [Symbol.asyncIterator](): AsyncIterableIterator<LogEvent>;
}
export default AgentiaClient;

export interface SequencerOutput {
  apply: LogEvent[];
  resume: boolean;
}

export interface ResumedOutput {
  requested: boolean;
  reset: boolean;
  apply: LogEvent[];
  /** The `chunk`/`partial` frames held during the resume, to apply after `apply`. */
  stream: StreamFrame[];
  behind: boolean;
}

/** `chunk`/`partial` frames held while a resume is answered; beyond, dropped. */
export const STREAM_BUFFER_LIMIT: number;

/** The resume algorithm of docs/protocol.md section 6, without I/O. */
export class EventSequencer {
  constructor(last?: number, epoch?: string | null);
  last: number;
  epoch: string | null;
  resuming: boolean;
  reset(last: number, epoch: string | null): void;
  resumeFrame(): { type: "resume"; after: number; epoch?: string };
  abort(): void;
  onEvent(ev: LogEvent): SequencerOutput;
  /** The frames to apply now: none while a resume is answered (they follow its events). */
  onStream(frame: StreamFrame): StreamFrame[];
  onResumed(frame: ResumedFrame): ResumedOutput;
}

/** One turn's reply text by the rules of docs/protocol.md, `chunk` (no I/O). */
export class TurnText {
  constructor(turn: number);
  turn: number;
  /** The latest attempt seen (0: none yet). */
  attempt: number;
  /** Chunks applied to this run of `attempt`. */
  seq: number;
  text: string;
  ended: boolean;
  /** Apply a log event or a chunk/partial of this turn; true when it was applied. */
  apply(frame: LogEvent | StreamFrame): boolean;
}

/** The session's turns' texts (at most `limit` turns, the oldest forgotten first). */
export class ReplyTexts {
  constructor(limit?: number);
  readonly limit: number;
  get(turn: number): TurnText | undefined;
  clear(): void;
  /** The turn's TurnText when the event or frame was applied, else null. */
  apply(frame: LogEvent | StreamFrame): TurnText | null;
}

/** Log event type -> the name the client emits it under as well ("state" -> "agent_state"). */
export const AGENT_EVENTS: Readonly<{
  tool_call: "tool_call"; tool_result: "tool_result"; state: "agent_state"; handoff: "handoff";
  approval_request: "approval_request"; approval_result: "approval_result";
}>;
export const AGENT_NAME_RE: RegExp;
export const MAX_APPROVE_MESSAGE: number;
/** Why approve(callId, approved, message) cannot be sent; null when it can. */
export function checkApprove(callId: unknown, approved: unknown, message: unknown): AgentiaError | null;
export function withAgent(url: string, agent: string | null | undefined): string;

export function isLogEvent(frame: unknown): frame is LogEvent;
export function isStreamFrame(frame: unknown): frame is StreamFrame;
/** An interim `transcript` frame (no offset): a voice call's caller speech so far. */
export function isCaption(frame: unknown): frame is CaptionFrame;
export function withSession(url: string, session: string | null | undefined): string;
/** Characters as the server counts them (code points). */
export function countChars(text: string): number;
export function newClientId(): string;
