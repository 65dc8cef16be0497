// Accuracy: upload an S test piece (CMM points), an ISO 230-2 run or an ISO 230-4 circular test;
// see the report with its figures and pass/fail; compare with the machine's history.
import { get, request } from "./api.js";
import { timeChart } from "./chart.js";
import { errorBox, fill, h, num4, table, toast, when } from "./util.js";

const KINDS = {
  "s-piece": { label: "S test piece (ISO 10791-7), CMM points", metric: "profile_deviation" },
  "iso230-2": { label: "Positioning (ISO 230-2), laser runs", metric: "A" },
  circle: { label: "Circular test (ISO 230-4)", metric: "G" },
};

/**
 * An S-piece file: the JSON `arbor check s-piece` reads ({lines: [...], units?}), or a CMM export
 * as CSV with a header naming `line`, `x`, `y`, `z` (and optionally `flank`), one point per row.
 */
export function parseSPiece(text) {
  const trimmed = text.trim();
  if (trimmed.startsWith("{")) return JSON.parse(trimmed);
  const rows = trimmed.split(/\r?\n/).filter((r) => r.trim() && !r.startsWith("#"));
  const header = rows.shift().split(/[,;\t]/).map((c) => c.trim().toLowerCase());
  const col = (name) => header.indexOf(name);
  if (col("line") < 0 || col("x") < 0 || col("y") < 0 || col("z") < 0) {
    throw new Error("a CSV S-piece file needs the columns line, x, y, z");
  }
  const lines = new Map();
  for (const [i, row] of rows.entries()) {
    const cells = row.split(/[,;\t]/).map((c) => c.trim());
    const p = [cells[col("x")], cells[col("y")], cells[col("z")]].map(Number);
    if (p.some((v) => !Number.isFinite(v))) throw new Error(`row ${i + 2}: x, y and z must be numbers`);
    const name = cells[col("line")];
    if (!lines.has(name)) lines.set(name, { name, points: [], ...(col("flank") >= 0 ? { flank: cells[col("flank")] } : {}) });
    lines.get(name).points.push(p);
  }
  return { lines: [...lines.values()], units: "mm" };
}

function figuresOf(report) {
  return Object.entries(report).filter(([, v]) => typeof v === "number");
}

