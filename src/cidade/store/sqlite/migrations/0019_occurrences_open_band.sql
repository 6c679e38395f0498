-- The duplicate lookup through the open occurrences of a group by latitude (0018's index, by
-- creation time, read every open occurrence of the group in the window: when a busy week made
-- thousands, a lookup took half a millisecond of CPU, the most of a report's cost). By
-- latitude the lookup reads the band of the box alone, a few hundredths of the group, and
-- checks longitude and creation time in the index. bench/occurrences.py measures it.
DROP INDEX IF EXISTS occurrences_open_group;
CREATE INDEX IF NOT EXISTS occurrences_open_band
    ON occurrences (tenant, grp, lat, lon, created_at) WHERE open = 1;
