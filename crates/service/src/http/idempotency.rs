//! `Idempotency-Key` on checkout, with Stripe's semantics: the same key and body from
//! the same buyer get the first response byte for byte and start no second payment;
//! the same key with another body is refused (422); while the first request runs, a
//! repeat is refused (409). Keys live in the database, so a restart keeps them.

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

use super::response::ApiError;
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
}

/// The body's SHA-256 over its canonical JSON (keys sorted), so formatting does not
/// make two equal requests differ.
pub fn request_hash(body: &[u8]) -> String {
    let canonical = serde_json::from_slice::<serde_json::Value>(body)
        .map(|v| serde_json::to_vec(&v).expect("a Value serialises"))
        .unwrap_or_else(|_| body.to_vec());
    hex::encode(Sha256::digest(canonical))
}

pub enum NextAction {
    StartProcessing,
    ReturnSavedResponse(Response),
}

pub async fn try_processing(
    store: &dyn Store,
    buyer: &BuyerId,
    key: &IdempotencyKey,
    hash: &str,
    ttl_ms: i64,
) -> Result<NextAction, ApiError> {
    let now = crate::app::now_ms();
    match store.begin_idempotent(buyer, &key.0, hash, now, now - ttl_ms).await? {
        IdempotencyStart::Started => Ok(NextAction::StartProcessing),
        IdempotencyStart::InFlight => Err(ApiError::IdempotencyInFlight),
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
    if parts.status == StatusCode::SERVICE_UNAVAILABLE || parts.status.is_server_error() {
        store.release_idempotent(buyer, &key.0).await?;
    } else {
        store.finish_idempotent(buyer, &key.0, parts.status.as_u16(), &bytes).await?;
    }
    Ok(Response::from_parts(parts, Body::from(bytes)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_json_hashes_equal_whatever_the_formatting() {
        assert_eq!(request_hash(br#"{"a":1,"b":[1,2]}"#), request_hash(b"{ \"b\": [1, 2],\n \"a\": 1 }"));
        assert_ne!(request_hash(br#"{"a":1}"#), request_hash(br#"{"a":2}"#));
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
