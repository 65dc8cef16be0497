-- Seconds per execution state per machine and hour, for the API's utilisation routes (bench/api.py:
-- the fleet's day computed from some 250,000 execution and status events took about a second, one
-- machine's 30 days tens of ms; whole hours read from here cost a few index probes). Both editions
-- (the community edition's continuous aggregates cannot carry a value in force across buckets).
--
-- state_seconds() is THE computation (the API's fleet route calls it for whole windows and for the
-- partial hours at a window's edges; ingest's job, ingest/jobs.py, stores its hourly form here):
-- every execution and status event is a change point; the value in force at each point is the
-- running max() over the machine's earlier points of (microseconds since the epoch x 16 + the
-- value's code), one per signal: the code of the latest event (one sort, no self-join). A segment
-- lasts until the machine's next change point (lead()), clipped to the horizon. The value in force
-- at the window start counts from it; time before a machine's first event has no row (unknown).
-- Durations are whole microseconds (bigint), so hours summed give exactly the window's figure.
-- Rows: (machine, hour or the window start, the known Execution word in force or NULL (none yet,
-- UNAVAILABLE, not a catalogue word), status in force (true online, false not, NULL none yet),
-- microseconds). The masking (a machine with status rows is unknown while not online) is the
-- caller's, on these few rows (api/machines.py).
--
-- The word list is analytics.states.EXECUTION without UNAVAILABLE (tests/api/test_fleet_sql.py
-- checks it).
CREATE OR REPLACE FUNCTION state_seconds(
    ids integer[], lo timestamptz, hi timestamptz, horizon timestamptz, hourly boolean
) RETURNS TABLE (machine_id integer, hour timestamptz, execution text, online boolean, us bigint)
LANGUAGE sql STABLE AS $$
WITH near AS MATERIALIZED (
    -- the values in force at the window start, where set less than an hour before it: one index
    -- range per machine and signal in the chunk or two that hold that hour
    SELECT DISTINCT ON (e.machine_id, e.signal) e.machine_id AS id, e.signal, e.ts, e.value
      FROM event e
     WHERE e.machine_id = ANY(ids) AND e.signal IN ('execution', 'status')
       AND e.ts <= lo AND e.ts > lo - INTERVAL '1 hour'
     ORDER BY e.machine_id, e.signal, e.ts DESC
), missing AS MATERIALIZED (
    SELECT i.id, s.signal FROM unnest(ids) AS i(id)
     CROSS JOIN (VALUES ('execution'), ('status')) AS s(signal)
     WHERE NOT EXISTS (SELECT 1 FROM near n WHERE n.id = i.id AND n.signal = s.signal)
), ev AS (
    SELECT n.id, n.signal, greatest(n.ts, lo) AS ts, n.value FROM near n
    UNION ALL
    -- older ones (e.g. a machine off since the weekend): one probe each, through all chunks
    SELECT m.id, m.signal, greatest(x.ts, lo), x.value FROM missing m
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

-- Whole hours [lo, hi) of state_range, every machine: state_seconds(..., hourly) stored.
CREATE TABLE IF NOT EXISTS state_hour (
    machine_id integer     NOT NULL,
    hour       timestamptz NOT NULL,
    execution  text,
    online     boolean,
    us         bigint      NOT NULL
);
CREATE INDEX IF NOT EXISTS state_hour_machine_hour ON state_hour (machine_id, hour);

-- The hours state_hour holds for every machine (one row; none before the first job run).
CREATE TABLE IF NOT EXISTS state_range (
    one boolean     PRIMARY KEY DEFAULT true CHECK (one),
    lo  timestamptz NOT NULL,
    hi  timestamptz NOT NULL
);

-- Machines and hours whose stored figures may be wrong: an execution or status event written
-- after its hour had ended (late, replayed, imported) changes that hour and the following ones
-- until the signal's next event. The job recomputes the machine from the hour on; until then the
-- API computes such machines from `event`. Marked by a trigger, in the writing transaction, for
-- every such event whatever the job's progress, so no interleaving of the two loses one (the job
-- only stores hours that ended `settle` ago, longer than any ingest transaction).
CREATE TABLE IF NOT EXISTS state_hour_dirty (
    machine_id integer     NOT NULL,
    hour       timestamptz NOT NULL,
    PRIMARY KEY (machine_id, hour)
);

CREATE OR REPLACE FUNCTION state_hour_mark() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO state_hour_dirty (machine_id, hour)
    VALUES (NEW.machine_id, time_bucket(INTERVAL '1 hour', NEW.ts))
    ON CONFLICT DO NOTHING;
    RETURN NULL;
END
$$;

-- Live events (of the current hour) skip the function call altogether.
DROP TRIGGER IF EXISTS event_state_hour_mark ON event;
CREATE TRIGGER event_state_hour_mark AFTER INSERT ON event FOR EACH ROW
    WHEN (NEW.signal IN ('execution', 'status')
          AND NEW.ts < time_bucket(INTERVAL '1 hour', clock_timestamp()))
    EXECUTE FUNCTION state_hour_mark();

-- Recompute hours [lo, hi) of `machines` (NULL: every machine); returns the rows written.
CREATE OR REPLACE FUNCTION state_hour_refresh(
    lo timestamptz, hi timestamptz, machines integer[] DEFAULT NULL
) RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    ids integer[] := coalesce(machines, ARRAY(SELECT id FROM machine ORDER BY id));
    n bigint;
BEGIN
    DELETE FROM state_hour h WHERE h.hour >= lo AND h.hour < hi AND h.machine_id = ANY(ids);
    INSERT INTO state_hour (machine_id, hour, execution, online, us)
    SELECT * FROM state_seconds(ids, lo, hi, hi, true);
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END
$$;
