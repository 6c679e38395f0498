-- Every change of every attribute instance (the NGSI-LD temporal API's history), clustered in the
-- order it is read: one entity's attribute over time. WITHOUT ROWID makes that order the table
-- itself, so each history row costs one B-tree insert, not a row plus an index entry; lookups by
-- instanceId or modifiedAt scan the (tenant, entity, attribute) range they always name.
CREATE TABLE IF NOT EXISTS attr_history (
    tenant TEXT NOT NULL,
    entity_id TEXT NOT NULL,
    attr TEXT NOT NULL,
    time TEXT NOT NULL,          -- observedAt when the instance has one, else modifiedAt
    instance_id TEXT NOT NULL,
    dataset_id TEXT NOT NULL,
    observed_at TEXT,
    modified_at TEXT NOT NULL,
    created_at TEXT NOT NULL,
    instance TEXT NOT NULL,      -- the instance in the stored form, as JSON
    PRIMARY KEY (tenant, entity_id, attr, time, instance_id)
) WITHOUT ROWID;
