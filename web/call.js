// The Talk button's call (voice.js over LiveKit, loaded on demand).
import { app, els, toast } from "./page.js";
import { getToken } from "./server.js";

// -- voice calls (voice.js, LiveKit) -----------------------------------------------------------

export const CALL_LABELS = {
  connecting: "Connecting…", waiting: "Waiting for the agent…", listening: "Listening",
  thinking: "Thinking…", speaking: "Agent speaking", reconnecting: "Reconnecting…",
  ended: "Call ended",
};

/** voice.js (and livekit-client through it), imported once (a browser may cache a failed
 * import until the page reloads). */
export function loadVoice() {
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
export function preloadVoice() {
  app.voiceWarm = loadVoice().then((mod) => mod.warmUp()).catch(() => {});
}

/** The session of the conversation on screen; a new conversation gets its id at welcome. */
export async function currentSession() {
  const client = app.client;
  if (client?.session) return client.session;
  if (!client) throw new Error("not connected");
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => { off(); reject(new Error("not connected")); }, 10_000);
    const off = client.once("welcome", (w) => { clearTimeout(timer); resolve(w.session); });
  });
}

/** POST /v1/voice/sessions: {url, room, token} for a call of `session`, or a clear error. */
export async function requestVoiceSession(session, CallError) {
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

export async function startCall() {
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

export function renderCall(state, message) {
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
