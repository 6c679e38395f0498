-- Access control (auth/): accounts, API keys, sessions and the audit log. Accounts, keys and
-- sessions are global, not per tenant: each record is a JSON document (its "tenants" list
-- inside) beside the few columns it is looked up by.
CREATE TABLE IF NOT EXISTS accounts (
    name TEXT PRIMARY KEY,
    doc TEXT NOT NULL
);

CREATE TABLE IF NOT EXISTS api_keys (
    id TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    created TEXT NOT NULL,       -- when the store first saved the key (stored timestamp format)
    doc TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS api_keys_owner ON api_keys(owner, created);

CREATE TABLE IF NOT EXISTS sessions (
    id TEXT PRIMARY KEY,         -- a hash of the cookie, never the cookie itself
    account TEXT NOT NULL,
    expires REAL NOT NULL,       -- epoch seconds
    doc TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS sessions_account ON sessions(account);
CREATE INDEX IF NOT EXISTS sessions_expires ON sessions(expires);

-- Append-only: the triggers below refuse every UPDATE and DELETE, whoever runs them.
CREATE TABLE IF NOT EXISTS audit_log (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    at TEXT NOT NULL,            -- stored timestamp format: sorts as text
    tenant TEXT,
    actor TEXT,
    event TEXT NOT NULL,
    outcome TEXT,
    target TEXT,
    detail TEXT                  -- JSON
);
CREATE INDEX IF NOT EXISTS audit_log_tenant ON audit_log(tenant, seq);
CREATE INDEX IF NOT EXISTS audit_log_event ON audit_log(event, seq);
CREATE INDEX IF NOT EXISTS audit_log_actor ON audit_log(actor, seq);
CREATE INDEX IF NOT EXISTS audit_log_at ON audit_log(at);

CREATE TRIGGER IF NOT EXISTS audit_log_no_update BEFORE UPDATE ON audit_log
BEGIN
    SELECT RAISE(ABORT, 'the audit log is append-only');
END;

CREATE TRIGGER IF NOT EXISTS audit_log_no_delete BEFORE DELETE ON audit_log
BEGIN
    SELECT RAISE(ABORT, 'the audit log is append-only');
END;
