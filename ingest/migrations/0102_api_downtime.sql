-- Operator input: downtime reasons on a machine's time, scrap entries, and the history of every
-- reclassification (who changed which reason to what, when, and why).
CREATE TABLE IF NOT EXISTS downtime_annotation (
    id          bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    site        text        NOT NULL,
    machine     text        NOT NULL,
    start_ts    timestamptz NOT NULL,
    end_ts      timestamptz NOT NULL CHECK (end_ts > start_ts),
    reason      text        NOT NULL CHECK (reason ~ '^[a-z][a-z0-9_]{0,31}$'),
    comment     text        NOT NULL DEFAULT '',
    created_at  timestamptz NOT NULL DEFAULT now(),
    created_by  text        NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    updated_by  text        NOT NULL,
    FOREIGN KEY (site, machine) REFERENCES machine (site, machine)
);
CREATE INDEX IF NOT EXISTS downtime_annotation_machine_idx
    ON downtime_annotation (site, machine, start_ts);

CREATE TABLE IF NOT EXISTS downtime_annotation_history (
    id             bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    annotation_id  bigint      NOT NULL REFERENCES downtime_annotation (id) ON DELETE CASCADE,
    at             timestamptz NOT NULL DEFAULT now(),
    by_whom        text        NOT NULL,
    old_reason     text,
    new_reason     text        NOT NULL,
    comment        text        NOT NULL DEFAULT ''
);

CREATE TABLE IF NOT EXISTS scrap_entry (
    id          bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    site        text        NOT NULL,
    machine     text        NOT NULL,
    at          timestamptz NOT NULL,
    count       integer     NOT NULL CHECK (count > 0),
    reason      text        NOT NULL DEFAULT '',
    program     text,
    created_at  timestamptz NOT NULL DEFAULT now(),
    created_by  text        NOT NULL,
    FOREIGN KEY (site, machine) REFERENCES machine (site, machine)
);
CREATE INDEX IF NOT EXISTS scrap_entry_machine_idx ON scrap_entry (site, machine, at);
