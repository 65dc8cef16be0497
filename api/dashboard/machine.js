// Machine page: live status, telemetry charts (zoom = refetch with server-side downsampling),
// the execution-state timeline, cycles with per-program statistics, tool life, alarms, accuracy.
import { get } from "./api.js";
import { stateTimeline, timeChart } from "./chart.js";
import { liveStream } from "./live.js";
import {
  STATE_LABEL, boardState, duration, errorBox, fill, h, lastHours, num, pct, since, table, when,
} from "./util.js";

const CHARTS = [
  { title: "Spindle", signals: [["spindle_load", "load", "%"], ["spindle_speed", "speed", "rpm"]] },
  { title: "Feed", signals: [["feedrate", "feed", "mm/min"]] },
  { title: "Overrides", signals: [["feed_override", "feed override", "%"], ["spindle_override", "spindle override", "%"]] },
];
const RANGES = [["1 h", 1], ["8 h", 8], ["24 h", 24], ["7 d", 168]];
const POLL_MS = 10_000;       // the status without the stream
const HISTORY_MS = 60_000;   // the history charts (server-side downsampled) when not zoomed
const LIVE_WINDOW_S = 300;   // the live chart's span, fed by the stream
const LIVE_SIGNALS = CHARTS.flatMap((c) => c.signals.map(([s]) => s));
const MODE_LABEL = { connecting: "connecting…", live: "● live", reconnecting: "reconnecting…", polling: "polling (no live stream)", closed: "stopped" };
const STATUS_KEYS = ["status", "online", "last_seen", "status_since", "execution", "mode", "program", "part_count", "alarms", "active_alarms"];

function section(title, id, ...body) {
  return h("section.panel", { "aria-labelledby": id }, h("h2", { id }, title), ...body);
}

async function loadInto(el, promise, build) {
  try { fill(el, build(await promise)); } catch (exc) { fill(el, errorBox(exc)); }
}

