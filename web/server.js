// The control plane: JSON requests, the user's token.
import { app } from "./page.js";

// -- control plane -----------------------------------------------------------------------------

export async function fetchJson(path, { method = "GET", body, auth = false } = {}) {
  const headers = {};
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (auth) headers.Authorization = `Bearer ${await getToken()}`;
  const resp = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  if (resp.status === 401 && auth) {
    app.token = null; // expired or rotated secret: one retry with a fresh token
    headers.Authorization = `Bearer ${await getToken({ refresh: true })}`;
    const again = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
    if (!again.ok) throw new Error(`${path}: HTTP ${again.status}`);
    return again.json();
  }
  if (!resp.ok) throw new Error(`${path}: HTTP ${resp.status}`);
  return resp.json();
}

/** The token for the WebSocket and the API: a dev token, or one the user pasted. */
export async function getToken({ refresh = false } = {}) {
  const now = Date.now();
  const t = app.token;
  const fresh = t && now < t.expiresAt - 60_000 && !(refresh && now - t.fetchedAt > 10_000);
  if (fresh) return t.value;
  if (app.config.dev_tokens) {
    const r = await fetchJson("/v1/dev/token", { method: "POST", body: { user: app.user } });
    app.token = { value: r.token, expiresAt: now + r.expires_in * 1000, fetchedAt: now };
    return r.token;
  }
  const pasted = sessionStorage.getItem("agentia:token");
  if (!pasted) throw new Error("no token: sign in first");
  app.token = { value: pasted, expiresAt: jwtExpiry(pasted) ?? now + 3600_000, fetchedAt: now };
  return pasted;
}

export function jwtExpiry(token) {
  try {
    const payload = JSON.parse(atob(token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/")));
    return typeof payload.exp === "number" ? payload.exp * 1000 : null;
  } catch { return null; }
}

export function userFromToken(token) {
  try {
    return JSON.parse(atob(token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/"))).sub ?? null;
  } catch { return null; }
}
