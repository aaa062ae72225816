// A minimal event emitter.

/** Listeners that throw are reported (rethrown on a fresh task), never break the client. */
export class Emitter {
  constructor() { this._listeners = new Map(); }

  /** Add a listener; returns a function that removes it. */
  on(name, fn) {
    if (!this._listeners.has(name)) this._listeners.set(name, new Set());
    this._listeners.get(name).add(fn);
    return () => this.off(name, fn);
  }

  once(name, fn) {
    const off = this.on(name, (...args) => { off(); fn(...args); });
    return off;
  }

  off(name, fn) { this._listeners.get(name)?.delete(fn); }

  emit(name, ...args) {
    const set = this._listeners.get(name);
    if (!set) return;
    for (const fn of [...set]) {
      try { fn(...args); } catch (err) { setTimeout(() => { throw err; }, 0); }
    }
  }
}
