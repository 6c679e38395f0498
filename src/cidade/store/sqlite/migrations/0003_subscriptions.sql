-- NGSI-LD subscriptions, one row each; `doc` is the stored form (hub/subscriptions.py).
CREATE TABLE IF NOT EXISTS subscriptions (
    tenant TEXT NOT NULL,
    id TEXT NOT NULL,
    doc TEXT NOT NULL,
    seq INTEGER NOT NULL,  -- creation order, for stable paging
    PRIMARY KEY (tenant, id)
);
CREATE INDEX IF NOT EXISTS subscriptions_seq ON subscriptions (tenant, seq);
