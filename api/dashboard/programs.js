// Programs: upload NC programs, browse versions, push a version to a machine and follow its reply.
import { get, post } from "./api.js";
import { errorBox, fill, h, table, toast, when } from "./util.js";

export async function render(main, { can }) {
  let left = false;          // the page was left: stop following pushes
  const timers = new Set();
  const list = h("div#prog-list");
  const versions = h("div#prog-versions");
  const pushes = h("div#prog-pushes");
  const uploadStatus = h("div");
  const name = h("input#prog-name", { type: "text", required: true, pattern: "[A-Za-z0-9][A-Za-z0-9_.\\-]*", placeholder: "O1234", "aria-label": "Program name" });
  const comment = h("input#prog-comment", { type: "text", maxlength: 500, "aria-label": "Comment" });
  const file = h("input#prog-file", { type: "file", required: true, "aria-label": "Program file" });
  file.addEventListener("change", () => {
    if (file.files.length && !name.value) name.value = file.files[0].name.replace(/\.[^.]*$/, "");
  });
  const machines = can("push") ? await get("machines") : [];

  fill(main, h("section.programs", h("div.toolbar", h("h1", "NC programs")),
    can("uploadProgram") ? h("form.upload.panel", { onsubmit: upload },
      h("h2", "Upload a version"),
      h("div.form-grid", h("label", "File", file), h("label", "Name", name), h("label", "Comment", comment)),
      h("button", { type: "submit" }, "Upload"), uploadStatus) : null,
    h("div.cols", h("section.panel", h("h2", "Programs"), list), h("section.panel", h("h2", "Versions"), versions)),
    h("section.panel", h("h2", "Pushes"), pushes)));

  async function upload(event) {
    event.preventDefault();
    try {
      const bytes = new Uint8Array(await file.files[0].arrayBuffer());
      let binary = "";
      for (const b of bytes) binary += String.fromCharCode(b);
      const v = await post("programs", { name: name.value.trim(), content: btoa(binary), encoding: "base64", comment: comment.value });
      fill(uploadStatus);
      toast(`Stored ${v.name} version ${v.version} (${v.size} bytes)`);
      await loadList();
      await showVersions(v.name);
    } catch (exc) {
      fill(uploadStatus, errorBox(exc));
    }
  }

  async function push(progName, version, select, out) {
    try {
      const p = await post(`machines/${encodeURIComponent(select.value)}/programs/push`, { name: progName, version });
      toast(`Push ${p.id} sent: ${p.chunk_count} chunk(s)`);
      fill(out, h("p", `Push ${p.id}: ${p.state}…`));
      followPush(p.id, out);
    } catch (exc) {
      fill(out, errorBox(exc));
    }
  }

  async function followPush(id, out, tries = 0) {
    try {
      const p = await get(`program-pushes/${id}`);
      fill(out, h("p", { class: p.state === "failed" ? "fail" : p.state === "complete" ? "pass" : "" },
        `Push ${p.id} to ${p.site}:${p.machine}: ${p.state}, ${p.chunks_acknowledged}/${p.chunk_count} chunks acknowledged`,
        p.error_code ? ` — the machine answered ${p.error_code}` : ""));
      // Follow until the machine answers: every second for a minute, then every 5 s for 10 min.
      if (left) return;
      if (p.state === "sent" && tries < 180) timers.add(setTimeout(() => followPush(id, out, tries + 1), tries < 60 ? 1000 : 5000));
      else loadPushes(p.site, p.machine);
    } catch (exc) {
      fill(out, errorBox(exc));
    }
  }

  async function showVersions(progName) {
    try {
      const rows = await get(`programs/${encodeURIComponent(progName)}`);
      const select = h("select", { "aria-label": "Machine to push to" }, machines.map((m) => h("option", { value: `${m.site}:${m.machine}` }, `${m.site}:${m.machine}`)));
      const out = h("div#push-result");
      fill(versions, h("h3", progName),
        can("push") && machines.length ? h("p", h("label", "Push to ", select)) : null,
        table([["Version", (v) => v.version], ["Size", (v) => `${v.size} B`, "num"], ["SHA-256", (v) => h("code", { title: v.sha256 }, v.sha256.slice(0, 12))],
          ["Uploaded", (v) => `${when(v.created_at)} by ${v.created_by}`], ["Comment", (v) => v.comment],
          ["", (v) => (can("push") && machines.length ? h("button", { type: "button", onclick: () => push(progName, v.version, select, out) }, `Push v${v.version}`) : "")]],
        rows.slice().reverse()), out);
    } catch (exc) {
      fill(versions, errorBox(exc));
    }
  }

  async function loadPushes(site, machine) {
    const ref = site ? `${site}:${machine}` : machines[0] && `${machines[0].site}:${machines[0].machine}`;
    if (!ref) { fill(pushes, h("p.muted", "No pushes.")); return; }
    try {
      const rows = await get(`machines/${encodeURIComponent(ref)}/programs/pushes`);
      fill(pushes, h("h3", ref), table([["Id", (p) => p.id, "num"], ["Program", (p) => `${p.name} v${p.version}`], ["State", (p) => h("span", { class: p.state === "failed" ? "fail" : p.state === "complete" ? "pass" : "" }, p.state)],
        ["Chunks", (p) => `${p.chunks_acknowledged}/${p.chunk_count}`, "num"], ["Requested", (p) => `${when(p.requested_at)} by ${p.requested_by}`], ["Reply", (p) => p.error_code || (p.finished_at ? when(p.finished_at) : "waiting")]],
      rows, { empty: "No pushes to this machine yet." }));
    } catch (exc) {
      fill(pushes, errorBox(exc));
    }
  }

  async function loadList() {
    try {
      const rows = await get("programs");
      fill(list, table([["Name", (p) => h("button.link", { type: "button", onclick: () => showVersions(p.name) }, p.name)], ["Versions", (p) => p.versions, "num"],
        ["Latest", (p) => p.latest_version], ["Updated", (p) => when(p.updated_at)]], rows, { empty: "No programs uploaded yet." }));
    } catch (exc) {
      fill(list, errorBox(exc));
    }
  }

  await loadList();
  fill(versions, h("p.muted", "Choose a program."));
  await loadPushes();
  return () => { left = true; for (const t of timers) clearTimeout(t); };
}
