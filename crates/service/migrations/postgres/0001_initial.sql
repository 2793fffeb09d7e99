-- Money is BIGINT whole won; times are timestamptz.

CREATE TABLE products (
    id        BIGINT PRIMARY KEY,
    name      TEXT   NOT NULL,
    price     BIGINT NOT NULL CHECK (price > 0),
    -- available + reserved + sold never changes for a product: stock is only moved.
    available BIGINT NOT NULL CHECK (available >= 0),
    reserved  BIGINT NOT NULL DEFAULT 0 CHECK (reserved >= 0),
    sold      BIGINT NOT NULL DEFAULT 0 CHECK (sold >= 0)
);

CREATE TABLE orders (
    id           BIGSERIAL   PRIMARY KEY,
    buyer_id     TEXT        NOT NULL,
    total_amount BIGINT      NOT NULL CHECK (total_amount > 0),
    created_at   timestamptz NOT NULL,
    anomaly      TEXT
);
CREATE INDEX orders_by_buyer ON orders (buyer_id, id DESC);

CREATE TABLE order_items (
    order_id   BIGINT NOT NULL REFERENCES orders (id) ON DELETE CASCADE,
    line       BIGINT NOT NULL,
    product_id BIGINT NOT NULL REFERENCES products (id),
    name       TEXT   NOT NULL,
    unit_price BIGINT NOT NULL,
    quantity   BIGINT NOT NULL CHECK (quantity BETWEEN 1 AND 999),
    amount     BIGINT NOT NULL,
    PRIMARY KEY (order_id, line)
);

CREATE TABLE payment_attempts (
    id              BIGSERIAL   PRIMARY KEY,
    order_id        BIGINT      NOT NULL REFERENCES orders (id) ON DELETE CASCADE,
    pg_order_id     TEXT        NOT NULL UNIQUE,
    gateway         TEXT        NOT NULL,
    card_type       TEXT        NOT NULL,
    card_last4      TEXT        NOT NULL CHECK (length(card_last4) = 4),
    amount          BIGINT      NOT NULL,
    status          TEXT        NOT NULL CHECK (status IN ('REQUESTED', 'PENDING', 'SUCCESS', 'FAILED')),
    transaction_key TEXT        UNIQUE,
    reason          TEXT,
    version         BIGINT      NOT NULL DEFAULT 0,
    created_at      timestamptz NOT NULL,
    updated_at      timestamptz NOT NULL,
    finalized_at    timestamptz,
    settled_by      TEXT,
    checks          BIGINT      NOT NULL DEFAULT 0,
    next_check_at   timestamptz NOT NULL,
    last_check      TEXT,
    stuck           BOOLEAN     NOT NULL DEFAULT FALSE,
    lease_owner     TEXT,
    lease_until     timestamptz
);
CREATE INDEX attempts_unsettled ON payment_attempts (next_check_at) WHERE status IN ('REQUESTED', 'PENDING');
CREATE INDEX attempts_by_order ON payment_attempts (order_id);

CREATE TABLE payment_events (
    id         BIGSERIAL   PRIMARY KEY,
    attempt_id BIGINT      NOT NULL,
    kind       TEXT        NOT NULL,
    detail     TEXT        NOT NULL,
    created_at timestamptz NOT NULL
);
CREATE INDEX events_by_attempt ON payment_events (attempt_id);

CREATE TABLE idempotency_keys (
    buyer_id        TEXT        NOT NULL,
    key             TEXT        NOT NULL,
    request_hash    TEXT        NOT NULL,
    response_status BIGINT,
    response_body   BYTEA,
    created_at      timestamptz NOT NULL,
    PRIMARY KEY (buyer_id, key)
);

INSERT INTO products (id, name, price, available) VALUES
    (1, '무선 키보드', 39000, 1000),
    (2, '게이밍 마우스', 25000, 1000),
    (3, '27인치 모니터', 289000, 500),
    (4, 'USB-C 허브', 45000, 1000),
    (5, '노트북 거치대', 19900, 1000);
