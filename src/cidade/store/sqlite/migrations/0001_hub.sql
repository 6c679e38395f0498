-- Cidade embedded store: the context hub.
CREATE TABLE IF NOT EXISTS tenants (
    name TEXT PRIMARY KEY,
    created_at TEXT NOT NULL
);
-- One row per entity; `doc` is the stored form (docs/stored-form.md) as JSON text.
CREATE TABLE IF NOT EXISTS entities (
    rid INTEGER PRIMARY KEY,
    tenant TEXT NOT NULL,
    id TEXT NOT NULL,
    doc TEXT NOT NULL,
    UNIQUE (tenant, id)
);
-- Derived from `doc` on every write, so type, attribute and discovery queries use indexes.
CREATE TABLE IF NOT EXISTS entity_types (
    tenant TEXT NOT NULL,
    type TEXT NOT NULL,
    rid INTEGER NOT NULL,
    PRIMARY KEY (tenant, type, rid)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS entity_types_rid ON entity_types (rid);
-- Discovery counters (/types, /attributes), kept up to date by every write: instances of each
-- attribute per entity type, and per type "" (every entity once, whatever its types).
CREATE TABLE IF NOT EXISTS attr_stats (
    tenant TEXT NOT NULL,
    type TEXT NOT NULL,
    attr TEXT NOT NULL,
    kind TEXT NOT NULL,
    instances INTEGER NOT NULL,
    PRIMARY KEY (tenant, type, attr, kind)
) WITHOUT ROWID;
-- One row per GeoProperty instance; its bounding box in the R*Tree prefilters geo-queries.
CREATE TABLE IF NOT EXISTS geo_rows (
    gid INTEGER PRIMARY KEY,
    tenant TEXT NOT NULL,
    rid INTEGER NOT NULL,
    attr TEXT NOT NULL,
    geometry TEXT NOT NULL  -- the GeoJSON value, so the exact check needs no entity document
);
CREATE INDEX IF NOT EXISTS geo_rows_rid ON geo_rows (rid);
CREATE VIRTUAL TABLE IF NOT EXISTS geo_index USING rtree (gid, min_lon, max_lon, min_lat, max_lat);
CREATE TABLE IF NOT EXISTS hosted_contexts (
    local_id TEXT PRIMARY KEY,
    info TEXT NOT NULL,
    body TEXT NOT NULL
);
