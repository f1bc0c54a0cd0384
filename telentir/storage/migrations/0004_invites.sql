-- sign-up invitations (TELENTIR_SIGNUP=invite): the invites table
CREATE TABLE IF NOT EXISTS invites (
    id          TEXT PRIMARY KEY,
    code_hash   TEXT NOT NULL UNIQUE,
    plan        TEXT,
    note        TEXT NOT NULL DEFAULT '',
    created_at  TEXT NOT NULL,
    expires_at  TEXT,
    used_at     TEXT,
    used_by     TEXT REFERENCES users(id) ON DELETE SET NULL,
    revoked_at  TEXT
);
