// The conversation view: turns, their events and text, captions, pending messages.
import {
  AGENT_EVENT_TYPES, agentContainers, agentParts, applyAgentEvent, awaitingApproval, renderAgent,
  restartAgent,
} from "./agent.js";
import { app, el, els, MIC_ICON } from "./page.js";
import { markdown } from "./markdown.js";
import { refreshSessions, setTitle } from "./sidebar.js";

// -- the conversation view ---------------------------------------------------------------------

export function turnView(id) {
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

export function markDirty(t) {
  app.dirty.add(t);
  if (!app.flushTimer) app.flushTimer = setTimeout(flush, 16);
}

export function nearBottom() {
  const m = els.messages;
  return m.scrollHeight - m.scrollTop - m.clientHeight < 120;
}

export function flush() {
  app.flushTimer = null;
  const stick = nearBottom();
  for (const t of app.dirty) renderTurn(t);
  app.dirty.clear();
  updateComposer();
  if (stick) els.messages.scrollTop = els.messages.scrollHeight;
}

export function renderTurn(t) {
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

export function applyEvent(ev) {
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
export function answerApproval(t, callId, approved) {
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
export function applyText({ turn, text }) {
  const t = turnView(turn);
  if (t.status === "done" || t.status === "cancelled" || t.status === "error") return;
  t.text = text;
  t.status = "streaming";
  markDirty(t);
}

/** A line of the conversation that is not a turn (a posted message, a takeover), placed by its
 * offset among the turns; a replayed one is not shown twice. */
export function addNotice(offset, className, author, text) {
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
export function showCaption(text, final) {
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

export function clearView() {
  showCaption("", true);
  app.turns.clear();
  app.active.clear();
  app.dirty.clear();
  els.turns.replaceChildren();
  els.empty.hidden = els.pending.children.length > 0;
  updateComposer();
}

// -- pending (not yet acknowledged) messages --------------------------------------------------

export function addPending(id, text) {
  if (!id || els.pending.querySelector(`[data-id="${CSS.escape(id)}"]`)) return;
  const node = el("div", "msg user pending");
  node.dataset.id = id;
  node.append(el("div", "bubble", text), el("div", "status", "Sending…"));
  els.pending.append(node);
  els.empty.hidden = true;
  els.messages.scrollTop = els.messages.scrollHeight;
}

export function removePending(id) {
  els.pending.querySelector(`[data-id="${CSS.escape(id ?? "")}"]`)?.remove();
}

export function failPending(id, text, err) {
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

export function submit(text) {
  if (!text.trim() || !app.client) return;
  const p = app.client.send(text);
  addPending(p.id, text);
  p.catch((err) => {
    if (err.code === "switched" || err.code === "closed") return;
    failPending(p.id, text, err);
  });
}

export function updateComposer() {
  const running = [...app.active].filter((id) => app.turns.get(id)?.status !== "done");
  els.stop.hidden = running.length === 0;
  els.send.disabled = els.input.value.trim() === "";
}
