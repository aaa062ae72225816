// The agent's side of a turn on the chat page: which agent speaks (and its handoffs), what it
// does (its state), its tool calls (collapsible: arguments, result, error; a private tool shows
// only its name) and the approval cards of its approval requests. app.js feeds each turn's log
// events to applyAgentEvent and draws the turn with renderAgent; everything here is rebuilt
// from the log, so a reload shows the same (an approval request without its approval_result is
// still open).

const TOOL_ICON = '<svg viewBox="0 0 24 24" aria-hidden="true"><path d="M14.7 6.3a4 4 0 0 0-5.4 5.4L4 17v3h3l5.3-5.3a4 4 0 0 0 5.4-5.4l-2.5 2.5-2.4-.6-.6-2.4z"/></svg>';
const SHIELD_ICON = '<svg viewBox="0 0 24 24" aria-hidden="true"><path d="M12 3 5 6v5c0 4.5 3 8.3 7 10 4-1.7 7-5.5 7-10V6z"/><path d="m9 12 2 2 4-4"/></svg>';

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

/** The agent parts of a new turn's view model. */
export function agentParts() {
  return {
    agent: null,           // the agent speaking (the last one after handoffs)
    agentState: null,      // thinking | tool | speaking | listening | idle
    handoffs: [],          // [{from, to}]
    calls: [],             // [{key, callId, name, args, private, result}]
    approvals: new Map(),  // call_id -> {request, result, busy, closed, note}
    callNodes: new Map(),  // key -> its <details> (kept so an open one stays open)
    approvalNodes: new Map(),
  };
}

/** A new attempt starts over: its tool calls and state go; approval cards stay (a resumed
 * pause does not ask again). */
export function restartAgent(t) {
  t.calls = [];
  t.callNodes.clear();
  t.agentState = null;
}

/** The log event types applyAgentEvent takes. */
export const AGENT_EVENT_TYPES = new Set(["tool", "tool_call", "tool_result", "state", "handoff",
  "approval_request", "approval_result"]);

/** Apply one log event of the turn; false when it is not an agent event. */
export function applyAgentEvent(t, ev) {
  switch (ev.type) {
    case "tool": // the event of earlier edges: a name only
      t.calls.push({ key: `o${ev.offset}`, callId: null, name: ev.name, args: null,
        private: false, result: null });
      return true;
    case "tool_call":
      if (t.calls.some((c) => c.callId === ev.call_id)) return true;
      t.calls.push({ key: `c${ev.call_id}`, callId: ev.call_id, name: ev.name,
        args: ev.arguments ?? null, private: ev.private === true, result: null });
      t.agent = ev.agent ?? t.agent;
      return true;
    case "tool_result": {
      const call = t.calls.find((c) => c.callId === ev.call_id);
      const result = { output: ev.output ?? null, isError: ev.is_error === true,
        truncated: ev.truncated === true, private: ev.private === true };
      if (call) call.result = result;
      else t.calls.push({ key: `c${ev.call_id}`, callId: ev.call_id, name: ev.name, // its call
        args: t.approvals.get(ev.call_id)?.request?.arguments ?? null, // was in an earlier attempt
        private: result.private, result });
      return true;
    }
    case "state":
      t.agentState = ev.state;
      t.agent = ev.agent ?? t.agent;
      return true;
    case "handoff":
      t.handoffs.push({ from: ev.from, to: ev.to });
      t.agent = ev.to ?? t.agent;
      return true;
    case "approval_request": {
      const a = t.approvals.get(ev.call_id) ?? newApproval();
      a.request = ev;
      t.approvals.set(ev.call_id, a);
      return true;
    }
    case "approval_result": {
      const a = t.approvals.get(ev.call_id) ?? newApproval();
      a.result = ev;
      a.busy = false;
      t.approvals.set(ev.call_id, a);
      return true;
    }
    default:
      return false;
  }
}

function newApproval() {
  return { request: null, result: null, busy: false, closed: false, note: "" };
}

/** The body's containers the agent parts are drawn in, created once per turn. */
export function agentContainers() {
  const head = el("div", "agent-head");
  head.append(el("span", "agent-name"), el("span", "handoffs"), el("span", "agent-state"));
  return { head, tools: el("div", "tools"), approvals: el("div", "approvals") };
}

const STATE_LABELS = { thinking: "Thinking…", speaking: "Speaking…", listening: "Listening…" };

/** True while an approval request of the turn has no result (the turn waits for a person). */
export function awaitingApproval(t) {
  return [...t.approvals.values()].some((a) => a.request && !a.result);
}

function stateLabel(t) {
  if (awaitingApproval(t)) return "Waiting for approval";
  if (t.agentState === "tool") {
    const running = t.calls.findLast((c) => !c.result);
    return running ? `Using ${running.name}…` : "Using a tool…";
  }
  return STATE_LABELS[t.agentState] ?? "";
}

/** Draw the agent parts of turn `t`; `answer(t, callId, approved)` is called on a card's
 * buttons. `ended`: the turn has its final event (no state shown then). */
export function renderAgent(t, root, { ended, answer }) {
  const head = root.querySelector(".agent-head");
  const name = head.querySelector(".agent-name");
  name.textContent = t.agent ?? "";
  name.hidden = !t.agent;
  head.querySelector(".handoffs").replaceChildren(...t.handoffs.map(({ from, to }) => {
    const h = el("span", "handoff", `${from} → ${to}`);
    h.title = `${from} handed the conversation to ${to}`;
    return h;
  }));
  const state = head.querySelector(".agent-state");
  const label = ended ? "" : stateLabel(t);
  state.textContent = label;
  state.hidden = !label;
  state.dataset.state = ended ? "idle" : (t.agentState ?? "");
  head.hidden = !t.agent && !t.handoffs.length && !label;
  renderCalls(t, root.querySelector(".tools"));
  renderApprovals(t, root.querySelector(".approvals"), answer, ended);
}

