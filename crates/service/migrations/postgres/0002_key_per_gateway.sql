-- A transaction key is unique at its PG, not across PGs: two gateways may hand out the
-- same key.
ALTER TABLE payment_attempts DROP CONSTRAINT payment_attempts_transaction_key_key;
ALTER TABLE payment_attempts ADD CONSTRAINT payment_attempts_gateway_transaction_key_key
    UNIQUE (gateway, transaction_key);
