-- The duplicate lookup (open occurrences of a category's group reported in the last days near
-- a point: OccurrenceService.duplicates, on every report) through an index of the open
-- occurrences carrying their point: the planner had combined the GiST index of every point
-- in the box with the creation time's index of every occurrence of the window (2 ms in a city
-- of 100,000 occurrences); this one holds what the window holds, its points decided in the
-- index (0.2 ms). bench/occurrences.py measures it.
CREATE INDEX occurrences_open_group ON occurrences (tenant, grp, created_at, lon, lat) WHERE open;
