// Voice calls of the chat page: the caller joins a LiveKit room with the session's voice agent
// (docs/voice.md). app.js imports this module on demand, so the chat works without it.
//
// livekit-client's ES build is served by the control plane from web/node_modules (installed by
// `npm ci` in web/, pinned by web/package-lock.json) at /static/vendor/livekit-client/: no CDN,
// no build step.
//
//   const call = new VoiceCall({ requestCall, onState, audioContainer });
//   await call.start();   // never throws: failures end in the "error" state with a message
//   call.setMuted(true);
//   call.hangUp();
//
// States: connecting -> waiting (in the room, the agent not ready yet) -> listening | thinking |
// speaking (the agent's own state) <-> reconnecting, and at last ended or error.
import {
  DisconnectReason, Room, RoomEvent, Track,
} from "./vendor/livekit-client/livekit-client.esm.mjs";

export const ACTIVE_STATES = Object.freeze(
  ["connecting", "waiting", "listening", "thinking", "speaking", "reconnecting"]);

/** The attribute LiveKit Agents sets on the agent participant: initializing | listening | ... */
export const AGENT_STATE = "lk.agent.state";

const AGENT_STATES = { listening: "listening", thinking: "thinking", speaking: "speaking" };

/** The attribute Agentia's voice worker sets: the call's last error or end, JSON. */
export const CALL_NOTE = "agentia.call";

/** The room's metadata when no voice worker took the call; the room is deleted next. */
const NO_AGENT = "no_voice_agent";

const NOTE_MESSAGES = {
  stt_failed: "The agent could not understand that: please say it again.",
  tts_failed: "The agent cannot speak right now: its replies appear in the chat.",
  agent_unavailable: "The agent could not be reached: try again in a moment.",
  worker_lost: "The voice agent stopped unexpectedly: start the call again.",
  [NO_AGENT]: "No voice agent is available right now: try again in a moment.",
};

/** A message for the user from the agent's `agentia.call` attribute, or "" for none. */
export function callNoteMessage(raw) {
  let note;
  try { note = JSON.parse(raw ?? ""); } catch { return ""; }
  if (note?.state === "error") return NOTE_MESSAGES[note.code] ?? "The call ran into an error.";
  if (note?.state === "ended" && note.reason === "worker_lost") return NOTE_MESSAGES.worker_lost;
  return "";
}

/** A failure with a message for the user. */
export class CallError extends Error {
  constructor(code, message) {
    super(message);
    this.name = "CallError";
    this.code = code;
  }
}

/** A microphone failure (getUserMedia's DOMException) as a sentence for the user. */
export function microphoneError(err) {
  switch (err?.name) {
    case "NotAllowedError":
    case "SecurityError":
      return new CallError("mic_denied",
        "Microphone access was denied: allow it in the browser's site settings and try again.");
    case "NotFoundError":
    case "OverconstrainedError":
      return new CallError("mic_missing", "No microphone was found: connect one and try again.");
    case "NotReadableError":
    case "AbortError":
      return new CallError("mic_busy",
        "The microphone could not be opened: another application may be using it.");
    default:
      return new CallError("mic_error", `The microphone could not be opened (${err?.message ?? err}).`);
  }
}

/** Checks that can fail before an agent is dispatched: a secure page, a microphone, no denial. */
async function checkMicrophone() {
  const md = globalThis.navigator?.mediaDevices;
  if (!md?.getUserMedia) {
    throw new CallError("insecure",
      "This browser gives no microphone here: voice needs HTTPS (or localhost).");
  }
  // both at once: one after the other took 0.07-0.25 s of the Talk click on a busy machine
  const [perm, devices] = await Promise.all([
    // undefined when the Permissions API does not know "microphone"
    navigator.permissions?.query({ name: "microphone" }).catch(() => undefined),
    md.enumerateDevices().catch(() => null),
  ]);
  if (perm?.state === "denied") throw microphoneError({ name: "NotAllowedError" });
  if (devices && !devices.some((d) => d.kind === "audioinput")) {
    throw microphoneError({ name: "NotFoundError" });
  }
}

