// The Agentia chat page: one conversation view over AgentiaClient (@agentia/client, from
// clients/js, served at /static/agentia-client/), a list of the user's conversations from the
// control plane, dev tokens when the server hands them out.
import { AGENT_NAME_RE, AgentiaClient } from "./agentia-client/index.js";
import {
  AGENT_EVENT_TYPES, agentContainers, agentParts, applyAgentEvent, awaitingApproval, renderAgent,
  restartAgent,
} from "./agent.js";

const $ = (id) => document.getElementById(id);
const els = {
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

const STATE_LABELS = {
  connecting: "Connecting", connected: "Connected", reconnecting: "Reconnecting",
  resumed: "Resumed", closed: "Disconnected",
};

const MIC_ICON = '<svg viewBox="0 0 24 24" aria-hidden="true"><rect x="9" y="3" width="6" height="11" rx="3"/><path d="M5 11a7 7 0 0 0 14 0M12 18v3"/></svg>';

const app = {
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

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const FORBIDDEN_CLOSE = 4501; // the edge: this conversation belongs to another user
const UNKNOWN_AGENT_CLOSE = 4504; // ?agent= names no agent of this deployment
const AGENT_MISMATCH_CLOSE = 4505; // the stored conversation talks to another agent
const HANDLED_CLOSES = new Set([FORBIDDEN_CLOSE, UNKNOWN_AGENT_CLOSE, AGENT_MISMATCH_CLOSE]);

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

function toast(message, kind = "error") {
  const t = el("div", `toast toast-${kind}`, message);
  els.toasts.append(t);
  setTimeout(() => t.classList.add("leaving"), 4500);
  setTimeout(() => t.remove(), 5000);
}

function relativeTime(seconds) {
  const diff = Date.now() / 1000 - seconds;
  if (diff < 60) return "just now";
  if (diff < 3600) return `${Math.floor(diff / 60)} min ago`;
  if (diff < 86400) return `${Math.floor(diff / 3600)} h ago`;
  return new Date(seconds * 1000).toLocaleDateString(undefined, { month: "short", day: "numeric" });
}

function escapeHtml(s) {
  return s.replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
}

/** A small, safe Markdown subset: everything is escaped first, only known patterns become tags. */
function inline(text) {
  return text.split(/(`[^`\n]+`)/).map((part) => {
    if (part.length > 2 && part.startsWith("`") && part.endsWith("`")) {
      return `<code>${escapeHtml(part.slice(1, -1))}</code>`;
    }
    return escapeHtml(part)
      .replace(/\*\*([^*\n]+)\*\*/g, "<strong>$1</strong>")
      .replace(/(^|[\s(])\*([^*\s][^*\n]*)\*(?=[\s).,!?:;]|$)/g, "$1<em>$2</em>")
      .replace(/\[([^\]\n]+)\]\((https?:\/\/[^\s)]+)\)/g,
        '<a href="$2" target="_blank" rel="noopener noreferrer">$1</a>');
  }).join("");
}

function markdown(src) {
  const out = [];
  src.split("```").forEach((part, i) => {
    if (i % 2 === 1) {
      const nl = part.indexOf("\n");
      const code = nl >= 0 ? part.slice(nl + 1) : part;
      out.push(`<pre><code>${escapeHtml(code.replace(/\n$/, ""))}</code></pre>`);
      return;
    }
    let list = null;
    let para = [];
    const flushPara = () => { if (para.length) out.push(`<p>${para.map(inline).join("<br>")}</p>`); para = []; };
    const flushList = () => { if (list) out.push(`<${list.tag}>${list.items.join("")}</${list.tag}>`); list = null; };
    for (const line of part.split("\n")) {
      const heading = /^(#{1,4})\s+(.*)$/.exec(line);
      const bullet = /^\s*[-*•]\s+(.*)$/.exec(line);
      const numbered = /^\s*\d+[.)]\s+(.*)$/.exec(line);
      if (heading) {
        flushPara(); flushList();
        out.push(`<h4>${inline(heading[2])}</h4>`);
      } else if (bullet || numbered) {
        flushPara();
        const tag = bullet ? "ul" : "ol";
        if (list && list.tag !== tag) flushList();
        list ??= { tag, items: [] };
        list.items.push(`<li>${inline((bullet ?? numbered)[1])}</li>`);
      } else if (line.trim() === "") {
        flushPara(); flushList();
      } else {
        flushList();
        para.push(line);
      }
    }
    flushPara(); flushList();
  });
  return out.join("");
}

// -- control plane -----------------------------------------------------------------------------

async function fetchJson(path, { method = "GET", body, auth = false } = {}) {
  const headers = {};
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (auth) headers.Authorization = `Bearer ${await getToken()}`;
  const resp = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  if (resp.status === 401 && auth) {
    app.token = null; // expired or rotated secret: one retry with a fresh token
    headers.Authorization = `Bearer ${await getToken({ refresh: true })}`;
    const again = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
    if (!again.ok) throw new Error(`${path}: HTTP ${again.status}`);
    return again.json();
  }
  if (!resp.ok) throw new Error(`${path}: HTTP ${resp.status}`);
  return resp.json();
}

async function loadConfig() {
  for (let attempt = 0; ; attempt++) {
    try {
      return await fetchJson("/v1/config");
    } catch (err) {
      setBadge("connecting", "Waiting for the server");
      await sleep(Math.min(10000, 500 * 2 ** attempt));
    }
  }
}

/** The token for the WebSocket and the API: a dev token, or one the user pasted. */
async function getToken({ refresh = false } = {}) {
  const now = Date.now();
  const t = app.token;
  const fresh = t && now < t.expiresAt - 60_000 && !(refresh && now - t.fetchedAt > 10_000);
  if (fresh) return t.value;
  if (app.config.dev_tokens) {
    const r = await fetchJson("/v1/dev/token", { method: "POST", body: { user: app.user } });
    app.token = { value: r.token, expiresAt: now + r.expires_in * 1000, fetchedAt: now };
    return r.token;
  }
  const pasted = sessionStorage.getItem("agentia:token");
  if (!pasted) throw new Error("no token: sign in first");
  app.token = { value: pasted, expiresAt: jwtExpiry(pasted) ?? now + 3600_000, fetchedAt: now };
  return pasted;
}

function jwtExpiry(token) {
  try {
    const payload = JSON.parse(atob(token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/")));
    return typeof payload.exp === "number" ? payload.exp * 1000 : null;
  } catch { return null; }
}

function userFromToken(token) {
  try {
    return JSON.parse(atob(token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/"))).sub ?? null;
  } catch { return null; }
}

// -- the conversation view ---------------------------------------------------------------------

function turnView(id) {
  let t = app.turns.get(id);
  if (t) return t;
  const root = el("div", "turn");
  root.dataset.turn = String(id);
  t = { id, root, user: null, userNode: null, assistantNode: null, text: "",
    status: "waiting", attempt: 1, note: "", ...agentParts() };
  app.turns.set(id, t);
  // turns are created in offset order, except a turn seen before its user event (trimmed log)
  const later = [...els.turns.children].find((n) => Number(n.dataset.turn) > id);
  els.turns.insertBefore(root, later ?? null);
  els.empty.hidden = true;
  return t;
}

function markDirty(t) {
  app.dirty.add(t);
  if (!app.flushTimer) app.flushTimer = setTimeout(flush, 16);
}

function nearBottom() {
  const m = els.messages;
  return m.scrollHeight - m.scrollTop - m.clientHeight < 120;
}

function flush() {
  app.flushTimer = null;
  const stick = nearBottom();
  for (const t of app.dirty) renderTurn(t);
  app.dirty.clear();
  updateComposer();
  if (stick) els.messages.scrollTop = els.messages.scrollHeight;
}

function renderTurn(t) {
  if (t.user && !t.userNode) {
    t.userNode = el("div", "msg user");
    const bubble = el("div", "bubble", t.user.text);
    t.userNode.append(bubble);
    if (t.user.source === "voice") {
      t.userNode.classList.add("voice");
      const via = el("div", "via");
      via.innerHTML = MIC_ICON;
      via.append("Voice");
      via.title = "Said in a voice call";
      t.userNode.append(via);
    }
    if (t.user.user && t.user.user !== app.user) {
      t.userNode.prepend(el("div", "author", t.user.user));
    }
    t.root.prepend(t.userNode);
  }
  if (!t.assistantNode) {
    t.assistantNode = el("div", "msg assistant");
    const avatar = el("div", "avatar agent-avatar");
    avatar.innerHTML = '<svg viewBox="0 0 32 32" aria-hidden="true"><path d="M9 23 16 8l7 15M11.6 18h8.8"/></svg>';
    const body = el("div", "body");
    const agent = agentContainers();
    body.append(agent.head, agent.tools, agent.approvals, el("div", "text md"), el("div", "meta"));
    t.assistantNode.append(avatar, body);
    t.root.append(t.assistantNode);
  }
  const node = t.assistantNode;
  node.dataset.status = t.status;
  const ended = ["done", "cancelled", "error"].includes(t.status);
  renderAgent(t, node, { ended, answer: answerApproval });
  const text = node.querySelector(".text");
  if (t.text) {
    text.innerHTML = markdown(t.text);
  } else if ((t.status === "waiting" || t.status === "streaming") && !awaitingApproval(t)) {
    text.innerHTML = '<span class="typing"><i></i><i></i><i></i></span>';
  } else {
    text.replaceChildren();
  }
  const meta = node.querySelector(".meta");
  meta.textContent = t.note;
  meta.hidden = !t.note;
}

function applyEvent(ev) {
  switch (ev.type) {
    case "transcript": // the caller's final one replaces a live caption (protocol.md); one
      // replayed from the log (a reload, a resume) has none to replace
      if (ev.role === "user" && els.pending.querySelector(".caption")) showCaption(ev.text, true);
      break;
    case "user": {
      if (ev.source === "voice") showCaption("", true); // the turn's own message is shown now
      const t = turnView(ev.offset);
      t.user = ev;
      app.active.add(ev.offset);
      removePending(ev.id);
      if (!app.titles[app.client.session]) {
        setTitle(app.client.session, ev.text);
        refreshSessions();
      }
      markDirty(t);
      break;
    }
    case "turn_start": {
      // the reply starts (again, after a failed attempt or an outage): drop what came before
      const t = turnView(ev.turn);
      t.text = "";
      restartAgent(t);
      if (ev.attempt > 1) t.note = `Retrying (attempt ${ev.attempt})`;
      t.attempt = ev.attempt;
      t.status = "streaming";
      markDirty(t);
      break;
    }
    case "reply":
    case "cancelled":
    case "turn_error": {
      const t = turnView(ev.turn);
      app.active.delete(ev.turn);
      if (ev.type === "turn_error") {
        t.status = "error";
        t.text = ""; // no final text (protocol.md, chunk): what streamed is dropped
        t.note = ev.code === "turn_timeout" ? "The agent took too long to answer."
          : ev.code === "guardrail" ? `Stopped by a guardrail (${ev.message}).` // names it, no model text
            : "The agent could not answer this message.";
      } else {
        t.text = ev.text ?? t.text;
        t.agent = ev.agent ?? t.agent;
        t.status = ev.type === "reply" ? "done" : "cancelled";
        t.note = ev.type !== "cancelled" ? ""
          : ev.reason === "takeover" ? "Not answered by the agent: an operator has the conversation."
            : "Stopped";
      }
      markDirty(t);
      break;
    }
    case "message": // posted by a backend (operator or system), part of no turn
      addNotice(ev.offset, `notice posted ${ev.role === "operator" ? "operator" : "system"}`,
        ev.role === "operator" ? `Operator ${ev.by}` : "System", ev.text);
      break;
    case "takeover": // an operator took the conversation over, or gave it back to the agent
      addNotice(ev.offset, "notice takeover", null, ev.active
        ? `${ev.by || "An operator"} took over this conversation: the agent is paused.`
        : `${ev.by || "The operator"} gave this conversation back to the agent.`);
      break;
    default: {
      // tool calls and results, state, handoffs, approvals (agent.js); other types are ignored
      if (!AGENT_EVENT_TYPES.has(ev.type) || !Number.isInteger(ev.turn)) break;
      const t = turnView(ev.turn);
      if (applyAgentEvent(t, ev)) markDirty(t);
      break;
    }
  }
}

/** A card's Approve or Reject: sent once; the approval_result event then closes the card (on
 * every device, and after a reload). */
function answerApproval(t, callId, approved) {
  const a = t.approvals.get(callId);
  if (!a || a.result || a.busy || a.closed || !app.client) return;
  a.busy = true;
  a.note = "";
  markDirty(t);
  app.client.approve(callId, approved).catch((err) => {
    a.busy = false;
    if (err.code === "no_such_approval") {
      a.closed = true; // answered elsewhere or expired: its approval_result shows which
      a.note = "This request is no longer pending.";
    } else {
      a.note = `Not sent: ${err.message || err.code}`;
    }
    markDirty(t);
  });
}

/** The reply text so far, from `chunk` frames (and a `partial` after a reload or a reconnect
 * mid-reply); the client has applied the protocol's rules (order, duplicates, attempts). */
function applyText({ turn, text }) {
  const t = turnView(turn);
  if (t.status === "done" || t.status === "cancelled" || t.status === "error") return;
  t.text = text;
  t.status = "streaming";
  markDirty(t);
}

/** A line of the conversation that is not a turn (a posted message, a takeover), placed by its
 * offset among the turns; a replayed one is not shown twice. */
function addNotice(offset, className, author, text) {
  if (!Number.isInteger(offset) || els.turns.querySelector(`[data-notice="${offset}"]`)) return;
  const root = el("div", className);
  root.dataset.turn = String(offset);
  root.dataset.notice = String(offset);
  if (author) root.append(el("div", "author", author));
  root.append(el("div", "bubble", text ?? ""));
  const later = [...els.turns.children].find((n) => Number(n.dataset.turn) > offset);
  els.turns.insertBefore(root, later ?? null);
  els.empty.hidden = true;
}

/** The caller's speech in a call, live: each interim `transcript` replaces the caption, the
 * final one replaces it until its turn's message comes (then, or after 10 s, it goes). */
function showCaption(text, final) {
  let node = els.pending.querySelector(".caption");
  clearTimeout(app.captionTimer);
  if (!text) {
    node?.remove();
    return;
  }
  if (!node) {
    node = el("div", "msg user caption");
    node.dataset.testid = "caption";
    node.append(el("div", "bubble"));
    els.pending.append(node);
    els.empty.hidden = true;
  }
  node.classList.toggle("final", final);
  node.querySelector(".bubble").textContent = text;
  app.captionTimer = setTimeout(() => showCaption("", true), final ? 10_000 : 30_000);
  els.messages.scrollTop = els.messages.scrollHeight;
}

function clearView() {
  showCaption("", true);
  app.turns.clear();
  app.active.clear();
  app.dirty.clear();
  els.turns.replaceChildren();
  els.empty.hidden = els.pending.children.length > 0;
  updateComposer();
}

// -- pending (not yet acknowledged) messages --------------------------------------------------

function addPending(id, text) {
  if (!id || els.pending.querySelector(`[data-id="${CSS.escape(id)}"]`)) return;
  const node = el("div", "msg user pending");
  node.dataset.id = id;
  node.append(el("div", "bubble", text), el("div", "status", "Sending…"));
  els.pending.append(node);
  els.empty.hidden = true;
  els.messages.scrollTop = els.messages.scrollHeight;
}

function removePending(id) {
  els.pending.querySelector(`[data-id="${CSS.escape(id ?? "")}"]`)?.remove();
}

function failPending(id, text, err) {
  const node = els.pending.querySelector(`[data-id="${CSS.escape(id)}"]`);
  if (!node || node.classList.contains("failed")) return;
  text ??= node.querySelector(".bubble").textContent;
  node.classList.add("failed");
  const status = node.querySelector(".status");
  status.textContent = `Not sent: ${err.message || err.code}. `;
  const retry = el("button", "link", "Retry");
  retry.type = "button";
  retry.onclick = () => { node.remove(); submit(text); };
  status.append(retry);
}

function submit(text) {
  if (!text.trim() || !app.client) return;
  const p = app.client.send(text);
  addPending(p.id, text);
  p.catch((err) => {
    if (err.code === "switched" || err.code === "closed") return;
    failPending(p.id, text, err);
  });
}

function updateComposer() {
  const running = [...app.active].filter((id) => app.turns.get(id)?.status !== "done");
  els.stop.hidden = running.length === 0;
  els.send.disabled = els.input.value.trim() === "";
}

// -- connection state, sessions ----------------------------------------------------------------

function setBadge(state, label) {
  els.badge.dataset.state = state;
  els.badge.querySelector(".label").textContent = label ?? STATE_LABELS[state] ?? state;
}

function onState(state) {
  app.stateLog.push({ state, at: Date.now() });
  setBadge(state);
  const c = app.client;
  els.badge.dataset.url = c?.url ?? "";
  els.badge.title = c?.node ? `Edge ${c.node} · ${c.url}` : (c?.url ?? "");
  clearInterval(app.countdown);
  if (state === "reconnecting" || state === "connecting") {
    const tickLabel = () => {
      const s = Math.ceil(((c?.nextRetryAt ?? 0) - Date.now()) / 1000);
      if (app.client === c && c.state === state) {
        setBadge(state, s >= 2 ? `${STATE_LABELS[state]} in ${s}s` : STATE_LABELS[state]);
      }
    };
    app.countdown = setInterval(tickLabel, 1000);
  }
  for (const node of els.pending.querySelectorAll(".status")) {
    if (!node.closest(".failed")) {
      node.textContent = state === "connected" || state === "resumed" ? "Sending…" : "Waiting for connection…";
    }
  }
}

function setTitle(session, text) {
  if (!session || !text) return;
  app.titles[session] = text.length > 80 ? `${text.slice(0, 77)}…` : text;
  localStorage.setItem(`agentia:titles:${app.user}`, JSON.stringify(app.titles));
  if (session === app.client?.session) showTitle();
  renderSessions();
}

function showTitle() {
  const s = app.client?.session;
  els.title.textContent = (s && app.titles[s]) || "New conversation";
  els.convId.textContent = s ? s.slice(0, 8) : "";
  els.convId.title = s ? `Session ${s}` : "";
  document.title = s && app.titles[s] ? `${app.titles[s]} · Agentia` : "Agentia";
}

function renderSessions() {
  const current = app.client?.session;
  const list = [...app.sessions];
  if (current && !list.some((s) => s.id === current) && app.titles[current]) {
    list.unshift({ id: current, last_active: Date.now() / 1000 });
  }
  if (list.length === 0) {
    els.sessions.replaceChildren(el("div", "sessions-empty", "Your conversations appear here."));
    return;
  }
  els.sessions.replaceChildren(...list.map((s) => {
    const item = el("button", "session");
    item.type = "button";
    item.dataset.session = s.id;
    if (s.id === current) item.classList.add("current");
    item.append(el("span", "session-title", app.titles[s.id] ?? `Conversation ${s.id.slice(0, 6)}`),
      el("span", "session-time", relativeTime(s.last_active)));
    item.onclick = () => openSession(s.id);
    return item;
  }));
}

async function refreshSessions() {
  try {
    const r = await fetchJson("/v1/sessions", { auth: true });
    app.sessions = r.sessions ?? [];
    renderSessions();
    // titles of conversations started elsewhere: their first user message
    for (const s of app.sessions.slice(0, 30)) {
      if (app.titles[s.id]) continue;
      const h = await fetchJson(`/v1/sessions/${encodeURIComponent(s.id)}/events?after=0&limit=1`, { auth: true })
        .catch(() => null);
      const first = h?.events?.find((e) => e.type === "user");
      if (first) setTitle(s.id, first.text);
    }
  } catch {
    renderSessions(); // the list is a convenience: the chat works without it
  }
}

function openSession(id) {
  closeSidebar();
  if (id === app.client?.session && id !== null) return;
  if (app.call?.active || app.callStarting) {
    app.callStarting = null;
    if (app.call?.active) app.call.hangUp("Call ended: you switched conversations.");
    else renderCall("ended", "Call ended: you switched conversations.");
  }
  clearView();
  els.pending.replaceChildren();
  app.client.switchSession(id);
  for (const p of app.client.pending) addPending(p.id, p.text);
  showTitle();
  renderSessions();
  els.empty.hidden = els.pending.children.length > 0;
  els.input.focus();
}

function closeSidebar() { els.app.classList.remove("sidebar-open"); }

// -- user and token ----------------------------------------------------------------------------

function randomGuest() {
  const bytes = new Uint8Array(2);
  crypto.getRandomValues(bytes);
  return `guest-${[...bytes].map((b) => b.toString(16).padStart(2, "0")).join("")}`;
}

function showUser() {
  els.userName.textContent = app.user;
  els.userAvatar.textContent = (app.user[0] ?? "?").toUpperCase();
  els.userChip.querySelector(".user-sub").textContent = app.config.dev_tokens ? "dev token" : "signed in";
}

function askUser({ required = false } = {}) {
  const dev = app.config.dev_tokens;
  $("user-field").hidden = !dev;
  els.userInput.required = dev;
  $("token-field").hidden = dev;
  $("user-dialog-title").textContent = dev ? "Who are you?" : "Sign in";
  $("user-dialog-text").textContent = dev
    ? "This server hands out development tokens. Pick a user name: conversations belong to it."
    : "This server needs an access token (a JWT from your identity provider).";
  $("user-cancel").hidden = required;
  els.userInput.value = app.user ?? "";
  return new Promise((resolve) => {
    els.dialog.onclose = () => {
      if (els.dialog.returnValue !== "ok") return resolve(false);
      if (dev) {
        localStorage.setItem("agentia:user", els.userInput.value.trim());
      } else {
        sessionStorage.setItem("agentia:token", els.tokenInput.value.trim());
      }
      resolve(true);
    };
    $("user-cancel").onclick = () => els.dialog.close("cancel");
    els.dialog.showModal();
  });
}

// -- voice calls (voice.js, LiveKit) -----------------------------------------------------------

const CALL_LABELS = {
  connecting: "Connecting…", waiting: "Waiting for the agent…", listening: "Listening",
  thinking: "Thinking…", speaking: "Agent speaking", reconnecting: "Reconnecting…",
  ended: "Call ended",
};

/** voice.js (and livekit-client through it), imported once (a browser may cache a failed
 * import until the page reloads). */
function loadVoice() {
  app.voiceModule ??= import("./voice.js").catch((err) => {
    app.voiceModule = null;
    els.talkWrap.dataset.tooltip = "The voice client could not be loaded from this server";
    throw err;
  });
  return app.voiceModule;
}

/** voice.js and livekit-client (1.4 MB, then cached by the browser) fetched and compiled as
 * soon as the server says it offers voice, not at the Talk click: importing them at the click
 * took 0.17-0.38 s of the click -> agent listening time (docs/voice.md); the browser's WebRTC
 * is warmed up then too (voice.js warmUp). A failure here is retried at the click, which then
 * says what is wrong. */
function preloadVoice() {
  app.voiceWarm = loadVoice().then((mod) => mod.warmUp()).catch(() => {});
}

/** The session of the conversation on screen; a new conversation gets its id at welcome. */
async function currentSession() {
  const client = app.client;
  if (client?.session) return client.session;
  if (!client) throw new Error("not connected");
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => { off(); reject(new Error("not connected")); }, 10_000);
    const off = client.once("welcome", (w) => { clearTimeout(timer); resolve(w.session); });
  });
}

/** POST /v1/voice/sessions: {url, room, token} for a call of `session`, or a clear error. */
async function requestVoiceSession(session, CallError) {
  const post = async (refresh) => fetch("/v1/voice/sessions", {
    method: "POST",
    headers: { "Content-Type": "application/json", Authorization: `Bearer ${await getToken({ refresh })}` },
    body: JSON.stringify({ session }),
  });
  let resp;
  try {
    resp = await post(false);
    if (resp.status === 401) { app.token = null; resp = await post(true); }
  } catch {
    throw new CallError("unreachable", "Could not reach the server to start the call.");
  }
  if (resp.ok) return resp.json();
  const detail = await resp.json().then((b) => b?.detail).catch(() => null);
  switch (resp.status) {
    case 401: throw new CallError("unauthorized", "The server refused your token: sign in again.");
    case 403: throw new CallError("forbidden", "This conversation belongs to another user.");
    case 404:
    case 405: throw new CallError("no_voice", "This server does not offer voice calls.");
    case 503: throw new CallError("unavailable", "Voice is unavailable right now: try again in a few seconds.");
    default:
      throw new CallError("failed", `The server could not start the call (HTTP ${resp.status}${typeof detail === "string" ? `: ${detail}` : ""}).`);
  }
}

async function startCall() {
  if (app.call?.active || app.callStarting) return;
  const starting = {};
  app.callStarting = starting; // until the VoiceCall exists: Hang up cancels it
  const cancelled = () => app.callStarting !== starting;
  clearTimeout(app.callHideTimer);
  renderCall("connecting", "");
  let mod;
  try {
    mod = await loadVoice();
  } catch {
    if (cancelled()) return;
    app.callStarting = null;
    renderCall("error", "Could not load the voice client (livekit-client) from this server: reload the page to try again.");
    return;
  }
  if (cancelled()) return;
  let session;
  try {
    session = await currentSession();
  } catch {
    if (cancelled()) return;
    app.callStarting = null;
    renderCall("error", "Not connected to the conversation yet: try again in a moment.");
    return;
  }
  if (cancelled()) return;
  app.callStarting = null;
  const call = new mod.VoiceCall({
    requestCall: () => requestVoiceSession(session, mod.CallError),
    onState: (state, message, c) => { if (app.call === c) renderCall(state, message); },
    audioContainer: els.callAudio,
  });
  call.session = session;
  app.call = call;
  await call.start();
}

function renderCall(state, message) {
  const last = app.callLog.at(-1);
  if (!last || last.state !== state || last.message !== message) {
    app.callLog.push({ state, message, at: Date.now() });
  }
  const call = app.call;
  const active = !["ended", "error", "idle"].includes(state);
  clearTimeout(app.callHideTimer);
  els.call.hidden = state === "idle";
  els.call.dataset.state = state;
  const label = state === "error" ? message : (message || CALL_LABELS[state] || state);
  els.callLabel.textContent = call?.muted && active ? `${label} · muted` : label;
  els.call.title = label;
  els.talkWrap.hidden = active;
  els.hangup.hidden = !active;
  els.callClose.hidden = active;
  const live = ["listening", "thinking", "speaking"].includes(state);
  els.mute.hidden = !live;
  els.mute.setAttribute("aria-pressed", String(Boolean(call?.muted)));
  els.mute.classList.toggle("muted", Boolean(call?.muted));
  els.mute.title = call?.muted ? "Unmute the microphone" : "Mute the microphone";
  els.mute.setAttribute("aria-label", els.mute.title);
  els.callAudioBtn.hidden = !(active && call?.audioBlocked);
  if (state === "error" && last?.state !== "error") toast(message);
  if (!active) app.callHideTimer = setTimeout(() => { els.call.hidden = true; }, state === "error" ? 12_000 : 6_000);
}

// -- start -------------------------------------------------------------------------------------

/** The agents of this deployment (GET /v1/agents) in a picker, when there are several.
 * Choosing one starts a new conversation with it (`?agent=NAME` in the page's URL). */
async function loadAgents() {
  let agents = [];
  try {
    agents = (await fetchJson("/v1/agents", { auth: true })).agents ?? [];
  } catch {
    return; // an older control plane, or none reachable: no picker
  }
  if (agents.length < 2) return;
  const picker = els.agentPicker;
  picker.replaceChildren(...agents.map((a) => {
    const option = el("option", "", a.name);
    option.value = a.name;
    option.title = a.description ?? "";
    return option;
  }));
  picker.value = app.client?.agent ?? app.agent ?? agents.find((a) => a.default)?.name ?? agents[0].name;
  picker.hidden = false;
  picker.onchange = () => {
    const url = new URL(location.href);
    url.searchParams.set("agent", picker.value);
    // a new conversation: the stored one talks to the agent it was created with
    localStorage.removeItem(`agentia:${app.user}:session`);
    sessionStorage.removeItem(`agentia:${app.user}:tab`);
    location.assign(url);
  };
}

/** `?agent=NAME` in the page's URL: new conversations talk to that agent. */
function agentFromUrl() {
  const agent = new URLSearchParams(location.search).get("agent");
  return agent && AGENT_NAME_RE.test(agent) ? agent : null;
}

function startClient() {
  const client = new AgentiaClient({
    urls: app.config.ws_urls,
    token: getToken,
    storageKey: `agentia:${app.user}`,
    agent: app.agent,
  });
  app.client = client;
  client.on("state", onState);
  client.on("event", applyEvent);
  client.on("text", applyText);
  client.on("caption", (f) => showCaption(f.text, false));
  client.on("reset", clearView);
  client.on("welcome", (w) => {
    els.nodeInfo.textContent = w.agent ? `agent ${w.agent} · edge ${w.node}` : `edge ${w.node}`;
    if (w.agent && [...els.agentPicker.options].some((o) => o.value === w.agent)) {
      els.agentPicker.value = w.agent;
    }
    els.nodeInfo.title = client.url ?? "";
    showTitle();
    renderSessions();
  });
  client.on("error", (err) => {
    if (err.willRetry || err.code === "switched") return;
    if (HANDLED_CLOSES.has(err.closeCode)) return; // handled by the close listener below
    if (err.code === "no_such_approval") return; // the approval card says so
    if (err.ref) failPending(err.ref, null, err); // also sends restored after a reload
    if (err.code === "turn_not_active") return; // the turn finished before the cancel
    if (err.code === "token_unavailable") return;
    toast(err.message || err.code);
  });
  // A refused handshake (HTTP 401/429/503) looks like a network failure to a browser.
  // After a few, ask the control plane whether the stored conversation is still ours.
  let failures = 0;
  client.on("welcome", () => { failures = 0; });
  client.on("close", async ({ code }) => {
    if (code === UNKNOWN_AGENT_CLOSE && app.client === client) {
      toast(`This server has no agent named ${app.agent}: using its default agent.`, "info");
      app.agent = null;
      startClient();
      return;
    }
    if ((code === FORBIDDEN_CLOSE || code === AGENT_MISMATCH_CLOSE) && app.client === client) {
      // The edge opened the socket, then refused the session: another user's conversation,
      // or one with another agent. That client has stopped for good; forget the session and
      // start a fresh client.
      toast(code === FORBIDDEN_CLOSE
        ? "That conversation belongs to another user: starting a new one."
        : `That conversation talks to another agent: starting a new one with ${app.agent}.`,
      "info");
      localStorage.removeItem(`agentia:${app.user}:session`);
      sessionStorage.removeItem(`agentia:${app.user}:tab`);
      clearView();
      els.pending.replaceChildren();
      startClient();
      renderSessions();
      return;
    }
    failures += 1;
    const session = client.session;
    if (failures !== 3 || !session || app.client !== client) return;
    try {
      await fetchJson(`/v1/sessions/${encodeURIComponent(session)}/events?after=0&limit=1`, { auth: true });
    } catch (err) {
      if (/HTTP 403/.test(err.message) && client.session === session) {
        toast("That conversation belongs to another user: starting a new one.", "info");
        openSession(null);
      }
    }
  });
  for (const p of client.pending) addPending(p.id, p.text);
  showTitle();
  client.connect();
}

function wireUi() {
  els.composer.addEventListener("submit", (e) => {
    e.preventDefault();
    const text = els.input.value;
    if (!text.trim()) return;
    els.input.value = "";
    autosize();
    submit(text);
    updateComposer();
  });
  els.input.addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
      e.preventDefault();
      els.composer.requestSubmit();
    }
  });
  const autosize = () => {
    els.input.style.height = "auto";
    els.input.style.height = `${Math.min(els.input.scrollHeight, 200)}px`;
  };
  els.input.addEventListener("input", () => { autosize(); updateComposer(); });
  els.stop.addEventListener("click", () => {
    const running = [...app.active].sort((a, b) => a - b);
    for (const turn of running) app.client.cancel(turn).catch(() => {});
  });
  for (const chip of document.querySelectorAll("[data-suggest]")) {
    chip.addEventListener("click", () => submit(chip.dataset.suggest));
  }
  $("new-chat").addEventListener("click", () => openSession(null));
  $("new-chat-top").addEventListener("click", () => openSession(null));
  $("toggle-sidebar").addEventListener("click", () => els.app.classList.toggle("sidebar-open"));
  els.scrim.addEventListener("click", closeSidebar);
  els.userChip.addEventListener("click", async () => {
    if (await askUser()) location.reload();
  });
  els.talk.addEventListener("click", startCall);
  els.hangup.addEventListener("click", () => {
    if (app.callStarting) {
      app.callStarting = null;
      renderCall("ended", "");
    } else {
      app.call?.hangUp();
    }
  });
  els.mute.addEventListener("click", () => app.call?.setMuted(!app.call.muted));
  els.callAudioBtn.addEventListener("click", () => app.call?.startAudio().catch(() => {}));
  els.callClose.addEventListener("click", () => { if (!app.call?.active) els.call.hidden = true; });
  setInterval(refreshSessions, 60_000);
  updateComposer();
}

async function main() {
  wireUi();
  app.config = await loadConfig();
  if (!Array.isArray(app.config.ws_urls) || app.config.ws_urls.length === 0) {
    setBadge("closed", "No WebSocket URL");
    toast("The server's /v1/config lists no WebSocket URL.");
    return;
  }
  const voice = app.config.voice === true;
  els.talk.disabled = !voice;
  els.talkWrap.dataset.tooltip = voice ? "Talk to the agent" : "Voice is not available on this server";
  if (voice) preloadVoice();
  if (app.config.dev_tokens) {
    app.user = localStorage.getItem("agentia:user");
    if (!app.user) {
      app.user = randomGuest();
      localStorage.setItem("agentia:user", app.user);
    }
  } else {
    if (!sessionStorage.getItem("agentia:token")) await askUser({ required: true });
    app.user = userFromToken(sessionStorage.getItem("agentia:token") ?? "") ?? "user";
  }
  try { app.titles = JSON.parse(localStorage.getItem(`agentia:titles:${app.user}`) ?? "{}"); } catch { app.titles = {}; }
  showUser();
  app.agent = agentFromUrl();
  startClient();
  refreshSessions();
  loadAgents();
}

main();
