// The API client: the key, fetch with `Authorization: Bearer`, the one error shape, who the key is.
const KEY = "arbor.key";
export const API = "/api/v1";

/** An error answer of the API: `code` is stable, `message` is for people, `field` names the input. */
export class ApiError extends Error {
  constructor(status, code, message, field) {
    super(message);
    this.status = status;
    this.code = code;
    this.field = field;
  }
  /** One line for the page: the message, the field it is about, and the stable code. */
  describe() {
    return `${this.message}${this.field ? ` (field ${this.field})` : ""} [${this.code}]`;
  }
}

export function getKey() {
  return sessionStorage.getItem(KEY) || localStorage.getItem(KEY) || "";
}

export function setKey(key, remember) {
  sessionStorage.setItem(KEY, key);
  if (remember) localStorage.setItem(KEY, key);
}

export function clearKey() {
  sessionStorage.removeItem(KEY);
  localStorage.removeItem(KEY);
  sessionStorage.removeItem(ME);
}

function url(path, query) {
  const u = new URL(path.startsWith("/") ? path : `${API}/${path}`, location.origin);
  for (const [k, v] of Object.entries(query || {})) {
    if (v === undefined || v === null || v === "") continue;
    u.searchParams.set(k, v);
  }
  return u;
}

/** Send one request; resolves with the parsed body (or a Blob for `blob: true`), rejects with ApiError. */
export async function request(path, { method = "GET", query, body, blob = false, key } = {}) {
  const headers = { Authorization: `Bearer ${key ?? getKey()}` };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let response;
  try {
    response = await fetch(url(path, query), {
      method, headers, body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch (exc) {
    throw new ApiError(0, "network", `the API is unreachable: ${exc.message}`, null);
  }
  if (!response.ok) {
    let error = { code: `http_${response.status}`, message: response.statusText, field: null };
    try {
      const parsed = await response.json();
      if (parsed && parsed.error) error = parsed.error;
    } catch { /* not the API's JSON: keep the status line */ }
    if (response.status === 401 && key === undefined) window.dispatchEvent(new CustomEvent("arbor:unauthorized"));
    throw new ApiError(response.status, error.code, error.message, error.field);
  }
  if (response.status === 204) return null;
  if (blob) return response.blob();
  return response.json();
}

export const get = (path, query) => request(path, { query });
export const post = (path, body) => request(path, { method: "POST", body });

// The UI's actions and the API route each needs. Whether the key may call a route comes from
// `GET /me` (its `routes`, read from the API's own role guards): the UI hides what the key may
// not do, and the API, the authority, still refuses.
const NEEDS = {
  ack: "POST /api/v1/alerts/{alert_id}/ack",
  comment: "POST /api/v1/alerts/{alert_id}/comment",
  assign: "POST /api/v1/alerts/{alert_id}/assign",
  resolve: "POST /api/v1/alerts/{alert_id}/resolve",
  downtime: "POST /api/v1/machines/{machine}/downtime",
  accuracy: "POST /api/v1/machines/{machine}/accuracy/s-piece",
  audit: "GET /api/v1/audit",
  uploadProgram: "POST /api/v1/programs",
  push: "POST /api/v1/machines/{machine}/programs/push",
};
const ME = "arbor.me";

/** Who the key is: `GET /me` (id, name, role, sites, routes). Rejects with ApiError (401 for a bad key). */
export async function whoAmI(key) {
  return request("me", { key });
}

let me = { role: "viewer", name: "", sites: null, routes: [] };
let routes = new Set();
/** Keep the answer of `GET /me` for this tab (and in session storage, so a reload needs no call). */
export function setMe(answer) {
  me = answer;
  routes = new Set(answer.routes || []);
  sessionStorage.setItem(ME, JSON.stringify(answer));
}
/** The `GET /me` answer kept in this tab, or null. */
export function storedMe() {
  try { return JSON.parse(sessionStorage.getItem(ME) || "null"); } catch { return null; }
}
export function getMe() { return me; }
export function getRole() { return me.role; }
/** Whether the signed-in key may do `action` (a key of NEEDS). */
export function can(action) { return routes.has(NEEDS[action]); }