/**
 * Start the browser's WebRTC stack before the first call (app.js calls it once voice.js is
 * loaded): a throwaway peer connection makes an offer and gathers its candidates, then closes;
 * the microphone checks of the Talk click run once (they list devices and read the permission:
 * no prompt, no microphone opened). Resolves once both are done (never rejects). Measured in
 * tests/browser/test_talk.py on a busy two-core box: the first call's room.connect took
 * 1.25-1.7 s without the peer connection, 0.9-1.1 s with it (0.2-0.5 s for later calls; most of
 * the rest was a fresh LiveKit server's, now warmed when it starts: docs/voice.md); the first
 * click's microphone checks took 0.1 s, 0.01 s once run here.
 */
export function warmUp() {
  const checked = checkMicrophone().catch(() => {});
  const PC = globalThis.RTCPeerConnection;
  if (!PC) return checked;
  const pc = new PC();
  pc.addTransceiver("audio", { direction: "recvonly" });
  pc.createDataChannel("warm-up");
  const offered = pc.createOffer().then((offer) => pc.setLocalDescription(offer))
    .catch(() => {}).finally(() => setTimeout(() => pc.close(), 2000));
  return Promise.all([checked, offered]).then(() => {});
}

function disconnectMessage(reason) {
  switch (reason) {
    case DisconnectReason.CLIENT_INITIATED: return null;
    case DisconnectReason.ROOM_DELETED: return ["ended", "The call was closed by the server."];
    case DisconnectReason.PARTICIPANT_REMOVED: return ["ended", "You were removed from the call."];
    case DisconnectReason.DUPLICATE_IDENTITY:
      return ["ended", "The call moved to another tab or device."];
    case DisconnectReason.SERVER_SHUTDOWN:
      return ["error", "The voice server shut down: start the call again."];
    default:
      return ["error", "The connection to the voice server was lost."];
  }
}

export class VoiceCall {
  /**
   * requestCall     async () => {url, token}: POST /v1/voice/sessions (throws CallError)
   * onState         (state, message, call) => void
   * audioContainer  an element the agent's <audio> elements go in
   * agentTimeoutMs  how long the agent has to join and be ready
   */
  constructor({ requestCall, onState = () => {}, audioContainer = document.body,
    agentTimeoutMs = 15_000 } = {}) {
    this.requestCall = requestCall;
    this.onState = onState;
    this.audioContainer = audioContainer;
    this.agentTimeoutMs = agentTimeoutMs;
    this.state = "idle";
    this.message = "";
    this._note = undefined; // the last agentia.call attribute seen
    this.muted = false;
    this.room = null;
    this.mic = null;
    this.agent = null;       // the agent's RemoteParticipant once it joined
    this.audioTracks = new Set();
    this.audioBlocked = false;
    this._agentReady = null; // resolves when the agent is ready to listen
    this._agentGone = null;  // rejects that wait when the call ends first
    this._timers = new Set();
    this._roomNote = "";     // the room's metadata (the server's no_voice_agent)
    // ms from start() to: checked, answered, signal, mic, connected, agent, listening
    this.marks = {};
    this._t0 = 0;
  }

  get active() { return ACTIVE_STATES.includes(this.state); }

  get done() { return this.state === "ended" || this.state === "error"; }

  /** Start the call; resolves when it is live or has failed (see `state`). */
  async start() {
    if (this.state !== "idle") return;
    this._t0 = performance.now();
    this._set("connecting");
    try {
      await checkMicrophone(); // before an agent is dispatched for nothing
      this._mark("checked");
      const answer = this.requestCall();
      this._makeRoom(); // while the request is out
      const { url, token } = await answer;
      this._mark("answered");
      if (this.done) return;
      // answered once the agent is dispatched: it joins the room while we do, and the
      // microphone opens meanwhile; the call shows "listening" once the agent listens
      const mic = this._openMicrophone();
      mic.catch(() => {}); // awaited below, unless the connection failed first
      await this._connect(url, token);
      this._mark("connected");
      if (this.done) return;
      this._set("waiting");
      await Promise.all([this._waitForAgent().then(() => this._mark("agent")), mic]);
      if (this.done) return;
      this._agentReady = null;
      this._agentGone = null;
      this._followAgent();
      this._mark("listening");
    } catch (err) {
      if (this.done) return;
      this._fail(err instanceof CallError ? err
        : new CallError("failed", `The call could not start: ${err?.message ?? err}`));
    }
  }

