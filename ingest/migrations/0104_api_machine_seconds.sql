-- One machine's seconds per execution state over a window, for the API's
-- GET /machines/{m}/utilisation (api/machines.py, bench/api.py's util30d), in one call.
--
-- The API's general query (api/machines.py, _STATES_SQL: state_seconds() of migration 0006 for
-- the two partial hours at the window's edges, state_hour for the whole hours) is prepared once
-- per connection as a generic plan. For one machine that plan cost more to start than to run:
-- each state_seconds() call holds four scans of `event`, each over every chunk (22 for the
-- bench's 30 days; the probe for a value set long ago cannot be excluded at start), and
-- PostgreSQL's executor sets up every one of those chunk scans on each execution: ~2 of ~3 ms
-- per request. With custom plans it plans them instead (~2 ms). And the stored range, the marks
-- and the seconds were read in a repeatable-read transaction: five round trips.
--
-- This function is the common case of the same computation, with the same rules: the values in
-- force at each edge from `state_edge` (the stored boundary at or before the edge; the boundary
-- at `hi` itself is written only with the hour after it, so the one before it then), the
-- machine's execution and status events from that boundary to the edge's end (one index range
-- in the chunk or two that hold it), whole hours from `state_hour`; a window starting before the
-- stored hours reads its first part from events, with one probe per signal for the values in
-- force at its start (before every chunk in the bench). Every statement runs in the caller's
-- snapshot (a STABLE function), so one call needs no transaction; PL/pgSQL keeps each
-- statement's plan for the session, and `plan_cache_mode = force_generic_plan` keeps it generic,
-- so TimescaleDB excludes the chunks outside the edges when the plan starts.
--
-- `ok` is false where the API's general query must answer instead (`us` then means nothing):
-- nothing stored yet, a window that holds no whole stored hour, a late event of the machine
-- awaiting ingest's job at or before the last stored hour it reads (state_hour_dirty), or a
-- boundary the job has not stored for this machine (a machine added since). `us`: microseconds
-- per known Execution word in force (masked by status as _STATES_SQL does: a machine with status
-- events is unknown while not online), in `words`' order, words with none left out; `words` is
-- analytics.states.EXECUTION without UNAVAILABLE, as state_seconds() codes them
-- (tests/api/test_fleet_sql.py checks the answers against the general query, to the
-- microsecond, and against the analytics).
CREATE OR REPLACE FUNCTION api_machine_seconds(
    _mid integer, _start timestamptz, _end timestamptz, _until timestamptz, _words text[]
) RETURNS TABLE (ok boolean, us json)
LANGUAGE plpgsql STABLE SET plan_cache_mode = force_generic_plan AS $fn$
#variable_conflict use_column
DECLARE
    _lo timestamptz;
    _hi timestamptz;
    _a timestamptz;   -- the first whole stored hour
    _b timestamptz;   -- the end of the last one
    _b1 timestamptz;  -- the stored boundary at or before the window start (null: none)
    _probe timestamptz := '-infinity';  -- without it: the values in force at the start
    _lower1 timestamptz;  -- the first edge's events after this
BEGIN
    SELECT r.lo, r.hi INTO _lo, _hi FROM state_range r;
    IF NOT FOUND THEN
        RETURN QUERY SELECT false, NULL::json;
        RETURN;
    END IF;
    _a := time_bucket(INTERVAL '1 hour', _start);
    IF _a < _start THEN
        _a := _a + INTERVAL '1 hour';
    END IF;
    _a := greatest(_a, _lo);
    _b := least(time_bucket(INTERVAL '1 hour', _until), _hi);
    IF _a >= _b OR EXISTS (SELECT 1 FROM state_hour_dirty d
                            WHERE d.machine_id = _mid AND d.hour <= _b) THEN
        RETURN QUERY SELECT false, NULL::json;
        RETURN;
    END IF;
    IF time_bucket(INTERVAL '1 hour', _start) >= _lo THEN
        _b1 := time_bucket(INTERVAL '1 hour', _start);
        _lower1 := _b1 - INTERVAL '1 hour';
    ELSE
        _probe := _start;
        _lower1 := _start;
    END IF;
    RETURN QUERY
    WITH x AS MATERIALIZED (
        -- the edges [start, a) and [b, end), each with its stored boundary
        SELECT x.n, x.lo, x.hz, g.hour, g.ex, g.st
          FROM (VALUES (1, _start, _a, _a, _b1), (2, _b, _end, _until, _b)) AS x(n, lo, hi, hz, at)
          LEFT JOIN LATERAL (SELECT g.hour, g.ex, g.st FROM state_edge g
                              WHERE g.machine_id = _mid
                                AND g.hour IN (x.at, x.at - INTERVAL '1 hour')
                              ORDER BY g.hour DESC LIMIT 1) g ON true
         WHERE x.lo < x.hi
    ), pts AS (
        -- change points: the boundaries' values, then the events after them
        SELECT x.n, x.lo, x.hz, x.hour AS ts, false AS is_status, x.ex::int AS code
          FROM x WHERE x.ex IS NOT NULL
        UNION ALL
        SELECT x.n, x.lo, x.hz, x.hour, true, x.st::int FROM x WHERE x.st IS NOT NULL
        UNION ALL
        SELECT x.n, x.lo, x.hz, e.ts, e.signal = 'status',
               CASE WHEN e.signal = 'status' THEN (e.value IS NOT DISTINCT FROM 'online')::int
                    ELSE coalesce(array_position(_words, e.value), 0) END
          FROM x, (SELECT e.ts, e.signal, e.value FROM event e
                    WHERE e.machine_id = _mid AND e.signal IN ('execution', 'status')
                      AND e.ts > _lower1 AND e.ts < _a
                   UNION ALL
                   SELECT p.ts, s.signal, p.value
                     FROM (VALUES ('execution'), ('status')) AS s(signal)
                    CROSS JOIN LATERAL (SELECT e.ts, e.value FROM event e
                                         WHERE e.machine_id = _mid AND e.signal = s.signal
                                           AND e.ts <= _probe
                                         ORDER BY e.ts DESC LIMIT 1) p) e
         WHERE x.n = 1 AND e.ts > coalesce(x.hour, '-infinity')
        UNION ALL
        SELECT x.n, x.lo, x.hz, e.ts, e.signal = 'status',
               CASE WHEN e.signal = 'status' THEN (e.value IS NOT DISTINCT FROM 'online')::int
                    ELSE coalesce(array_position(_words, e.value), 0) END
          FROM x, event e
         WHERE x.n = 2 AND e.ts > x.hour
           AND e.machine_id = _mid AND e.signal IN ('execution', 'status')
           AND e.ts > _b - INTERVAL '1 hour' AND e.ts < _end
    ), coded AS (
        SELECT p.n, p.is_status, p.ts,
               (date_part('epoch', p.ts) * 1000000)::bigint AS t_us,
               (date_part('epoch', p.ts) * 1000000)::bigint * 16 + p.code AS k,
               (date_part('epoch', p.lo) * 1000000)::bigint AS lo_us,
               (date_part('epoch', p.hz) * 1000000)::bigint AS hz_us
          FROM pts p
    ), seg AS (
        -- as state_seconds(): the latest value of each signal by a running max() of
        -- (microseconds x 16 + code), each segment until the next change point, clipped to
        -- [the edge's start, its horizon)
        SELECT c.t_us, c.lo_us, c.hz_us,
               (max(c.k) FILTER (WHERE NOT c.is_status) OVER w) % 16 AS ex,
               (max(c.k) FILTER (WHERE c.is_status) OVER w) % 16 AS st,
               lead(c.t_us, 1, c.hz_us) OVER w AS next_us
          FROM coded c
        WINDOW w AS (PARTITION BY c.n ORDER BY c.ts, c.is_status ROWS UNBOUNDED PRECEDING)
    ), p AS (
        SELECT _words[s.ex] AS execution, s.st = 1 AS online,
               greatest(least(s.next_us, s.hz_us) - greatest(s.t_us, s.lo_us), 0) AS us
          FROM seg s
        UNION ALL
        -- summed as read (a hash of a few states), not sorted with the edges' rows: 1,175 rows
        -- for the bench's 30 days, and their sort was a fifth of the call
        SELECT h.execution, h.online, sum(h.us) FROM state_hour h
         WHERE h.machine_id = _mid AND h.hour >= _a AND h.hour < _b
         GROUP BY 1, 2
    ), s AS (
        SELECT p.execution, p.online, sum(p.us) AS us,
               bool_or(bool_or(p.online IS NOT NULL)) OVER () AS masked
          FROM p GROUP BY 1, 2
    )
    SELECT NOT EXISTS (SELECT 1 FROM x WHERE x.hour IS NULL AND (x.n = 2 OR _b1 IS NOT NULL)),
           (SELECT json_object_agg(k.execution, k.us ORDER BY array_position(_words, k.execution))
              FROM (SELECT s.execution, sum(s.us)::bigint AS us FROM s
                     WHERE s.execution IS NOT NULL AND (s.online OR NOT s.masked)
                     GROUP BY 1 HAVING sum(s.us) > 0) k);
END
$fn$;
