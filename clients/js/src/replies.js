// A turn's reply text as it streams: the rules of docs/protocol.md, `chunk` (no I/O).

const ENDS_WITH_TEXT = new Set(["reply", "cancelled"]);

const int = (v, dflt) => (Number.isInteger(v) ? v : dflt);

/**
 * The reply text of one turn, from its log events and its `chunk`/`partial` frames, fed in
 * the order the client applies them. `turn_start` clears it (a new attempt, or the same one
 * run again after an outage, starts over); a chunk is appended when its `seq` is `seq + 1`
 * (lower: a duplicate, higher: a hole, both ignored); a chunk or partial of an older attempt
 * than the latest seen is ignored; a `partial` replaces the text; the ending event's text
 * (`reply`, `cancelled`) is final and nothing after it changes the text.
 */
export class TurnText {
  constructor(turn) {
    this.turn = turn;
    this.attempt = 0; // the latest attempt seen (0: none yet)
    this.seq = 0;     // chunks applied to this run of `attempt`
    this.text = "";
    this.ended = false;
  }

  /** Apply one event or frame of this turn; true when it was applied. */
  apply(f) {
    switch (f.type) {
      case "turn_start":
        if (this.ended) return false;
        this.attempt = int(f.attempt, 1);
        this.seq = 0;
        this.text = "";
        return true;
      case "reply": case "cancelled": case "turn_error":
        if (!this.ended && ENDS_WITH_TEXT.has(f.type) && typeof f.text === "string") {
          this.text = f.text;
        } else if (!this.ended && f.type === "turn_error") {
          this.text = ""; // no final text: what streamed is dropped
        }
        this.ended = true;
        return true;
      case "chunk": return this._chunk(f);
      case "partial": return this._partial(f);
      default: return false;
    }
  }

  _chunk(f) {
    const attempt = int(f.attempt, 1);
    const seq = int(f.seq, 0);
    if (this.ended || attempt < this.attempt || typeof f.text !== "string") return false;
    if (attempt > this.attempt) {
      // a run whose turn_start this connection did not see (it joined mid-turn): its first
      // chunk starts it; any later one needs the partial the edge sends first
      if (seq !== 1) return false;
      this.attempt = attempt;
      this.seq = 0;
      this.text = "";
    }
    if (seq !== this.seq + 1) return false;
    this.seq = seq;
    this.text += f.text;
    return true;
  }

  _partial(f) {
    const attempt = int(f.attempt, 1);
    const seq = int(f.seq, -1);
    if (this.ended || attempt < this.attempt || seq < 0 || typeof f.text !== "string") {
      return false;
    }
    if (attempt === this.attempt && seq === this.seq && f.text === this.text) return false;
    this.attempt = attempt;
    this.seq = seq;
    this.text = f.text;
    return true;
  }
}

/** The session's turns' texts (at most `limit` turns, the oldest forgotten first). */
export class ReplyTexts {
  constructor(limit = 256) {
    this.limit = limit;
    this.turns = new Map();
  }

  /** The turn's TurnText, if any of its events or frames was applied. */
  get(turn) { return this.turns.get(turn); }

  clear() { this.turns.clear(); }

  /**
   * Apply a log event or a `chunk`/`partial` frame (anything without an integer `turn` is
   * ignored); returns the turn's TurnText when it was applied, else null.
   */
  apply(f) {
    if (!Number.isInteger(f.turn)) return null;
    let t = this.turns.get(f.turn);
    if (!t) {
      t = new TurnText(f.turn);
      this.turns.set(f.turn, t);
      if (this.turns.size > this.limit) this.turns.delete(this.turns.keys().next().value);
    }
    return t.apply(f) ? t : null;
  }
}
