-- Times become BIGINT milliseconds since the Unix epoch, as they are on SQLite, so that
-- both backends run the same SQL (crates/service/src/store/shared.rs). Every stored time
-- is kept, converted the way the store used to read it.
ALTER TABLE orders
    ALTER COLUMN created_at TYPE BIGINT USING (extract(epoch FROM created_at) * 1000)::bigint;
ALTER TABLE payment_attempts
    ALTER COLUMN created_at TYPE BIGINT USING (extract(epoch FROM created_at) * 1000)::bigint,
    ALTER COLUMN updated_at TYPE BIGINT USING (extract(epoch FROM updated_at) * 1000)::bigint,
    ALTER COLUMN finalized_at TYPE BIGINT USING (extract(epoch FROM finalized_at) * 1000)::bigint,
    ALTER COLUMN next_check_at TYPE BIGINT USING (extract(epoch FROM next_check_at) * 1000)::bigint,
    ALTER COLUMN lease_until TYPE BIGINT USING (extract(epoch FROM lease_until) * 1000)::bigint;
ALTER TABLE payment_events
    ALTER COLUMN created_at TYPE BIGINT USING (extract(epoch FROM created_at) * 1000)::bigint;
ALTER TABLE idempotency_keys
    ALTER COLUMN created_at TYPE BIGINT USING (extract(epoch FROM created_at) * 1000)::bigint;
