//! The `Idempotency-Key` header, and the answers of the idempotency use case
//! (`app::idempotency`) as HTTP: a saved answer replayed byte for byte, 409 while the
//! first request runs, 422 for another body under the same key.

use super::response::ApiError;
use crate::app::idempotency::{Idempotency, IdempotencyError};
use crate::domain::BuyerId;
use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

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

/// A saved answer, replayed as it was first given.
pub fn replay(status: u16, body: Vec<u8>) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = (status, body).into_response();
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response.headers_mut().insert("Idempotent-Replayed", HeaderValue::from_static("true"));
    response
}

/// Hands the answer to the use case to keep (or release the key), then gives it back.
pub async fn save_response(
    idempotency: &Idempotency,
    buyer: &BuyerId,
    key: &IdempotencyKey,
    response: Response,
) -> Result<Response, ApiError> {
    let (parts, body) = response.into_parts();
    let bytes = axum::body::to_bytes(body, usize::MAX).await.map_err(|e| ApiError::Internal(e.to_string()))?;
    idempotency.finish(buyer, &key.0, parts.status.as_u16(), &bytes).await;
    Ok(Response::from_parts(parts, Body::from(bytes)))
}

impl From<IdempotencyError> for ApiError {
    fn from(error: IdempotencyError) -> Self {
        match error {
            IdempotencyError::InFlight => ApiError::IdempotencyInFlight,
            IdempotencyError::Mismatch => ApiError::IdempotencyMismatch,
            IdempotencyError::Store(e) => e.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
