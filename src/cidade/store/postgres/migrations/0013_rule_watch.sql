-- Sensor rules (occurrences/rules.py, docs/occurrences.md): what the rule engine remembers of an
-- entity while its rule's condition holds or clears, so that another worker or a restart goes
-- on from there. A row exists only while something is going on: most entities have none.
CREATE TABLE rule_watch (
    tenant TEXT COLLATE "C" NOT NULL,
    rule TEXT COLLATE "C" NOT NULL,
    entity TEXT COLLATE "C" NOT NULL,
    state TEXT COLLATE "C" NOT NULL,     -- holding | raised
    since DOUBLE PRECISION NOT NULL,     -- the entity's time when the condition began to hold
    clear_since DOUBLE PRECISION,        -- raised: the entity's time when it began to clear
    number BIGINT,                       -- raised: the occurrence
    written_at DOUBLE PRECISION NOT NULL,  -- wall clock of the last change
    PRIMARY KEY (tenant, rule, entity)
);

-- Who evaluates the rules: one worker at a time, for as long as its lease runs.
CREATE TABLE rule_lease (
    name TEXT COLLATE "C" PRIMARY KEY,
    owner TEXT COLLATE "C" NOT NULL,
    until DOUBLE PRECISION NOT NULL
);
