-- Entities deleted while their history was kept (CIDADE_HISTORY_AFTER_DELETE): what the temporal
-- API needs to serve that history (the types) and retention needs to expire it. A row goes when
-- the history it stands for is forgotten; a live entity with the same id takes precedence.
CREATE TABLE IF NOT EXISTS deleted_entities (
    tenant TEXT NOT NULL,
    id TEXT NOT NULL,
    types TEXT NOT NULL,         -- JSON array of the expanded type IRIs the entity last had
    deleted_at TEXT NOT NULL,
    PRIMARY KEY (tenant, id)
) WITHOUT ROWID;
