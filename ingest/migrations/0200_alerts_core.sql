-- Alerts (alerts/ and api/routes/alerts.py): rules, their evaluation state, alerts with their
-- lifecycle and history, machine groups, subscriptions and the delivery log.
-- Numbered 0200+. Machines are referred to by their natural key (site, machine). docs/alerts.md.

-- --- machine groups (rule scope) -----------------------------------------------------------------
CREATE TABLE IF NOT EXISTS alert_machine_group (
    group_name  text NOT NULL CHECK (group_name ~ '^[a-z0-9][a-z0-9_-]{0,63}$'),
    site        text NOT NULL,
    machine     text NOT NULL,
    PRIMARY KEY (group_name, site, machine)
);

-- --- rules ---------------------------------------------------------------------------------------
-- `kind` and `params` are validated by the API (and again by the worker when it loads them):
--   threshold   {signal, op, value, for_s}          a telemetry signal beyond a value for a while
--   condition   {code?, component?, levels}         an alarm condition raised
--   silence     {silent_s}                          no message from the machine for N seconds
--   tool_life   {warning_s?, limit_s}               the mounted tool in the spindle for too long
--   accuracy    {kind?}                             the latest accuracy report failed
--   utilisation {target, window_s}                  in-cycle share below target over a window
CREATE TABLE IF NOT EXISTS alert_rule (
    id               bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name             text        NOT NULL,
    kind             text        NOT NULL CHECK (kind IN
                         ('threshold', 'condition', 'silence', 'tool_life', 'accuracy', 'utilisation')),
    params           jsonb       NOT NULL DEFAULT '{}'::jsonb,
    severity         text        NOT NULL DEFAULT 'warning'
                         CHECK (severity IN ('info', 'warning', 'critical')),
    site             text,           -- NULL: every site
    machines         text[],         -- NULL: every machine of the scope
    machine_group    text,           -- NULL: no group restriction
    repeat_count     integer     NOT NULL DEFAULT 1 CHECK (repeat_count >= 1),
    repeat_window_s  double precision CHECK (repeat_window_s IS NULL OR repeat_window_s > 0),
    escalate_after_s double precision CHECK (escalate_after_s IS NULL OR escalate_after_s > 0),
    auto_resolve     boolean     NOT NULL DEFAULT true,
    enabled          boolean     NOT NULL DEFAULT true,
    created_at       timestamptz NOT NULL DEFAULT now(),
    created_by       text        NOT NULL DEFAULT 'system',
    updated_at       timestamptz NOT NULL DEFAULT now()
);

-- Evaluation state per (rule, machine), shared by every alerts worker: the shared subscription
-- hands one machine's messages to several workers, so runs and repeat counts live here, updated
-- under the row lock. Times are the source's.
CREATE TABLE IF NOT EXISTS alert_rule_state (
    rule_id     bigint      NOT NULL REFERENCES alert_rule (id) ON DELETE CASCADE,
    site        text        NOT NULL,
    machine     text        NOT NULL,
    true_since  timestamptz,                  -- start of the current run of true observations
    last_true   timestamptz,
    last_false  timestamptz,
    satisfied   boolean     NOT NULL DEFAULT false,  -- the current run was counted already
    occurrences timestamptz[] NOT NULL DEFAULT '{}', -- when runs were satisfied (repeat counts)
    last_value  double precision,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (rule_id, site, machine)
);

-- --- alerts --------------------------------------------------------------------------------------
CREATE TABLE IF NOT EXISTS alert (
    id               bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    rule_id          bigint      NOT NULL REFERENCES alert_rule (id) ON DELETE CASCADE,
    site             text        NOT NULL,
    machine          text        NOT NULL,
    severity         text        NOT NULL,
    state            text        NOT NULL DEFAULT 'open'
                         CHECK (state IN ('open', 'acknowledged', 'resolved')),
    title            text        NOT NULL,
    detail           jsonb       NOT NULL DEFAULT '{}'::jsonb,
    trigger_ts       timestamptz NOT NULL,     -- source time of the sample that fired it
    value            double precision,
    opened_at        timestamptz NOT NULL DEFAULT now(),
    acknowledged_at  timestamptz,
    acknowledged_by  text,
    ack_comment      text,
    assigned_to      text,
    escalation_level integer     NOT NULL DEFAULT 0,
    escalated_at     timestamptz,
    resolved_at      timestamptz,
    resolved_by      text,                     -- 'auto' when the condition cleared
    resolution       text
);
-- One active alert per (rule, machine): the constraint two workers race on.
CREATE UNIQUE INDEX IF NOT EXISTS alert_active_uniq
    ON alert (rule_id, site, machine) WHERE state <> 'resolved';
CREATE INDEX IF NOT EXISTS alert_opened_idx ON alert (opened_at DESC);
CREATE INDEX IF NOT EXISTS alert_machine_idx ON alert (site, machine, opened_at DESC);

-- Full history: every transition and comment; suppressed firings have no alert (alert_id NULL).
CREATE TABLE IF NOT EXISTS alert_history (
    id       bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    alert_id bigint      REFERENCES alert (id) ON DELETE CASCADE,
    rule_id  bigint      REFERENCES alert_rule (id) ON DELETE CASCADE,
    site     text        NOT NULL,
    machine  text        NOT NULL,
    at       timestamptz NOT NULL DEFAULT now(),
    action   text        NOT NULL CHECK (action IN ('opened', 'acknowledged', 'assigned',
                 'commented', 'escalated', 'resolved', 'suppressed')),
    actor    text        NOT NULL,
    detail   jsonb       NOT NULL DEFAULT '{}'::jsonb
);
CREATE INDEX IF NOT EXISTS alert_history_alert_idx ON alert_history (alert_id, at);
CREATE INDEX IF NOT EXISTS alert_history_machine_idx ON alert_history (site, machine, at DESC);

