-- Cidade on PostgreSQL 15 + PostGIS 3: the context hub.
CREATE EXTENSION IF NOT EXISTS postgis SCHEMA public;

CREATE TABLE tenants (
    name TEXT PRIMARY KEY,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- One row per entity; `doc` is the stored form (docs/stored-form.md); `types` repeats its
-- expanded types for the GIN index that type queries use.
CREATE TABLE entities (
    rid BIGSERIAL PRIMARY KEY,
    tenant TEXT NOT NULL,
    id TEXT NOT NULL,
    types TEXT[] NOT NULL,
    doc JSONB NOT NULL,
    UNIQUE (tenant, id)
);
CREATE INDEX entities_types ON entities USING GIN (types);
CREATE INDEX entities_doc ON entities USING GIN (doc jsonb_path_ops);

-- Discovery counters: instances of each attribute per entity type and per type '' (every entity
-- once); attr '' counts entities of a type.
CREATE TABLE attr_stats (
    tenant TEXT NOT NULL,
    type TEXT NOT NULL,
    attr TEXT NOT NULL,
    kind TEXT NOT NULL,
    instances BIGINT NOT NULL,
    PRIMARY KEY (tenant, type, attr, kind)
);

-- One row per GeoProperty instance, indexed for geometry relations and geodesic distances.
CREATE TABLE geo_rows (
    gid BIGSERIAL PRIMARY KEY,
    tenant TEXT NOT NULL,
    rid BIGINT NOT NULL REFERENCES entities (rid) ON DELETE CASCADE,
    attr TEXT NOT NULL,
    geom geometry(Geometry, 4326) NOT NULL
);
CREATE INDEX geo_rows_rid ON geo_rows (rid);
CREATE INDEX geo_rows_geom ON geo_rows USING GIST (geom);
CREATE INDEX geo_rows_geog ON geo_rows USING GIST ((geom::geography));

CREATE TABLE hosted_contexts (
    local_id TEXT PRIMARY KEY,
    info JSONB NOT NULL,
    body JSONB NOT NULL
);
