-- Rollups (1 min, 1 h) and retention.
-- Community (timescale-licensed) TimescaleDB: continuous aggregates with refresh policies and
-- compression of `sample` and `sample_extra` after a day. Apache edition: plain hypertables with
-- the same columns, filled by ingest's own rollup job (ingest/jobs.py). Either way the API reads
-- `sample_1m` / `sample_1h` with the same columns: bucket, machine_id, n, <signal>_avg/_min/_max.
-- Retention for every table is a row of `retention_policy`, applied by ingest's job with
-- drop_chunks (both editions), and configurable at run time (ARBOR_INGEST_RETENTION).

CREATE TABLE IF NOT EXISTS retention_policy (
    hypertable text     PRIMARY KEY,
    keep       interval NOT NULL CHECK (keep > INTERVAL '0')
);
INSERT INTO retention_policy (hypertable, keep) VALUES
    ('sample', INTERVAL '90 days'), ('sample_extra', INTERVAL '90 days'),
    ('event', INTERVAL '2 years'), ('message_ledger', INTERVAL '30 days'),
    ('dead_letter', INTERVAL '30 days'), ('sample_1m', INTERVAL '1 year'),
    ('sample_1h', INTERVAL '10 years')
ON CONFLICT (hypertable) DO NOTHING;

