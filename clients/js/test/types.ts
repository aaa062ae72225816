// Compiled by `tsc --noEmit` (npm run typecheck): the declarations in index.d.ts fit the
// documented usage. Not run.
import AgentiaClientDefault, {
  AgentiaClient, AgentiaError, type Ack, type ClientState, type LogEvent, type StreamFrame,
  type TextInfo, TurnText, isStreamFrame, isTerminalClose,
} from "@agentia/client";

const client = new AgentiaClient({
  urls: ["ws://127.0.0.1:8765/v1/ws"],
  token: async ({ refresh }) => (refresh ? "fresh" : "cached"),
  history: "replay",
});
const same: AgentiaClient = new AgentiaClientDefault({ url: "ws://x/v1/ws", storage: null });
same.close();
client.on("event", (ev: LogEvent) => ev.offset + 1);
client.on("state", (state: ClientState, previous: ClientState) => [state, previous]);
client.on("error", (err: AgentiaError) => (err.willRetry ? err.code : err.closeCode));
client.on("reset", ({ epoch, offset }) => `${epoch}:${offset}`);
client.on("text", ({ turn, text }: TextInfo) => `${turn}: ${text}`);
client.on("chunk", (f) => f.seq + f.text.length + f.attempt);
client.on("partial", (f) => f.text.slice(0, f.seq));
const shown: string | null = client.replyText(3);
const turnText = new TurnText(3);
const frame: unknown = JSON.parse("{}");
if (isStreamFrame(frame)) turnText.apply(frame satisfies StreamFrame);
const off: () => void = client.on("close", ({ code }) => isTerminalClose(code));
off();
client.connect();
const sent = client.send("hello");
const id: string = sent.id;
sent.then((ack: Ack) => ack.offset + (ack.duplicate ? 0 : 1) + id.length);
client.cancel().then((turn: number) => turn);
const agentClient = new AgentiaClient({ url: "ws://x/v1/ws", agent: "triage" });
const agentName: string | null = agentClient.agent;
agentClient.on("tool_call", (ev) => `${ev.name}(${JSON.stringify(ev.arguments ?? {})}) ${ev.agent}`);
agentClient.on("tool_result", (ev) => (ev.is_error ? ev.output : ev.call_id));
agentClient.on("agent_state", (ev) => ev.state === "thinking" || ev.turn === undefined);
agentClient.on("handoff", ({ from, to }) => `${from} → ${to}`);
agentClient.on("approval_request", (ev) => {
  const answered: Promise<Ack> = agentClient.approve(ev.call_id, true, "ok");
  return answered.then((ack) => ack.offset + ev.expires);
});
agentClient.on("approval_result", (ev) => (ev.approved ? ev.by : ev.message));

async function read(): Promise<number> {
  let n = 0;
  for await (const ev of client) n += ev.offset;
  return n;
}
void read();

// @ts-expect-error: history takes one of three values
new AgentiaClient({ urls: "ws://x", history: "all" });
// @ts-expect-error: "event" listeners take a LogEvent
client.on("event", (ev: string) => ev);
// @ts-expect-error: a chunk has no offset
client.on("chunk", (f) => f.offset);
client.on("caption", (f) => (f.final === false ? `${f.utterance}: ${f.text}` : ""));
// @ts-expect-error: an interim transcript has no offset
client.on("caption", (f) => f.offset);
// @ts-expect-error: approved is a boolean
agentClient.approve("c1", "yes");
void agentName;
void shown;
