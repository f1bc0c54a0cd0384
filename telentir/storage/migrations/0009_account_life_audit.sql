-- The account's life and the audit log: users.disabled_at and users.deleted_at, the audit table
-- disabled_at: set by `telentir users disable` (every credential and sign-in refused with
-- account_disabled); deleted_at: set by the first step of an account's deletion, which then
-- removes what the user owns and the row itself (a restart finishes a deletion a crash cut short).
ALTER TABLE users ADD COLUMN disabled_at TEXT;
ALTER TABLE users ADD COLUMN deleted_at TEXT;
-- What happened to an account, written in the transaction of the change it records. user_id is
-- no foreign key: a deleted account's `account_deleted` entry outlives the user row.
CREATE TABLE audit (
    id          INTEGER PRIMARY KEY,
    user_id     TEXT NOT NULL,
    at          TEXT NOT NULL,
    action      TEXT NOT NULL,
    ip          TEXT,
    credential  TEXT,
    detail      TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX audit_user ON audit(user_id, id);
CREATE INDEX audit_at ON audit(at);
