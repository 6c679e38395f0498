-- When each occurrence's deadlines were met and when they were due, whatever its state now
-- (the columns response_due and resolution_due hold only the deadlines still to watch): the
-- statistics' times to respond and to resolve, and whether within the deadline, computed in
-- SQL (occurrences/statistics.py). Filled from the documents already stored; the stored
-- timestamps are YYYY-MM-DDTHH:MM:SS.ffffffZ, whose fraction strftime('%s') leaves out.
ALTER TABLE occurrences ADD COLUMN responded_at REAL;
ALTER TABLE occurrences ADD COLUMN resolved_at REAL;
ALTER TABLE occurrences ADD COLUMN response_deadline REAL;
ALTER TABLE occurrences ADD COLUMN resolution_deadline REAL;
UPDATE occurrences SET
    responded_at = CAST(strftime('%s', json_extract(doc, '$.deadlines.response.met')) AS REAL)
        + CAST(substr(json_extract(doc, '$.deadlines.response.met'), 20, 7) AS REAL),
    resolved_at = CAST(strftime('%s', json_extract(doc, '$.deadlines.resolution.met')) AS REAL)
        + CAST(substr(json_extract(doc, '$.deadlines.resolution.met'), 20, 7) AS REAL),
    response_deadline = CAST(strftime('%s', json_extract(doc, '$.deadlines.response.due')) AS REAL)
        + CAST(substr(json_extract(doc, '$.deadlines.response.due'), 20, 7) AS REAL),
    resolution_deadline = CAST(strftime('%s', json_extract(doc, '$.deadlines.resolution.due')) AS REAL)
        + CAST(substr(json_extract(doc, '$.deadlines.resolution.due'), 20, 7) AS REAL);
