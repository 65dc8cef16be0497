-- The state in force at the start of every stored hour, per machine, for the API's utilisation
-- routes (bench/api.py): a window's partial hours at its edges need the execution and status in
-- force at the window's start and at its last whole hour. 0005's state_seconds() read them from
-- the hour of events before each edge (14,000 rows for 1,000 machines) and, for a value set
-- earlier (a status set at 05:45, read at 22:00), probed the machine's history through every
-- chunk: 40-50 ms for the fleet's last partial hour, now 21-24 ms (one index range here and the
-- few events since the boundary). Stored by the same job, in the same transaction and over the
-- same hours (`state_range`) as `state_hour` (ingest's refresh_state_hours calls
-- state_hour_refresh), redone from the same dirty marks: a late event at ts marks the hour of
-- ts, and every boundary it changes (those at or after ts) lies in that hour or after it.
--
-- Codes, as state_seconds() ranks values: `ex` 0 for UNAVAILABLE, a null or a word outside the
-- catalogue, 1-9 for the known words in analytics.states.EXECUTION order; `st` 1 online, 0 not;
-- NULL where the machine had no event of the signal at or before `hour`. A row per machine known
-- when the hours were stored; a machine without a row (added since) is probed as before.
CREATE TABLE IF NOT EXISTS state_edge (
    machine_id integer     NOT NULL,
    hour       timestamptz NOT NULL,
    ex         smallint,
    st         smallint,
    -- hour first: a window's edge reads one boundary of every machine, rows the job writes
    -- together (one hour of the whole fleet at a time), so neighbours in the index and the heap
    PRIMARY KEY (hour, machine_id)
);

-- The state in force at each hour boundary in [lo, hi) (events at or before it), of `ids`: one
-- probe per machine and signal for the value in force at lo, then one pass (running max() of
-- microseconds x 16 + code, as state_seconds) over the events up to the last boundary, each
-- boundary sorted after the events stamped with its very instant.
CREATE OR REPLACE FUNCTION state_edges(ids integer[], lo timestamptz, hi timestamptz)
RETURNS TABLE (machine_id integer, hour timestamptz, ex smallint, st smallint)
LANGUAGE sql STABLE AS $$
WITH pts AS (
    SELECT i.id, s.signal, lo AS ts, x.value, false AS tick
      FROM unnest(ids) AS i(id)
     CROSS JOIN (VALUES ('execution'), ('status')) AS s(signal)
     CROSS JOIN LATERAL (SELECT e.value FROM event e
                          WHERE e.machine_id = i.id AND e.signal = s.signal AND e.ts <= lo
                          ORDER BY e.ts DESC LIMIT 1) x
    UNION ALL
    SELECT e.machine_id, e.signal, e.ts, e.value, false FROM event e
     WHERE e.machine_id = ANY(ids) AND e.signal IN ('execution', 'status')
       AND e.ts > lo AND e.ts <= hi - INTERVAL '1 hour'
    UNION ALL
    SELECT i.id, 'tick', t, NULL, true FROM unnest(ids) AS i(id)
     CROSS JOIN generate_series(lo, hi - INTERVAL '1 hour', INTERVAL '1 hour') AS t
), coded AS (
    SELECT p.id, p.signal, p.ts, p.tick,
           (date_part('epoch', p.ts) * 1000000)::bigint * 16
           + CASE WHEN p.tick THEN NULL
                  WHEN p.signal = 'status' THEN (p.value IS NOT DISTINCT FROM 'online')::int
                  ELSE coalesce(array_position(ARRAY['READY', 'ACTIVE', 'INTERRUPTED', 'FEED_HOLD',
                       'STOPPED', 'OPTIONAL_STOP', 'PROGRAM_STOPPED', 'PROGRAM_COMPLETED', 'WAIT'],
                       p.value), 0) END AS k
      FROM pts p
), run AS (
    SELECT c.id, c.ts, c.tick,
           max(c.k) FILTER (WHERE c.signal = 'execution') OVER w AS kx,
           max(c.k) FILTER (WHERE c.signal = 'status') OVER w AS ks
      FROM coded c
    WINDOW w AS (PARTITION BY c.id ORDER BY c.ts, c.tick ROWS UNBOUNDED PRECEDING)
)
SELECT r.id, r.ts, (r.kx % 16)::smallint, (r.ks % 16)::smallint FROM run r WHERE r.tick
$$;

