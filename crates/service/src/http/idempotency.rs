//! `Idempotency-Key` on checkout, with Stripe's semantics: the same key and body from
//! the same buyer get the first response byte for byte and start no second payment;
//! the same key with another body is refused (422); while the first request runs, a
//! repeat is refused (409). Keys live in the database, so a restart keeps them. A key
//! whose request died with its process (in flight for longer than any checkout runs)
//! answers with the order that request created, or starts afresh when none stands.

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

use super::response::ApiError;
use crate::app::checkout::CheckoutRequest;
use crate::configuration::CheckoutSettings;
use crate::domain::BuyerId;
use crate::store::{IdempotencyStart, Store};

pub const HEADER: &str = "Idempotency-Key";

/// A key as the client sent it: 1 to 255 visible ASCII characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    pub fn from_headers(headers: &HeaderMap) -> Result<Option<IdempotencyKey>, ApiError> {
        let Some(raw) = headers.get(HEADER) else { return Ok(None) };
        let bytes = raw.as_bytes();
        if bytes.is_empty() || bytes.len() > 255 || !bytes.iter().all(|b| (0x21..=0x7e).contains(b)) {
            return Err(ApiError::invalid("Idempotency-Key", "Idempotency-Key 는 1~255자의 ASCII 문자여야 합니다."));
        }
        Ok(Some(IdempotencyKey(String::from_utf8_lossy(bytes).into_owned())))
    }

    pub fn as_str(&self) -> &str {
        &self.0
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

pub enum NextAction {
    StartProcessing,
    ReturnSavedResponse(Response),
    /// The key's first request died after creating this order: answer with it.
    ReplayOrder(i64),
}

pub async fn try_processing(
    store: &dyn Store,
    buyer: &BuyerId,
    key: &IdempotencyKey,
    fingerprint: &str,
    settings: &CheckoutSettings,
) -> Result<NextAction, ApiError> {
    let now = crate::app::now_ms();
    let ttl_ms = settings.idempotency_ttl_secs as i64 * 1_000;
    match store.begin_idempotent(buyer, &key.0, fingerprint, now, now - ttl_ms).await? {
        IdempotencyStart::Started => Ok(NextAction::StartProcessing),
        IdempotencyStart::InFlight { order_id, since_ms } => {
            // A live checkout ends well within this (its PG deadline); older means its
            // process died mid-request and nobody will ever finish the key.
            if now - since_ms < settings.idempotency_in_flight_secs as i64 * 1_000 {
                return Err(ApiError::IdempotencyInFlight);
            }
            if let Some(order_id) = order_id
                && store.order(order_id).await?.is_some()
            {
                return Ok(NextAction::ReplayOrder(order_id));
            }
            // No order stands (none created, or rolled back): nothing reached a PG.
            match store.retake_idempotent(buyer, &key.0, since_ms, now).await? {
                true => Ok(NextAction::StartProcessing),
                false => Err(ApiError::IdempotencyInFlight),
            }
        }
        IdempotencyStart::Mismatch => Err(ApiError::IdempotencyMismatch),
        IdempotencyStart::Saved { status, body } => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let mut response = (status, body).into_response();
            response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
            response.headers_mut().insert("Idempotent-Replayed", HeaderValue::from_static("true"));
            Ok(NextAction::ReturnSavedResponse(response))
        }
    }
}

/// Saves the response for replays, or releases the key when the request changed
/// nothing and may run again (the PG was unavailable, or we failed).
pub async fn save_response(
    store: &dyn Store,
    buyer: &BuyerId,
    key: &IdempotencyKey,
    response: Response,
) -> Result<Response, ApiError> {
    let (parts, body) = response.into_parts();
    let bytes = axum::body::to_bytes(body, usize::MAX).await.map_err(|e| ApiError::Internal(e.to_string()))?;
    let saved = if parts.status == StatusCode::SERVICE_UNAVAILABLE || parts.status.is_server_error() {
        store.release_idempotent(buyer, &key.0).await
    } else {
        store.finish_idempotent(buyer, &key.0, parts.status.as_u16(), &bytes).await
    };
    // The answer stands either way. An unsaved key stays in flight: a repeat meanwhile is
    // told so (409), and once it is stale the repeat gets the order it is linked to.
    if let Err(error) = saved {
        tracing::warn!(%error, status = parts.status.as_u16(), "an idempotent checkout's answer could not be saved");
    }
    Ok(Response::from_parts(parts, Body::from(bytes)))
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
            card_type: gateway::wire::CardType::Kb,
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

    #[test]
    fn keys_are_short_visible_ascii() {
        let mut headers = HeaderMap::new();
        assert_eq!(IdempotencyKey::from_headers(&headers).unwrap(), None);
        headers.insert(HEADER, HeaderValue::from_static("order-7f3a"));
        assert!(IdempotencyKey::from_headers(&headers).unwrap().is_some());
        headers.insert(HEADER, HeaderValue::from_static("has space"));
        assert!(IdempotencyKey::from_headers(&headers).is_err());
        headers.insert(HEADER, HeaderValue::from_str(&"k".repeat(256)).unwrap());
        assert!(IdempotencyKey::from_headers(&headers).is_err());
    }
}
