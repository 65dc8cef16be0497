// Status board: every machine as a tile, grouped by site, with filter and search, kept live.
import { get } from "./api.js";
import { fleetStatus, key } from "./live.js";
import { STATE_LABEL, boardState, errorBox, fill, h, lastHours, num, since } from "./util.js";

const SPARK_MINUTES = 30;
const SPARK_CONCURRENCY = 4;
const SPARK_REFRESH_MS = 60_000;

/** Figures for tests and the closing note: first render and live update handling times (ms). */
const perf = (window.__arborBoard = { firstRenderMs: null, updates: 0, lastUpdateMs: null, maxUpdateMs: 0, tiles: 0 });

/** The live indicator's words for the stream's modes (live.js). */
const MODE_LABEL = { connecting: "connecting…", live: "● live", reconnecting: "reconnecting…", polling: "polling (no live stream)", closed: "stopped" };

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

/** Set a text only when it differs (an unchanged tile costs no layout). */
function text(el, value) {
  if (el.textContent !== value) el.textContent = value;
}

/** Write a machine's status into its tile (only text and classes: cheap for many updates). */
function update(el, m, executionSince) {
  const state = boardState(m);
  const parts = el.__parts || (el.__parts = {
    state: el.querySelector(".tile-state"), prog: el.querySelector(".tile-prog"), count: el.querySelector(".tile-parts"),
    since: el.querySelector(".tile-since"), alarms: el.querySelector(".tile-alarms"),
  });
  const cls = `tile s-${state}`;
  if (el.className !== cls) el.className = cls;
  if (el.dataset.state !== state) el.dataset.state = state;
  el.dataset.search = `${m.site} ${m.machine} ${m.program || ""}`.toLowerCase();
  text(parts.state, STATE_LABEL[state]);
  const prog = m.program ? `${m.program}${m.mode ? ` · ${m.mode}` : ""}` : (m.mode || "no program");
  text(parts.prog, prog);
  text(parts.count, `parts ${num(m.part_count)}`);
  // Time in state: in the current execution state, from the API's `execution_since` or from
  // when this page saw it change on the stream; otherwise since the online/offline change.
  executionSince = executionSince || m.execution_since;
  const inExecution = executionSince && m.status === "online" && m.execution;
  const label = inExecution ? m.execution.toLowerCase().replace(/_/g, " ") : m.status;
  const from = inExecution ? executionSince : m.status_since;
  const sinceEl = parts.since;
  text(sinceEl, `${label} ${since(from)}`);
  sinceEl.dataset.since = from || "";
  sinceEl.dataset.label = label;
  sinceEl.title = inExecution ? `${m.execution} since ${from}` : `${m.status} since ${m.status_since || "?"}`;
  text(parts.alarms, m.active_alarms ? `${m.active_alarms} active alarm${m.active_alarms > 1 ? "s" : ""}` : "");
  el.setAttribute("aria-label", `${m.site} ${m.machine}: ${STATE_LABEL[state]}, ${prog}, parts ${num(m.part_count)}${m.active_alarms ? `, ${m.active_alarms} alarms` : ""}`);
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
  const liveText = h("span.live-last");
  const liveNote = h("span.live#board-live", { role: "status", dataset: { mode: "connecting" } }, h("b", MODE_LABEL.connecting), " ", liveText);
  const groupBy = h("select#board-group", { "aria-label": "Group machines by" },
    h("option", { value: "site" }, "by site"),
    h("option", { value: "area", selected: query.get("group") === "area" }, "by area (machine groups)"));
  const groups = h("div#board-groups");
  const status = h("div");
  fill(main, h("section.board",
    h("div.toolbar", h("h1", "Status board"), search, groupBy, h("div.chips", { role: "group", "aria-label": "Show states" }, filters), summary, liveNote),
    status, groups));

  const tiles = new Map();
  const sections = new Map();  // group name -> section element
  let areaOf = new Map();      // site:machine -> area (its first machine group, by name)
  let spark = null;

  const groupOf = (ref) => (groupBy.value === "area" ? areaOf.get(ref) || "no area" : ref.slice(0, ref.indexOf(":")));
  const section = (name, parent) => {
    let el = sections.get(name);
    if (!el) {
      el = h("section.site", { "aria-label": `${groupBy.value === "area" ? "Area" : "Site"} ${name}`, dataset: { group: name } },
        h("h2", name, h("span.group-counts.muted")), h("div.tiles"));
      sections.set(name, el);
      parent.append(el);
    }
    return el;
  };
  const place = (el, parent) => {
    el.dataset.group = groupOf(el.dataset.key);
    section(el.dataset.group, parent).querySelector(".tiles").append(el);
  };
  /** Lay every tile out in its group: groups in name order ("no area" last), tiles as they are. */
  const layout = () => {
    const frag = document.createDocumentFragment();
    sections.clear();
    const ordered = [...tiles.values()].map((el) => [groupOf(el.dataset.key), el]);
    ordered.sort((a, b) => (a[0] === "no area") - (b[0] === "no area") || a[0].localeCompare(b[0]));
    for (const [, el] of ordered) place(el, frag);
    groups.replaceChildren(frag);
  };

  const applyFilter = () => {
    const terms = search.value.trim().toLowerCase().split(/\s+/).filter(Boolean);
    const show = new Set(filters.map((f) => f.querySelector("input")).filter((i) => i.checked).map((i) => i.value));
    let shown = 0;
    const counts = Object.fromEntries(Object.keys(STATE_LABEL).map((s) => [s, 0]));
    const perGroup = new Map();
    for (const el of tiles.values()) {
      const state = el.dataset.state;
      counts[state]++;
      let g = perGroup.get(el.dataset.group);
      if (!g) perGroup.set(el.dataset.group, (g = { total: 0, shown: 0 }));
      g.total++;
      g[state] = (g[state] || 0) + 1;
      const visible = show.has(state) && terms.every((t) => el.dataset.search.includes(t));
      if (el.hidden === visible) el.hidden = !visible;
      if (visible) { shown++; g.shown++; }
    }
    for (const [name, el] of sections) {
      const g = perGroup.get(name) || { total: 0, shown: 0 };
      if (el.hidden !== !g.shown) el.hidden = !g.shown;
      const parts = Object.keys(STATE_LABEL).filter((st) => g[st]).map((st) => `${g[st]} ${STATE_LABEL[st].toLowerCase()}`);
      text(el.querySelector(".group-counts"), ` · ${g.total} machine${g.total === 1 ? "" : "s"}: ${parts.join(", ")}`);
    }
    for (const st of Object.keys(counts)) text(main.querySelector(`[data-count="${st}"]`), ` ${counts[st]}`);
    text(summary, `${shown} of ${tiles.size} machines`);
  };

  const addTile = (m) => {
    const el = tile(m);
    tiles.set(key(m), el);
    place(el, groups);
    return el;
  };

  search.addEventListener("input", applyFilter);
  for (const f of filters) f.addEventListener("change", applyFilter);
  const loadAreas = async () => {
    if (groupBy.value !== "area") return;
    try {
      const named = await get("alert-machine-groups");
      areaOf = new Map();
      for (const name of Object.keys(named).sort()) for (const ref of named[name]) if (!areaOf.has(ref)) areaOf.set(ref, name);
    } catch (exc) {
      fill(status, errorBox(exc));
    }
  };
  groupBy.addEventListener("change", async () => {
    await loadAreas();
    layout();
    applyFilter();
  });

  // A machine the stream reports after the first view gets a tile once the API's registry has
  // it (ingest registers machines; the broker may carry one before that, or one that never is).
  const newcomers = new Map();  // site:machine -> its latest state, while being looked up
  const unknown = new Map();    // site:machine -> when the registry did not have it
  const adopt = (m) => {
    const k = key(m);
    if (newcomers.has(k)) { newcomers.set(k, m); return; }
    if (Date.now() - (unknown.get(k) || 0) < 60_000) return;
    newcomers.set(k, m);
    // The site's list (200 even when the machine is absent: no failed request in the console).
    get("machines", { site: m.site }).then((list) => {
      const latest = newcomers.get(k);
      if (!list.some((x) => key(x) === k)) unknown.set(k, Date.now());
      else if (!tiles.has(k)) { spark?.observe(addTile(latest)); applyFilter(); }
    }, () => unknown.set(k, Date.now())).finally(() => newcomers.delete(k));
  };
  const areasLoaded = loadAreas();
  const execSince = new Map();  // when this page saw each machine's execution change
  const source = fleetStatus({
    async onSnapshot(machines) {
      for (const m of machines) {
        if (m.execution_since) execSince.set(key(m), m.execution_since);
        tiles.set(key(m), tile(m));
      }
      await areasLoaded;
      layout();
      if (!machines.length) fill(status, h("p.muted", "No machines yet: start the simulator (arbor sim) or a gateway."));
      applyFilter();
      perf.tiles = tiles.size;
      requestAnimationFrame(() => {
        perf.firstRenderMs = performance.now() - t0;
        perf.firstRenderFromNavigationMs = performance.now();
        const rest = performance.getEntriesByType("resource").find((e) => /\/api\/v1\/machines(\?|$)/.test(e.name));
        perf.machinesResponseEndMs = rest ? rest.responseEnd : null;
        document.body.dataset.boardReady = "1";
      });
      spark = sparklines(groups);
    },
    onChanges(changedMachines, removed) {
      const started = performance.now();
      for (const m of changedMachines) {
        const k = key(m);
        if (m.execution_since) execSince.set(k, m.execution_since);  // the API's (REST)
        else if (!m.snapshot && m.changed?.includes("execution")) execSince.set(k, new Date().toISOString());
        const el = tiles.get(k);
        if (el) update(el, m, execSince.get(k));
        else adopt(m);
      }
      for (const k of removed) { tiles.get(k)?.remove(); tiles.delete(k); }
      applyFilter();
      const took = performance.now() - started;
      perf.updates++;
      perf.changedTotal = (perf.changedTotal || 0) + changedMachines.length;
      perf.lastUpdateMs = took;
      perf.maxUpdateMs = Math.max(perf.maxUpdateMs, took);
      perf.batches = (perf.batches || []).slice(-999);
      perf.batches.push([Math.round(took * 10) / 10, changedMachines.length]);
      perf.lastChanged = changedMachines.length;
      perf.lastAppliedAt = performance.timeOrigin + performance.now();
      liveText.textContent = `${changedMachines.length} changed at ${new Date().toLocaleTimeString("en-GB")}`;
      fill(status);
    },
    onMode(mode, detail) {
      liveNote.dataset.mode = mode;
      liveNote.title = detail || "";
      liveNote.firstChild.textContent = MODE_LABEL[mode] || mode;
      if (mode === "live") fill(status);
    },
    onError(exc) {
      fill(status, errorBox(exc));
    },
  });
  // Time-in-state labels tick every 10 s without refetching.
  const ticker = setInterval(() => {
    for (const el of main.querySelectorAll(".tile-since")) {
      if (el.dataset.since) el.textContent = `${el.dataset.label} ${since(el.dataset.since)}`;
    }
  }, 10_000);
  return () => { source.stop(); spark?.stop(); clearInterval(ticker); };
}