-- Suppression uses the API's `planned_downtime` (0101: maintenance, no orders, holidays; one
-- machine or the whole site): no alert opens and no escalation happens inside such a window.

-- --- subscriptions and deliveries ----------------------------------------------------------------
CREATE TABLE IF NOT EXISTS alert_subscription (
    id           bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name         text        NOT NULL,
    person       text,
    team         text,
    channel      text        NOT NULL CHECK (channel IN ('webhook', 'email')),
    target       text        NOT NULL,         -- URL or e-mail address
    secret       text,                         -- webhook HMAC key; never returned by the API
    min_severity text        NOT NULL DEFAULT 'info'
                     CHECK (min_severity IN ('info', 'warning', 'critical')),
    sites        text[],                       -- NULL: every site
    events       text[]      NOT NULL DEFAULT '{opened,acknowledged,escalated,resolved}',
    enabled      boolean     NOT NULL DEFAULT true,
    created_at   timestamptz NOT NULL DEFAULT now(),
    created_by   text        NOT NULL DEFAULT 'system'
);

-- The outbox and the delivery log. `subscriber` is 'sub:<id>' or 'mqtt'; the unique key is the
-- idempotency key: a transition is delivered to a subscriber once, whichever worker claims it.
CREATE TABLE IF NOT EXISTS alert_delivery (
    id              bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    alert_id        bigint      NOT NULL REFERENCES alert (id) ON DELETE CASCADE,
    transition      text        NOT NULL,      -- opened, acknowledged, escalated, resolved
    subscriber      text        NOT NULL,
    subscription_id bigint      REFERENCES alert_subscription (id) ON DELETE SET NULL,
    channel         text        NOT NULL CHECK (channel IN ('webhook', 'email', 'mqtt')),
    status          text        NOT NULL DEFAULT 'pending'
                        CHECK (status IN ('pending', 'sending', 'delivered', 'failed')),
    attempts        integer     NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    lease_until     timestamptz,
    claimed_by      text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    delivered_at    timestamptz,
    last_error      text,
    response_status integer,
    UNIQUE (alert_id, transition, subscriber)
);
CREATE INDEX IF NOT EXISTS alert_delivery_due_idx
    ON alert_delivery (next_attempt_at) WHERE status IN ('pending', 'sending');

CREATE TABLE IF NOT EXISTS alert_delivery_attempt (
    id              bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    delivery_id     bigint      NOT NULL REFERENCES alert_delivery (id) ON DELETE CASCADE,
    at              timestamptz NOT NULL DEFAULT now(),
    worker          text        NOT NULL,
    ok              boolean     NOT NULL,
    response_status integer,
    error           text,
    duration_ms     double precision NOT NULL
);
CREATE INDEX IF NOT EXISTS alert_delivery_attempt_idx ON alert_delivery_attempt (delivery_id, at);

-- Enqueue the deliveries of one transition: the MQTT site topic plus every enabled subscription
-- whose events, severity and sites admit it. Used by the alerts worker and by the API, so the
-- matching lives in one place. With `p_claimed_by` the rows are claimed at once (status 'sending'
-- with a lease) by the caller, who sends them right after commit; otherwise they wait, 'pending',
-- for any worker's delivery loop. Returns the ids of the rows inserted now.
CREATE OR REPLACE FUNCTION alert_enqueue_deliveries(
    p_alert bigint, p_transition text, p_claimed_by text DEFAULT NULL,
    p_lease_s double precision DEFAULT 30
) RETURNS SETOF bigint LANGUAGE sql AS $$
    WITH a AS (
        SELECT id, site, CASE severity WHEN 'info' THEN 0 WHEN 'warning' THEN 1 ELSE 2 END AS rank
        FROM alert WHERE id = p_alert
    ), targets AS (
        SELECT 'mqtt'::text AS subscriber, NULL::bigint AS subscription_id, 'mqtt'::text AS channel
        UNION ALL
        SELECT 'sub:' || s.id, s.id, s.channel
        FROM alert_subscription s, a
        WHERE s.enabled
          AND split_part(p_transition, ':', 1) = ANY (s.events)
          AND a.rank >= CASE s.min_severity WHEN 'info' THEN 0 WHEN 'warning' THEN 1 ELSE 2 END
          AND (s.sites IS NULL OR a.site = ANY (s.sites))
    )
    INSERT INTO alert_delivery (alert_id, transition, subscriber, subscription_id, channel,
                                status, claimed_by, lease_until)
    SELECT p_alert, p_transition, t.subscriber, t.subscription_id, t.channel,
           CASE WHEN p_claimed_by IS NULL THEN 'pending' ELSE 'sending' END,
           p_claimed_by,
           CASE WHEN p_claimed_by IS NULL THEN NULL
                ELSE now() + make_interval(secs => p_lease_s) END
    FROM targets t, a
    ON CONFLICT (alert_id, transition, subscriber) DO NOTHING
    RETURNING id
$$;
