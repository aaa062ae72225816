// Reconnect delays.

/** Defaults of the `backoff` option. */
export const DEFAULT_BACKOFF = Object.freeze({ initialMs: 500, maxMs: 30000, factor: 2 });

/**
 * Backoff before reconnect attempt `attempt` (0-based): exponential, capped, with "equal
 * jitter" (between half and all of the exponential delay, so never a tight loop).
 */
export function backoffDelay(attempt, { initialMs = 500, maxMs = 30000, factor = 2 } = {},
  random = Math.random) {
  const base = Math.min(maxMs, initialMs * factor ** Math.max(0, attempt));
  return Math.round(base / 2 + random() * (base / 2));
}
