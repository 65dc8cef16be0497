// KPIs: utilisation or ISO 22400 OEE as a machine x day (or shift) heatmap, the downtime Pareto
// of one machine, and operator downtime reason entry.
import { get, post } from "./api.js";
import { duration, errorBox, fill, h, pct, table, toast, when } from "./util.js";

const DAY_MS = 86400e3;
const OEE_MACHINE_LIMIT = 40;

function days(n) {
  const end = new Date(); end.setUTCHours(0, 0, 0, 0);
  const out = [];
  for (let i = n - 1; i >= 0; i--) out.push(new Date(end.getTime() - i * DAY_MS + DAY_MS));
  return out.map((d) => ({ from: new Date(d.getTime() - DAY_MS).toISOString(), to: new Date(Math.min(d.getTime(), Date.now())).toISOString(), label: new Date(d.getTime() - DAY_MS).toISOString().slice(5, 10) }));
}

function colour(v) {
  if (v === null || v === undefined) return "var(--unknown-bg)";
  const hue = Math.round(Math.max(0, Math.min(1, v)) * 120);  // red 0 .. green 120
  return `hsl(${hue} 60% ${75 - v * 25}%)`;
}

function heatmap(rows, columns, cell) {
  return h("table.heatmap",
    h("thead", h("tr", h("th", { scope: "col" }, "Machine"), columns.map((c) => h("th", { scope: "col" }, c)))),
    h("tbody", rows.map((r) => h("tr", h("th", { scope: "row" }, h("a", { href: `#/machine/${encodeURIComponent(r.ref)}` }, r.ref)),
      r.values.map((v, i) => h("td", { style: `background:${colour(v)}`, title: `${r.ref} ${columns[i]}: ${pct(v)}`, "data-value": v ?? "" }, v === null || v === undefined ? "–" : Math.round(v * 100)))))));
}