  /** End the call (the agent leaves the room when its caller does). */
  hangUp(message = "Call ended") {
    if (this.done) return;
    this._finish("ended", message);
  }

  setMuted(muted) {
    this.muted = Boolean(muted);
    if (this.mic) (this.muted ? this.mic.mute() : this.mic.unmute()).catch(() => {});
    this.onState(this.state, this.message, this);
  }

  /** Retry playback after the browser blocked it (must run in a click handler). */
  async startAudio() {
    await this.room?.startAudio();
    this.audioBlocked = this.room ? !this.room.canPlaybackAudio : false;
    this.onState(this.state, this.message, this);
  }

  /** What the page has received of the agent's audio: {tracks, energy, samples}. */
  async agentAudio() {
    let energy = 0;
    let samples = 0;
    for (const track of this.audioTracks) {
      const report = await track.getRTCStatsReport().catch(() => undefined);
      report?.forEach((s) => {
        if (s.type === "inbound-rtp" && s.kind === "audio") {
          energy += s.totalAudioEnergy ?? 0;
          samples += s.totalSamplesReceived ?? 0;
        }
      });
    }
    return { tracks: this.audioTracks.size, energy, samples };
  }

  // -- steps -----------------------------------------------------------------------------------

  _makeRoom() {
    if (this.room) return;
    const room = new Room({ adaptiveStream: false, dynacast: false, disconnectOnPageLeave: true });
    this.room = room;
    room
      .on(RoomEvent.TrackSubscribed, (track, _pub, participant) => {
        if (track.kind !== Track.Kind.Audio) return;
        const audio = track.attach();
        audio.dataset.participant = participant.identity;
        this.audioContainer.append(audio);
        this.audioTracks.add(track);
      })
      .on(RoomEvent.TrackUnsubscribed, (track) => {
        for (const node of track.detach()) node.remove();
        this.audioTracks.delete(track);
      })
      .on(RoomEvent.SignalConnected, () => this._mark("signal"))
      .on(RoomEvent.ParticipantConnected, () => this._checkAgent())
      .on(RoomEvent.ParticipantAttributesChanged, () => this._checkAgent())
      .on(RoomEvent.ParticipantDisconnected, (p) => {
        if (p !== this.agent || this.done) return;
        const lost = callNoteMessage(p.attributes?.[CALL_NOTE]);
        this._finish("ended", lost.startsWith("The voice agent") ? lost : "The agent left the call.");
      })
      .on(RoomEvent.AudioPlaybackStatusChanged, () => {
        this.audioBlocked = !room.canPlaybackAudio;
        this.onState(this.state, this.message, this);
      })
      .on(RoomEvent.Reconnecting, () => { if (!this.done) this._set("reconnecting"); })
      .on(RoomEvent.Reconnected, () => {
        if (this.done) return;
        if (this.mic) this._followAgent(); else this._set("waiting");
      })
      .on(RoomEvent.MediaDevicesError, (err) => { if (!this.done) this._fail(microphoneError(err)); })
      .on(RoomEvent.RoomMetadataChanged, (metadata) => { this._roomNote = metadata ?? ""; })
      .on(RoomEvent.Disconnected, (reason) => {
        if (this.done) return;
        // the server deletes the room of a call no voice worker took, saying so first
        const noAgent = reason === DisconnectReason.ROOM_DELETED
          && callNoteMessage(this._roomNote || room.metadata) === NOTE_MESSAGES[NO_AGENT];
        const [state, message] = noAgent ? ["error", NOTE_MESSAGES[NO_AGENT]]
          : disconnectMessage(reason) ?? ["ended", "Call ended"];
        this._finish(state, message);
      });
  }

