-- Latest value per machine and event signal, for the API's machine list and detail (bench/api.py:
-- reading them from `event` cost one or two index probes per machine and signal into a hypertable
-- of some 30 chunks, 0.6 s for 1,000 machines). Kept current by ingest's writer in the same
-- transaction as the events (ingest/writer.py: a row moves only to a newer event; a late or
-- replayed older one makes the writer recompute the key from `event` with event_latest_refresh).
-- Status changes are not here: `machine.status` is their latest value.
--
-- One row per (machine, signal) for value events (execution, controller_mode, program, part_count,
-- tool_number, ...: component = code = ''), and one per (machine, 'condition', component, code) for
-- conditions, so open alarms are the rows at WARNING / FAULT not cleared by a later clear-all
-- (code '') of their component.
CREATE TABLE IF NOT EXISTS event_latest (
    machine_id      integer     NOT NULL,
    signal          text        NOT NULL,
    component       text        NOT NULL DEFAULT '',
    code            text        NOT NULL DEFAULT '',
    ts              timestamptz,          -- the latest event (NULL only inside a writing transaction)
    value           text,
    value_num       double precision,
    level           text,
    native_severity text,
    qualifier       text,
    message         text,
    -- when the current value (conditions: level) began: the first of the trailing events with it,
    -- so a birth snapshot repeating the value does not restart it
    since           timestamptz,
    received_at     timestamptz,
    PRIMARY KEY (machine_id, signal, component, code)
);

-- Recompute the given keys exactly from `event` (what the writer does for late events; also the
-- backfill, bench/api.py's generator and tests that insert events with SQL).
CREATE OR REPLACE FUNCTION event_latest_refresh(
    machines integer[], signals text[], components text[], codes text[]
) RETURNS integer LANGUAGE sql AS $$
WITH k AS (
    SELECT DISTINCT * FROM unnest(machines, signals, components, codes) AS k(mid, signal, c, k)
), latest AS (
    SELECT k.mid, k.signal, k.c, k.k, x.*
      FROM k CROSS JOIN LATERAL (
          SELECT e.ts, e.value, e.value_num, e.level, e.native_severity, e.qualifier, e.message,
                 e.received_at
            FROM event e
           WHERE e.machine_id = k.mid AND e.signal = k.signal
             AND coalesce(e.component, '') = k.c AND coalesce(e.code, '') = k.k
           ORDER BY e.ts DESC LIMIT 1) x
), up AS (
    INSERT INTO event_latest AS l (machine_id, signal, component, code, ts, value, value_num,
                                   level, native_severity, qualifier, message, since, received_at)
    SELECT l.mid, l.signal, l.c, l.k, l.ts, l.value, l.value_num, l.level, l.native_severity,
           l.qualifier, l.message,
           (SELECT min(e.ts) FROM event e
             WHERE e.machine_id = l.mid AND e.signal = l.signal
               AND coalesce(e.component, '') = l.c AND coalesce(e.code, '') = l.k
               AND e.ts > coalesce(
                   (SELECT max(d.ts) FROM event d
                     WHERE d.machine_id = l.mid AND d.signal = l.signal
                       AND coalesce(d.component, '') = l.c AND coalesce(d.code, '') = l.k
                       AND d.ts < l.ts
                       AND (d.value, d.level) IS DISTINCT FROM (l.value, l.level)),
                   '-infinity')),
           l.received_at
      FROM latest l
    ON CONFLICT (machine_id, signal, component, code) DO UPDATE SET
        ts = EXCLUDED.ts, value = EXCLUDED.value, value_num = EXCLUDED.value_num,
        level = EXCLUDED.level, native_severity = EXCLUDED.native_severity,
        qualifier = EXCLUDED.qualifier, message = EXCLUDED.message, since = EXCLUDED.since,
        received_at = EXCLUDED.received_at
    RETURNING 1
)
SELECT count(*)::integer FROM up
$$;

-- Every key of the given machines (NULL: all machines).
CREATE OR REPLACE FUNCTION event_latest_refresh(machines integer[]) RETURNS integer
LANGUAGE sql AS $$
SELECT event_latest_refresh(array_agg(machine_id), array_agg(signal), array_agg(c),
                            array_agg(k))
  FROM (SELECT DISTINCT machine_id, signal, coalesce(component, '') AS c,
                        coalesce(code, '') AS k
          FROM event
         WHERE signal <> 'status' AND (machines IS NULL OR machine_id = ANY(machines))) keys
$$;

-- Backfill from the events stored so far.
SELECT event_latest_refresh(NULL::integer[]);
