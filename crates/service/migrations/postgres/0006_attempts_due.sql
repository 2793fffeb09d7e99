-- The reconciler finds the attempts it may claim by `finalized_at IS NULL` (set by the
-- settlement, the one way to a final status) as well as by status: the statuses are
-- bound by the state machine, so a generic plan could never prove it matched
-- attempts_unsettled's WHERE and read every attempt of the gateway instead (it grows
-- with every payment ever made). A literal `finalized_at IS NULL` matches this one.
-- IF NOT EXISTS: on a large table an operator builds it CONCURRENTLY beforehand
-- (docs/operations.md, "Upgrading").
DROP INDEX attempts_unsettled;
CREATE INDEX IF NOT EXISTS attempts_due ON payment_attempts (gateway, next_check_at) WHERE finalized_at IS NULL;
