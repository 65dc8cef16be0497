-- The API's own tables: API keys, the audit trail, accuracy reports and NC programs.
-- Numbered 0100+ so they never collide with ingest's 0002..0099. Machines are referred to by their
-- natural key (site, machine) from the `machine` registry of 0001.

-- --- API keys ------------------------------------------------------------------------------------
-- A key is `arbor_<id>_<secret>`; only the SHA-256 of the whole key is stored. `id` is public (it
-- finds the row); `sites` NULL means every site.
CREATE TABLE IF NOT EXISTS api_key (
    id          text        PRIMARY KEY CHECK (id ~ '^[a-z0-9]{12}$'),
    name        text        NOT NULL CHECK (length(name) BETWEEN 1 AND 100),
    role        text        NOT NULL
                CHECK (role IN ('viewer', 'operator', 'engineer', 'maintenance', 'admin')),
    sites       text[],
    key_hash    text        NOT NULL CHECK (key_hash ~ '^[0-9a-f]{64}$'),
    created_at  timestamptz NOT NULL DEFAULT now(),
    revoked_at  timestamptz
);

-- --- audit trail ---------------------------------------------------------------------------------
-- Every state-changing API call: who (key id and name, kept even after the key is revoked), what.
CREATE TABLE IF NOT EXISTS api_audit (
    id        bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at        timestamptz NOT NULL DEFAULT now(),
    key_id    text,
    key_name  text,
    action    text        NOT NULL,
    site      text,
    machine   text,
    detail    jsonb       NOT NULL DEFAULT '{}'::jsonb
);
CREATE INDEX IF NOT EXISTS api_audit_machine_idx ON api_audit (site, machine, at DESC);
CREATE INDEX IF NOT EXISTS api_audit_at_idx ON api_audit (at DESC);

-- --- accuracy reports ----------------------------------------------------------------------------
CREATE TABLE IF NOT EXISTS accuracy_report (
    id          bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    site        text        NOT NULL,
    machine     text        NOT NULL,
    kind        text        NOT NULL CHECK (kind IN ('iso230-2', 'circle', 's-piece')),
    axis        text,
    label       text,
    created_at  timestamptz NOT NULL DEFAULT now(),
    created_by  text        NOT NULL,
    passed      boolean,
    tolerances  jsonb       NOT NULL DEFAULT '{}'::jsonb,
    input       jsonb       NOT NULL,
    report      jsonb       NOT NULL,
    FOREIGN KEY (site, machine) REFERENCES machine (site, machine)
);
CREATE INDEX IF NOT EXISTS accuracy_report_machine_idx
    ON accuracy_report (site, machine, kind, created_at DESC);

CREATE TABLE IF NOT EXISTS accuracy_figure (
    report_id  bigint NOT NULL REFERENCES accuracy_report (id) ON DELETE CASCADE,
    format     text   NOT NULL CHECK (format IN ('png', 'svg')),
    content    bytea  NOT NULL,
    PRIMARY KEY (report_id, format)
);

-- --- NC programs ---------------------------------------------------------------------------------
-- Versions are immutable: a new upload of the same name gets a new version.
CREATE TABLE IF NOT EXISTS nc_program (
    name        text        NOT NULL CHECK (name ~ '^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$'),
    version     text        NOT NULL CHECK (version ~ '^[A-Za-z0-9][A-Za-z0-9._+-]{0,63}$'),
    sha256      text        NOT NULL CHECK (sha256 ~ '^[0-9a-f]{64}$'),
    size        integer     NOT NULL CHECK (size >= 0),
    content     bytea       NOT NULL,
    comment     text        NOT NULL DEFAULT '',
    created_at  timestamptz NOT NULL DEFAULT now(),
    created_by  text        NOT NULL,
    PRIMARY KEY (name, version)
);

-- One download of a program version to a machine, and one row per cmd/program chunk sent.
CREATE TABLE IF NOT EXISTS program_push (
    id            bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    site          text        NOT NULL,
    machine       text        NOT NULL,
    name          text        NOT NULL,
    version       text        NOT NULL,
    chunk_count   integer     NOT NULL CHECK (chunk_count >= 1),
    -- sent: chunks published, waiting for replies; complete: the machine confirmed the digest;
    -- failed: the machine answered ok=false.
    state         text        NOT NULL DEFAULT 'sent' CHECK (state IN ('sent', 'complete', 'failed')),
    requested_at  timestamptz NOT NULL DEFAULT now(),
    requested_by  text        NOT NULL,
    finished_at   timestamptz,
    error_code    text,
    error_message text,
    FOREIGN KEY (site, machine) REFERENCES machine (site, machine),
    FOREIGN KEY (name, version) REFERENCES nc_program (name, version)
);
CREATE INDEX IF NOT EXISTS program_push_machine_idx ON program_push (site, machine, requested_at DESC);

CREATE TABLE IF NOT EXISTS program_push_chunk (
    request_id  text        PRIMARY KEY,
    push_id     bigint      NOT NULL REFERENCES program_push (id) ON DELETE CASCADE,
    chunk_index integer     NOT NULL,
    sent_at     timestamptz NOT NULL DEFAULT now(),
    replied_at  timestamptz,
    ok          boolean,
    result      jsonb,
    error       jsonb,
    UNIQUE (push_id, chunk_index)
);
