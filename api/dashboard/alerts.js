// Alerts inbox: filter; acknowledge, assign, comment and resolve (as the key's role allows).
import { get, post } from "./api.js";
import { errorBox, fill, h, since, table, toast, when } from "./util.js";

const STATES = [["active", "Active (open or acknowledged)"], ["open", "Open"], ["acknowledged", "Acknowledged"], ["resolved", "Resolved"], ["", "All"]];
const SEVERITIES = [["", "Any severity"], ["critical", "Critical"], ["warning", "Warning"], ["info", "Info"]];

function select(id, label, options, value) {
  return h("label", { for: id }, label, h(`select#${id}`, options.map(([v, text]) => h("option", { value: v, selected: v === value }, text))));
}

export async function render(main, { query, can }) {
  const filters = h("form.filters", { role: "search", onsubmit: (e) => { e.preventDefault(); load(); } },
    select("f-state", "State", STATES, query.get("state") ?? "active"),
    select("f-severity", "Severity", SEVERITIES, query.get("severity") || ""),
    h("label", { for: "f-machine" }, "Machine", h("input#f-machine", { type: "search", placeholder: "m01", value: query.get("machine") || "" })),
    h("label", { for: "f-assignee" }, "Assigned to", h("input#f-assignee", { type: "search", value: "" })),
    h("button", { type: "submit" }, "Filter"));
  const list = h("div#alert-list");
  const detail = h("div#alert-detail.panel", { "aria-live": "polite" }, h("p.muted", "Select an alert to see its history and act on it."));
  fill(main, h("section.alerts", h("div.toolbar", h("h1", "Alerts")), filters, h("div.cols.wide-left", list, detail)));
  for (const el of filters.querySelectorAll("select")) el.addEventListener("change", () => load());

  let selected = Number(query.get("alert")) || null;

  async function load(refreshDetail = true) {
    try {
      const rows = await get("alerts", {
        state: filters.querySelector("#f-state").value,
        severity: filters.querySelector("#f-severity").value,
        machine: filters.querySelector("#f-machine").value.trim(),
        assigned_to: filters.querySelector("#f-assignee").value.trim(),
        limit: 200,
      });
      fill(list, table([
        ["Severity", (a) => h("span", { class: `sev sev-${a.severity}` }, a.severity)],
        ["Alert", (a) => h("a", { href: "#", "data-alert": a.id, onclick: (e) => { e.preventDefault(); show(a.id); } }, a.title)],
        ["Machine", (a) => h("a", { href: `#/machine/${encodeURIComponent(`${a.site}:${a.machine}`)}` }, `${a.site}:${a.machine}`)],
        ["State", (a) => h("span", { class: `state-${a.state}`, "data-state-of": a.id }, a.state + (a.escalation_level ? " ⚑ escalated" : ""))],
        ["Opened", (a) => `${since(a.opened_at)} ago`],
        ["Assigned", (a) => a.assigned_to || "–"],
      ], rows, { empty: "No alerts match." }));
      if (selected && refreshDetail) show(selected);
    } catch (exc) {
      fill(list, errorBox(exc));
    }
  }

  async function act(id, action, body, done) {
    try {
      await post(`alerts/${id}/${action}`, body);
      toast(`${action === "ack" ? "Acknowledged" : action[0].toUpperCase() + action.slice(1) + (action.endsWith("e") ? "d" : "ed")} alert ${id}`);
      if (done) done();
      await load();
    } catch (exc) {
      toast(exc.describe ? exc.describe() : String(exc), "bad");
    }
  }

  async function show(id) {
    selected = id;
    try {
      const a = await get(`alerts/${id}`);
      const comment = h("textarea#a-comment", { rows: 2, maxlength: 2000, "aria-label": "Comment" });
      const assignee = h("input#a-assignee", { type: "text", placeholder: "person", value: a.assigned_to || "", "aria-label": "Assignee" });
      const active = a.state !== "resolved";
      fill(detail,
        h("h2", a.title),
        h("dl.facts",
          h("dt", "State"), h("dd#a-state", a.state),
          h("dt", "Severity"), h("dd", a.severity),
          h("dt", "Rule"), h("dd", `${a.rule_name} (#${a.rule_id})`),
          h("dt", "Machine"), h("dd", `${a.site}:${a.machine}`),
          h("dt", "Triggered"), h("dd", `${when(a.trigger_ts)}${a.value === null ? "" : ` at ${a.value}`}`),
          h("dt", "Acknowledged"), h("dd", a.acknowledged_at ? `${when(a.acknowledged_at)} by ${a.acknowledged_by}` : "–"),
          h("dt", "Assigned to"), h("dd", a.assigned_to || "–"),
          h("dt", "Resolved"), h("dd", a.resolved_at ? `${when(a.resolved_at)} by ${a.resolved_by || a.resolution}` : "–")),
        can("comment") ? h("div.actions",
          comment,
          h("div.buttons",
            active && a.state === "open" && can("ack") ? h("button#a-ack", { type: "button", onclick: () => act(id, "ack", comment.value ? { comment: comment.value } : {}) }, "Acknowledge") : null,
            h("button#a-comment-btn", { type: "button", onclick: () => comment.value.trim() ? act(id, "comment", { comment: comment.value }) : toast("Write a comment first", "bad") }, "Comment"),
            active && can("resolve") ? h("button#a-resolve", { type: "button", onclick: () => act(id, "resolve", comment.value ? { comment: comment.value } : {}) }, "Resolve") : null),
          active && can("assign") ? h("div.buttons", assignee, h("button#a-assign", { type: "button", onclick: () => assignee.value.trim() ? act(id, "assign", { assignee: assignee.value.trim() }) : toast("Name the assignee", "bad") }, "Assign")) : null)
          : h("p.muted", "Your key's role may read alerts but not act on them."),
        h("h3", "History"),
        table([["When", (e) => when(e.at || e.ts || e.created_at)], ["What", (e) => e.event || e.action || e.transition || ""], ["Who", (e) => e.actor || "–"], ["Detail", (e) => e.detail?.comment || e.detail?.assignee || (e.detail && Object.keys(e.detail).length ? JSON.stringify(e.detail) : "")]],
          a.history, { empty: "No history yet." }));
    } catch (exc) {
      fill(detail, errorBox(exc));
    }
  }

  await load();
  const timer = setInterval(() => load(false), 15_000);
  return () => clearInterval(timer);
}