-- 0005's computation, the values in force at `lo` taken from `state_edge` where the boundary
-- at or before `lo` is stored and no late event of the machine at or before it awaits the job:
-- the boundary's value, or the latest event between it and `lo` (a window's last partial hour
-- starts at a boundary and reads no event before it at all). Elsewhere (a window outside the
-- stored hours, a machine added since, one marked dirty, or the job's own refresh, which deletes
-- the boundaries it redoes first) as before: the hour before `lo`, else one probe.
CREATE OR REPLACE FUNCTION state_seconds(
    ids integer[], lo timestamptz, hi timestamptz, horizon timestamptz, hourly boolean
) RETURNS TABLE (machine_id integer, hour timestamptz, execution text, online boolean, us bigint)
LANGUAGE sql STABLE AS $$
WITH edge AS MATERIALIZED (
    SELECT g.machine_id AS id, g.ex, g.st FROM state_edge g
     WHERE g.hour = time_bucket(INTERVAL '1 hour', lo) AND g.machine_id = ANY(ids)
       AND NOT EXISTS (SELECT 1 FROM state_hour_dirty d
                        WHERE d.machine_id = g.machine_id
                          AND d.hour <= time_bucket(INTERVAL '1 hour', lo))
), unstored AS MATERIALIZED (
    SELECT i.id FROM unnest(ids) AS i(id) WHERE NOT EXISTS (SELECT 1 FROM edge g WHERE g.id = i.id)
), near AS MATERIALIZED (
    -- the values set since the stored boundary, or in the hour before `lo`: one index range per
    -- machine and signal in the chunk or two that hold that hour
    SELECT DISTINCT ON (e.machine_id, e.signal) e.machine_id AS id, e.signal, e.ts, e.value
      FROM event e
     WHERE e.machine_id = ANY(ARRAY(SELECT g.id FROM edge g))
       AND e.signal IN ('execution', 'status')
       AND e.ts <= lo AND e.ts > time_bucket(INTERVAL '1 hour', lo)
     ORDER BY e.machine_id, e.signal, e.ts DESC
), near_unstored AS MATERIALIZED (
    SELECT DISTINCT ON (e.machine_id, e.signal) e.machine_id AS id, e.signal, e.ts, e.value
      FROM event e
     WHERE e.machine_id = ANY(ARRAY(SELECT u.id FROM unstored u))
       AND e.signal IN ('execution', 'status')
       AND e.ts <= lo AND e.ts > lo - INTERVAL '1 hour'
     ORDER BY e.machine_id, e.signal, e.ts DESC
), missing AS MATERIALIZED (
    SELECT i.id, s.signal FROM unnest(ids) AS i(id)
     CROSS JOIN (VALUES ('execution'), ('status')) AS s(signal)
     WHERE NOT EXISTS (SELECT 1 FROM near n WHERE n.id = i.id AND n.signal = s.signal)
       AND NOT EXISTS (SELECT 1 FROM near_unstored n WHERE n.id = i.id AND n.signal = s.signal)
), ev AS (
    SELECT n.id, n.signal, greatest(n.ts, lo) AS ts, n.value FROM near n
    UNION ALL
    SELECT n.id, n.signal, greatest(n.ts, lo), n.value FROM near_unstored n
    UNION ALL
    -- nothing set since the boundary: its stored code, as a value that codes to it again
    SELECT m.id, m.signal, lo,
           CASE WHEN m.signal = 'status' THEN CASE g.st WHEN 1 THEN 'online' ELSE 'offline' END
                ELSE (ARRAY['READY', 'ACTIVE', 'INTERRUPTED', 'FEED_HOLD', 'STOPPED',
                            'OPTIONAL_STOP', 'PROGRAM_STOPPED', 'PROGRAM_COMPLETED',
                            'WAIT'])[g.ex] END  -- code 0: null, which codes to 0
      FROM missing m JOIN edge g ON g.id = m.id
     WHERE (CASE m.signal WHEN 'status' THEN g.st ELSE g.ex END) IS NOT NULL
    UNION ALL
    -- not stored and set earlier (e.g. a machine off since the weekend): one probe each,
    -- through all chunks
    SELECT m.id, m.signal, greatest(x.ts, lo), x.value
      FROM missing m
      JOIN unstored u ON u.id = m.id
     CROSS JOIN LATERAL (SELECT e.ts, e.value FROM event e
                          WHERE e.machine_id = m.id AND e.signal = m.signal
                            AND e.ts <= lo - INTERVAL '1 hour'
                          ORDER BY e.ts DESC LIMIT 1) x
    UNION ALL
    SELECT e.machine_id, e.signal, e.ts, e.value FROM event e
     WHERE e.machine_id = ANY(ids) AND e.signal IN ('execution', 'status')
       AND e.ts > lo AND e.ts < hi
), pts AS MATERIALIZED (
    SELECT * FROM ev
    UNION ALL
    -- hourly: each hour boundary is a change point without a value, so no segment spans hours
    SELECT i.id, 'tick', t, NULL FROM (SELECT DISTINCT ev.id FROM ev) i
     CROSS JOIN generate_series(time_bucket(INTERVAL '1 hour', lo) + INTERVAL '1 hour',
                                least(hi, horizon) - INTERVAL '1 microsecond',
                                INTERVAL '1 hour') AS t
     WHERE hourly
), coded AS (
    SELECT p.id, p.signal = 'status' AS is_status, p.ts,
           (date_part('epoch', p.ts) * 1000000)::bigint AS t_us,
           (date_part('epoch', p.ts) * 1000000)::bigint * 16
           + CASE WHEN p.signal = 'tick' THEN NULL  -- no value: the running max() skips it
                  WHEN p.signal = 'status' THEN (p.value IS NOT DISTINCT FROM 'online')::int
                  ELSE coalesce(array_position(ARRAY['READY', 'ACTIVE', 'INTERRUPTED', 'FEED_HOLD',
                       'STOPPED', 'OPTIONAL_STOP', 'PROGRAM_STOPPED', 'PROGRAM_COMPLETED', 'WAIT'],
                       p.value), 0) END AS k
      FROM pts p
), seg AS (
    SELECT c.id, c.ts, c.t_us,
           (max(c.k) FILTER (WHERE NOT c.is_status) OVER w) % 16 AS ex,
           (max(c.k) FILTER (WHERE c.is_status) OVER w) % 16 AS st,
           lead(c.t_us, 1, (date_part('epoch', horizon) * 1000000)::bigint) OVER w AS next_us
      FROM coded c
    WINDOW w AS (PARTITION BY c.id ORDER BY c.ts, c.is_status ROWS UNBOUNDED PRECEDING)
)
SELECT s.id,
       CASE WHEN hourly THEN time_bucket(INTERVAL '1 hour', s.ts) ELSE lo END,
       (ARRAY['READY', 'ACTIVE', 'INTERRUPTED', 'FEED_HOLD', 'STOPPED', 'OPTIONAL_STOP',
              'PROGRAM_STOPPED', 'PROGRAM_COMPLETED', 'WAIT'])[s.ex],
       s.st = 1,
       sum(greatest(least(s.next_us, (date_part('epoch', horizon) * 1000000)::bigint) - s.t_us,
                    0))::bigint
  FROM seg s
 GROUP BY 1, 2, 3, 4