  async _connect(url, token) {
    const room = this.room;
    try {
      await room.connect(url, token, { autoSubscribe: true });
    } catch (err) {
      throw new CallError("connect_failed",
        `Could not connect to the voice server: ${err?.message ?? err}`);
    }
    // the click that started the call lets the page play audio; try now, else offer a button
    await room.startAudio().catch(() => {});
    this.audioBlocked = !room.canPlaybackAudio;
  }

  _waitForAgent() {
    return new Promise((resolve, reject) => {
      this._agentReady = resolve;
      this._agentGone = reject;
      this._later(() => reject(new CallError("agent_timeout",
        "The voice agent did not join the call (the voice worker may be busy or down): "
        + "try again in a moment.")), this.agentTimeoutMs);
      this._checkAgent();
    });
  }

  /** The agent is the participant of kind AGENT; ready once its state is past initializing. */
  _checkAgent() {
    if (!this.room || this.done) return;
    const agent = [...this.room.remoteParticipants.values()].find((p) => p.isAgent);
    if (!agent) return;
    if (this.agent !== agent) {
      this.agent = agent;
      // agents without the state attribute (other frameworks) count as ready after a moment
      this._later(() => { if (agent.attributes[AGENT_STATE] === undefined) this._agentReady?.(); },
        3000);
    }
    if (this._agentReady) {
      if (AGENT_STATES[agent.attributes[AGENT_STATE]]) this._agentReady();
      return;
    }
    this._followAgent();
  }

  /** The microphone, opened while the room connects and published once it is. */
  async _openMicrophone() {
    let pub;
    try {
      // published once the room is connected (LiveKit's own pattern); what is said before the
      // agent listens is buffered and handed to it when it joins (livekit-agents'
      // pre-connect audio), so it is not lost
      pub = await this.room.localParticipant.setMicrophoneEnabled(true, {
        echoCancellation: true, noiseSuppression: true, autoGainControl: true,
      }, { preConnectBuffer: true });
    } catch (err) {
      if (this.done) return;
      throw err instanceof DOMException ? microphoneError(err) : new CallError("mic_publish",
        `The microphone could not be sent to the call: ${err?.message ?? err}`);
    }
    this.mic = pub?.track ?? null;
    this._mark("mic");
    if (!this.mic) throw new CallError("mic_error", "The microphone could not be opened.");
    if (this.done) { this.mic.stop(); return; }
    if (this.muted) await this.mic.mute();
  }

  _followAgent() {
    if (this.done || this._agentReady || !this.mic) return;
    const state = AGENT_STATES[this.agent?.attributes?.[AGENT_STATE]] ?? "listening";
    // an error the agent reports (it could not hear or speak) stays shown until the next one
    const note = this.agent?.attributes?.[CALL_NOTE];
    const message = note !== this._note ? callNoteMessage(note) : this.message;
    this._note = note;
    if (state !== this.state || message !== this.message) this._set(state, message);
  }

  // -- state -----------------------------------------------------------------------------------

  _set(state, message = "") {
    this.state = state;
    this.message = message;
    this.onState(state, message, this);
  }

  _fail(err) {
    this._finish("error", err.message);
  }

  _finish(state, message) {
    if (this.done) return;
    this._set(state, message);
    for (const t of this._timers) clearTimeout(t);
    this._timers.clear();
    this._agentReady = null;
    this._agentGone?.(new CallError("ended", message));
    this._agentGone = null;
    this.mic?.stop();
    for (const track of this.audioTracks) for (const node of track.detach()) node.remove();
    this.audioTracks.clear();
    this.room?.disconnect().catch(() => {});
  }

  _mark(name) {
    this.marks[name] = Math.round(performance.now() - this._t0);
  }

  _later(fn, ms) {
    const t = setTimeout(() => { this._timers.delete(t); fn(); }, ms);
    this._timers.add(t);
  }
}
