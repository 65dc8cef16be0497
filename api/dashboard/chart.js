// Charts: uPlot (installed by deploy/web-assets.sh, served at /vendor/) for time series, and a
// canvas strip for the execution-state timeline.
import uPlot from "/vendor/uplot/dist/uPlot.esm.js";
import { EXECUTION_COLOUR, h } from "./util.js";

const PALETTE = ["#1565c0", "#c62828", "#2e7d32", "#6a1b9a", "#ef6c00", "#00838f"];

function width(el) {
  return Math.max(280, Math.floor(el.getBoundingClientRect().width || el.parentElement?.clientWidth || 600));
}

/**
 * A time-series chart. `t` in Unix seconds; `series` = [{label, values, unit?, band?: {min, max}}].
 * Dragging selects a window: `onZoom(fromSeconds, toSeconds)` refetches it (server-side
 * downsampling); double-click resets. Returns {plot, destroy}.
 */
export function timeChart(el, { title, t, series, height = 220, onZoom, onReset }) {
  const data = [t];
  const opts = {
    title,
    width: width(el),
    height,
    cursor: { drag: { x: true, y: false, setScale: false } },
    scales: { x: { time: true } },
    axes: [{}],
    series: [{}],
    hooks: {
      setSelect: [(u) => {
        if (u.select.width < 5 || !onZoom) return;
        const from = u.posToVal(u.select.left, "x");
        const to = u.posToVal(u.select.left + u.select.width, "x");
        u.setSelect({ left: 0, width: 0 }, false);
        onZoom(from, to);
      }],
    },
  };
  const units = [...new Set(series.map((s) => s.unit || "y"))];
  units.forEach((unit, i) => {
    opts.scales[unit] = {};
    opts.axes.push({ scale: unit, size: 56, side: i === 0 ? 3 : 1, grid: { show: i === 0 }, label: unit === "y" ? undefined : unit });
  });
  series.forEach((s, i) => {
    const colour = PALETTE[i % PALETTE.length];
    opts.series.push({ label: s.unit ? `${s.label} (${s.unit})` : s.label, scale: s.unit || "y", stroke: colour, width: 1.5, spanGaps: false });
    data.push(s.values);
    if (s.band) {
      opts.series.push({ label: `${s.label} min`, scale: s.unit || "y", stroke: `${colour}55`, width: 1 });
      data.push(s.band.min);
      opts.series.push({ label: `${s.label} max`, scale: s.unit || "y", stroke: `${colour}55`, width: 1 });
      data.push(s.band.max);
    }
  });
  const plot = new uPlot(opts, data, el);
  if (onReset) plot.over.addEventListener("dblclick", onReset);
  const resize = new ResizeObserver(() => plot.setSize({ width: width(el), height }));
  resize.observe(el);
  return { plot, destroy() { resize.disconnect(); plot.destroy(); } };
}

/**
 * The execution-state timeline: `events` = [{ts, value}] in time order over [from, to] (ms).
 * Each state is drawn until the next event; before the first event the state is unknown (hatched).
 */
export function stateTimeline(el, events, from, to) {
  const canvas = h("canvas.timeline", { height: 28, role: "img" });
  const legend = h("div.legend");
  el.replaceChildren(canvas, legend);
  const draw = () => {
    const w = width(el);
    canvas.width = w;
    const ctx = canvas.getContext("2d");
    const x = (ms) => ((ms - from) / (to - from)) * w;
    ctx.fillStyle = "#d0d4d8";
    ctx.fillRect(0, 0, w, 28);
    ctx.strokeStyle = "#aab";
    for (let i = -28; i < w; i += 6) { ctx.beginPath(); ctx.moveTo(i, 28); ctx.lineTo(i + 28, 0); ctx.stroke(); }
    events.forEach((e, i) => {
      const start = Math.max(from, Date.parse(e.ts));
      const end = i + 1 < events.length ? Date.parse(events[i + 1].ts) : Math.min(to, Date.now());
      ctx.fillStyle = EXECUTION_COLOUR[e.value] || "#9aa0a6";
      ctx.fillRect(x(start), 0, Math.max(1, x(end) - x(start)), 28);
    });
  };
  draw();
  const seen = [...new Set(events.map((e) => e.value))];
  canvas.setAttribute("aria-label", `execution states: ${seen.join(", ") || "no data"}`);
  legend.replaceChildren(...seen.map((s) => h("span", h("i", { style: `background:${EXECUTION_COLOUR[s] || "#9aa0a6"}` }), s)));
  const resize = new ResizeObserver(draw);
  resize.observe(el);
  return { destroy() { resize.disconnect(); } };
}
