-- The version of each occurrence its hub entity was last seen carrying (occurrences/entities.py):
-- the mirror's catch-up looks at the occurrences whose entity is behind, through the index.
ALTER TABLE occurrences ADD COLUMN mirrored_version INTEGER NOT NULL DEFAULT 0;
CREATE INDEX IF NOT EXISTS occurrences_unmirrored ON occurrences (number)
    WHERE mirrored_version < version;
