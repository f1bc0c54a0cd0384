-- The whole current schema: a new database is created from this file alone, at the newest
-- version. Older databases are upgraded by telentir/storage/migrations/NNNN_*.sql (see its
-- README); tests/operate/test_migrations.py keeps the two in step.
-- Timestamps are ISO 8601 UTC strings with milliseconds ("2026-11-29T07:31:56.123Z").

CREATE TABLE IF NOT EXISTS users (
    id              TEXT PRIMARY KEY,
    email           TEXT NOT NULL UNIQUE COLLATE NOCASE,
    first_name      TEXT NOT NULL DEFAULT '',
    last_name       TEXT NOT NULL DEFAULT '',
    phone           TEXT NOT NULL,
    phone_verified  INTEGER NOT NULL DEFAULT 0,
    password_hash   TEXT,
    plan            TEXT NOT NULL,
    stripe_customer_id TEXT,
    created_at      TEXT NOT NULL,
    -- The sum of the sizes of the user's objects, moved in each write's transaction
    -- (TELENTIR_QUOTA_BYTES_PER_USER reads this one row).
    stored_bytes    INTEGER NOT NULL DEFAULT 0,
    -- Two-factor sign-in (telentir/services/twofactor.py): the TOTP secret sealed under the
    -- master key (context "totp:<user id>"), pending until totp_enabled is 1; the last time
    -- step whose code was accepted (each step's code works once).
    totp_secret_sealed BLOB,
    totp_enabled    INTEGER NOT NULL DEFAULT 0,
    totp_last_step  INTEGER,
    -- Every session token carries the epoch it was issued under: bumping it (a password
    -- change or reset) revokes every session of the user at once.
    session_epoch   INTEGER NOT NULL DEFAULT 0,
    -- Set by `telentir users disable`: every credential and sign-in is refused (account_disabled).
    disabled_at     TEXT,
    -- Set by the first step of an account's deletion (services/deletion.py): from then on no
    -- credential works and no read finds the user; a restart finishes a deletion cut short.
    deleted_at      TEXT
);

-- What happened to an account (services/audit.py), written in the transaction of the change it
-- records; never a secret. user_id is no foreign key: a deleted account's `account_deleted`
-- entry outlives the user row. Pruned after TELENTIR_AUDIT_RETENTION_DAYS.
CREATE TABLE IF NOT EXISTS audit (
    id          INTEGER PRIMARY KEY,
    user_id     TEXT NOT NULL,
    at          TEXT NOT NULL,
    action      TEXT NOT NULL,
    ip          TEXT,
    credential  TEXT,
    detail      TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX IF NOT EXISTS audit_user ON audit(user_id, id);
CREATE INDEX IF NOT EXISTS audit_at ON audit(at);

-- The single-use recovery codes of a user with 2FA on, as SHA-256 hashes.
CREATE TABLE IF NOT EXISTS recovery_codes (
    user_id     TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    code_hash   TEXT NOT NULL,
    used_at     TEXT,
    PRIMARY KEY (user_id, code_hash)
);

-- The pending password-reset code of a user (sent by SMS).
CREATE TABLE IF NOT EXISTS password_reset_codes (
    user_id     TEXT PRIMARY KEY REFERENCES users(id) ON DELETE CASCADE,
    code_hash   TEXT NOT NULL,
    expires_at  REAL NOT NULL,
    attempts    INTEGER NOT NULL DEFAULT 0
);

CREATE TABLE IF NOT EXISTS api_keys (
    id            TEXT PRIMARY KEY,
    user_id       TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    name          TEXT NOT NULL,
    key_hash      TEXT NOT NULL UNIQUE,
    created_at    TEXT NOT NULL,
    last_used_at  TEXT,
    revoked_at    TEXT
);
CREATE INDEX IF NOT EXISTS api_keys_user ON api_keys(user_id);

-- Logged-out session tokens, kept until they would have expired anyway.
CREATE TABLE IF NOT EXISTS revoked_tokens (
    jti         TEXT PRIMARY KEY,
    expires_at  REAL NOT NULL
);

CREATE TABLE IF NOT EXISTS phone_codes (
    user_id     TEXT PRIMARY KEY REFERENCES users(id) ON DELETE CASCADE,
    code_hash   TEXT NOT NULL,
    expires_at  REAL NOT NULL,
    attempts    INTEGER NOT NULL DEFAULT 0
);

-- What the abuse limits count (telentir/services/ratelimit.py): one row per counted event
-- (a failed sign-in, a text sent, a sign-up) in its bucket ("sign_in:pair:<email> <addr>",
-- "sms:phone:<digits>", ...), kept until `expires_at`, the end of its limit's window. Every
-- worker and node counts in this one table, inside the write transaction that checks it.
CREATE TABLE IF NOT EXISTS limit_events (
    id          INTEGER PRIMARY KEY,
    bucket      TEXT NOT NULL,
    at          REAL NOT NULL,
    expires_at  REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS limit_events_bucket ON limit_events(bucket, expires_at);
CREATE INDEX IF NOT EXISTS limit_events_expiry ON limit_events(expires_at);

-- The platform's own servers: the current one holds a sealed private key (it signs JWTs);
-- remote ones are public keys only.
CREATE TABLE IF NOT EXISTS platform_servers (
    name                TEXT PRIMARY KEY,
    public_key          TEXT NOT NULL,
    private_key_sealed  BLOB,
    created_at          TEXT NOT NULL
);

-- A user's servers: "default" is custodial (sealed private key), others are BYOK.
CREATE TABLE IF NOT EXISTS servers (
    user_id             TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    name                TEXT NOT NULL,
    mode                TEXT NOT NULL CHECK (mode IN ('custodial', 'generate', 'upload_public')),
    public_key          TEXT NOT NULL,
    private_key_sealed  BLOB,
    deprecated          INTEGER NOT NULL DEFAULT 0,
    created_at          TEXT NOT NULL,
    PRIMARY KEY (user_id, name)
);

CREATE TABLE IF NOT EXISTS keys (
    id          TEXT PRIMARY KEY,
    user_id     TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    server      TEXT NOT NULL,
    wrapped     BLOB NOT NULL,
    iv          BLOB NOT NULL,
    metadata    TEXT NOT NULL DEFAULT '{}',
    deprecated  INTEGER NOT NULL DEFAULT 0,
    created_at  TEXT NOT NULL,
    updated_at  TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS keys_user ON keys(user_id);

-- n orders objects by creation ("oldest first") and makes paging cursors cheap.
-- key_id is deliberately not a foreign key: deleting a key leaves its objects (docs/protocol.md §3).
-- The ciphertext is either a file (`blob`) or, when small, kept in the row (`inline_content`).
CREATE TABLE IF NOT EXISTS objects (
    n           INTEGER PRIMARY KEY,
    id          TEXT NOT NULL UNIQUE,
    user_id     TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    key_id      TEXT NOT NULL,
    blob        TEXT UNIQUE,
    inline_content BLOB,
    size        INTEGER NOT NULL,
    auth_tag    BLOB NOT NULL,
    related_id  TEXT,
    metadata    TEXT NOT NULL DEFAULT '{}',
    created_at  TEXT NOT NULL,
    updated_at  TEXT NOT NULL,
    CHECK ((blob IS NULL) != (inline_content IS NULL))
);
CREATE INDEX IF NOT EXISTS objects_related ON objects(related_id, n);
CREATE INDEX IF NOT EXISTS objects_user ON objects(user_id);

-- Where deleted objects stood in their parent's list, so a paging cursor naming one keeps
-- working (read a page, delete it, ask for the next). Pruned with the events.
CREATE TABLE IF NOT EXISTS object_tombstones (
    id          TEXT PRIMARY KEY,
    related_id  TEXT NOT NULL,
    n           INTEGER NOT NULL,
    deleted_at  TEXT NOT NULL
);

-- The eight stores of a user's root; the root exists once all eight rows do.
CREATE TABLE IF NOT EXISTS stores (
    user_id      TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    name         TEXT NOT NULL,
    object_id    TEXT NOT NULL,
    default_key  TEXT NOT NULL,
    PRIMARY KEY (user_id, name)
);

CREATE TABLE IF NOT EXISTS publications (
    user_id     TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    type        TEXT NOT NULL,
    related_id  TEXT NOT NULL,
    object_id   TEXT NOT NULL,
    created_at  TEXT NOT NULL,
    PRIMARY KEY (user_id, type, related_id)
);
CREATE INDEX IF NOT EXISTS publications_object ON publications(object_id);
CREATE INDEX IF NOT EXISTS publications_related ON publications(related_id);

-- The outbox: every change appends its event here in the same transaction. AUTOINCREMENT
-- so ids are never reused after pruning (a client's Last-Event-ID stays meaningful).
-- An inline object's object_created event does not repeat its ciphertext: the payload says
-- `"content":null` and object_n names the object row, which holds the very bytes; before that
-- row's content changes or the row goes, they are copied here into `content` and object_n is
-- cleared (services/events.py). Events written before version 10 keep it as hex in the payload.
CREATE TABLE IF NOT EXISTS events (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id     TEXT NOT NULL,
    type        TEXT NOT NULL,
    channel     TEXT NOT NULL,
    payload     TEXT NOT NULL,
    created_at  TEXT NOT NULL,
    object_n    INTEGER,
    content     BLOB
);
CREATE INDEX IF NOT EXISTS events_user ON events(user_id, id);
CREATE INDEX IF NOT EXISTS events_object ON events(object_n) WHERE object_n IS NOT NULL;

-- Retention bookkeeping: every event with id <= pruned_through may have been pruned, so a
-- stream resuming from an older cursor is told to resync.
CREATE TABLE IF NOT EXISTS event_retention (
    id              INTEGER PRIMARY KEY CHECK (id = 1),
    pruned_through  INTEGER NOT NULL
);
INSERT INTO event_retention (id, pruned_through) VALUES (1, 0) ON CONFLICT DO NOTHING;

-- Ingestion jobs (POST /api/connect). Leads: requested, granted, allowance_part (reserved from
-- the monthly allowance), allowance_used, used. Minor units: price (per paid lead), reserved,
-- charged, refunded. settlement: open | reserve_unknown | refund_pending | settled.
-- The lease: while a job has an open step (status reserving or running, or a pending Stripe
-- settlement), `owner` names the process working on it and `heartbeat_at` (Unix seconds) is
-- that process's last sign of life; any live process may take over a job whose heartbeat is
-- older than TELENTIR_JOB_LEASE_SECONDS, with a conditional UPDATE that exactly one wins.
-- NULL owner: nobody works on it (finished, or free to be taken).
CREATE TABLE IF NOT EXISTS jobs (
    id              TEXT PRIMARY KEY,
    user_id         TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    status          TEXT NOT NULL,
    repository      TEXT NOT NULL,
    store_id        TEXT NOT NULL,
    path            TEXT NOT NULL,
    params          TEXT NOT NULL,
    billing         TEXT NOT NULL CHECK (billing IN ('none', 'local', 'stripe')),
    customer_id     TEXT,
    created         INTEGER NOT NULL DEFAULT 0,
    skipped         INTEGER NOT NULL DEFAULT 0,
    requested       INTEGER NOT NULL DEFAULT 0,
    granted         INTEGER NOT NULL DEFAULT 0,
    allowance_part  INTEGER NOT NULL DEFAULT 0,
    allowance_used  INTEGER NOT NULL DEFAULT 0,
    price           INTEGER NOT NULL DEFAULT 0,
    reserved        INTEGER NOT NULL DEFAULT 0,
    used            INTEGER NOT NULL DEFAULT 0,
    charged         INTEGER NOT NULL DEFAULT 0,
    refunded        INTEGER NOT NULL DEFAULT 0,
    settlement      TEXT NOT NULL DEFAULT 'open',
    error           TEXT,
    created_at      TEXT NOT NULL,
    started_at      TEXT,
    finished_at     TEXT,
    owner           TEXT,
    heartbeat_at    REAL
);
CREATE INDEX IF NOT EXISTS jobs_user ON jobs(user_id, created_at);
CREATE INDEX IF NOT EXISTS jobs_status ON jobs(status);
CREATE INDEX IF NOT EXISTS jobs_settlement ON jobs(settlement);
-- The open jobs of a user, counted at every job start (TELENTIR_CONNECT_PER_USER).
CREATE INDEX IF NOT EXISTS jobs_open ON jobs(user_id) WHERE status IN ('running', 'reserving');

-- The credits ledger, append-only. amount: effect on the prepaid balance (minor units, signed);
-- leads: effect on the month's allowance use (signed); charged: what a job's charge row bills.
-- source: 'local' rows are the local prepaid balance; 'stripe' rows mirror money moved in
-- Stripe (external_id is the balance transaction). A job step is written once (unique index),
-- so settlement is idempotent. 'topup' rows mirror credit bought with Stripe Checkout (one per
-- Checkout Session, see stripe_topups).
CREATE TABLE IF NOT EXISTS ledger (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id      TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    job_id       TEXT,
    kind         TEXT NOT NULL CHECK (kind IN ('grant', 'reserve', 'charge', 'refund', 'allowance',
                                               'allowance_release', 'topup')),
    amount       INTEGER NOT NULL DEFAULT 0,
    leads        INTEGER NOT NULL DEFAULT 0,
    charged      INTEGER NOT NULL DEFAULT 0,
    month        TEXT NOT NULL,
    source       TEXT NOT NULL DEFAULT 'local' CHECK (source IN ('local', 'stripe')),
    external_id  TEXT,
    note         TEXT,
    created_at   TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS ledger_user ON ledger(user_id, month);
CREATE UNIQUE INDEX IF NOT EXISTS ledger_job_step ON ledger(job_id, kind) WHERE job_id IS NOT NULL;

-- Stripe webhook events, each applied at most once (docs/protocol.md §7). status: applied |
-- ignored (nothing to do: unknown type, older than what is known, no such user) | failed
-- (Stripe redelivers it; a redelivery tries again). created is the event's own Unix time.
CREATE TABLE IF NOT EXISTS stripe_events (
    id           TEXT PRIMARY KEY,
    type         TEXT NOT NULL,
    created      INTEGER NOT NULL,
    object_id    TEXT,
    user_id      TEXT,
    status       TEXT NOT NULL CHECK (status IN ('applied', 'ignored', 'failed')),
    note         TEXT,
    attempts     INTEGER NOT NULL DEFAULT 1,
    received_at  TEXT NOT NULL,
    updated_at   TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS stripe_events_received ON stripe_events(received_at);

-- What is known of each Stripe subscription: the newest state seen (stamp: the Unix time of
-- the event or read that said it), so events applied in any order converge. A user's plan
-- follows their newest live subscription; with none live, the default plan.
CREATE TABLE IF NOT EXISTS stripe_subscriptions (
    id           TEXT PRIMARY KEY,
    user_id      TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    customer_id  TEXT NOT NULL,
    status       TEXT NOT NULL,
    price_id     TEXT,
    plan         TEXT,
    started      INTEGER NOT NULL,
    stamp        INTEGER NOT NULL,
    updated_at   TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS stripe_subscriptions_user ON stripe_subscriptions(user_id);

-- Subscription invoices whose payment failed or later succeeded (newest state per invoice);
-- the user's newest one, if failed, is shown in GET /api/billing/state.
CREATE TABLE IF NOT EXISTS stripe_invoices (
    id           TEXT PRIMARY KEY,
    user_id      TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    status       TEXT NOT NULL CHECK (status IN ('failed', 'paid')),
    amount_due   INTEGER NOT NULL,
    currency     TEXT NOT NULL,
    stamp        INTEGER NOT NULL,
    updated_at   TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS stripe_invoices_user ON stripe_invoices(user_id, stamp);

-- Credit bought with Stripe Checkout: one row per paid session, so a session is credited once
-- whether its webhook arrives twice, late, or `telentir billing sync` finds it first.
CREATE TABLE IF NOT EXISTS stripe_topups (
    session_id   TEXT PRIMARY KEY,
    user_id      TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    customer_id  TEXT NOT NULL,
    amount       INTEGER NOT NULL,
    transaction_id TEXT NOT NULL,
    event_id     TEXT,
    created_at   TEXT NOT NULL
);

-- Sign-up invitations (TELENTIR_SIGNUP=invite), minted by `telentir invites create`. Only a
-- hash of each code is kept. A code is used once, in the transaction that creates its
-- account; plan NULL means TELENTIR_DEFAULT_PLAN at sign-up.
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

-- One row per open event stream, named by the host and process serving it, so the caps
-- (TELENTIR_SSE_MAX_STREAMS, TELENTIR_SSE_MAX_STREAMS_PER_USER) count a box's streams
-- whichever worker holds them. A dead process's rows are dropped when a cap is reached,
-- and every row of the host at start-up.
CREATE TABLE IF NOT EXISTS stream_slots (
    id          INTEGER PRIMARY KEY,
    host        TEXT NOT NULL,
    pid         INTEGER NOT NULL,
    user_id     TEXT NOT NULL,
    opened_at   TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS stream_slots_user ON stream_slots(host, user_id);

-- One row per RSA key pair generated for a user by POST /api/servers (TELENTIR_RSA_GENERATIONS_PER_HOUR),
-- counted in a rolling hour; older rows are dropped as the user's next generation is counted.
CREATE TABLE IF NOT EXISTS key_generations (
    user_id     TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    at          REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS key_generations_user ON key_generations(user_id, at);

-- One row per RSA key pair generated for a user by POST /api/servers (TELENTIR_RSA_GENERATIONS_PER_HOUR),
-- counted in a rolling hour; older rows are dropped as the user's next generation is counted.
CREATE TABLE IF NOT EXISTS key_generations (
    user_id     TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    at          REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS key_generations_user ON key_generations(user_id, at);
