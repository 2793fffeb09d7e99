-- Idempotency-Key on checkout (Stripe semantics): one row per buyer and key.
CREATE TABLE idempotency_keys (
    buyer_id        TEXT    NOT NULL,
    key             TEXT    NOT NULL,
    -- SHA-256 of the canonical request body: the same key with another body is refused.
    request_hash    TEXT    NOT NULL,
    -- NULL while the first request is in flight.
    response_status INTEGER,
    response_body   BLOB,
    created_at      INTEGER NOT NULL,
    PRIMARY KEY (buyer_id, key)
);
