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

/// For an optional field that may be left out but never sent as `null`:
/// `#[serde(default, deserialize_with = "json::present")]`.
pub fn present<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::Deserialize<'de>,
{
    T::deserialize(deserializer).map(Some)
}

/// An integer field of a request body: `39` and `39.0` alike (see
/// `gateway::wire::whole_number`), as the OpenAPI document's `integer` promises.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Whole(pub i64);

impl<'de> serde::Deserialize<'de> for Whole {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        gateway::wire::whole_number(deserializer).map(Whole)
    }
}
