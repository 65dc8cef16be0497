-- state_hour's index with the figures in it, for the API's utilisation routes (bench/api.py).
--
-- The routes read state_hour by machine over a range of hours (720 hours of one
-- machine, 24 of every machine), rows the job writes an hour of the fleet at a time, so each on
-- another heap page: 1,182 buffers and 6.6 ms for one machine's 30 days, 46,000 and 85 ms for
-- the fleet's day. With the figures in the index: 12 buffers and 0.3-0.8 ms, 3,300 and 24 ms
-- (index-only, once vacuum has marked the pages visible; PostgreSQL's autovacuum does after
-- inserts). It serves the job's deletes as the old index did.
CREATE INDEX IF NOT EXISTS state_hour_machine_hour_states
    ON state_hour (machine_id, hour) INCLUDE (execution, online, us);
DROP INDEX IF EXISTS state_hour_machine_hour;

