-- Context source registrations (ETSI GS CIM 009 §5.9), one row each; `doc` is the stored form
-- (hub/registrations.py).
CREATE TABLE csource_registrations (
    tenant TEXT NOT NULL,
    id TEXT NOT NULL,
    doc JSONB NOT NULL,
    seq BIGSERIAL NOT NULL,  -- creation order, for stable paging
    PRIMARY KEY (tenant, id)
);
CREATE INDEX csource_registrations_seq ON csource_registrations (tenant, seq);
-- Subscriptions to registrations (§5.11) are kept beside the entity subscriptions, whose ids,
-- outbox, lanes and status they share: `kind` tells them apart ('entity' or 'csource').
ALTER TABLE subscriptions ADD COLUMN kind TEXT NOT NULL DEFAULT 'entity';
