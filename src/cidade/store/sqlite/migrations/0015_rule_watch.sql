-- Sensor rules (occurrences/rules.py, docs/occurrences.md): what the rule engine remembers of an
-- entity while its rule's condition holds or clears, so that another worker or a restart goes
-- on from there. A row exists only while something is going on: most entities have none.
CREATE TABLE IF NOT EXISTS rule_watch (
    tenant TEXT NOT NULL,
    rule TEXT NOT NULL,
    entity TEXT NOT NULL,
    state TEXT NOT NULL,           -- holding | raised
    since REAL NOT NULL,           -- the entity's time when the condition began to hold
    clear_since REAL,              -- raised: the entity's time when it began to clear
    number INTEGER,                -- raised: the occurrence
    written_at REAL NOT NULL,      -- wall clock of the last change
    PRIMARY KEY (tenant, rule, entity)
) WITHOUT ROWID;

-- Who evaluates the rules: one worker at a time, for as long as its lease runs.
CREATE TABLE IF NOT EXISTS rule_lease (
    name TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    until REAL NOT NULL
);
