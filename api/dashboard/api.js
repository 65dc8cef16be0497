// The API client: the key, fetch with `Authorization: Bearer`, the one error shape, the role.
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
  sessionStorage.removeItem("arbor.role");
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

// What each role may do, from docs/api.md and docs/alerts.md (the UI hides what the key may not do;
// the API is the authority and still refuses).
const CAN = {
  ack:         ["operator", "engineer", "maintenance", "admin"],
  comment:     ["operator", "engineer", "maintenance", "admin"],
  downtime:    ["operator", "engineer", "maintenance", "admin"],
  assign:      ["engineer", "maintenance", "admin"],
  resolve:     ["engineer", "maintenance", "admin"],
  accuracy:    ["engineer", "maintenance", "admin"],
  audit:       ["engineer", "maintenance", "admin"],
  uploadProgram: ["engineer", "admin"],
  push:        ["operator", "engineer", "admin"],
};

/**
 * The key's role, found with side-effect-free probes (the API has no "who am I" route yet):
 * a guard answers 403 before the body is validated, so an empty POST tells whether a role is
 * admitted without doing anything. Engineer and admin may do the same things in the API today.
 */
export async function probeRole(key) {
  const admitted = async (path, method, body) => {
    try {
      await request(path, { method, body, key, query: method === "GET" ? { limit: 1 } : undefined });
      return true;
    } catch (exc) {
      if (exc.status === 401) throw exc;
      return exc.status !== 403;
    }
  };
  await request("signals", { key });  // 401 for a bad key, before anything else
  const [floor, audit, programs] = await Promise.all([
    admitted("alerts/0/ack", "POST", {}),
    admitted("audit", "GET"),
    admitted("programs", "POST", {}),
  ]);
  if (programs) return "engineer";   // or admin: same capabilities
  if (audit) return "maintenance";
  if (floor) return "operator";
  return "viewer";
}

let role = "viewer";
export function setRole(r) { role = r; }
export function getRole() { return role; }
/** Whether the signed-in key's role may do `action` (a key of CAN). */
export function can(action) { return (CAN[action] || []).includes(role); }
