// The connection's badge, the title, the list of conversations, the user.
import { $, app, el, els, relativeTime, STATE_LABELS } from "./page.js";
import { fetchJson } from "./server.js";
import { addPending, clearView } from "./conversation.js";
import { renderCall } from "./call.js";

// -- connection state, sessions ----------------------------------------------------------------

export function setBadge(state, label) {
  els.badge.dataset.state = state;
  els.badge.querySelector(".label").textContent = label ?? STATE_LABELS[state] ?? state;
}

export function onState(state) {
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

export function setTitle(session, text) {
  if (!session || !text) return;
  app.titles[session] = text.length > 80 ? `${text.slice(0, 77)}…` : text;
  localStorage.setItem(`agentia:titles:${app.user}`, JSON.stringify(app.titles));
  if (session === app.client?.session) showTitle();
  renderSessions();
}

export function showTitle() {
  const s = app.client?.session;
  els.title.textContent = (s && app.titles[s]) || "New conversation";
  els.convId.textContent = s ? s.slice(0, 8) : "";
  els.convId.title = s ? `Session ${s}` : "";
  document.title = s && app.titles[s] ? `${app.titles[s]} · Agentia` : "Agentia";
}

export function renderSessions() {
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

export async function refreshSessions() {
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

export function openSession(id) {
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

export function closeSidebar() { els.app.classList.remove("sidebar-open"); }

// -- user and token ----------------------------------------------------------------------------

export function randomGuest() {
  const bytes = new Uint8Array(2);
  crypto.getRandomValues(bytes);
  return `guest-${[...bytes].map((b) => b.toString(16).padStart(2, "0")).join("")}`;
}

export function showUser() {
  els.userName.textContent = app.user;
  els.userAvatar.textContent = (app.user[0] ?? "?").toUpperCase();
  els.userChip.querySelector(".user-sub").textContent = app.config.dev_tokens ? "dev token" : "signed in";
}

export function askUser({ required = false } = {}) {
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