-- Where the Apache-edition rollup job has got to (per rollup): buckets before it are final.
CREATE TABLE IF NOT EXISTS rollup_watermark (
    rollup     text        PRIMARY KEY,
    done_until timestamptz NOT NULL
);
-- Buckets to redo because late (historical) samples landed behind the watermark.
CREATE TABLE IF NOT EXISTS rollup_dirty (
    machine_id integer     NOT NULL,
    lo         timestamptz NOT NULL,
    hi         timestamptz NOT NULL,
    noted_at   timestamptz NOT NULL DEFAULT now()
);
DO $do$
BEGIN
  IF coalesce(current_setting('timescaledb.license', true), 'apache') = 'timescale' THEN
    EXECUTE $q$
      CREATE MATERIALIZED VIEW sample_1m WITH (timescaledb.continuous) AS
      SELECT time_bucket(INTERVAL '1 minute', ts) AS bucket, machine_id, count(*) AS n,
        avg(spindle_speed) AS spindle_speed_avg, min(spindle_speed) AS spindle_speed_min, max(spindle_speed) AS spindle_speed_max,
        avg(spindle_speed_command) AS spindle_speed_command_avg, min(spindle_speed_command) AS spindle_speed_command_min, max(spindle_speed_command) AS spindle_speed_command_max,
        avg(spindle_override) AS spindle_override_avg, min(spindle_override) AS spindle_override_min, max(spindle_override) AS spindle_override_max,
        avg(spindle_load) AS spindle_load_avg, min(spindle_load) AS spindle_load_min, max(spindle_load) AS spindle_load_max,
        avg(spindle_temperature) AS spindle_temperature_avg, min(spindle_temperature) AS spindle_temperature_min, max(spindle_temperature) AS spindle_temperature_max,
        avg(feedrate) AS feedrate_avg, min(feedrate) AS feedrate_min, max(feedrate) AS feedrate_max,
        avg(feedrate_command) AS feedrate_command_avg, min(feedrate_command) AS feedrate_command_min, max(feedrate_command) AS feedrate_command_max,
        avg(feed_override) AS feed_override_avg, min(feed_override) AS feed_override_min, max(feed_override) AS feed_override_max,
        avg(rapid_override) AS rapid_override_avg, min(rapid_override) AS rapid_override_min, max(rapid_override) AS rapid_override_max,
        avg(position_x) AS position_x_avg, min(position_x) AS position_x_min, max(position_x) AS position_x_max,
        avg(position_y) AS position_y_avg, min(position_y) AS position_y_min, max(position_y) AS position_y_max,
        avg(position_z) AS position_z_avg, min(position_z) AS position_z_min, max(position_z) AS position_z_max,
        avg(position_a) AS position_a_avg, min(position_a) AS position_a_min, max(position_a) AS position_a_max,
        avg(position_b) AS position_b_avg, min(position_b) AS position_b_min, max(position_b) AS position_b_max,
        avg(position_c) AS position_c_avg, min(position_c) AS position_c_min, max(position_c) AS position_c_max,
        avg(load_x) AS load_x_avg, min(load_x) AS load_x_min, max(load_x) AS load_x_max,
        avg(load_y) AS load_y_avg, min(load_y) AS load_y_min, max(load_y) AS load_y_max,
        avg(load_z) AS load_z_avg, min(load_z) AS load_z_min, max(load_z) AS load_z_max,
        avg(load_a) AS load_a_avg, min(load_a) AS load_a_min, max(load_a) AS load_a_max,
        avg(load_b) AS load_b_avg, min(load_b) AS load_b_min, max(load_b) AS load_b_max,
        avg(load_c) AS load_c_avg, min(load_c) AS load_c_min, max(load_c) AS load_c_max,
        avg(power) AS power_avg, min(power) AS power_min, max(power) AS power_max,
        avg(ambient_temperature) AS ambient_temperature_avg, min(ambient_temperature) AS ambient_temperature_min, max(ambient_temperature) AS ambient_temperature_max,
        avg(coolant_temperature) AS coolant_temperature_avg, min(coolant_temperature) AS coolant_temperature_min, max(coolant_temperature) AS coolant_temperature_max,
        avg(cutting_time) AS cutting_time_avg, min(cutting_time) AS cutting_time_min, max(cutting_time) AS cutting_time_max,
        avg(operating_time) AS operating_time_avg, min(operating_time) AS operating_time_min, max(operating_time) AS operating_time_max,
        avg(spindle_run_time) AS spindle_run_time_avg, min(spindle_run_time) AS spindle_run_time_min, max(spindle_run_time) AS spindle_run_time_max
      FROM sample GROUP BY 1, 2 WITH NO DATA $q$;
    EXECUTE $q$
      CREATE MATERIALIZED VIEW sample_1h WITH (timescaledb.continuous) AS
      SELECT time_bucket(INTERVAL '1 hour', ts) AS bucket, machine_id, count(*) AS n,
        avg(spindle_speed) AS spindle_speed_avg, min(spindle_speed) AS spindle_speed_min, max(spindle_speed) AS spindle_speed_max,
        avg(spindle_speed_command) AS spindle_speed_command_avg, min(spindle_speed_command) AS spindle_speed_command_min, max(spindle_speed_command) AS spindle_speed_command_max,
        avg(spindle_override) AS spindle_override_avg, min(spindle_override) AS spindle_override_min, max(spindle_override) AS spindle_override_max,
        avg(spindle_load) AS spindle_load_avg, min(spindle_load) AS spindle_load_min, max(spindle_load) AS spindle_load_max,
        avg(spindle_temperature) AS spindle_temperature_avg, min(spindle_temperature) AS spindle_temperature_min, max(spindle_temperature) AS spindle_temperature_max,
        avg(feedrate) AS feedrate_avg, min(feedrate) AS feedrate_min, max(feedrate) AS feedrate_max,
        avg(feedrate_command) AS feedrate_command_avg, min(feedrate_command) AS feedrate_command_min, max(feedrate_command) AS feedrate_command_max,
        avg(feed_override) AS feed_override_avg, min(feed_override) AS feed_override_min, max(feed_override) AS feed_override_max,
        avg(rapid_override) AS rapid_override_avg, min(rapid_override) AS rapid_override_min, max(rapid_override) AS rapid_override_max,
        avg(position_x) AS position_x_avg, min(position_x) AS position_x_min, max(position_x) AS position_x_max,
        avg(position_y) AS position_y_avg, min(position_y) AS position_y_min, max(position_y) AS position_y_max,
        avg(position_z) AS position_z_avg, min(position_z) AS position_z_min, max(position_z) AS position_z_max,
        avg(position_a) AS position_a_avg, min(position_a) AS position_a_min, max(position_a) AS position_a_max,
        avg(position_b) AS position_b_avg, min(position_b) AS position_b_min, max(position_b) AS position_b_max,
        avg(position_c) AS position_c_avg, min(position_c) AS position_c_min, max(position_c) AS position_c_max,
        avg(load_x) AS load_x_avg, min(load_x) AS load_x_min, max(load_x) AS load_x_max,
        avg(load_y) AS load_y_avg, min(load_y) AS load_y_min, max(load_y) AS load_y_max,
        avg(load_z) AS load_z_avg, min(load_z) AS load_z_min, max(load_z) AS load_z_max,
        avg(load_a) AS load_a_avg, min(load_a) AS load_a_min, max(load_a) AS load_a_max,
        avg(load_b) AS load_b_avg, min(load_b) AS load_b_min, max(load_b) AS load_b_max,
        avg(load_c) AS load_c_avg, min(load_c) AS load_c_min, max(load_c) AS load_c_max,
        avg(power) AS power_avg, min(power) AS power_min, max(power) AS power_max,
        avg(ambient_temperature) AS ambient_temperature_avg, min(ambient_temperature) AS ambient_temperature_min, max(ambient_temperature) AS ambient_temperature_max,
        avg(coolant_temperature) AS coolant_temperature_avg, min(coolant_temperature) AS coolant_temperature_min, max(coolant_temperature) AS coolant_temperature_max,
        avg(cutting_time) AS cutting_time_avg, min(cutting_time) AS cutting_time_min, max(cutting_time) AS cutting_time_max,
        avg(operating_time) AS operating_time_avg, min(operating_time) AS operating_time_min, max(operating_time) AS operating_time_max,
        avg(spindle_run_time) AS spindle_run_time_avg, min(spindle_run_time) AS spindle_run_time_min, max(spindle_run_time) AS spindle_run_time_max
      FROM sample GROUP BY 1, 2 WITH NO DATA $q$;
    PERFORM add_continuous_aggregate_policy('sample_1m', start_offset => INTERVAL '3 hours',
        end_offset => INTERVAL '1 minute', schedule_interval => INTERVAL '1 minute');
    PERFORM add_continuous_aggregate_policy('sample_1h', start_offset => INTERVAL '3 days',
        end_offset => INTERVAL '1 hour', schedule_interval => INTERVAL '30 minutes');
    EXECUTE 'ALTER TABLE sample SET (timescaledb.compress, '
            'timescaledb.compress_segmentby = ''machine_id'', '
            'timescaledb.compress_orderby = ''ts DESC'')';
    PERFORM add_compression_policy('sample', INTERVAL '1 day');
    EXECUTE 'ALTER TABLE sample_extra SET (timescaledb.compress, '
            'timescaledb.compress_segmentby = ''machine_id, signal'', '
            'timescaledb.compress_orderby = ''ts DESC'')';
    PERFORM add_compression_policy('sample_extra', INTERVAL '1 day');
  ELSE
    CREATE TABLE sample_1m (
        bucket timestamptz NOT NULL, machine_id integer NOT NULL, n bigint NOT NULL,
        spindle_speed_avg double precision, spindle_speed_min double precision, spindle_speed_max double precision,
        spindle_speed_command_avg double precision, spindle_speed_command_min double precision, spindle_speed_command_max double precision,
        spindle_override_avg double precision, spindle_override_min double precision, spindle_override_max double precision,
        spindle_load_avg double precision, spindle_load_min double precision, spindle_load_max double precision,
        spindle_temperature_avg double precision, spindle_temperature_min double precision, spindle_temperature_max double precision,
        feedrate_avg double precision, feedrate_min double precision, feedrate_max double precision,
        feedrate_command_avg double precision, feedrate_command_min double precision, feedrate_command_max double precision,
        feed_override_avg double precision, feed_override_min double precision, feed_override_max double precision,
        rapid_override_avg double precision, rapid_override_min double precision, rapid_override_max double precision,
        position_x_avg double precision, position_x_min double precision, position_x_max double precision,
        position_y_avg double precision, position_y_min double precision, position_y_max double precision,
        position_z_avg double precision, position_z_min double precision, position_z_max double precision,
        position_a_avg double precision, position_a_min double precision, position_a_max double precision,
        position_b_avg double precision, position_b_min double precision, position_b_max double precision,
        position_c_avg double precision, position_c_min double precision, position_c_max double precision,
        load_x_avg double precision, load_x_min double precision, load_x_max double precision,
        load_y_avg double precision, load_y_min double precision, load_y_max double precision,
        load_z_avg double precision, load_z_min double precision, load_z_max double precision,
        load_a_avg double precision, load_a_min double precision, load_a_max double precision,
        load_b_avg double precision, load_b_min double precision, load_b_max double precision,
        load_c_avg double precision, load_c_min double precision, load_c_max double precision,
        power_avg double precision, power_min double precision, power_max double precision,
        ambient_temperature_avg double precision, ambient_temperature_min double precision, ambient_temperature_max double precision,
        coolant_temperature_avg double precision, coolant_temperature_min double precision, coolant_temperature_max double precision,
        cutting_time_avg double precision, cutting_time_min double precision, cutting_time_max double precision,
        operating_time_avg double precision, operating_time_min double precision, operating_time_max double precision,
        spindle_run_time_avg double precision, spindle_run_time_min double precision, spindle_run_time_max double precision,
        PRIMARY KEY (machine_id, bucket));
    PERFORM create_hypertable('sample_1m', by_range('bucket', INTERVAL '7 days'));
    CREATE TABLE sample_1h (
        bucket timestamptz NOT NULL, machine_id integer NOT NULL, n bigint NOT NULL,
        spindle_speed_avg double precision, spindle_speed_min double precision, spindle_speed_max double precision,
        spindle_speed_command_avg double precision, spindle_speed_command_min double precision, spindle_speed_command_max double precision,
        spindle_override_avg double precision, spindle_override_min double precision, spindle_override_max double precision,
        spindle_load_avg double precision, spindle_load_min double precision, spindle_load_max double precision,
        spindle_temperature_avg double precision, spindle_temperature_min double precision, spindle_temperature_max double precision,
        feedrate_avg double precision, feedrate_min double precision, feedrate_max double precision,
        feedrate_command_avg double precision, feedrate_command_min double precision, feedrate_command_max double precision,
        feed_override_avg double precision, feed_override_min double precision, feed_override_max double precision,
        rapid_override_avg double precision, rapid_override_min double precision, rapid_override_max double precision,
        position_x_avg double precision, position_x_min double precision, position_x_max double precision,
        position_y_avg double precision, position_y_min double precision, position_y_max double precision,
        position_z_avg double precision, position_z_min double precision, position_z_max double precision,
        position_a_avg double precision, position_a_min double precision, position_a_max double precision,
        position_b_avg double precision, position_b_min double precision, position_b_max double precision,
        position_c_avg double precision, position_c_min double precision, position_c_max double precision,
        load_x_avg double precision, load_x_min double precision, load_x_max double precision,
        load_y_avg double precision, load_y_min double precision, load_y_max double precision,
        load_z_avg double precision, load_z_min double precision, load_z_max double precision,
        load_a_avg double precision, load_a_min double precision, load_a_max double precision,
        load_b_avg double precision, load_b_min double precision, load_b_max double precision,
        load_c_avg double precision, load_c_min double precision, load_c_max double precision,
        power_avg double precision, power_min double precision, power_max double precision,
        ambient_temperature_avg double precision, ambient_temperature_min double precision, ambient_temperature_max double precision,
        coolant_temperature_avg double precision, coolant_temperature_min double precision, coolant_temperature_max double precision,
        cutting_time_avg double precision, cutting_time_min double precision, cutting_time_max double precision,
        operating_time_avg double precision, operating_time_min double precision, operating_time_max double precision,
        spindle_run_time_avg double precision, spindle_run_time_min double precision, spindle_run_time_max double precision,
        PRIMARY KEY (machine_id, bucket));
    PERFORM create_hypertable('sample_1h', by_range('bucket', INTERVAL '90 days'));
  END IF;
END
$do$;