export async function render(main, { arg, can }) {
  const machines = await get("machines");
  const sites = [...new Set(machines.map((m) => m.site))];
  const measure = h("select#k-measure", { "aria-label": "Measure" }, h("option", { value: "utilisation" }, "Utilisation (in-cycle share)"), h("option", { value: "oee" }, "OEE (ISO 22400-2)"));
  const group = h("select#k-group", { "aria-label": "Group" }, h("option", { value: "day" }, "by day"), h("option", { value: "shift" }, "by shift"));
  const span = h("select#k-days", { "aria-label": "Days" }, [7, 14, 30].map((d) => h("option", { value: d }, `last ${d} days`)));
  const site = h("select#k-site", { "aria-label": "Site" }, h("option", { value: "" }, "all sites"), sites.map((s) => h("option", { value: s }, s)));
  const ideal = h("input#k-ideal", { type: "number", min: 1, value: 60, step: "any", "aria-label": "Ideal cycle time per part (s)" });
  const heat = h("div#k-heat");
  const machineSel = h("select#k-machine", { "aria-label": "Machine" }, machines.map((m) => h("option", { value: `${m.site}:${m.machine}`, selected: `${m.site}:${m.machine}` === arg }, `${m.site}:${m.machine}`)));
  const pareto = h("div#k-pareto");
  const reasonForm = h("div");
  const stopsEl = h("div#k-stops");
  const reasonList = get("downtime-reasons");

  fill(main, h("section.kpis",
    h("div.toolbar", h("h1", "KPIs"), measure, group, span, site, h("label.inline", "ideal s/part ", ideal)),
    h("section.panel", { "aria-labelledby": "h-heat" }, h("h2#h-heat", "Per machine and day"), heat),
    h("div.cols",
      h("section.panel", { "aria-labelledby": "h-pareto" }, h("h2#h-pareto", "Downtime Pareto (last 7 days)"), h("label", "Machine ", machineSel), pareto),
      h("section.panel", { "aria-labelledby": "h-reason" }, h("h2#h-reason", "Record a downtime reason"), stopsEl, reasonForm))));

  async function loadHeat() {
    const n = Number(span.value);
    const list = machines.filter((m) => !site.value || m.site === site.value);
    fill(heat, h("p.muted", "Computing…"));
    try {
      if (measure.value === "utilisation") {
        group.disabled = true;
        const cols = days(n);
        const answers = await Promise.all(cols.map((d) => get("utilisation", { from: d.from, to: d.to, site: site.value })));
        const rows = list.map((m) => ({ ref: `${m.site}:${m.machine}`, values: answers.map((a) => a.machines.find((x) => x.site === m.site && x.machine === m.machine)?.utilisation ?? null) }));
        fill(heat, heatmap(rows, cols.map((c) => c.label), null),
          h("p.muted.small", `Fleet: ${cols.map((c, i) => `${c.label} ${pct(answers[i].fleet.utilisation)}`).join(" · ")}. ${answers[0]?.convention || ""}`));
      } else {
        group.disabled = false;
        const from = new Date(Date.now() - n * DAY_MS).toISOString();
        const to = new Date().toISOString();
        const chosen = list.slice(0, OEE_MACHINE_LIMIT);
        const answers = await Promise.all(chosen.map((m) => get(`machines/${encodeURIComponent(`${m.site}:${m.machine}`)}/oee`, { from, to, group: group.value, ideal_cycle_time: ideal.value })));
        const labels = [...new Set(answers.flatMap((a) => a.groups.map((g) => g.label)))].sort();
        const rows = chosen.map((m, i) => ({ ref: `${m.site}:${m.machine}`, values: labels.map((l) => answers[i].groups.find((g) => g.label === l)?.oee ?? null) }));
        fill(heat, heatmap(rows, labels, null),
          list.length > OEE_MACHINE_LIMIT ? h("p.muted.small", `First ${OEE_MACHINE_LIMIT} of ${list.length} machines: choose a site to narrow.`) : null,
          h("p.muted.small", answers[0]?.convention || ""));
      }
    } catch (exc) {
      fill(heat, errorBox(exc));
    }
  }

  async function loadPareto() {
    const ref = encodeURIComponent(machineSel.value);
    if (!machineSel.value) { fill(pareto, h("p.muted", "No machines.")); return; }
    try {
      const p = await get(`machines/${ref}/downtime/pareto`, { from: new Date(Date.now() - 7 * DAY_MS).toISOString(), to: new Date().toISOString() });
      const max = Math.max(1, ...p.rows.map((r) => r.seconds));
      fill(pareto, h("p.muted.small", `Downtime ${duration(p.downtime_s)}, of which classified ${duration(p.classified_s)}`),
        table([["Reason", (r) => r.label], ["Time", (r) => h("span.pbar", h("i", { style: `width:${(r.seconds / max) * 100}%` }), duration(r.seconds)), "wide"],
          ["Count", (r) => r.count, "num"], ["Cumulative", (r) => pct(r.cumulative_share), "num"]], p.rows, { empty: "No downtime in the last 7 days." }));
    } catch (exc) {
      fill(pareto, errorBox(exc));
    }
  }

  const local = (d) => new Date(d.getTime() - d.getTimezoneOffset() * 60e3).toISOString().slice(0, 19);
  let fillSpan = null;  // set by the reason form: put a stop's span into it

  /** The machine's stops (Execution not ACTIVE, at least a minute) of the last 24 h, newest
   * first, with the reasons already recorded over them; "Classify" puts one into the form. */
  async function loadStops() {
    const ref = machineSel.value;
    if (!ref) { fill(stopsEl, h("p.muted", "No machines.")); return; }
    const enc = encodeURIComponent(ref);
    const to = new Date(); const from = new Date(to.getTime() - DAY_MS);
    try {
      const [events, notes, reasons] = await Promise.all([
        get(`machines/${enc}/events`, { signals: "execution", from: from.toISOString(), to: to.toISOString(), limit: 10000 }),
        get(`machines/${enc}/downtime`, { from: from.toISOString(), to: to.toISOString() }),
        reasonList,
      ]);
      const label = new Map(reasons.map((r) => [r.code, r.label]));
      const stops = [];
      events.forEach((e, i) => {
        if (e.value === "ACTIVE" || e.value === "UNAVAILABLE") return;
        const start = Math.max(Date.parse(e.ts), from.getTime());
        const end = i + 1 < events.length ? Date.parse(events[i + 1].ts) : to.getTime();
        if (end - start < 60e3) return;
        const covered = notes.filter((n) => Date.parse(n.start) < end && Date.parse(n.end) > start);
        stops.push({ state: e.value, start, end, covered });
      });
      stops.reverse();
      fill(stopsEl, table([
        ["State", (x) => x.state], ["From", (x) => when(new Date(x.start).toISOString())],
        ["Duration", (x) => duration((x.end - x.start) / 1000), "num"],
        ["Reason", (x) => x.covered.length ? x.covered.map((n) => label.get(n.reason) || n.reason).join(", ") : h("span.muted", "none yet")],
        ["", (x) => (fillSpan && !x.covered.length ? h("button.stop-use", { type: "button", onclick: () => fillSpan(x.start, x.end) }, "Classify") : "")],
      ], stops.slice(0, 20), { empty: "No stops of a minute or more in the last 24 h.", caption: `Stops of ${ref}, last 24 h` }));
    } catch (exc) {
      fill(stopsEl, errorBox(exc));
    }
  }

  async function reasonEntry() {
    if (!can("downtime")) { fill(reasonForm, h("p.muted", "Your key's role may not record downtime reasons.")); return; }
    const reasons = await reasonList;
    const start = h("input#r-start", { type: "datetime-local", step: 1, required: true, value: local(new Date(Date.now() - 3600e3)) });
    const end = h("input#r-end", { type: "datetime-local", step: 1, required: true, value: local(new Date(Date.now() - 60e3)) });
    const reason = h("select#r-reason", reasons.map((r) => h("option", { value: r.code }, `${r.label}${r.planned ? " (planned)" : ""}`)));
    const comment = h("input#r-comment", { type: "text", maxlength: 500 });
    const status = h("div");
    // A stop's span, shrunk to whole seconds inside it (the API refuses a span with running time).
    fillSpan = (a, b) => {
      start.value = local(new Date(Math.ceil(a / 1000) * 1000));
      end.value = local(new Date(Math.floor(b / 1000) * 1000));
      reason.focus();
    };
    fill(reasonForm, h("form.form-grid#reason-form", {
      onsubmit: async (e) => {
        e.preventDefault();
        try {
          await post(`machines/${encodeURIComponent(machineSel.value)}/downtime`, { start: new Date(start.value).toISOString(), end: new Date(end.value).toISOString(), reason: reason.value, comment: comment.value });
          fill(status);
          toast(`Recorded ${reason.value} on ${machineSel.value}`);
          loadPareto();
          loadStops();
        } catch (exc) { fill(status, errorBox(exc)); }
      },
    }, h("label", "From", start), h("label", "To", end), h("label", "Reason", reason), h("label", "Comment", comment),
    h("button", { type: "submit" }, "Record"), status));
  }

  for (const el of [measure, group, span, site, ideal]) el.addEventListener("change", loadHeat);
  machineSel.addEventListener("change", () => { loadPareto(); loadStops(); });
  await Promise.all([loadHeat(), loadPareto(), reasonEntry()]);
  await loadStops();
}