export async function render(main, { arg }) {
  const ref = arg;
  const enc = encodeURIComponent(ref);
  const head = h("div.machine-head");
  const rangeButtons = h("div.range", { role: "group", "aria-label": "Time range" });
  const panButtons = h("div.range", { role: "group", "aria-label": "Move the time window" });
  const charts = h("div.charts");
  const timeline = h("div.timeline-wrap");
  const cycles = h("div"); const stats = h("div"); const tools = h("div");
  const alarms = h("div"); const accuracy = h("div");
  const liveNote = h("span.live#machine-live", { role: "status", dataset: { mode: "connecting" } }, h("b", MODE_LABEL.connecting));
  const liveValues = h("dl.facts.live-values#live-values");
  const liveChart = h("div.chart#live-chart", { role: "img", "aria-label": "Spindle load and feed, last 5 minutes, live" });
  fill(main, h("section.machine",
    h("p.crumbs", h("a", { href: "#/board" }, "Status board"), " / ", ref),
    head,
    h("div.toolbar", h("span.muted", "Drag on a chart to zoom (the server downsamples each window), double-click to reset."), rangeButtons, panButtons, liveNote),
    section("Live (last 5 minutes, every sample from the stream)", "h-live", liveValues, liveChart),
    section("Execution state", "h-timeline", timeline),
    charts,
    h("div.cols",
      section("Cycles", "h-cycles", cycles),
      section("Per-program statistics", "h-stats", stats)),
    h("div.cols",
      section("Tool life", "h-tools", tools),
      section("Alarm history", "h-alarms", alarms)),
    section("Accuracy history", "h-acc", accuracy)));

  let destroyers = [];
  let hours = 8;
  let span = lastHours(hours);
  let zoomed = false;

  let current = null;
  const renderHead = () => {
    const m = current;
    const state = boardState(m);
      fill(head,
        h("h1", `${m.site} : ${m.machine}`),
        h("span.badge", { class: `badge s-${state}` }, STATE_LABEL[state]),
        h("dl.facts",
          h("dt", "Execution"), h("dd#f-execution", m.execution || "–"),
          h("dt", "Mode"), h("dd", m.mode || "–"),
          h("dt", "Program"), h("dd#f-program", m.program || "–"),
          h("dt", "Parts"), h("dd#f-parts", num(m.part_count)),
          h("dt", "Status"), h("dd", `${m.status} for ${since(m.status_since)}`),
          h("dt", "Last seen"), h("dd", when(m.last_seen)),
          h("dt", "Controller"), h("dd", [m.controller?.vendor, m.controller?.model].filter(Boolean).join(" ") || "–")),
        m.alarms.length ? h("ul.alarms-now", m.alarms.map((a) => h("li", { class: `lvl-${a.level}` }, `${a.level} ${a.code || ""} ${a.text || ""} (${since(a.opened_at)})`))) : null);
  };
  const detail = async () => {
    try {
      current = await get(`machines/${enc}`);
      renderHead();
    } catch (exc) {
      fill(head, h("h1", ref), errorBox(exc));
    }
  };

  // The execution timeline: redrawn with the charts, and extended at once by the live stream's
  // execution changes (the next history refresh reloads it from the server).
  let timelineEvents = [];
  let timelineSpan = null;
  let timelineView = null;
  const drawTimeline = () => {
    timelineView?.destroy();
    const events = [...timelineEvents].sort((a, b) => Date.parse(a.ts) - Date.parse(b.ts));
    timelineView = stateTimeline(timeline, events, Date.parse(timelineSpan.from), Date.parse(timelineSpan.to));
  };

  const drawCharts = async () => {
    for (const d of destroyers) d.destroy();
    destroyers = [];
    const signals = CHARTS.flatMap((c) => c.signals.map(([s]) => s)).join(",");
    const from = span.from; const to = span.to;
    try {
      const [t, events] = await Promise.all([
        get(`machines/${enc}/telemetry`, { signals, from, to, points: 600 }),
        get(`machines/${enc}/events`, { signals: "execution", from, to, limit: 10000 }),
      ]);
      fill(charts);
      const ts = t.t.map((x) => Date.parse(x) / 1000);
      for (const c of CHARTS) {
        const el = h("div.chart", { role: "img", "aria-label": `${c.title}, ${when(from)} to ${when(to)}, ${t.bucket_s} s buckets` });
        charts.append(section(`${c.title}`, `h-${c.title.toLowerCase()}`, h("p.muted.small", `${ts.length} buckets of ${t.bucket_s} s from ${t.sources.join(", ")}`), el));
        destroyers.push(timeChart(el, {
          t: ts,
          series: c.signals.map(([s, label, unit]) => ({ label, unit, values: t.series[s]?.avg || ts.map(() => null) })),
          onZoom: (a, b) => { zoomed = true; span = { from: new Date(a * 1000).toISOString(), to: new Date(b * 1000).toISOString() }; drawCharts(); },
          onReset: () => { zoomed = false; span = lastHours(hours); drawCharts(); },
        }));
      }
      timelineEvents = events;
      timelineSpan = { from, to };
      drawTimeline();
    } catch (exc) {
      fill(charts, errorBox(exc));
    }
  };

  const tables = () => {
    const w = span;
    loadInto(cycles, get(`machines/${enc}/cycles`, w), (r) => table([
      ["Program", (c) => c.program || "–"], ["Start", (c) => when(c.start)], ["Duration", (c) => duration(c.duration_s), "num"],
      ["Active", (c) => duration(c.active_s), "num"], ["Parts", (c) => num(c.parts), "num"], ["Status", (c) => c.status],
    ], r.cycles.slice(-200).reverse(), { empty: "No cycles in this span." }));
    loadInto(stats, get(`machines/${enc}/cycles/stats`, w), (r) => table([
      ["Program", (p) => p.program], ["Cycles", (p) => p.count, "num"], ["Median", (p) => duration(p.median), "num"],
      ["Robust σ", (p) => duration(p.spread_mad), "num"], ["p10–p90", (p) => `${duration(p.p10)} – ${duration(p.p90)}`, "num"],
      ["Parts/cycle", (p) => num(p.parts_per_cycle), "num"], ["Outliers", (p) => p.outliers.length, "num"],
    ], r.programs, { empty: "No completed cycles in this span." }));
    loadInto(alarms, get(`machines/${enc}/alarms`, { ...w, limit: 200 }), (rows) => table([
      ["Opened", (a) => when(a.opened_at)], ["Level", (a) => h("span", { class: `lvl-${a.level}` }, a.level)],
      ["Code", (a) => a.code || "–"], ["Text", (a) => a.text || ""], ["Duration", (a) => (a.closed_at ? duration(a.duration_s) : "open"), "num"],
    ], rows.slice().reverse(), { empty: "No alarms in this span." }));
  };

  const toolLife = () => loadInto(tools, get(`machines/${enc}/tools`), (rows) => rows.length ? h("ul.tools", rows.map((t) => {
    const used = t.used_fraction ?? null;
    return h("li", { class: t.in_spindle ? "in-spindle" : null },
      h("span.tool-name", `T${t.tool}${t.in_spindle ? " ●" : ""}`),
      h("span.bar", { role: "meter", "aria-valuemin": 0, "aria-valuemax": 100, "aria-valuenow": used === null ? 0 : Math.round(used * 100), "aria-label": `tool ${t.tool} life used` },
        h("i", { class: `st-${t.status || "none"}`, style: `width:${used === null ? 0 : Math.min(100, used * 100)}%` })),
      h("span.small", used === null ? `${num(t.minutes_in_cut)} min in cut, no limit` : `${pct(used)} · ${num(t.remaining_minutes)} min left`),
      h("span.small.muted", t.predicted_change_at ? `change ≈ ${when(t.predicted_change_at)}` : ""));
  })) : h("p.muted", "No tools seen in the last 90 days."));

  const accuracyHistory = () => loadInto(accuracy, get(`machines/${enc}/accuracy`, { limit: 20 }), (rows) => table([
    ["When", (r) => when(r.created_at)], ["Kind", (r) => r.kind], ["Axis", (r) => r.axis || "–"], ["Label", (r) => r.label || ""],
    ["Result", (r) => h("span", { class: r.passed === null ? "muted" : r.passed ? "pass" : "fail" }, r.passed === null ? "no tolerance" : r.passed ? "pass" : "FAIL")],
    ["", (r) => h("a", { href: `#/accuracy/${encodeURIComponent(ref)}?report=${r.id}` }, "report")],
  ], rows, { empty: "No accuracy checks yet." }));

  fill(rangeButtons, RANGES.map(([label, hrs]) => h("button", {
    type: "button", "aria-pressed": String(hrs === hours),
    onclick: (e) => {
      hours = hrs; zoomed = false; span = lastHours(hours);
      for (const b of rangeButtons.children) b.setAttribute("aria-pressed", String(b === e.currentTarget));
      drawCharts(); tables();
    },
  }, label)));

  // Pan and zoom out: move the window by half its width (never past now) or double it; each
  // is a new request, downsampled by the server to the same number of points.
  const shift = (fraction, widen = 1) => {
    const from = Date.parse(span.from); const to = Date.parse(span.to);
    const width = (to - from) * widen;
    const mid = (from + to) / 2 + (to - from) * fraction;
    const end = Math.min(Date.now(), mid + width / 2);
    const start = Math.max(end - width, Date.now() - 400 * 86400e3);
    span = { from: new Date(start).toISOString(), to: new Date(end).toISOString() };
    zoomed = end < Date.now() - 1000 || widen !== 1 || fraction !== 0;
    drawCharts(); tables();
  };
  fill(panButtons,
    h("button#pan-earlier", { type: "button", title: "Half a window earlier", onclick: () => shift(-0.5) }, "◀ earlier"),
    h("button#zoom-out", { type: "button", title: "Twice as long a window", onclick: () => shift(0, 2) }, "zoom out"),
    h("button#pan-later", { type: "button", title: "Half a window later (up to now)", onclick: () => shift(0.5) }, "later ▶"));

  await Promise.all([detail(), drawCharts()]);
  tables(); toolLife(); accuracyHistory();

  // Live: status and the chart signals from the stream; polling of the status only while the
  // stream cannot be opened.
  const buffers = new Map(LIVE_SIGNALS.map((n) => [n, []]));  // [[t seconds, value], ...]
  const latest = new Map();
  let livePlot = null;
  let drawQueued = false;
  const drawLive = () => {
    drawQueued = false;
    const now = Date.now() / 1000;
    const times = [...new Set([...buffers.values()].flatMap((b) => b.map(([t]) => t)))].sort((a, b) => a - b);
    const index = new Map(times.map((t, i) => [t, i]));
    const column = (name) => { const out = times.map(() => null); for (const [t, v] of buffers.get(name)) out[index.get(t)] = v; return out; };
    const shown = [["spindle_load", "load", "%"], ["feedrate", "feed", "mm/min"]];
    if (!livePlot) {
      livePlot = timeChart(liveChart, { t: times, series: shown.map(([n, label, unit]) => ({ label, unit, values: column(n) })), height: 180 });
    } else {
      livePlot.plot.setData([times, ...shown.map(([n]) => column(n))], false);
      livePlot.plot.setScale("x", { min: now - LIVE_WINDOW_S, max: now });
    }
    fill(liveValues, CHARTS.flatMap((c) => c.signals).flatMap(([n, label, unit]) => [
      h("dt", label), h("dd", { dataset: { signal: n } }, latest.has(n) ? `${num(latest.get(n))} ${unit}` : "–")]));
  };
  let pollTimer = 0;
  const poll = () => { detail(); pollTimer = setTimeout(poll, POLL_MS); };
  const stream = liveStream({
    subscription: { machines: [ref], signals: LIVE_SIGNALS },
    onStatus(m) {
      if (!current) return;
      const before = current.execution;
      for (const k of STATUS_KEYS) if (k in m) current[k] = m[k];
      renderHead();
      if ("execution" in m && m.execution !== before && m.execution && !zoomed && timelineSpan) {
        const ts = m.execution_since || new Date().toISOString();
        timelineEvents = [...timelineEvents, { ts, value: m.execution }];
        timelineSpan = { from: timelineSpan.from, to: new Date().toISOString() };
        drawTimeline();
      }
    },
    onTelemetry(frame) {
      const cutoff = Date.now() / 1000 - LIVE_WINDOW_S;
      for (const [name, samples] of Object.entries(frame.signals)) {
        const buffer = buffers.get(name);
        if (!buffer) continue;
        for (const [ts, v] of samples) buffer.push([Date.parse(ts) / 1000, v]);
        while (buffer.length && buffer[0][0] < cutoff) buffer.shift();
        if (samples.length) latest.set(name, samples[samples.length - 1][1]);
      }
      if (!drawQueued) { drawQueued = true; requestAnimationFrame(drawLive); }
    },
    onMode(mode, detailText) {
      if (pollTimer && mode !== "live") return;
      liveNote.dataset.mode = mode;
      liveNote.title = detailText || "";
      liveNote.firstChild.textContent = MODE_LABEL[mode] || mode;
      if (mode === "live" && pollTimer) { clearTimeout(pollTimer); pollTimer = 0; detail(); }
    },
    onUnavailable() {
      if (pollTimer) return;
      liveNote.dataset.mode = "polling";
      liveNote.firstChild.textContent = MODE_LABEL.polling;
      pollTimer = setTimeout(poll, POLL_MS);
    },
  });
  drawLive();
  const history = setInterval(() => {
    if (!zoomed) { span = lastHours(hours); drawCharts(); }
  }, HISTORY_MS);
  return () => {
    stream.stop(); clearTimeout(pollTimer); clearInterval(history); timelineView?.destroy();
    livePlot?.destroy();
    for (const d of destroyers) d.destroy();
  };
}
