-- Stored @contexts (§5.13) of every kind: Hosted and ImplicitlyCreated ones as before, and now
-- the Cached copies of remote ones too, so that every worker lists, deletes and reloads the
-- same set. How often each was used (numberOfHits) and when last (lastUsage) are counted in
-- memory on the request path and added here in batches (hub/jsonld.py, flush_usage).
ALTER TABLE hosted_contexts ADD COLUMN hits BIGINT NOT NULL DEFAULT 0;
ALTER TABLE hosted_contexts ADD COLUMN last_used TEXT;
