-- Tool life per machine and tool (pocket number): limits set by engineers, and tool changes
-- (a worn tool replaced: its counters start again) recorded by operators.
CREATE TABLE IF NOT EXISTS tool_limit (
    site             text        NOT NULL,
    machine          text        NOT NULL,
    tool             integer     NOT NULL CHECK (tool >= 0),
    limit_minutes    double precision NOT NULL CHECK (limit_minutes > 0),
    warning_minutes  double precision NOT NULL CHECK (warning_minutes >= 0),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    updated_by       text        NOT NULL,
    PRIMARY KEY (site, machine, tool),
    FOREIGN KEY (site, machine) REFERENCES machine (site, machine)
);

CREATE TABLE IF NOT EXISTS tool_change (
    id         bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    site       text        NOT NULL,
    machine    text        NOT NULL,
    tool       integer     NOT NULL CHECK (tool >= 0),
    at         timestamptz NOT NULL,
    comment    text        NOT NULL DEFAULT '',
    created_by text        NOT NULL,
    FOREIGN KEY (site, machine) REFERENCES machine (site, machine)
);
CREATE INDEX IF NOT EXISTS tool_change_machine_idx ON tool_change (site, machine, tool, at DESC);
