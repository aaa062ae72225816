// The chat page's shared state and small utilities (the page's modules import them).

export const $ = (id) => document.getElementById(id);
export const els = {
  app: $("app"), sidebar: $("sidebar"), scrim: $("scrim"), sessions: $("sessions"),
  title: $("conv-title"), convId: $("conv-id"), badge: $("state-badge"), talk: $("talk"),
  talkWrap: $("talk-wrap"), messages: $("messages"), empty: $("empty"), turns: $("turns"),
  pending: $("pending"), composer: $("composer"), input: $("input"), send: $("send"),
  stop: $("stop"), nodeInfo: $("node-info"), toasts: $("toasts"), userChip: $("user-chip"),
  userName: $("user-name"), userAvatar: $("user-avatar"), dialog: $("user-dialog"),
  userForm: $("user-form"), userInput: $("user-input"), tokenInput: $("token-input"),
  call: $("call"), callLabel: $("call-label"), hangup: $("hangup"), mute: $("mute"),
  callAudio: $("call-audio"), callAudioBtn: $("call-audio-btn"), callClose: $("call-close"),
  agentPicker: $("agent-picker"),
};

export const STATE_LABELS = {
  connecting: "Connecting", connected: "Connected", reconnecting: "Reconnecting",
  resumed: "Resumed", closed: "Disconnected",
};

export const MIC_ICON = '<svg viewBox="0 0 24 24" aria-hidden="true"><rect x="9" y="3" width="6" height="11" rx="3"/><path d="M5 11a7 7 0 0 0 14 0M12 18v3"/></svg>';

export const app = {
  config: null,
  user: null,
  token: null,          // {value, expiresAt, fetchedAt}
  client: null,
  agent: null,          // the agent new conversations talk to (?agent= in the page's URL)
  turns: new Map(),     // turn id (offset of its user event) -> view model
  active: new Set(),    // turns without a final event
  dirty: new Set(),
  stateLog: [],         // [{state, at}] for tests and debugging
  sessions: [],
  titles: {},
  call: null,           // the VoiceCall of the Talk button (voice.js), the current or last one
  callLog: [],          // [{state, message, at}] for tests and debugging
  voiceWarm: null,      // resolves once voice.js is loaded and warmed up (preloadVoice)
};
window.agentiaApp = app;

// -- small utilities ---------------------------------------------------------------------------

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
export const FORBIDDEN_CLOSE = 4501; // the edge: this conversation belongs to another user
export const UNKNOWN_AGENT_CLOSE = 4504; // ?agent= names no agent of this deployment
export const AGENT_MISMATCH_CLOSE = 4505; // the stored conversation talks to another agent
export const HANDLED_CLOSES = new Set([FORBIDDEN_CLOSE, UNKNOWN_AGENT_CLOSE, AGENT_MISMATCH_CLOSE]);

export function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

export function toast(message, kind = "error") {
  const t = el("div", `toast toast-${kind}`, message);
  els.toasts.append(t);
  setTimeout(() => t.classList.add("leaving"), 4500);
  setTimeout(() => t.remove(), 5000);
}

export function relativeTime(seconds) {
  const diff = Date.now() / 1000 - seconds;
  if (diff < 60) return "just now";
  if (diff < 3600) return `${Math.floor(diff / 60)} min ago`;
  if (diff < 86400) return `${Math.floor(diff / 3600)} h ago`;
  return new Date(seconds * 1000).toLocaleDateString(undefined, { month: "short", day: "numeric" });
}
