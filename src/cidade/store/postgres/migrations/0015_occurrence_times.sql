-- When each occurrence's deadlines were met and when they were due, whatever its state now
-- (the columns response_due and resolution_due hold only the deadlines still to watch): the
-- statistics' times to respond and to resolve, and whether within the deadline, computed in
-- SQL (occurrences/statistics.py). Filled from the documents already stored.
ALTER TABLE occurrences
    ADD COLUMN responded_at DOUBLE PRECISION,
    ADD COLUMN resolved_at DOUBLE PRECISION,
    ADD COLUMN response_deadline DOUBLE PRECISION,
    ADD COLUMN resolution_deadline DOUBLE PRECISION;
UPDATE occurrences SET
    responded_at = extract(epoch FROM (doc #>> '{deadlines,response,met}')::timestamptz),
    resolved_at = extract(epoch FROM (doc #>> '{deadlines,resolution,met}')::timestamptz),
    response_deadline = extract(epoch FROM (doc #>> '{deadlines,response,due}')::timestamptz),
    resolution_deadline = extract(epoch FROM (doc #>> '{deadlines,resolution,due}')::timestamptz);
