// Live status and telemetry from the API's WebSocket `/api/v1/stream` (docs/api.md, "Live stream").
//
// `liveStream()` keeps one socket open: it authenticates with a first message (never the URL),
// subscribes, hands status and telemetry to the page, reconnects with exponential backoff and
// jitter when the socket drops (a ping every 15 s finds a dead one), and reports its mode for
// the page's "live / reconnecting" indicator. `fleetStatus()` builds the status board's source on
// it and falls back to polling `GET /machines` only while the socket cannot be opened (no broker
// behind the API, a proxy refusing WebSockets, repeated failures), retrying the socket meanwhile.
import { get, getKey } from "./api.js";

// What a view shows of a machine (`last_seen` is not shown, and the stream does not push it alone).
const FIELDS = ["status", "online", "execution", "mode", "program", "part_count", "active_alarms"];
const BACKOFF_MS = [500, 1000, 2000, 4000, 8000, 15000];
const PING_MS = 15_000;
const DEAD_MS = 40_000;
/** Failed attempts in a row after which the board polls while it keeps retrying the socket. */
const POLL_AFTER_FAILURES = 2;

export const key = (m) => `${m.site}:${m.machine}`;

function changed(a, b) {
  // Times compare as instants: REST writes "+00:00", the stream "Z".
  return FIELDS.some((f) => a[f] !== b[f]) || instant(a.status_since) !== instant(b.status_since);
}

function instant(iso) {
  return iso ? Date.parse(iso) : null;
}

function streamUrl() {
  return `${location.protocol === "https:" ? "wss:" : "ws:"}//${location.host}/api/v1/stream`;
}

/** Figures of the socket for tests and the indicator's tooltip. */
const stats = (window.__arborStream = window.__arborStream || { opened: 0, closes: [], messages: 0, mode: "idle" });

/**
 * One live subscription. `subscription` = {machines, sites?, signals?} as the stream takes it.
 * Callbacks: `onSubscribed(machineRefs)` after each (re)subscription, `onStatus(message)`,
 * `onTelemetry(message)`, `onMode(mode, detail)` with mode "connecting", "live", "reconnecting"
 * or "closed", `onUnavailable(reason)` when an attempt failed before the server said `ready`
 * (the caller may poll meanwhile). Returns {stop(), reconnectNow()}.
 */
export function liveStream({ subscription, onSubscribed, onStatus, onTelemetry, onMode, onUnavailable, onReady }) {
  let ws = null;
  let stopped = false;
  let failures = 0;
  let retry = 0;
  let pinger = 0;
  let lastMessage = 0;

  const mode = (m, detail = "") => { stats.mode = m; onMode?.(m, detail); };

  function schedule(reason) {
    const base = BACKOFF_MS[Math.min(failures - 1, BACKOFF_MS.length - 1)];
    const wait = Math.round(base * (0.75 + Math.random() * 0.5));
    mode("reconnecting", `${reason}; retrying in ${(wait / 1000).toFixed(1)} s`);
    retry = setTimeout(open, wait);
  }

  function open() {
    if (stopped) return;
    let ready = false;
    mode(failures ? "reconnecting" : "connecting", failures ? `attempt ${failures + 1}` : "");
    try {
      ws = new WebSocket(streamUrl());
    } catch (exc) {
      failures++;
      onUnavailable?.(String(exc.message || exc), failures);
      schedule("the socket could not be opened");
      return;
    }
    const socket = ws;
    socket.onopen = () => {
      stats.opened++;
      lastMessage = Date.now();
      socket.send(JSON.stringify({ type: "auth", key: getKey() }));
    };
    socket.onmessage = (event) => {
      lastMessage = Date.now();
      stats.messages++;
      let m;
      try { m = JSON.parse(event.data); } catch { return; }
      if (m.type === "status") onStatus?.(m);
      else if (m.type === "telemetry") onTelemetry?.(m);
      else if (m.type === "ready") {
        ready = true;
        failures = 0;
        stats.brokerConnected = m.broker_connected;
        socket.send(JSON.stringify({ type: "subscribe", ...subscription }));
        onReady?.(m);
        mode("live", m.broker_connected ? "" : "the API's broker link is down");
      } else if (m.type === "subscribed") onSubscribed?.(m.machines);
      else if (m.type === "error") console.warn(`stream: ${m.message} [${m.code}]`);
    };
    socket.onclose = (event) => {
      clearInterval(pinger);
      stats.closes.push(event.code);
      if (stopped || socket !== ws) return;
      ws = null;
      if (event.code === 4401) {  // the key was revoked: back to sign-in, as REST does
        mode("closed", event.reason);
        window.dispatchEvent(new CustomEvent("arbor:unauthorized"));
        return;
      }
      failures++;
      const reason = event.reason || `closed (${event.code})`;
      if (!ready) onUnavailable?.(reason, failures);
      schedule(reason);
    };
    clearInterval(pinger);
    pinger = setInterval(() => {
      if (socket.readyState !== WebSocket.OPEN) return;
      if (Date.now() - lastMessage > DEAD_MS) { socket.close(4000, "no answer to pings"); return; }
      socket.send(JSON.stringify({ type: "ping", id: Date.now() }));
    }, PING_MS);
  }

  open();
  return {
    stop() {
      stopped = true;
      clearTimeout(retry);
      clearInterval(pinger);
      if (ws) ws.close(1000, "page left");
      ws = null;
      mode("closed");
    },
    /** Drop the socket as a network failure would (tests, and the indicator's "reconnect"). */
    drop() { if (ws) ws.close(4000, "dropped by the page"); },
    resubscribe(next) {
      subscription = next;
      if (ws && ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify({ type: "subscribe", ...subscription }));
    },
  };
}

