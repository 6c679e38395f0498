-- Occurrences (occurrences/, docs/occurrences.md): each a jsonb document of what is not
-- personal (`doc`) and one of what is (`private`: reporter and followers' contact), beside the
-- columns it is found by. `number` is the occurrence's public number (Open311's
-- service_request_id), one sequence for every tenant as on SQLite.
CREATE TABLE occurrences (
    number BIGSERIAL PRIMARY KEY,
    tenant TEXT COLLATE "C" NOT NULL,
    version INTEGER NOT NULL,
    category TEXT COLLATE "C" NOT NULL,
    grp TEXT COLLATE "C" NOT NULL,
    status TEXT COLLATE "C" NOT NULL,
    open BOOLEAN NOT NULL,
    priority TEXT COLLATE "C" NOT NULL,
    source TEXT COLLATE "C" NOT NULL,
    area TEXT COLLATE "C" NOT NULL,
    lat DOUBLE PRECISION,
    lon DOUBLE PRECISION,
    geom geometry(Point, 4326),
    created_at DOUBLE PRECISION NOT NULL,
    updated_at DOUBLE PRECISION NOT NULL,
    response_due DOUBLE PRECISION,
    resolution_due DOUBLE PRECISION,
    token TEXT COLLATE "C",
    rule_key TEXT COLLATE "C",
    doc JSONB NOT NULL,
    private JSONB NOT NULL
);
CREATE INDEX occurrences_created ON occurrences (tenant, created_at);
CREATE INDEX occurrences_updated ON occurrences (tenant, updated_at);
CREATE INDEX occurrences_status ON occurrences (tenant, status, created_at);
CREATE INDEX occurrences_category ON occurrences (tenant, category, created_at);
CREATE UNIQUE INDEX occurrences_token ON occurrences (token);
-- One open occurrence per sensor rule and entity: a flapping condition cannot open a storm.
CREATE UNIQUE INDEX occurrences_rule ON occurrences (tenant, rule_key)
    WHERE open AND rule_key IS NOT NULL;
CREATE INDEX occurrences_geom ON occurrences USING gist (geom);
CREATE INDEX occurrences_response_due ON occurrences (response_due)
    WHERE response_due IS NOT NULL;
CREATE INDEX occurrences_resolution_due ON occurrences (resolution_due)
    WHERE resolution_due IS NOT NULL;

-- The departments holding a task on an occurrence (a department's queue).
CREATE TABLE occurrence_departments (
    number BIGINT NOT NULL,
    department TEXT COLLATE "C" NOT NULL,
    PRIMARY KEY (department, number)
);
CREATE INDEX occurrence_departments_number ON occurrence_departments (number);

-- Every change of every occurrence: append-only (the trigger refuses anything else).
CREATE TABLE occurrence_events (
    seq BIGSERIAL PRIMARY KEY,
    tenant TEXT COLLATE "C" NOT NULL,
    number BIGINT NOT NULL,
    at DOUBLE PRECISION NOT NULL,
    kind TEXT COLLATE "C" NOT NULL,
    public BOOLEAN NOT NULL,
    doc JSONB NOT NULL
);
CREATE INDEX occurrence_events_number ON occurrence_events (number, seq);
CREATE INDEX occurrence_events_at ON occurrence_events (tenant, at);
CREATE FUNCTION occurrence_events_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'occurrence history is append-only';
END;
$$;
CREATE TRIGGER occurrence_events_append_only BEFORE UPDATE OR DELETE ON occurrence_events
    FOR EACH ROW EXECUTE FUNCTION occurrence_events_append_only();
CREATE TRIGGER occurrence_events_no_truncate BEFORE TRUNCATE ON occurrence_events
    FOR EACH STATEMENT EXECUTE FUNCTION occurrence_events_append_only();

-- Messages to reporters, followers and departments: written with the change that causes them,
-- sent afterwards, and kept as the log of what was sent (state: pending, sent, failed).
CREATE TABLE occurrence_messages (
    seq BIGSERIAL PRIMARY KEY,
    tenant TEXT COLLATE "C" NOT NULL,
    number BIGINT NOT NULL,
    state TEXT COLLATE "C" NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_at DOUBLE PRECISION NOT NULL,
    created_at DOUBLE PRECISION NOT NULL,
    doc JSONB NOT NULL,
    result TEXT
);
CREATE INDEX occurrence_messages_due ON occurrence_messages (next_at) WHERE state = 'pending';
CREATE INDEX occurrence_messages_number ON occurrence_messages (number, seq);

-- Departments, categories and sensor rules a tenant's administrators set through the API, over
-- what the configuration file gives (doc NULL: removed).
CREATE TABLE occurrence_settings (
    tenant TEXT COLLATE "C" NOT NULL,
    kind TEXT COLLATE "C" NOT NULL,
    key TEXT COLLATE "C" NOT NULL,
    doc JSONB,
    PRIMARY KEY (tenant, kind, key)
);

-- Photos of occurrences, as the service re-encoded them (no metadata: no camera position).
CREATE TABLE occurrence_photos (
    tenant TEXT COLLATE "C" NOT NULL,
    number BIGINT NOT NULL,
    id TEXT COLLATE "C" NOT NULL,
    media_type TEXT COLLATE "C" NOT NULL,
    data BYTEA NOT NULL,
    PRIMARY KEY (number, id)
);
