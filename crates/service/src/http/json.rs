//! A JSON request body: `Content-Type: application/json`, at most the body limit, and
//! an object the handler's type accepts (unknown fields refused), else a 400 naming
//! the body. One place, so checkout and the admin API answer bad bodies alike.

use axum::http::{HeaderMap, header};
use serde::de::DeserializeOwned;

use super::BodyBytes;
use super::response::ApiError;
use crate::domain::Invalid;

pub fn parse<T: DeserializeOwned>(headers: &HeaderMap, body: BodyBytes) -> Result<T, ApiError> {
    let body = body.map_err(|_| ApiError::PayloadTooLarge)?;
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(';').next().is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json")));
    if !is_json {
        return Err(ApiError::invalid("body", "Content-Type 은 application/json 이어야 합니다."));
    }
    serde_json::from_slice(&body)
        .map_err(|e| ApiError::Invalid(vec![Invalid::new("body", format!("요청 본문을 읽을 수 없습니다: {e}"))]))
}
