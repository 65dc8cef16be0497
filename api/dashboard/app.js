// The single page: sign-in, navigation and the hash router (#/board, #/machine/plant1:m01, ...).
import { ApiError, can, clearKey, getKey, getMe, getRole, setKey, setMe, storedMe, whoAmI } from "./api.js";
import { errorBox, fill, h } from "./util.js";

const PAGES = {
  board: { label: "Status board", load: () => import("./board.js") },
  machine: { label: "Machine", load: () => import("./machine.js"), hidden: true },
  kpis: { label: "KPIs", load: () => import("./kpis.js") },
  alerts: { label: "Alerts", load: () => import("./alerts.js") },
  accuracy: { label: "Accuracy", load: () => import("./accuracy.js") },
  programs: { label: "Programs", load: () => import("./programs.js") },
};

const main = document.getElementById("main");
let cleanup = null;
let generation = 0;

function parseHash() {
  const [path, query = ""] = location.hash.replace(/^#\/?/, "").split("?");
  const [name = "board", ...rest] = path.split("/");
  return { name: name || "board", arg: decodeURIComponent(rest.join("/")), query: new URLSearchParams(query) };
}

function renderNav(active) {
  const nav = document.getElementById("nav");
  if (!getKey()) { fill(nav); return; }
  fill(nav, Object.entries(PAGES).filter(([, p]) => !p.hidden).map(([name, p]) =>
    h("a", { href: `#/${name}`, "aria-current": name === active ? "page" : null }, p.label)));
  fill(document.getElementById("who"),
    h("span.who-name", { title: `API key ${getMe().id || ""}` }, getMe().name || ""),
    getMe().sites ? h("span.who-sites", { title: "The sites this key may see" }, getMe().sites.join(", ")) : null,
    h("span.role", { title: "The role of the signed-in API key" }, getRole()),
    h("button.link", { type: "button", onclick: signOut }, "Sign out"));
}

function signOut() {
  clearKey();
  location.hash = "#/signin";
  route();
}

function signInPage(message) {
  fill(document.getElementById("who"));
  renderNav(null);
  const input = h("input#key", { type: "password", autocomplete: "off", required: true, spellcheck: false,
    placeholder: "arbor_…", "aria-describedby": "key-help" });
  const remember = h("input#remember", { type: "checkbox" });
  const status = h("div", message ? errorBox(message) : null);
  const form = h("form.signin", {
    onsubmit: async (event) => {
      event.preventDefault();
      fill(status, h("p.muted", "Checking the key…"));
      try {
        const answer = await whoAmI(input.value.trim());
        setKey(input.value.trim(), remember.checked);
        setMe(answer);
        location.hash = "#/board";
      } catch (exc) {
        fill(status, errorBox(exc instanceof ApiError ? exc : new Error(String(exc))));
      }
    },
  },
    h("h1", "Sign in"),
    h("label", { for: "key" }, "API key"),
    input,
    h("p.muted#key-help", "Made with ", h("code", "arbor apikey create --role viewer --name …"),
      ". The dashboard shows what the key's role may do."),
    h("label.check", remember, " Remember on this computer"),
    h("button", { type: "submit" }, "Sign in"),
    status);
  fill(main, form);
  input.focus();
}

async function route() {
  const gen = ++generation;
  if (cleanup) { try { cleanup(); } catch { /* a page's cleanup never blocks navigation */ } cleanup = null; }
  const { name, arg, query } = parseHash();
  if (name === "signin" || !getKey()) { signInPage(); return; }
  const page = PAGES[name] || PAGES.board;
  renderNav(name);
  document.title = `${page.label} · Arbor`;
  fill(main, h("p.muted", "Loading…"));
  try {
    const module = await page.load();
    if (gen !== generation) return;
    cleanup = (await module.render(main, { arg, query, can })) || null;
  } catch (exc) {
    if (gen === generation) fill(main, errorBox(exc));
  }
}

window.addEventListener("arbor:unauthorized", () => {
  clearKey();
  signInPage(new ApiError(401, "unauthorized", "The key was refused (revoked or unknown); sign in again.", null));
});
window.addEventListener("hashchange", route);

async function start() {
  if (getKey()) {
    let answer = storedMe();
    if (!answer) {
      try { answer = await whoAmI(getKey()); } catch (exc) { signInPage(exc); return; }
    }
    setMe(answer);
  }
  route();
}
start();
