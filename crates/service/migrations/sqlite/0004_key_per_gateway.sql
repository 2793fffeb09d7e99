-- A transaction key is unique at its PG, not across PGs: two gateways may hand out the
-- same key. SQLite cannot drop a column's UNIQUE, so the table is rebuilt (nothing
-- references payment_attempts, so no foreign key action fires on the drop).
CREATE TABLE payment_attempts_new (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    order_id        INTEGER NOT NULL REFERENCES orders (id) ON DELETE CASCADE,
    pg_order_id     TEXT    NOT NULL UNIQUE,
    gateway         TEXT    NOT NULL,
    card_type       TEXT    NOT NULL,
    card_last4      TEXT    NOT NULL CHECK (length(card_last4) = 4),
    amount          INTEGER NOT NULL,
    status          TEXT    NOT NULL CHECK (status IN ('REQUESTED', 'PENDING', 'SUCCESS', 'FAILED')),
    transaction_key TEXT,
    reason          TEXT,
    version         INTEGER NOT NULL DEFAULT 0,
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL,
    finalized_at    INTEGER,
    settled_by      TEXT,
    checks          INTEGER NOT NULL DEFAULT 0,
    next_check_at   INTEGER NOT NULL,
    last_check      TEXT,
    stuck           INTEGER NOT NULL DEFAULT 0,
    lease_owner     TEXT,
    lease_until     INTEGER,
    UNIQUE (gateway, transaction_key)
);
INSERT INTO payment_attempts_new
    (id, order_id, pg_order_id, gateway, card_type, card_last4, amount, status, transaction_key, reason, version,
     created_at, updated_at, finalized_at, settled_by, checks, next_check_at, last_check, stuck, lease_owner,
     lease_until)
SELECT id, order_id, pg_order_id, gateway, card_type, card_last4, amount, status, transaction_key, reason, version,
       created_at, updated_at, finalized_at, settled_by, checks, next_check_at, last_check, stuck, lease_owner,
       lease_until
FROM payment_attempts;
DROP TABLE payment_attempts;
ALTER TABLE payment_attempts_new RENAME TO payment_attempts;
CREATE INDEX attempts_unsettled ON payment_attempts (status, next_check_at) WHERE status IN ('REQUESTED', 'PENDING');
CREATE INDEX attempts_by_order ON payment_attempts (order_id);
