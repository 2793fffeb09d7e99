-- Reconciliation leases: an instance claims an attempt before asking the PG about it,
-- so two instances never ask about one attempt at once; a crashed instance's lease
-- expires and another takes the attempt over.
ALTER TABLE payment_attempts ADD COLUMN lease_owner TEXT;
ALTER TABLE payment_attempts ADD COLUMN lease_until INTEGER;
