-- Retention for the stored hours (`state_hour`, `state_edge`; migrations 0005 and 0006).
--
-- They grew without end (~3 rows per machine and hour: 26 M rows a year for 1,000 machines).
-- They are plain tables, not hypertables: ingest's retention job deletes their hours older than
-- `keep` and moves `state_range.lo` up, and the job that stores hours does not fill them in again
-- from older events. Ten years by default, like `sample_1h`: they outlive `event` (2 years) on
-- purpose, so whole-hour utilisation of older windows still has an answer.
INSERT INTO retention_policy (hypertable, keep) VALUES ('state_hour', INTERVAL '10 years')
ON CONFLICT (hypertable) DO NOTHING;
