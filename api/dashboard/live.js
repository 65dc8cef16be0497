// Live fleet status: one source the board subscribes to.
//
// The API has no status stream yet (docs/api.md, "Not built yet": the WebSocket), so the source
// polls `GET /api/v1/machines` (one query for the whole fleet) and hands the board only the
// machines whose status changed. When the API gains a stream, only this module changes.
import { get } from "./api.js";

const FIELDS = ["status", "online", "status_since", "execution", "mode", "program", "part_count", "active_alarms", "last_seen"];

export const key = (m) => `${m.site}:${m.machine}`;

function changed(a, b) {
  return FIELDS.some((f) => a[f] !== b[f]);
}

/**
 * Poll every `intervalMs`; `onSnapshot(all)` once with the first answer, then
 * `onChanges(changedMachines, all, fetchMs)` after every poll that changed something, and
 * `onError(exc)` when a poll fails (polling goes on). Returns stop().
 */
export function fleetStatus({ intervalMs = 2000, site, onSnapshot, onChanges, onError }) {
  let known = new Map();
  let stopped = false;
  let timer = 0;
  let first = true;

  async function poll() {
    const started = performance.now();
    try {
      const machines = await get("machines", { site });
      if (stopped) return;
      const fetchMs = performance.now() - started;
      if (first) {
        first = false;
        known = new Map(machines.map((m) => [key(m), m]));
        onSnapshot(machines, fetchMs);
      } else {
        const diff = [];
        const next = new Map();
        for (const m of machines) {
          const k = key(m);
          const before = known.get(k);
          if (!before || changed(before, m)) diff.push(m);
          next.set(k, m);
        }
        const removed = [...known.keys()].filter((k) => !next.has(k));
        known = next;
        if (diff.length || removed.length) onChanges(diff, machines, fetchMs, removed);
      }
    } catch (exc) {
      if (!stopped && onError) onError(exc);
    }
    if (!stopped) timer = setTimeout(poll, intervalMs);
  }
  poll();
  return () => { stopped = true; clearTimeout(timer); };
}