function renderCalls(t, box) {
  const nodes = t.calls.map((c) => {
    let node = t.callNodes.get(c.key);
    if (!node) {
      node = callNode(c);
      t.callNodes.set(c.key, node);
    }
    updateCall(node, c);
    return node;
  });
  if (nodes.length !== box.children.length || nodes.some((n, i) => box.children[i] !== n)) {
    box.replaceChildren(...nodes);
  }
}

function callNode(c) {
  const detailed = c.callId !== null && !c.private;
  const node = el(detailed ? "details" : "div", "tool-call");
  node.dataset.testid = "tool-call";
  const summary = el(detailed ? "summary" : "div", "tool-summary");
  const pill = el("span", "tool-pill");
  pill.innerHTML = TOOL_ICON;
  pill.append(el("span", "tool", c.name), el("span", "tool-status"));
  summary.append(pill);
  node.append(summary);
  if (c.private) {
    node.dataset.private = "true";
    node.title = `The agent used ${c.name} (a private tool: its arguments and result are not shown)`;
  } else if (detailed) {
    const detail = el("div", "tool-detail");
    detail.append(el("div", "tool-label", "Arguments"), el("pre", "tool-args"),
      el("div", "tool-label tool-result-label", "Result"), el("pre", "tool-output"));
    node.append(detail);
  } else {
    node.title = `The agent called the tool ${c.name}`;
  }
  return node;
}

function updateCall(node, c) {
  if (c.callId !== null) node.dataset.callId = c.callId;
  const status = !c.result ? "running" : (c.result.isError ? "error" : "done");
  node.dataset.status = c.callId === null ? "done" : status;
  node.querySelector(".tool-status").textContent =
    c.callId === null ? "" : ({ running: "…", error: "failed", done: "" })[status];
  const args = node.querySelector(".tool-args");
  if (!args) return;
  args.textContent = JSON.stringify(c.args ?? {}, null, 2);
  const out = node.querySelector(".tool-output");
  const label = node.querySelector(".tool-result-label");
  label.textContent = c.result?.isError ? "Error" : "Result";
  let text = c.result ? (c.result.output ?? "") : "(running)";
  if (c.result?.truncated) text += "\n… (cut at 4,096 characters)";
  out.textContent = text;
}

function renderApprovals(t, box, answer, ended) {
  const nodes = [];
  for (const [callId, a] of t.approvals) {
    if (!a.request) continue; // a result without its request (a trimmed log): nothing to ask
    let node = t.approvalNodes.get(callId);
    if (!node) {
      node = approvalNode(a.request, (approved) => answer(t, callId, approved));
      t.approvalNodes.set(callId, node);
    }
    updateApproval(node, a, ended);
    nodes.push(node);
  }
  if (nodes.length !== box.children.length || nodes.some((n, i) => box.children[i] !== n)) {
    box.replaceChildren(...nodes);
  }
}

function formatValue(v) {
  return typeof v === "string" ? v : JSON.stringify(v);
}

function approvalNode(req, onAnswer) {
  const node = el("div", "approval");
  node.dataset.testid = "approval";
  node.dataset.callId = req.call_id;
  const title = el("div", "approval-title");
  title.innerHTML = SHIELD_ICON;
  title.append(el("span", "", `${req.agent ?? "The agent"} wants to run `), el("code", "", req.name));
  const args = el("dl", "approval-args");
  for (const [k, v] of Object.entries(req.arguments ?? {})) {
    args.append(el("dt", "", k), el("dd", "", formatValue(v)));
  }
  const actions = el("div", "approval-actions");
  const yes = el("button", "btn btn-primary btn-small", "Approve");
  yes.type = "button";
  yes.dataset.testid = "approve";
  yes.onclick = () => onAnswer(true);
  const no = el("button", "btn btn-small", "Reject");
  no.type = "button";
  no.dataset.testid = "reject";
  no.onclick = () => onAnswer(false);
  actions.append(yes, no, el("span", "approval-outcome"));
  node.append(title, args, actions);
  if (typeof req.expires === "number") {
    const at = new Date(req.expires * 1000);
    node.title = `Rejected automatically if not answered by ${at.toLocaleTimeString()}`;
  }
  return node;
}

function outcome(r) {
  if (r.by === "timeout") return "Rejected: nobody answered in time";
  const said = r.message ? `: “${r.message}”` : "";
  return `${r.approved ? "Approved" : "Rejected"} by ${r.by}${said}`;
}

/** A card's state: open (its buttons work), sending, approved, rejected, or closed (no
 * result, but nothing to answer any more: the edge said so, or the turn ended). */
function updateApproval(node, a, ended) {
  let state = "open";
  let text = a.note;
  if (a.result) [state, text] = [a.result.approved ? "approved" : "rejected", outcome(a.result)];
  else if (ended) [state, text] = ["closed", "The turn ended without an answer."];
  else if (a.busy) [state, text] = ["sending", "Sending…"];
  else if (a.closed) state = "closed";
  node.dataset.state = state;
  for (const b of node.querySelectorAll("button")) b.disabled = state !== "open";
  node.querySelector(".approval-outcome").textContent = text;
}
