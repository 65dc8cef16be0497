// Status board: every machine as a tile, grouped by site, with filter and search, kept live.
import { get } from "./api.js";
import { fleetStatus, key } from "./live.js";
import { STATE_LABEL, boardState, errorBox, fill, h, lastHours, num, since } from "./util.js";

const SPARK_MINUTES = 30;
const SPARK_CONCURRENCY = 4;
const SPARK_REFRESH_MS = 60_000;

/** Figures for tests and the closing note: first render and live update handling times (ms). */
const perf = (window.__arborBoard = { firstRenderMs: null, updates: 0, lastUpdateMs: null, maxUpdateMs: 0, tiles: 0 });

const SVG = "http://www.w3.org/2000/svg";

function sparkSvg() {
  const svg = document.createElementNS(SVG, "svg");
  svg.classList.add("spark");
  svg.setAttribute("viewBox", "0 0 100 24");
  svg.setAttribute("preserveAspectRatio", "none");
  svg.setAttribute("role", "img");
  svg.setAttribute("aria-label", "spindle load: no data yet");
  return svg;
}

function tile(m) {
  const state = boardState(m);
  const el = h("a.tile", { href: `#/machine/${encodeURIComponent(key(m))}`, dataset: { key: key(m) } },
    h("div.tile-head", h("span.tile-name", m.machine), h("span.tile-state")),
    h("div.tile-prog"),
    h("div.tile-row", h("span.tile-parts"), h("span.tile-since")),
    sparkSvg(),
    h("div.tile-alarms"));
  el.__state = state;
  update(el, m);
  return el;
}

/** Write a machine's status into its tile (only text and classes: cheap for many updates). */
function update(el, m) {
  const state = boardState(m);
  el.className = `tile s-${state}`;
  el.dataset.state = state;
  el.dataset.search = `${m.site} ${m.machine} ${m.program || ""}`.toLowerCase();
  el.querySelector(".tile-state").textContent = STATE_LABEL[state];
  el.querySelector(".tile-prog").textContent = m.program ? `${m.program}${m.mode ? ` · ${m.mode}` : ""}` : (m.mode || "no program");
  el.querySelector(".tile-parts").textContent = `parts ${num(m.part_count)}`;
  const sinceEl = el.querySelector(".tile-since");
  sinceEl.textContent = `${m.status} ${since(m.status_since)}`;
  sinceEl.dataset.since = m.status_since || "";
  const alarms = el.querySelector(".tile-alarms");
  alarms.textContent = m.active_alarms ? `${m.active_alarms} active alarm${m.active_alarms > 1 ? "s" : ""}` : "";
  el.setAttribute("aria-label", `${m.site} ${m.machine}: ${STATE_LABEL[state]}, ${el.querySelector(".tile-prog").textContent}, parts ${num(m.part_count)}${m.active_alarms ? `, ${m.active_alarms} alarms` : ""}`);
}

function drawSpark(svg, values) {
  const finite = values.filter((v) => v !== null && Number.isFinite(v));
  if (finite.length < 2) { svg.replaceChildren(); return; }
  const max = Math.max(100, ...finite);
  const pts = values.map((v, i) => (v === null ? null : `${(i / (values.length - 1)) * 100},${24 - (v / max) * 22 - 1}`)).filter(Boolean);
  const line = document.createElementNS(SVG, "polyline");
  line.setAttribute("points", pts.join(" "));
  svg.replaceChildren(line);
  svg.setAttribute("aria-label", `spindle load, last ${SPARK_MINUTES} min, max ${Math.round(Math.max(...finite))} %`);
}

/** Spindle-load sparklines, fetched only for tiles on screen, a few at a time. */
function sparklines(container) {
  const queue = [];
  const fetched = new Map();
  let active = 0;
  let stopped = false;
  const pump = () => {
    while (!stopped && active < SPARK_CONCURRENCY && queue.length) {
      const el = queue.shift();
      const k = el.dataset.key;
      if (Date.now() - (fetched.get(k) || 0) < SPARK_REFRESH_MS) continue;
      fetched.set(k, Date.now());
      active++;
      get(`machines/${encodeURIComponent(k)}/telemetry`, { signals: "spindle_load", points: 30, ...lastHours(SPARK_MINUTES / 60) })
        .then((t) => drawSpark(el.querySelector(".spark"), t.series?.spindle_load?.avg || []))
        .catch(() => { /* a sparkline is decoration: a failure leaves it empty */ })
        .finally(() => { active--; pump(); });
    }
  };
  const observer = new IntersectionObserver((entries) => {
    for (const e of entries) if (e.isIntersecting) queue.push(e.target);
    pump();
  });
  for (const el of container.querySelectorAll(".tile")) observer.observe(el);
  const refresh = setInterval(() => {
    for (const el of container.querySelectorAll(".tile")) { observer.unobserve(el); observer.observe(el); }
  }, SPARK_REFRESH_MS);
  return {
    observe: (el) => observer.observe(el),
    stop() { stopped = true; observer.disconnect(); clearInterval(refresh); },
  };
}

