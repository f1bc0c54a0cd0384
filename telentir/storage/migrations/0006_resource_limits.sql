-- Per-user resource limits: each user's stored ciphertext bytes, and the key pairs generated for them
-- stored_bytes: the sum of the sizes of the user's objects, moved in the same transaction as
-- every create, patch and delete, so TELENTIR_QUOTA_BYTES_PER_USER is checked by reading one
-- row rather than summing them all. Existing users are counted once, here.
ALTER TABLE users ADD COLUMN stored_bytes INTEGER NOT NULL DEFAULT 0;
UPDATE users SET stored_bytes = (SELECT COALESCE(SUM(size), 0) FROM objects WHERE objects.user_id = users.id);
-- One row per RSA key pair generated for a user by POST /api/servers (TELENTIR_RSA_GENERATIONS_PER_HOUR),
-- counted in a rolling hour; older rows are dropped as the user's next generation is counted.
CREATE TABLE key_generations (
    user_id     TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    at          REAL NOT NULL
);
CREATE INDEX key_generations_user ON key_generations(user_id, at);