/**
 * The fleet's status for the board: `onSnapshot(all)` once, then `onChanges(changed, fetchMs,
 * removed)` for every batch of changes (one batch per animation frame at most), `onMode(mode,
 * detail)` for the indicator ("connecting", "live", "reconnecting", "polling"), `onError(exc)`
 * when a poll fails. Returns stop().
 */
export function fleetStatus({ site, intervalMs = 2000, onSnapshot, onChanges, onMode, onError }) {
  let known = new Map();
  let first = true;
  let stopped = false;
  let pending = new Map();
  let flushQueued = false;
  let waiting = null;  // machines of the (re)subscription whose snapshot has not arrived yet
  let pollTimer = 0;
  let polling = false;
  let live = false;

  function takeAll(machines) {
    if (first) {
      first = false;
      known = new Map(machines.map((m) => [key(m), m]));
      onSnapshot(machines);
      return;
    }
    const next = new Map(machines.map((m) => [key(m), m]));
    const diff = machines.filter((m) => !known.has(key(m)) || changed(known.get(key(m)), m));
    const removed = [...known.keys()].filter((k) => !next.has(k));
    known = next;
    if (diff.length || removed.length) onChanges(diff, removed);
  }

  function flush() {
    flushQueued = false;
    if (stopped || !pending.size) return;
    const batch = [...pending.values()];
    pending = new Map();
    const diff = batch.filter((m) => !known.has(key(m)) || changed(known.get(key(m)), m));
    for (const m of batch) known.set(key(m), m);
    if (diff.length) onChanges(diff, []);
  }

  // --- the first view: one REST request, in parallel with the socket's subscription -----------
  // Whichever full view comes first is painted; the stream's snapshot is then diffed against it
  // (a REST answer after the stream's snapshot is ignored: it may be older).
  get("machines", { site }).then((machines) => {
    if (!stopped && first) takeAll(machines);
  }, () => { /* the stream's snapshot, or polling, will paint */ });

  // --- the socket -----------------------------------------------------------------------------
  const snapshot = new Map();
  const stream = liveStream({
    subscription: { machines: ["*"], ...(site ? { sites: [site] } : {}) },
    onSubscribed(refs) {
      waiting = new Set(refs);
      snapshot.clear();
      if (!refs.length) finishSnapshot();
    },
    onStatus(m) {
      const k = key(m);
      if (waiting) {
        snapshot.set(k, m);
        waiting.delete(k);
        if (!waiting.size) finishSnapshot();
        return;
      }
      pending.set(k, m);
      if (!flushQueued) { flushQueued = true; requestAnimationFrame(flush); }
    },
    onMode(m, detail) {
      live = m === "live";
      if (live) stopPolling();
      if (!polling) onMode?.(m, detail);
    },
    onUnavailable(reason, failures) {
      if (failures >= POLL_AFTER_FAILURES || first) startPolling(reason);
    },
  });

  function finishSnapshot() {
    // The whole subscribed fleet as the stream sees it: the first view, or after a reconnect
    // the differences against what the page shows (changes missed while the socket was down).
    const machines = [...snapshot.values()];
    waiting = null;
    snapshot.clear();
    pending = new Map();
    takeAll(machines);
  }

  // --- the fallback ---------------------------------------------------------------------------
  async function poll() {
    const started = performance.now();
    try {
      const machines = await get("machines", { site });
      if (stopped || !polling) return;
      window.__arborStream.lastPollMs = performance.now() - started;
      takeAll(machines);
    } catch (exc) {
      if (!stopped && onError) onError(exc);
    }
    if (!stopped && polling) pollTimer = setTimeout(poll, intervalMs);
  }
  function startPolling(reason) {
    if (polling || live || stopped) return;
    polling = true;
    onMode?.("polling", `the live stream is unavailable (${reason}); polling every ${intervalMs / 1000} s and retrying it`);
    poll();
  }
  function stopPolling() {
    if (!polling) return;
    polling = false;
    clearTimeout(pollTimer);
  }

  return {
    stop() { stopped = true; stopPolling(); stream.stop(); },
    drop: () => stream.drop(),
  };
}
