-- Occurrences (occurrences/, docs/occurrences.md): each a JSON document of what is not personal
-- (`doc`) and one of what is (`private`: reporter and followers' contact), beside the columns
-- it is found by. `number` is the occurrence's public number (Open311's service_request_id).
CREATE TABLE IF NOT EXISTS occurrences (
    number INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant TEXT NOT NULL,
    version INTEGER NOT NULL,
    category TEXT NOT NULL,
    grp TEXT NOT NULL,
    status TEXT NOT NULL,
    open INTEGER NOT NULL,
    priority TEXT NOT NULL,
    source TEXT NOT NULL,
    area TEXT NOT NULL,
    lat REAL,
    lon REAL,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    response_due REAL,
    resolution_due REAL,
    token TEXT,
    rule_key TEXT,
    doc TEXT NOT NULL,
    private TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS occurrences_created ON occurrences (tenant, created_at);
CREATE INDEX IF NOT EXISTS occurrences_updated ON occurrences (tenant, updated_at);
CREATE INDEX IF NOT EXISTS occurrences_status ON occurrences (tenant, status, created_at);
CREATE INDEX IF NOT EXISTS occurrences_category ON occurrences (tenant, category, created_at);
CREATE UNIQUE INDEX IF NOT EXISTS occurrences_token ON occurrences (token);
-- One open occurrence per sensor rule and entity: a flapping condition cannot open a storm.
CREATE UNIQUE INDEX IF NOT EXISTS occurrences_rule ON occurrences (tenant, rule_key)
    WHERE open = 1 AND rule_key IS NOT NULL;
CREATE INDEX IF NOT EXISTS occurrences_response_due ON occurrences (response_due)
    WHERE response_due IS NOT NULL;
CREATE INDEX IF NOT EXISTS occurrences_resolution_due ON occurrences (resolution_due)
    WHERE resolution_due IS NOT NULL;

-- Where they are: a point's box in an R*Tree (the duplicate lookup's first step).
CREATE VIRTUAL TABLE IF NOT EXISTS occurrence_geo USING rtree (
    number, min_lon, max_lon, min_lat, max_lat
);

-- The departments holding a task on an occurrence (a department's queue).
CREATE TABLE IF NOT EXISTS occurrence_departments (
    number INTEGER NOT NULL,
    department TEXT NOT NULL,
    PRIMARY KEY (department, number)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS occurrence_departments_number ON occurrence_departments (number);

-- Every change of every occurrence: append-only (the triggers refuse anything else).
CREATE TABLE IF NOT EXISTS occurrence_events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant TEXT NOT NULL,
    number INTEGER NOT NULL,
    at REAL NOT NULL,
    kind TEXT NOT NULL,
    public INTEGER NOT NULL,
    doc TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS occurrence_events_number ON occurrence_events (number, seq);
CREATE INDEX IF NOT EXISTS occurrence_events_at ON occurrence_events (tenant, at);
CREATE TRIGGER IF NOT EXISTS occurrence_events_no_update BEFORE UPDATE ON occurrence_events
BEGIN
    SELECT RAISE(ABORT, 'occurrence history is append-only');
END;
CREATE TRIGGER IF NOT EXISTS occurrence_events_no_delete BEFORE DELETE ON occurrence_events
BEGIN
    SELECT RAISE(ABORT, 'occurrence history is append-only');
END;

-- Messages to reporters, followers and departments: written with the change that causes them,
-- sent afterwards, and kept as the log of what was sent (state: pending, sent, failed).
CREATE TABLE IF NOT EXISTS occurrence_messages (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant TEXT NOT NULL,
    number INTEGER NOT NULL,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_at REAL NOT NULL,
    created_at REAL NOT NULL,
    doc TEXT NOT NULL,
    result TEXT
);
CREATE INDEX IF NOT EXISTS occurrence_messages_due ON occurrence_messages (next_at)
    WHERE state = 'pending';
CREATE INDEX IF NOT EXISTS occurrence_messages_number ON occurrence_messages (number, seq);

-- Departments, categories and sensor rules a tenant's administrators set through the API, over
-- what the configuration file gives (doc NULL: removed).
CREATE TABLE IF NOT EXISTS occurrence_settings (
    tenant TEXT NOT NULL,
    kind TEXT NOT NULL,
    key TEXT NOT NULL,
    doc TEXT,
    PRIMARY KEY (tenant, kind, key)
);

-- Photos of occurrences, as the service re-encoded them (no metadata: no camera position).
CREATE TABLE IF NOT EXISTS occurrence_photos (
    tenant TEXT NOT NULL,
    number INTEGER NOT NULL,
    id TEXT NOT NULL,
    media_type TEXT NOT NULL,
    data BLOB NOT NULL,
    PRIMARY KEY (number, id)
);
