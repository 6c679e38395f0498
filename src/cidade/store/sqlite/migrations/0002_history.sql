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
CREATE INDEX IF NOT EXISTS attr_history_modified ON attr_history (tenant, entity_id, attr, modified_at);
CREATE UNIQUE INDEX IF NOT EXISTS attr_history_instance ON attr_history (tenant, instance_id);
