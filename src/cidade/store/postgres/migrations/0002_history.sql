-- Every change of every attribute instance (the NGSI-LD temporal API's history), partitioned by
-- month of its time index; the store creates each month's partition before writing into it, and
-- retention drops whole partitions.
CREATE TABLE attr_history (
    tenant TEXT NOT NULL,
    entity_id TEXT NOT NULL,
    attr TEXT NOT NULL,
    dataset_id TEXT NOT NULL,
    instance_id TEXT NOT NULL,
    time TIMESTAMPTZ NOT NULL,   -- observedAt when the instance has one, else modifiedAt
    observed_at TIMESTAMPTZ,
    modified_at TIMESTAMPTZ NOT NULL,
    created_at TIMESTAMPTZ NOT NULL,
    instance JSONB NOT NULL
) PARTITION BY RANGE (time);
CREATE INDEX attr_history_time ON attr_history (tenant, entity_id, attr, time);
-- One index only: every history read names the entity (and usually the attribute), so the
-- (tenant, entity_id, attr, time) prefix serves lookups by modifiedAt or instanceId as well, and
-- each extra index would cost every write.
