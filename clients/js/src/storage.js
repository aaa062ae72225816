// Best-effort persistence in Web Storage (sessionStorage per tab, localStorage shared).

/** `globalThis[name]` if it is a usable Storage, else null. */
export function defaultStorage(name) {
  try {
    const s = globalThis[name];
    if (s && typeof s.getItem === "function") return s;
  } catch { /* storage disabled (e.g. privacy settings) */ }
  return null;
}

export function readJson(storage, key) {
  if (!storage) return null;
  try {
    const v = storage.getItem(key);
    return v ? JSON.parse(v) : null;
  } catch { return null; }
}

/** Store `value` as JSON (null removes the key); quota or disabled storage is ignored. */
export function writeJson(storage, key, value) {
  if (!storage) return;
  try {
    if (value === null) storage.removeItem(key); else storage.setItem(key, JSON.stringify(value));
  } catch { /* quota or disabled: persistence is best effort */ }
}
