-- Abuse limits: limit_events (failed attempts, texts per phone, sign-ups per address) replaces auth_failures
-- Each row carries its own expiry, so limits of different windows (sign-in failures: 15
-- minutes; texts and sign-ups: an hour) share one table. The failures counted in
-- auth_failures are not carried over: their buckets are named differently now, and they
-- would have expired within TELENTIR_AUTH_WINDOW_SECONDS anyway.
CREATE TABLE limit_events (
    id          INTEGER PRIMARY KEY,
    bucket      TEXT NOT NULL,
    at          REAL NOT NULL,
    expires_at  REAL NOT NULL
);
CREATE INDEX limit_events_bucket ON limit_events(bucket, expires_at);
CREATE INDEX limit_events_expiry ON limit_events(expires_at);
DROP TABLE auth_failures;
