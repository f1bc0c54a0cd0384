-- Stripe billing (PostgreSQL): the ledger's CHECK gains 'topup' in place; the new tables as in 0002_stripe_billing.sql
-- PostgreSQL changes a CHECK without rebuilding the table (ids and the identity stay as they are).
-- Like every step, this file is translated by telentir.storage.dialect.postgres_ddl before it runs.
ALTER TABLE ledger DROP CONSTRAINT ledger_kind_check;
ALTER TABLE ledger ADD CONSTRAINT ledger_kind_check CHECK (kind IN ('grant', 'reserve', 'charge', 'refund',
    'allowance', 'allowance_release', 'topup'));

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
