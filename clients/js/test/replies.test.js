// The pure reply-text rules of docs/protocol.md, `chunk` (node --test in clients/js)
import assert from "node:assert/strict";
import { describe, it } from "node:test";

import { ReplyTexts, TurnText } from "../src/index.js";

const chunk = (seq, text, attempt = 1) => ({ type: "chunk", turn: 7, attempt, seq, text });
const partial = (seq, text, attempt = 1) => ({ type: "partial", turn: 7, attempt, seq, text });
const start = (attempt = 1) => ({ offset: 8, type: "turn_start", turn: 7, attempt });
const feed = (t, ...frames) => frames.map((f) => t.apply(f));

describe("TurnText", () => {
  it("appends chunks in seq order; duplicates and holes are ignored", () => {
    const t = new TurnText(7);
    assert.deepEqual(feed(t, start(), chunk(1, "It is "), chunk(1, "It is "), chunk(3, "UTC."),
      chunk(2, "09:14 "), chunk(3, "UTC.")), [true, true, false, false, true, true]);
    assert.equal(t.text, "It is 09:14 UTC.");
    assert.equal(t.seq, 3);
  });

  it("clears on turn_start (also the same attempt run again) and ignores older attempts", () => {
    const t = new TurnText(7);
    feed(t, start(1), chunk(1, "Once"));
    assert.deepEqual(feed(t, start(1), chunk(1, "Hi")), [true, true]);
    assert.equal(t.text, "Hi");
    feed(t, start(2));
    assert.deepEqual(feed(t, chunk(2, "x", 1), partial(2, "Hix", 1)), [false, false]);
    assert.deepEqual(feed(t, chunk(1, "Hello", 2)), [true]);
    assert.equal(t.text, "Hello");
  });

  it("a partial replaces the text and sets the count applied", () => {
    const t = new TurnText(7);
    feed(t, start(), chunk(1, "a"));
    assert.deepEqual(feed(t, partial(3, "abc"), chunk(3, "c"), chunk(4, "d"), partial(4, "abcd")),
      [true, false, true, false]);
    assert.equal(t.text, "abcd");
  });

  it("joins mid-turn without the turn_start", () => {
    const t = new TurnText(7);
    assert.deepEqual(feed(t, chunk(5, "lost"), partial(4, "abcd", 2), chunk(5, "e", 2)),
      [false, true, true]);
    assert.equal(t.text, "abcde");
    assert.equal(t.attempt, 2);
  });

  it("the ending event is final", () => {
    const t = new TurnText(7);
    feed(t, start(), chunk(1, "It is 09:"), { type: "reply", turn: 7, text: "It is 09:14 UTC." });
    assert.deepEqual(feed(t, chunk(2, "14"), partial(2, "x"), start(2)), [false, false, false]);
    assert.equal(t.text, "It is 09:14 UTC.");
    const c = new TurnText(7);
    feed(c, start(), chunk(1, "Once upon"), { type: "cancelled", turn: 7, text: "Once" });
    assert.equal(c.text, "Once");
    const e = new TurnText(7); // turn_error has no final text: what streamed is dropped
    feed(e, start(), chunk(1, "So"), { type: "turn_error", turn: 7, code: "guardrail" });
    assert.equal(e.text, "");
    assert.equal(e.ended, true);
  });

  it("random duplicates and partials always leave a prefix and end equal to the reply", () => {
    let seed = 13;
    const rand = () => { seed = (seed * 1103515245 + 12345) % 2147483648; return seed / 2147483648; };
    for (let round = 0; round < 200; round++) {
      const pieces = Array.from({ length: 1 + Math.floor(rand() * 12) },
        () => ["a", "bc", "def", " "][Math.floor(rand() * 4)]);
      const whole = pieces.join("");
      const t = new TurnText(7);
      t.apply(start());
      let seq = 0;
      while (seq < pieces.length) {
        const roll = rand();
        if (roll < 0.2 && seq) {
          t.apply(chunk(1 + Math.floor(rand() * seq), pieces[0]));
        } else if (roll < 0.35) {
          const n = seq + Math.floor(rand() * (pieces.length - seq + 1));
          t.apply(partial(n, pieces.slice(0, n).join("")));
          seq = n;
        } else {
          seq += 1;
          t.apply(chunk(seq, pieces[seq - 1]));
        }
        assert.ok(whole.startsWith(t.text), `${JSON.stringify(t.text)} of ${JSON.stringify(whole)}`);
      }
      assert.equal(t.text, whole);
    }
  });
});

describe("ReplyTexts", () => {
  it("keeps one TurnText per turn, at most `limit`", () => {
    const texts = new ReplyTexts(2);
    assert.equal(texts.apply({ type: "chunk", turn: 1, attempt: 1, seq: 1, text: "a" }).text, "a");
    assert.equal(texts.apply({ type: "chunk", turn: 1, attempt: 1, seq: 1, text: "a" }), null);
    texts.apply({ type: "turn_start", turn: 2, attempt: 1 });
    texts.apply({ type: "turn_start", turn: 3, attempt: 1 });
    assert.equal(texts.get(1), undefined);
    assert.equal(texts.apply({ type: "user", offset: 4 }), null);
    assert.equal(texts.turns.size, 2);
  });
});
