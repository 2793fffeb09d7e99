//! How long a request may take once its head is in (the head itself is bounded by the
//! accept loop, `server.rs`): its body must arrive whole within the body timeout,
//! however it is trickled (tower-http's body timeout resets on every frame, which a
//! byte every few seconds never trips), and the handler must answer within the request
//! timeout, which configuration keeps longer than any checkout's PG deadlines, so a
//! payment that may have reached the PG is never cut off by it.

use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http_body_util::{BodyExt, LengthLimitError, Limited};

use super::response::ApiError;
use super::{AppState, BODY_LIMIT};

#[derive(Debug, Clone, Copy)]
pub struct RequestLimits {
    pub body_read_timeout: Duration,
    pub request_timeout: Duration,
}

pub async fn bound_request(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let limits = state.request_limits;
    let (parts, body) = request.into_parts();
    let body = match tokio::time::timeout(limits.body_read_timeout, Limited::new(body, BODY_LIMIT).collect()).await {
        Err(_) => return ApiError::BodyTimeout.into_response(),
        Ok(Err(error)) if error.downcast_ref::<LengthLimitError>().is_some() => {
            return ApiError::PayloadTooLarge.into_response();
        }
        Ok(Err(_)) => return ApiError::invalid("body", "요청 본문을 읽을 수 없습니다.").into_response(),
        Ok(Ok(collected)) => collected.to_bytes(),
    };
    let request = Request::from_parts(parts, Body::from(body));
    match tokio::time::timeout(limits.request_timeout, next.run(request)).await {
        Ok(response) => response,
        Err(_) => ApiError::RequestTimeout.into_response(),
    }
}
