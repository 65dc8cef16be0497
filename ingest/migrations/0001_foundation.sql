-- Foundation: TimescaleDB, the machine registry, and the dead-letter store every stage writes to.
CREATE EXTENSION IF NOT EXISTS timescaledb;

CREATE TABLE IF NOT EXISTS machine (
    site        text        NOT NULL CHECK (site ~ '^[a-z0-9][a-z0-9_-]{0,63}$'),
    machine     text        NOT NULL CHECK (machine ~ '^[a-z0-9][a-z0-9_-]{0,63}$'),
    controller  jsonb       NOT NULL DEFAULT '{}'::jsonb,
    first_seen  timestamptz NOT NULL DEFAULT now(),
    last_seen   timestamptz,
    online      boolean     NOT NULL DEFAULT false,
    PRIMARY KEY (site, machine)
);

-- Every rejected message keeps its raw bytes and the reason, so nothing bad is silently dropped.
CREATE TABLE IF NOT EXISTS dead_letter (
    received_at timestamptz NOT NULL,
    topic       text        NOT NULL,
    reason      text        NOT NULL,
    payload     bytea       NOT NULL,
    site        text,
    machine     text
);
SELECT create_hypertable('dead_letter', by_range('received_at', INTERVAL '7 days'),
                         if_not_exists => TRUE);
CREATE INDEX IF NOT EXISTS dead_letter_machine_idx ON dead_letter (site, machine, received_at DESC);
