-- Failed log-ins (auth/limits.py, LoginLockout), shared by every process: by name and client
-- address, both hashed (a password typed into the name field is not kept as it is), and kept
-- only as long as the lock-out window.
CREATE TABLE IF NOT EXISTS login_failures (
    name_key TEXT NOT NULL,
    address_key TEXT NOT NULL,
    at REAL NOT NULL              -- epoch seconds
);
CREATE INDEX IF NOT EXISTS login_failures_pair ON login_failures(address_key, name_key, at);
CREATE INDEX IF NOT EXISTS login_failures_at ON login_failures(at);
