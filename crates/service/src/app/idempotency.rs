//! `Idempotency-Key` on checkout, with Stripe's semantics: the same key and body from
//! the same buyer get the first answer byte for byte and start no second payment; the
//! same key with another body is refused; while the first request runs, a repeat is
//! refused. Keys live in the database, so a restart keeps them. A key whose request died
//! with its process (in flight for longer than any checkout runs) answers with the order
//! that request created, or starts afresh when none stands.

use std::sync::Arc;
use std::time::Duration;

use sha2::{Digest, Sha256};

use super::checkout::CheckoutRequest;
use crate::configuration::CheckoutSettings;
use crate::domain::{BuyerId, OrderId, Timestamp};
use crate::store::{IdempotencyStart, IdempotencyStore, KeyClaim, OrderStore, StoreError};

/// How a request under a key goes on.
#[derive(Debug, PartialEq, Eq)]
pub enum Start {
    /// The key is this request's: run the checkout.
    Fresh,
    /// The key's first request finished: answer with what it answered.
    Saved { status: u16, body: Vec<u8> },
    /// The key's first request died after creating this order: answer with the order.
    ReplayOrder(OrderId),
}

#[derive(Debug, thiserror::Error)]
pub enum IdempotencyError {
    #[error("the key's first request is still in flight")]
    InFlight,
    #[error("the key was used with another request")]
    Mismatch,
    #[error(transparent)]
    Store(#[from] StoreError),
}

pub struct Idempotency {
    keys: Arc<dyn IdempotencyStore>,
    /// Where a key's order is looked up when its first request seems abandoned.
    orders: Arc<dyn OrderStore>,
    ttl: Duration,
    in_flight: Duration,
}

impl Idempotency {
    pub fn new(
        keys: Arc<dyn IdempotencyStore>,
        orders: Arc<dyn OrderStore>,
        settings: &CheckoutSettings,
    ) -> Idempotency {
        Idempotency {
            keys,
            orders,
            ttl: Duration::from_secs(settings.idempotency_ttl_secs),
            in_flight: Duration::from_secs(settings.idempotency_in_flight_secs),
        }
    }

    pub async fn start(&self, buyer: &BuyerId, key: &str, fingerprint: &str) -> Result<Start, IdempotencyError> {
        let now = Timestamp::now();
        let claim = KeyClaim { buyer, key, request_hash: fingerprint, now, expires_before: now - self.ttl };
        match self.keys.begin_idempotent(claim).await? {
            IdempotencyStart::Started => Ok(Start::Fresh),
            IdempotencyStart::Saved { status, body } => Ok(Start::Saved { status, body }),
            IdempotencyStart::Mismatch => Err(IdempotencyError::Mismatch),
            IdempotencyStart::InFlight { order_id, since } => {
                // A live checkout ends well within this (its PG deadline); older means its
                // process died mid-request and nobody will ever finish the key.
                if now.since(since) < self.in_flight {
                    return Err(IdempotencyError::InFlight);
                }
                if let Some(order_id) = order_id
                    && self.orders.order(order_id).await?.is_some()
                {
                    return Ok(Start::ReplayOrder(order_id));
                }
                // No order stands (none created, or rolled back): nothing reached a PG.
                match self.keys.retake_idempotent(&claim, since).await? {
                    true => Ok(Start::Fresh),
                    false => Err(IdempotencyError::InFlight),
                }
            }
        }
    }

    /// Keeps the answer for replays, or releases the key when the request changed
    /// nothing and may run again (a 5xx: the PG was unavailable, or we failed). A key
    /// that cannot be written stays in flight: a repeat meanwhile is told so, and once
    /// it is stale the repeat gets the order it is linked to.
    pub async fn finish(&self, buyer: &BuyerId, key: &str, status: u16, body: &[u8]) {
        let saved = if status >= 500 {
            self.keys.release_idempotent(buyer, key).await
        } else {
            self.keys.finish_idempotent(buyer, key, status, body).await
        };
        if let Err(error) = saved {
            tracing::warn!(%error, status, "an idempotent checkout's answer could not be saved");
        }
    }
}

/// What tells two requests under one key apart: the lines, the card type and the
/// card's last 4 digits, hashed. Never the full card number: an unkeyed hash of it sits
/// in the database, and its 6 unknown digits (issuer prefix public, last 4 stored) fall
/// to a million guesses. Two cards with the same last 4 under one key count as one
/// request, which is the key's promise anyway.
pub fn fingerprint(request: &CheckoutRequest) -> String {
    let mut canonical = String::new();
    for line in &request.lines {
        canonical.push_str(&format!("{}x{};", line.product_id.0, line.quantity.get()));
    }
    canonical.push_str(&format!("{}:{}", request.card_type.as_str(), request.card.last4()));
    hex::encode(Sha256::digest(canonical))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(lines: &[(i64, u32)], card: &str) -> CheckoutRequest {
        use crate::domain::{CardNumber, CheckoutLine, ProductId, Quantity};
        CheckoutRequest {
            buyer: BuyerId::parse("buyer-1").unwrap(),
            lines: lines
                .iter()
                .map(|&(p, q)| CheckoutLine { product_id: ProductId(p), quantity: Quantity::parse(q as i64).unwrap() })
                .collect(),
            card_type: crate::domain::CardType::Kb,
            card: CardNumber::parse(card).unwrap(),
            idempotency_key: None,
        }
    }

    #[test]
    fn the_fingerprint_tells_requests_apart_but_never_depends_on_the_hidden_card_digits() {
        let base = fingerprint(&request(&[(1, 2), (3, 1)], "1234-5678-9814-1451"));
        assert_eq!(base, fingerprint(&request(&[(1, 2), (3, 1)], "9999-0000-1111-1451")), "only the last 4 count");
        assert_ne!(base, fingerprint(&request(&[(1, 2), (3, 1)], "1234-5678-9814-1452")));
        assert_ne!(base, fingerprint(&request(&[(1, 3), (3, 1)], "1234-5678-9814-1451")));
        assert_ne!(base, fingerprint(&request(&[(1, 2)], "1234-5678-9814-1451")));
    }
}
