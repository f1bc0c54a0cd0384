-- Two-factor sign-in and passwords: sealed TOTP secrets, recovery codes, reset codes, a session epoch per user
-- totp_secret_sealed: the TOTP secret sealed under the master key (context "totp:<user id>"),
-- set by POST /api/auth/2fa/setup and active once totp_enabled is 1; totp_last_step: the last
-- time step whose code was accepted (a step's code works once). session_epoch: every session
-- token carries the epoch it was issued under; bumping it revokes all of them at once.
ALTER TABLE users ADD COLUMN totp_secret_sealed BLOB;
ALTER TABLE users ADD COLUMN totp_enabled INTEGER NOT NULL DEFAULT 0;
ALTER TABLE users ADD COLUMN totp_last_step INTEGER;
ALTER TABLE users ADD COLUMN session_epoch INTEGER NOT NULL DEFAULT 0;
-- The ten single-use recovery codes of a user with 2FA on, as SHA-256 hashes.
CREATE TABLE recovery_codes (
    user_id     TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    code_hash   TEXT NOT NULL,
    used_at     TEXT,
    PRIMARY KEY (user_id, code_hash)
);
-- The pending password-reset code of a user (sent by SMS), keyed like phone_codes.
CREATE TABLE password_reset_codes (
    user_id     TEXT PRIMARY KEY REFERENCES users(id) ON DELETE CASCADE,
    code_hash   TEXT NOT NULL,
    expires_at  REAL NOT NULL,
    attempts    INTEGER NOT NULL DEFAULT 0
);
