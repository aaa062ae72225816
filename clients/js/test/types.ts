// Compiled by `tsc --noEmit` (npm run typecheck): the declarations in index.d.ts fit the
// documented usage. Not run.
import AgentiaClientDefault, {
  AgentiaClient, AgentiaError, type Ack, type ClientState, type LogEvent, isTerminalClose,
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
const off: () => void = client.on("close", ({ code }) => isTerminalClose(code));
off();
client.connect();
const sent = client.send("hello");
const id: string = sent.id;
sent.then((ack: Ack) => ack.offset + (ack.duplicate ? 0 : 1) + id.length);
client.cancel().then((turn: number) => turn);

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
