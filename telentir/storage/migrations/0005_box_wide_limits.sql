-- Stream caps and per-user job limits hold across every worker process, not per process
-- One row per open event stream, named by the host and process serving it, so the caps
-- (TELENTIR_SSE_MAX_STREAMS, TELENTIR_SSE_MAX_STREAMS_PER_USER) count a box's streams
-- whichever worker holds them. A dead process's rows are dropped when a cap is reached,
-- and every row of the host at start-up.
CREATE TABLE stream_slots (
    id          INTEGER PRIMARY KEY,
    host        TEXT NOT NULL,
    pid         INTEGER NOT NULL,
    user_id     TEXT NOT NULL,
    opened_at   TEXT NOT NULL
);
CREATE INDEX stream_slots_user ON stream_slots(host, user_id);
-- The open jobs of a user, counted at every job start (TELENTIR_CONNECT_PER_USER).
CREATE INDEX jobs_open ON jobs(user_id) WHERE status IN ('running', 'reserving');
