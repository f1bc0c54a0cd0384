-- Stripe billing: webhook events applied once, subscriptions, invoices, Checkout top-ups; ledger kind 'topup'
-- The ledger's CHECK gains 'topup': SQLite changes a CHECK only by rebuilding the table. Columns
-- are copied by name, and the AUTOINCREMENT counter is carried over so ids are never reused.
CREATE TABLE ledger_new (
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
INSERT INTO ledger_new (id, user_id, job_id, kind, amount, leads, charged, month, source, external_id, note, created_at)
    SELECT id, user_id, job_id, kind, amount, leads, charged, month, source, external_id, note, created_at FROM ledger;
UPDATE sqlite_sequence SET seq = (SELECT seq FROM sqlite_sequence WHERE name = 'ledger')
    WHERE name = 'ledger_new' AND EXISTS (SELECT 1 FROM sqlite_sequence WHERE name = 'ledger');
DROP TABLE ledger;
ALTER TABLE ledger_new RENAME TO ledger;
CREATE INDEX ledger_user ON ledger(user_id, month);
CREATE UNIQUE INDEX ledger_job_step ON ledger(job_id, kind) WHERE job_id IS NOT NULL;

CREATE TABLE stripe_events (
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
CREATE INDEX stripe_events_received ON stripe_events(received_at);

CREATE TABLE stripe_subscriptions (
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
CREATE INDEX stripe_subscriptions_user ON stripe_subscriptions(user_id);

CREATE TABLE stripe_invoices (
    id           TEXT PRIMARY KEY,
    user_id      TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    status       TEXT NOT NULL CHECK (status IN ('failed', 'paid')),
    amount_due   INTEGER NOT NULL,
    currency     TEXT NOT NULL,
    stamp        INTEGER NOT NULL,
    updated_at   TEXT NOT NULL
);
CREATE INDEX stripe_invoices_user ON stripe_invoices(user_id, stamp);

CREATE TABLE stripe_topups (
    session_id   TEXT PRIMARY KEY,
    user_id      TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    customer_id  TEXT NOT NULL,
    amount       INTEGER NOT NULL,
    transaction_id TEXT NOT NULL,
    event_id     TEXT,
    created_at   TEXT NOT NULL
);
