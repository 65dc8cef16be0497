// Small helpers shared by the pages: DOM building, formatting, time windows, state colours.

/** Build an element: h("div.tile#m1", {onclick, title}, child, ...). Strings become text nodes. */
export function h(spec, attrs, ...children) {
  const [, tag = "div", rest = ""] = spec.match(/^([a-z0-9-]*)(.*)$/i) || [];
  const el = document.createElement(tag || "div");
  for (const part of rest.match(/[.#][^.#]+/g) || []) {
    if (part[0] === ".") el.classList.add(part.slice(1));
    else el.id = part.slice(1);
  }
  if (attrs && (typeof attrs !== "object" || attrs instanceof Node || Array.isArray(attrs))) {
    children.unshift(attrs);
    attrs = null;
  }
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "dataset") Object.assign(el.dataset, v);
    else if (k in el && typeof v !== "string") el[k] = v;
    else el.setAttribute(k, v === true ? "" : v);
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

/** Replace an element's children. */
export function fill(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

/** A message box for an error (ApiError or any Error). */
export function errorBox(exc) {
  const text = exc && typeof exc.describe === "function" ? exc.describe() : String(exc?.message || exc);
  return h("p.error", { role: "alert" }, text);
}

/** A simple table from rows: columns = [[header, row => cell, className?], ...]. */
export function table(columns, rows, { empty = "Nothing in this window.", caption } = {}) {
  if (!rows.length) return h("p.muted", empty);
  return h("table.grid",
    caption ? h("caption", caption) : null,
    h("thead", h("tr", columns.map(([label, , cls]) => h("th", { scope: "col", class: cls }, label)))),
    h("tbody", rows.map((r) => h("tr", columns.map(([, cell, cls]) => h("td", { class: cls }, cell(r)))))));
}

const NUM = new Intl.NumberFormat("en-GB", { maximumFractionDigits: 1 });
const NUM3 = new Intl.NumberFormat("en-GB", { maximumFractionDigits: 4 });
export const num = (v) => (v === null || v === undefined || Number.isNaN(v) ? "–" : NUM.format(v));
export const num4 = (v) => (v === null || v === undefined ? "–" : NUM3.format(v));
export const pct = (v) => (v === null || v === undefined ? "–" : `${NUM.format(v * 100)} %`);

/** "3 h 12 min", "45 s". */
export function duration(seconds) {
  if (seconds === null || seconds === undefined) return "–";
  const s = Math.max(0, Math.round(seconds));
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
  return `${Math.floor(s / 86400)} d ${Math.floor((s % 86400) / 3600)} h`;
}

export function since(iso, now = Date.now()) {
  return iso ? duration((now - Date.parse(iso)) / 1000) : "–";
}

/** A local date and time, to the second. */
export function when(iso) {
  if (!iso) return "–";
  const d = new Date(iso);
  return `${d.toLocaleDateString("en-CA")} ${d.toLocaleTimeString("en-GB")}`;
}

/** The window [now - hours, now] as ISO strings. */
export function lastHours(hours, now = Date.now()) {
  return { from: new Date(now - hours * 3600e3).toISOString(), to: new Date(now).toISOString() };
}

/** The board's state of a machine: running, ready, alarm, offline or unknown (CSS class and label). */
export function boardState(m) {
  if (m.status === "offline") return "offline";
  if (m.status !== "online") return "unknown";
  if (m.active_alarms > 0) return "alarm";
  if (m.execution === "ACTIVE") return "running";
  if (!m.execution || m.execution === "UNAVAILABLE") return "unknown";
  return "ready";
}

export const STATE_LABEL = {
  running: "Running", ready: "Idle / ready", alarm: "Alarm", offline: "Offline", unknown: "Unknown",
};

/** Colours of Execution values on timelines (CSS variables keep one palette). */
export const EXECUTION_COLOUR = {
  ACTIVE: "#1f9d55", READY: "#e0a800", INTERRUPTED: "#e07b00", FEED_HOLD: "#e07b00",
  STOPPED: "#c0392b", OPTIONAL_STOP: "#e0a800", PROGRAM_STOPPED: "#e0a800",
  PROGRAM_COMPLETED: "#7fb800", WAIT: "#e0a800", UNAVAILABLE: "#9aa0a6",
};

export const machineRef = (m) => `${m.site}:${m.machine}`;

/** Read a File as text. */
export const readText = (file) => file.text();

let toastTimer = 0;
/** A short status message in the page's live region. */
export function toast(text, kind = "ok") {
  const el = document.getElementById("toast");
  el.className = `toast ${kind}`;
  el.textContent = text;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => { el.className = ""; el.textContent = ""; }, 4000);
}