export async function render(main, { query }) {
  const t0 = performance.now();
  const search = h("input#board-search", { type: "search", placeholder: "Machine, site or program", "aria-label": "Search machines", value: query.get("q") || "" });
  const filters = Object.keys(STATE_LABEL).map((s) =>
    h("label.chip", { class: `chip s-${s}` }, h("input", { type: "checkbox", checked: true, value: s }), " ", STATE_LABEL[s], h("span.count", { dataset: { count: s } })));
  const summary = h("span.muted#board-summary");
  const liveNote = h("span.live#board-live", "connecting…");
  const groups = h("div#board-groups");
  const status = h("div");
  fill(main, h("section.board",
    h("div.toolbar", h("h1", "Status board"), search, h("div.chips", { role: "group", "aria-label": "Show states" }, filters), summary, liveNote),
    status, groups));

  const tiles = new Map();
  const sites = new Map();
  let spark = null;

  const applyFilter = () => {
    const terms = search.value.trim().toLowerCase().split(/\s+/).filter(Boolean);
    const show = new Set(filters.map((f) => f.querySelector("input")).filter((i) => i.checked).map((i) => i.value));
    let shown = 0;
    const counts = Object.fromEntries(Object.keys(STATE_LABEL).map((s) => [s, 0]));
    for (const el of tiles.values()) {
      counts[el.dataset.state]++;
      const visible = show.has(el.dataset.state) && terms.every((t) => el.dataset.search.includes(t));
      el.hidden = !visible;
      if (visible) shown++;
    }
    for (const [siteName, section] of sites) section.hidden = !section.querySelector(".tile:not([hidden])");
    for (const s of Object.keys(counts)) main.querySelector(`[data-count="${s}"]`).textContent = ` ${counts[s]}`;
    summary.textContent = `${shown} of ${tiles.size} machines`;
  };

  const addTile = (m) => {
    let section = sites.get(m.site);
    if (!section) {
      section = h("section.site", { "aria-label": `Site ${m.site}` }, h("h2", m.site), h("div.tiles"));
      sites.set(m.site, section);
      groups.append(section);
    }
    const el = tile(m);
    tiles.set(key(m), el);
    section.querySelector(".tiles").append(el);
    return el;
  };

  search.addEventListener("input", applyFilter);
  for (const f of filters) f.addEventListener("change", applyFilter);

  const stop = fleetStatus({
    onSnapshot(machines) {
      const frag = document.createDocumentFragment();
      for (const m of machines) {
        if (!sites.has(m.site)) {
          const section = h("section.site", { "aria-label": `Site ${m.site}` }, h("h2", m.site), h("div.tiles"));
          sites.set(m.site, section);
          frag.append(section);
        }
        const el = tile(m);
        tiles.set(key(m), el);
        sites.get(m.site).querySelector(".tiles").append(el);
      }
      groups.append(frag);
      if (!machines.length) fill(status, h("p.muted", "No machines yet: start the simulator (arbor sim) or a gateway."));
      applyFilter();
      perf.tiles = tiles.size;
      requestAnimationFrame(() => {
        perf.firstRenderMs = performance.now() - t0;
        perf.firstRenderFromNavigationMs = performance.now();
        document.body.dataset.boardReady = "1";
      });
      spark = sparklines(groups);
      liveNote.textContent = "live";
    },
    onChanges(changedMachines, all, fetchMs, removed) {
      const started = performance.now();
      for (const m of changedMachines) {
        const el = tiles.get(key(m));
        if (el) update(el, m);
        else spark?.observe(addTile(m));
      }
      for (const k of removed) { tiles.get(k)?.remove(); tiles.delete(k); }
      applyFilter();
      const took = performance.now() - started;
      perf.updates++;
      perf.lastUpdateMs = took;
      perf.maxUpdateMs = Math.max(perf.maxUpdateMs, took);
      perf.lastChanged = changedMachines.length;
      perf.lastFetchMs = fetchMs;
      liveNote.textContent = `live · ${changedMachines.length} changed at ${new Date().toLocaleTimeString("en-GB")}`;
      fill(status);
    },
    onError(exc) {
      liveNote.textContent = "reconnecting…";
      fill(status, errorBox(exc));
    },
  });
  // Time-in-state labels tick every 10 s without refetching.
  const ticker = setInterval(() => {
    for (const el of main.querySelectorAll(".tile-since")) {
      if (el.dataset.since) el.textContent = el.textContent.replace(/ .*$/, ` ${since(el.dataset.since)}`);
    }
  }, 10_000);
  return () => { stop(); spark?.stop(); clearInterval(ticker); };
}
