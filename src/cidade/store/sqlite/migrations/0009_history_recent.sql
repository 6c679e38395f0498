-- Devices write thousands of changes a second. Appending each change's history rows to
-- attr_history, whose primary key orders them by entity and attribute, dirtied one B-tree page
-- per row at every commit. They are appended here instead, in arrival order and without an
-- index, and moved into attr_history in sorted runs of thousands (store.py, merge_recent), which
-- writes each series' pages once per run. Reads of history move them first.
CREATE TABLE IF NOT EXISTS history_recent (
    tenant TEXT NOT NULL,
    entity_id TEXT NOT NULL,
    attr TEXT NOT NULL,
    time TEXT NOT NULL,
    instance_id TEXT NOT NULL,
    dataset_id TEXT NOT NULL,
    observed_at TEXT,
    modified_at TEXT NOT NULL,
    created_at TEXT NOT NULL,
    instance TEXT NOT NULL,
    num
);
