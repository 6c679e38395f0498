-- NGSI-LD subscriptions, one row each; `doc` is the stored form (hub/subscriptions.py).
CREATE TABLE subscriptions (
    tenant TEXT NOT NULL,
    id TEXT NOT NULL,
    doc JSONB NOT NULL,
    seq BIGSERIAL NOT NULL,  -- creation order, for stable paging
    PRIMARY KEY (tenant, id)
);
CREATE INDEX subscriptions_seq ON subscriptions (tenant, seq);
