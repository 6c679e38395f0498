-- Access control (auth/): accounts, API keys, sessions and the audit log. Accounts, keys and
-- sessions are global, not per tenant: each record is a jsonb document (its "tenants" list
-- inside) beside the few columns it is looked up by. Names and times compare bytewise
-- (COLLATE "C"), in the same order as on SQLite.
CREATE TABLE accounts (
    name TEXT COLLATE "C" PRIMARY KEY,
    doc JSONB NOT NULL
);

CREATE TABLE api_keys (
    id TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    created TIMESTAMPTZ NOT NULL DEFAULT now(),  -- when the store first saved the key
    seq BIGINT GENERATED ALWAYS AS IDENTITY,      -- ties of created, in saving order
    doc JSONB NOT NULL
);
CREATE INDEX api_keys_owner ON api_keys(owner, created, seq);

CREATE TABLE sessions (
    id TEXT PRIMARY KEY,          -- a hash of the cookie, never the cookie itself
    account TEXT NOT NULL,
    expires DOUBLE PRECISION NOT NULL,  -- epoch seconds
    doc JSONB NOT NULL
);
CREATE INDEX sessions_account ON sessions(account);
CREATE INDEX sessions_expires ON sessions(expires);

-- Append-only: the triggers below refuse every UPDATE, DELETE and TRUNCATE, whoever runs them.
CREATE TABLE audit_log (
    seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at TEXT COLLATE "C" NOT NULL,  -- stored timestamp format: sorts as text
    tenant TEXT,
    actor TEXT,
    event TEXT NOT NULL,
    outcome TEXT,
    target TEXT,
    detail JSONB
);
CREATE INDEX audit_log_tenant ON audit_log(tenant, seq);
CREATE INDEX audit_log_event ON audit_log(event, seq);
CREATE INDEX audit_log_actor ON audit_log(actor, seq);
CREATE INDEX audit_log_at ON audit_log(at);

CREATE FUNCTION audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the audit log is append-only' USING ERRCODE = 'restrict_violation';
END
$$;

CREATE TRIGGER audit_log_no_change BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_log_append_only();
CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION audit_log_append_only();
