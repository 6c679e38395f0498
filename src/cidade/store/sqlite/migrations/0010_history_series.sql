-- History rows keyed by a series number instead of the tenant, entity id and attribute IRI
-- (a hundred bytes of text on every row, in both history tables, their sort and the WAL), and
-- without what they would hold twice: the observedAt that is the row's time, a modifiedAt equal
-- to that time, a createdAt equal to the modifiedAt, and the JSON of an instance that is only a
-- number (num holds it). bench/device_writes.py's database is a third of what it was, and its
-- writes about 15 % faster (docs/architecture.md, History).
-- What history_recent holds goes where it would have gone (store.py, merge_recent).
INSERT OR REPLACE INTO attr_history(tenant, entity_id, attr, dataset_id, instance_id, time,
    observed_at, modified_at, created_at, instance, num)
SELECT tenant, entity_id, attr, dataset_id, instance_id, time, observed_at, modified_at,
       created_at, instance, num
FROM history_recent ORDER BY tenant, entity_id, attr, time, instance_id, rowid;

CREATE TABLE history_series (
    sid INTEGER PRIMARY KEY,
    tenant TEXT NOT NULL,
    entity_id TEXT NOT NULL,
    attr TEXT NOT NULL,
    UNIQUE (tenant, entity_id, attr)
);

INSERT INTO history_series(tenant, entity_id, attr)
SELECT DISTINCT tenant, entity_id, attr FROM attr_history ORDER BY 1, 2, 3;

-- Same order as before (entity, attribute, time, instance): reads need no sort.
CREATE TABLE history_instances (
    sid INTEGER NOT NULL,
    time TEXT NOT NULL,          -- observedAt when the instance has one, else modifiedAt
    instance_id TEXT NOT NULL,
    dataset_id TEXT NOT NULL,
    observed INTEGER,            -- 1: the instance has an observedAt, which is time
    modified_at TEXT,            -- NULL: time
    created_at TEXT,             -- NULL: modified_at
    instance TEXT,               -- the instance without its times, as JSON; NULL: a Property of num
    num,
    PRIMARY KEY (sid, time, instance_id)
) WITHOUT ROWID;

INSERT INTO history_instances
SELECT s.sid, h.time, h.instance_id, h.dataset_id, CASE WHEN h.observed_at IS NOT NULL THEN 1 END,
       nullif(h.modified_at, h.time), nullif(h.created_at, h.modified_at), h.instance, h.num
FROM attr_history h
JOIN history_series s ON s.tenant = h.tenant AND s.entity_id = h.entity_id AND s.attr = h.attr
ORDER BY s.sid, h.time, h.instance_id;

DROP TABLE attr_history;
DROP TABLE history_recent;
ALTER TABLE history_instances RENAME TO attr_history;

-- Appended in arrival order, no index; merged into attr_history in sorted runs (store.py).
CREATE TABLE history_recent (
    sid INTEGER NOT NULL,
    time TEXT NOT NULL,
    instance_id TEXT NOT NULL,
    dataset_id TEXT NOT NULL,
    observed INTEGER,
    modified_at TEXT,
    created_at TEXT,
    instance TEXT,
    num
);

-- The rows as reads want them: every column whole again (the instance's JSON aside, which the
-- reader completes from num).
CREATE VIEW history_rows AS
SELECT h.sid AS sid, s.tenant AS tenant, s.entity_id AS entity_id, s.attr AS attr,
       h.dataset_id AS dataset_id, h.instance_id AS instance_id, h.time AS time,
       CASE WHEN h.observed THEN h.time END AS observed_at,
       coalesce(h.modified_at, h.time) AS modified_at,
       coalesce(h.created_at, h.modified_at, h.time) AS created_at,
       h.instance AS instance, h.num AS num
FROM history_series s JOIN attr_history h ON h.sid = s.sid;
