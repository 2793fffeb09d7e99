-- Money is INTEGER whole won; times are INTEGER unix milliseconds (UTC).

CREATE TABLE products (
    id        INTEGER PRIMARY KEY,
    name      TEXT    NOT NULL,
    price     INTEGER NOT NULL CHECK (price > 0),
    -- available + reserved + sold never changes for a product: stock is only moved.
    available INTEGER NOT NULL CHECK (available >= 0),
    reserved  INTEGER NOT NULL DEFAULT 0 CHECK (reserved >= 0),
    sold      INTEGER NOT NULL DEFAULT 0 CHECK (sold >= 0)
);

CREATE TABLE orders (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    buyer_id     TEXT    NOT NULL,
    total_amount INTEGER NOT NULL CHECK (total_amount > 0),
    created_at   INTEGER NOT NULL,
    -- Set when the PG charged this order twice, or charged an attempt we had failed.
    anomaly      TEXT
);
CREATE INDEX orders_by_buyer ON orders (buyer_id, id DESC);

CREATE TABLE order_items (
    order_id   INTEGER NOT NULL REFERENCES orders (id) ON DELETE CASCADE,
    line       INTEGER NOT NULL,
    product_id INTEGER NOT NULL REFERENCES products (id),
    name       TEXT    NOT NULL,
    unit_price INTEGER NOT NULL,
    quantity   INTEGER NOT NULL CHECK (quantity BETWEEN 1 AND 999),
    amount     INTEGER NOT NULL,
    PRIMARY KEY (order_id, line)
);

CREATE TABLE payment_attempts (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    order_id        INTEGER NOT NULL REFERENCES orders (id) ON DELETE CASCADE,
    -- The orderId sent to the PG: one per attempt, so a lookup by it finds exactly the
    -- transactions this attempt may have created.
    pg_order_id     TEXT    NOT NULL UNIQUE,
    gateway         TEXT    NOT NULL,
    card_type       TEXT    NOT NULL,
    card_last4      TEXT    NOT NULL CHECK (length(card_last4) = 4),
    amount          INTEGER NOT NULL,
    status          TEXT    NOT NULL CHECK (status IN ('REQUESTED', 'PENDING', 'SUCCESS', 'FAILED')),
    transaction_key TEXT    UNIQUE,
    reason          TEXT,
    version         INTEGER NOT NULL DEFAULT 0,
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL,
    finalized_at    INTEGER,
    settled_by      TEXT,
    -- Reconciliation bookkeeping.
    checks          INTEGER NOT NULL DEFAULT 0,
    next_check_at   INTEGER NOT NULL,
    last_check      TEXT,
    stuck           INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX attempts_unsettled ON payment_attempts (status, next_check_at) WHERE status IN ('REQUESTED', 'PENDING');
CREATE INDEX attempts_by_order ON payment_attempts (order_id);

-- Deliveries and findings that were recorded but not applied: duplicate or
-- contradictory callbacks, double charges, charges to refund.
CREATE TABLE payment_events (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    attempt_id INTEGER NOT NULL,
    kind       TEXT    NOT NULL,
    detail     TEXT    NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE INDEX events_by_attempt ON payment_events (attempt_id);

INSERT INTO products (id, name, price, available) VALUES
    (1, '무선 키보드', 39000, 1000),
    (2, '게이밍 마우스', 25000, 1000),
    (3, '27인치 모니터', 289000, 500),
    (4, 'USB-C 허브', 45000, 1000),
    (5, '노트북 거치대', 19900, 1000);