$$;

-- 0005's refresh, the boundaries of the same hours with it (deleted before state_seconds runs,
-- so the refresh itself reads the values in force from events).
CREATE OR REPLACE FUNCTION state_hour_refresh(
    lo timestamptz, hi timestamptz, machines integer[] DEFAULT NULL
) RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    ids integer[] := coalesce(machines, ARRAY(SELECT id FROM machine ORDER BY id));
    n bigint;
BEGIN
    DELETE FROM state_hour h WHERE h.hour >= lo AND h.hour < hi AND h.machine_id = ANY(ids);
    DELETE FROM state_edge g WHERE g.hour >= lo AND g.hour < hi AND g.machine_id = ANY(ids);
    INSERT INTO state_hour (machine_id, hour, execution, online, us)
    SELECT * FROM state_seconds(ids, lo, hi, hi, true);
    GET DIAGNOSTICS n = ROW_COUNT;
    IF lo < hi THEN
        INSERT INTO state_edge (machine_id, hour, ex, st)
        SELECT * FROM state_edges(ids, lo, hi) e ORDER BY e.hour, e.machine_id;
    END IF;
    RETURN n;
END
$$;

-- The boundaries of the hours already stored (a database the job has been keeping).
INSERT INTO state_edge (machine_id, hour, ex, st)
SELECT e.* FROM state_range r,
       state_edges(ARRAY(SELECT id FROM machine ORDER BY id), r.lo, r.hi) e
 WHERE r.lo < r.hi
 ORDER BY e.hour, e.machine_id;
