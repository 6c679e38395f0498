-- Every change of every attribute instance (the NGSI-LD temporal API's history).
CREATE TABLE IF NOT EXISTS attr_history (
    hid INTEGER PRIMARY KEY,
    tenant TEXT NOT NULL,
    entity_id TEXT NOT NULL,
    attr TEXT NOT NULL,
    dataset_id TEXT NOT NULL,
    instance_id TEXT NOT NULL,
    time TEXT NOT NULL,          -- observedAt when the instance has one, else modifiedAt
    observed_at TEXT,
    modified_at TEXT NOT NULL,
    created_at TEXT NOT NULL,
    instance TEXT NOT NULL       -- the instance in the stored form, as JSON
);
CREATE INDEX IF NOT EXISTS attr_history_time ON attr_history (tenant, entity_id, attr, time);
-- One index only: every history read names the entity (and usually the attribute), so the
-- (tenant, entity_id, attr, time) prefix serves lookups by modifiedAt or instanceId as well, and
-- each extra index would cost every write.
