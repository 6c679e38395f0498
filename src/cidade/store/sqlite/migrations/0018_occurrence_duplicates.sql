-- The duplicate lookup (open occurrences of a category's group reported in the last days near
-- a point: OccurrenceService.duplicates, on every report) through an index of the open
-- occurrences that carries their point: the few of a group and window are found in it and
-- their points checked there, each row read only if its point is in the box. The R*Tree
-- would first give every occurrence near the point, open or closed, old or new (some 300 in a
-- city of 100,000 occurrences, each looked up), and more as the years of history grow; this
-- index holds what the window holds. bench/occurrences.py measures it.
CREATE INDEX IF NOT EXISTS occurrences_open_group
    ON occurrences (tenant, grp, created_at, lat, lon) WHERE open = 1;
