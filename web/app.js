// The Agentia chat page: one conversation view over AgentiaClient (@agentia/client, from
// clients/js, served at /static/agentia-client/), a list of the user's conversations from the
// control plane, dev tokens when the server hands them out.
import { AGENT_NAME_RE, AgentiaClient } from "./agentia-client/index.js";
import {
  $, AGENT_MISMATCH_CLOSE, app, el, els, FORBIDDEN_CLOSE, HANDLED_CLOSES, sleep, toast,
  UNKNOWN_AGENT_CLOSE,
} from "./page.js";
import { fetchJson, getToken, userFromToken } from "./server.js";
import {
  addPending, applyEvent, applyText, clearView, failPending, showCaption, submit, updateComposer,
} from "./conversation.js";
import {
  askUser, closeSidebar, onState, openSession, randomGuest, refreshSessions, renderSessions,
  setBadge, showTitle, showUser,
} from "./sidebar.js";
import { preloadVoice, renderCall, startCall } from "./call.js";

// -- configuration ------------------------------------------------------------------------------

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