export async function render(main, { arg, query, can }) {
  const machines = await get("machines");
  const machineSel = h("select#acc-machine", { "aria-label": "Machine" },
    machines.map((m) => h("option", { value: `${m.site}:${m.machine}`, selected: `${m.site}:${m.machine}` === arg }, `${m.site}:${m.machine}`)));
  const kindSel = h("select#acc-kind", { "aria-label": "Kind of check" }, Object.entries(KINDS).map(([k, v]) => h("option", { value: k }, v.label)));
  const file = h("input#acc-file", { type: "file", accept: ".json,.csv,.txt", required: true, "aria-label": "Measurement file" });
  const axis = h("input#acc-axis", { type: "text", placeholder: "X (or XY for a circle)", maxlength: 8, "aria-label": "Axis" });
  const label = h("input#acc-label", { type: "text", placeholder: "after ballscrew change", maxlength: 200, "aria-label": "Label" });
  const tolerances = h("input#acc-tol", { type: "text", placeholder: '{"A": 0.02}', "aria-label": "Tolerances (JSON, mm)" });
  const status = h("div");
  const reportEl = h("div#acc-report");
  const history = h("div#acc-history");
  const trend = h("div.chart#acc-trend");
  let trendChart = null;

  const form = can("accuracy") ? h("form.upload.panel", { onsubmit: upload },
    h("h2", "New check"),
    h("div.form-grid",
      h("label", "Machine", machineSel), h("label", "Kind", kindSel), h("label", "File", file),
      h("label", "Axis", axis), h("label", "Label", label), h("label", "Tolerances", tolerances)),
    h("p.muted.small", "S piece: the JSON of `arbor check s-piece` or a CSV with columns line,x,y,z (mm); the geometry's tolerances decide. ISO 230-2 and circle: the JSON of `arbor check`."),
    h("button", { type: "submit" }, "Upload and evaluate"), status)
    : h("section.panel", h("h2", "Machine"), machineSel, h("p.muted", "Your key's role may read reports but not upload checks."));

  fill(main, h("section.accuracy", h("div.toolbar", h("h1", "Accuracy")), form,
    h("div.cols", h("section.panel", { "aria-labelledby": "h-report" }, h("h2#h-report", "Report"), reportEl),
      h("section.panel", { "aria-labelledby": "h-hist" }, h("h2#h-hist", "History of this machine"), history, trend))));

  async function upload(event) {
    event.preventDefault();
    const kind = kindSel.value;
    const ref = encodeURIComponent(machineSel.value);
    fill(status, h("p.muted", "Evaluating…"));
    let body;
    try {
      if (!file.files.length) throw new Error("choose a file");
      const text = await file.files[0].text();
      const tol = tolerances.value.trim() ? JSON.parse(tolerances.value) : undefined;
      body = kind === "s-piece"
        ? { points: parseSPiece(text), figures: true, label: label.value || undefined }
        : { data: JSON.parse(text), figures: true, label: label.value || undefined, axis: axis.value.trim() || undefined, tolerances: tol };
    } catch (exc) {
      fill(status, errorBox(new Error(`The file could not be read: ${exc.message}`)));
      return;
    }
    try {
      const report = await request(`machines/${ref}/accuracy/${kind}`, { method: "POST", body });
      fill(status);
      toast(`Report ${report.id}: ${report.passed === null ? "no tolerance" : report.passed ? "pass" : "FAIL"}`);
      await showReport(report);
      await loadHistory();
    } catch (exc) {
      fill(status, errorBox(exc));
    }
  }

  async function showReport(r) {
    const figures = h("div.figures");
    fill(reportEl,
      h("p", h("strong", `${r.kind}${r.axis ? ` ${r.axis}` : ""}`), ` on ${r.site}:${r.machine}, ${when(r.created_at)} by ${r.created_by}`, r.label ? ` — ${r.label}` : ""),
      h("p#acc-verdict", { class: `verdict ${r.passed === null ? "" : r.passed ? "pass" : "fail"}` }, r.passed === null ? "No tolerance given" : r.passed ? "PASS" : "FAIL"),
      table([["Figure", ([k]) => k], ["Value (mm)", ([, v]) => num4(v), "num"], ["Tolerance", ([k]) => (k in r.tolerances ? num4(r.tolerances[k]) : ""), "num"],
        ["", ([k, v]) => (k in r.tolerances ? (Math.abs(v) <= r.tolerances[k] ? "✓" : "✗") : "")]], figuresOf(r.report), { empty: "No figures." }),
      figures);
    if (r.figures.includes("svg")) {
      try {
        const blob = await request(`accuracy/${r.id}/figure.svg`, { blob: true });
        figures.append(h("img.figure", { src: URL.createObjectURL(blob), alt: `figure of report ${r.id}` }));
      } catch (exc) { figures.append(errorBox(exc)); }
    }
  }

  async function loadHistory() {
    const ref = encodeURIComponent(machineSel.value);
    const kind = kindSel.value;
    try {
      const rows = await get(`machines/${ref}/accuracy`, { limit: 50 });
      fill(history, table([
        ["When", (r) => when(r.created_at)], ["Kind", (r) => r.kind], ["Axis", (r) => r.axis || "–"], ["Label", (r) => r.label || ""],
        ["Result", (r) => h("span", { class: r.passed === null ? "muted" : r.passed ? "pass" : "fail" }, r.passed === null ? "–" : r.passed ? "pass" : "FAIL")],
        ["", (r) => h("button.link", { type: "button", onclick: async () => showReport(await get(`accuracy/${r.id}`)) }, "show")],
      ], rows, { empty: "No checks on this machine yet." }));
      const t = await get(`machines/${ref}/accuracy/trend`, { kind });
      trendChart?.destroy();
      trendChart = null;
      fill(trend);
      if (t.points.length >= 2) {
        trend.before(h("p.muted.small", `${t.metric}: slope ${num4(t.slope_per_day)} mm/day`));
        trendChart = timeChart(trend, { title: `${kind} ${t.metric} (mm)`, height: 180, t: t.points.map((p) => Date.parse(p.created_at ?? p.at ?? p.t) / 1000), series: [{ label: t.metric, unit: "mm", values: t.points.map((p) => p.value) }] });
      }
    } catch (exc) {
      fill(history, errorBox(exc));
    }
  }

  machineSel.addEventListener("change", loadHistory);
  kindSel.addEventListener("change", loadHistory);
  if (!machines.length) fill(history, h("p.muted", "No machines."));
  else await loadHistory();
  const reportId = query.get("report");
  if (reportId) {
    try { await showReport(await get(`accuracy/${reportId}`)); } catch (exc) { fill(reportEl, errorBox(exc)); }
  }
  return () => trendChart?.destroy();
}
