// Log events as an async iterator over a client's "event" emissions.

/** An async iterator of `client`'s log events; it ends when the client closes. */
export function eventIterator(client) {
  const queue = [];
  let wake = null;
  let done = client._closed;
  const it = {
    push: (ev) => { queue.push(ev); if (wake) { wake(); wake = null; } },
    end: () => { done = true; if (wake) { wake(); wake = null; } },
  };
  const off = client.on("event", it.push);
  client._iterators.add(it);
  return {
    async next() {
      while (queue.length === 0 && !done) await new Promise((r) => { wake = r; });
      if (queue.length > 0) return { value: queue.shift(), done: false };
      return this.return();
    },
    async return() {
      off();
      client._iterators.delete(it);
      done = true;
      return { value: undefined, done: true };
    },
    [Symbol.asyncIterator]() { return this; },
  };
}
