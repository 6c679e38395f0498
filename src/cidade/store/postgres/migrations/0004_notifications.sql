-- Notification delivery (hub/notify): an outbox written in the same transaction as the change
-- that causes it, one queue ("lane") per endpoint, and each subscription's notification status.
CREATE TABLE outbox (
    seq BIGSERIAL PRIMARY KEY,          -- delivery order within a lane
    lane TEXT NOT NULL,                 -- the endpoint URI
    tenant TEXT NOT NULL,
    subscription_id TEXT NOT NULL,
    created_at DOUBLE PRECISION NOT NULL,  -- epoch seconds of the change (latency, give-up age)
    attempts INTEGER NOT NULL DEFAULT 0,
    body JSONB NOT NULL                 -- {"trigger", "entities": [stored form]}
);
CREATE INDEX outbox_lane ON outbox (lane, seq);
-- A lane is delivered by one worker at a time (owner + lease), in seq order; a failing lane
-- waits until retry_at, and only that lane waits.
CREATE TABLE delivery_lanes (
    lane TEXT PRIMARY KEY,
    owner TEXT,
    lease_until DOUBLE PRECISION NOT NULL DEFAULT 0,
    retry_at DOUBLE PRECISION NOT NULL DEFAULT 0,
    failures INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE subscription_status (
    tenant TEXT NOT NULL,
    id TEXT NOT NULL,
    times_sent BIGINT NOT NULL DEFAULT 0,
    times_failed BIGINT NOT NULL DEFAULT 0,
    last_notification TEXT,
    last_success TEXT,
    last_failure TEXT,
    next_periodic DOUBLE PRECISION,  -- when a timeInterval subscription is next due (epoch s)
    PRIMARY KEY (tenant, id)
);
-- Bumped by every subscription change: a writer compares it with the epoch of the subscriptions
-- it has compiled, inside its transaction, so no process ever matches against a stale set.
CREATE TABLE subscription_epoch (
    one INTEGER PRIMARY KEY CHECK (one = 1),
    epoch BIGINT NOT NULL
);
INSERT INTO subscription_epoch VALUES (1, 0);
