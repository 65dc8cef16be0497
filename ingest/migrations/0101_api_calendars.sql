-- Shift calendars per site (in the site's time zone) and planned downtime, for the API's KPIs.
-- Shifts are kept as validated JSON (the API checks them): a calendar is read whole, and a
-- change applies to every window computed afterwards, past ones included (documented).
CREATE TABLE IF NOT EXISTS site_calendar (
    site        text        PRIMARY KEY CHECK (site ~ '^[a-z0-9][a-z0-9_-]{0,63}$'),
    time_zone   text        NOT NULL,
    -- [{"name": "early", "start": "06:00", "end": "14:00", "weekdays": [0, 1, 2, 3, 4],
    --   "breaks": [["09:00", "09:15"]]}, ...]
    shifts      jsonb       NOT NULL DEFAULT '[]'::jsonb,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    updated_by  text        NOT NULL
);

-- Maintenance, no orders, holidays...: for one machine, or the whole site when machine is NULL.
CREATE TABLE IF NOT EXISTS planned_downtime (
    id          bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    site        text        NOT NULL CHECK (site ~ '^[a-z0-9][a-z0-9_-]{0,63}$'),
    machine     text,
    start_ts    timestamptz NOT NULL,
    end_ts      timestamptz NOT NULL CHECK (end_ts > start_ts),
    reason      text        NOT NULL DEFAULT '',
    created_at  timestamptz NOT NULL DEFAULT now(),
    created_by  text        NOT NULL,
    FOREIGN KEY (site, machine) REFERENCES machine (site, machine)
);
CREATE INDEX IF NOT EXISTS planned_downtime_site_idx ON planned_downtime (site, start_ts);
