-- The request fingerprint used to be an unkeyed SHA-256 of the whole checkout body,
-- card number included: with the card's public first 6 and stored last 4 digits, the
-- other 6 could be found by trying a million hashes. The fingerprint no longer covers
-- the full card number (docs/security.md); the old ones are overwritten with a marker
-- that says "fingerprint unknown": such a key replays its saved response to any body
-- rather than start a second payment.
UPDATE idempotency_keys SET request_hash = 'unknown';

-- The order a keyed checkout created, set in the order's own transaction: a key left
-- in flight by a crash can then answer with that order (docs/security.md).
ALTER TABLE idempotency_keys ADD COLUMN order_id INTEGER;
