//! The buyer of a request. `X-USER-ID` is trusted as set by the authenticating edge in
//! front of payguard (the course convention); payguard itself does no authentication.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;

use super::response::ApiError;
use crate::domain::BuyerId;

pub struct Buyer(pub BuyerId);

impl<S: Send + Sync> FromRequestParts<S> for Buyer {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let mut values = parts.headers.get_all(gateway::wire::USER_ID_HEADER).iter();
        let raw = values.next().ok_or(ApiError::MissingUserId)?;
        if values.next().is_some() {
            // Two identities: an edge that appends its own header instead of replacing
            // the client's would otherwise let the client's win.
            return Err(ApiError::invalid("X-USER-ID", "X-USER-ID 헤더는 하나만 보내야 합니다."));
        }
        let raw = raw.to_str().map_err(|_| ApiError::invalid("X-USER-ID", "사용자 ID 형식이 올바르지 않습니다."))?;
        BuyerId::parse(raw).map(Buyer).map_err(|e| ApiError::Invalid(vec![e]))
    }
}
