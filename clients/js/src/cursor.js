// The resume algorithm of docs/protocol.md section 6, without I/O: offsets, epochs, dedupe
// and the gap rule.

/** `chunk`/`partial` frames held while a resume is answered; beyond, dropped (not replayed). */
export const STREAM_BUFFER_LIMIT = 4096;

/**
 * Feed it log events, `chunk`/`partial` frames and `resumed` frames; it says which events to
 * apply (in order, each once), which stream frames to apply (in arrival order, after a
 * resume's events) and when to resume.
 */
export class EventSequencer {
  constructor(last = 0, epoch = null) {
    this.last = last;
    this.epoch = epoch;
    this.resuming = false;
    this.buffer = new Map();
    this.streamBuffer = [];
  }

  /** Start from a known point (e.g. `welcome.offset` when no history is wanted). */
  reset(last, epoch) {
    this.last = last;
    this.epoch = epoch;
    this.resuming = false;
    this.buffer.clear();
    this.streamBuffer = [];
  }

  /** The `resume` frame to send; from now on log events are buffered until `resumed`. */
  resumeFrame() {
    this.resuming = true;
    const frame = { type: "resume", after: this.last };
    if (this.epoch !== null && this.last > 0) frame.epoch = this.epoch;
    return frame;
  }

  /** The connection died: a resume in flight died with it, start afresh on the next one. */
  abort() {
    this.resuming = false;
    this.buffer.clear();
    this.streamBuffer = [];
  }

  /**
   * A `chunk` or `partial` frame arrived: returns the frames to apply now (none while a resume
   * is answered: they follow its events, section 6 steps 2 and 6).
   */
  onStream(f) {
    if (!this.resuming) return [f];
    if (this.streamBuffer.length < STREAM_BUFFER_LIMIT) this.streamBuffer.push(f);
    return [];
  }

  /** A log event arrived: returns {apply: [events], resume: bool (a gap: send resumeFrame())}. */
  onEvent(ev) {
    if (this.resuming) {
      this.buffer.set(ev.offset, ev);
      return { apply: [], resume: false };
    }
    if (ev.offset <= this.last) return { apply: [], resume: false };
    if (ev.offset === this.last + 1) {
      this.last = ev.offset;
      return { apply: [ev], resume: false };
    }
    this.buffer.set(ev.offset, ev);
    return { apply: [], resume: true };
  }

  /**
   * A `resumed` frame arrived. Returns {requested, reset, apply, stream, behind}: `reset` means
   * clear the view before applying; `apply` are the log events, then `stream` the held
   * `chunk`/`partial` frames; `behind` means `last` is still below the server's offset.
   */
  onResumed(f) {
    if (!this.resuming) return this._unrequested(f);
    this.resuming = false;
    const sorted = [...this.buffer.values()].sort((a, b) => a.offset - b.offset);
    this.buffer.clear();
    const stream = this.streamBuffer;
    this.streamBuffer = [];
    const reset = f.recovered === false;
    const apply = reset ? this._restart(f, sorted) : this._continue(f, sorted);
    return { requested: true, reset, apply, stream, behind: this.last < f.offset };
  }

  // Redis lost the session and it was opened again: only a lost history matters.
  _unrequested(f) {
    if (f.recovered === false) {
      this.reset(f.offset, f.epoch);
      return { requested: false, reset: true, apply: [], stream: [], behind: false };
    }
    return { requested: false, reset: false, apply: [], stream: [], behind: false };
  }

  // Not recovered: the view is rebuilt from what the server replayed, then what followed it.
  _restart(f, sorted) {
    const apply = [];
    this.epoch = f.epoch;
    for (const ev of sorted) if (ev.offset <= f.offset) apply.push(ev);
    this.last = f.offset;
    for (const ev of sorted) {
      if (ev.offset === this.last + 1) { apply.push(ev); this.last = ev.offset; }
    }
    return apply;
  }

  _continue(f, sorted) {
    const apply = [];
    if (this.epoch === null) this.epoch = f.epoch;
    for (const ev of sorted) {
      if (ev.offset <= this.last) continue;
      if (ev.offset !== this.last + 1) break; // the rest will come again
      apply.push(ev);
      this.last = ev.offset;
    }
    return apply;
  }
}
