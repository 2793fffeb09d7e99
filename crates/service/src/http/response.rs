//! The `{meta, data}` envelope (the same as the PG's) and every error the API answers,
//! mapped to a status and a stable `errorCode` in one place so handlers just use `?`.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use gateway::wire::Envelope;
use serde::Serialize;
use serde_json::json;

use crate::app::callbacks::CallbackError;
use crate::app::checkout::CheckoutError;
use crate::domain::Invalid;
use crate::store::StoreError;

pub fn ok<T: Serialize>(status: StatusCode, data: T) -> Response {
    (status, Json(Envelope::success(data))).into_response()
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("X-USER-ID header missing")]
    MissingUserId,
    #[error("invalid request: {0:?}")]
    Invalid(Vec<Invalid>),
    #[error("product {0} not found")]
    ProductNotFound(i64),
    #[error("out of stock: product {product}, {available} available")]
    OutOfStock { product: i64, available: i64 },
    #[error("the price of product {0} kept changing")]
    PriceChanged(i64),
    #[error("stock change refused: product {product}, {available} available, {reserved} reserved")]
    StockConflict { product: i64, available: i64, reserved: i64 },
    #[error("order not found")]
    OrderNotFound,
    #[error("payment gateway unavailable: {0}")]
    GatewayUnavailable(String),
    #[error("payment rejected by the PG: {reason}")]
    PaymentRejected { order_id: i64, reason: String },
    #[error(transparent)]
    Callback(CallbackError),
    #[error("the Idempotency-Key's first request is still in flight")]
    IdempotencyInFlight,
    #[error("the Idempotency-Key was used with another request")]
    IdempotencyMismatch,
    #[error("too many checkouts; retry after {retry_after_secs} s")]
    TooManyRequests { retry_after_secs: u64 },
    #[error("request body too large")]
    PayloadTooLarge,
    #[error("the request body did not arrive in time")]
    BodyTimeout,
    #[error("the request took too long")]
    RequestTimeout,
    #[error("admin token missing or wrong")]
    Unauthorized,
    #[error("not found")]
    UnknownPath,
    #[error("method not allowed")]
    MethodNotAllowed,
    #[error("the database is unavailable: {0}")]
    StoreUnavailable(String),
    #[error("checkout is at capacity")]
    Overloaded,
    #[error("internal error: {0}")]
    Internal(String),
}

impl ApiError {
    pub fn invalid(field: &'static str, message: impl Into<String>) -> ApiError {
        ApiError::Invalid(vec![Invalid::new(field, message)])
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::ProductNotFound(id) => ApiError::ProductNotFound(id),
            StoreError::OutOfStock { product, available } => ApiError::OutOfStock { product, available },
            StoreError::PriceChanged(product) => ApiError::PriceChanged(product),
            StoreError::StockConflict { product, available, reserved } => {
                ApiError::StockConflict { product, available, reserved }
            }
            StoreError::AmountOverflow => ApiError::invalid("items", "주문 금액이 너무 큽니다."),
            StoreError::IdempotencyKeyTaken => ApiError::IdempotencyInFlight,
            StoreError::Unavailable(e) => ApiError::StoreUnavailable(e.to_string()),
            other => ApiError::Internal(other.to_string()),
        }
    }
}

impl From<CheckoutError> for ApiError {
    fn from(error: CheckoutError) -> Self {
        match error {
            CheckoutError::Overloaded => ApiError::Overloaded,
            CheckoutError::GatewayUnavailable(why) => ApiError::GatewayUnavailable(why),
            CheckoutError::Rejected { order_id, reason } => ApiError::PaymentRejected { order_id: order_id.0, reason },
            CheckoutError::Store(e) => e.into(),
        }
    }
}

impl From<CallbackError> for ApiError {
    fn from(error: CallbackError) -> Self {
        match error {
            CallbackError::Store(e) => e.into(),
            other => ApiError::Callback(other),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code, message, data) = match &self {
            ApiError::MissingUserId => {
                (StatusCode::BAD_REQUEST, "MISSING_USER_ID", "X-USER-ID 헤더는 필수입니다.".into(), None)
            }
            ApiError::Invalid(problems) => {
                let fields: Vec<_> = problems.iter().map(|p| json!({"field": p.field, "message": p.message})).collect();
                let message =
                    problems.first().map_or("요청이 올바르지 않습니다.".to_string(), |p| p.message.clone());
                (StatusCode::BAD_REQUEST, "INVALID_REQUEST", message, Some(json!({ "errors": fields })))
            }
            ApiError::ProductNotFound(id) => {
                (StatusCode::NOT_FOUND, "PRODUCT_NOT_FOUND", format!("상품({id})을 찾을 수 없습니다."), None)
            }
            ApiError::OutOfStock { product, available } => (
                StatusCode::CONFLICT,
                "OUT_OF_STOCK",
                format!("상품({product})의 재고가 부족합니다. 남은 수량: {available}"),
                Some(json!({"productId": product, "available": available})),
            ),
            ApiError::PriceChanged(product) => (
                StatusCode::CONFLICT,
                "PRICE_CHANGED",
                format!("상품({product})의 가격이 방금 바뀌었습니다. 다시 주문해주세요."),
                Some(json!({"productId": product})),
            ),
            ApiError::StockConflict { product, available, reserved } => (
                StatusCode::CONFLICT,
                "STOCK_CONFLICT",
                format!("상품({product})의 재고를 예약된 수량({reserved}) 아래로, 또는 0 아래로 줄일 수 없습니다."),
                Some(json!({"productId": product, "available": available, "reserved": reserved})),
            ),
            ApiError::OrderNotFound => {
                (StatusCode::NOT_FOUND, "ORDER_NOT_FOUND", "주문을 찾을 수 없습니다.".into(), None)
            }
            ApiError::GatewayUnavailable(_) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "PAYMENT_GATEWAY_UNAVAILABLE",
                "결제 시스템이 일시적으로 불안정합니다. 주문이 취소되었으니 잠시 후 다시 시도해주세요.".into(),
                None,
            ),
            ApiError::PaymentRejected { order_id, reason } => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "PAYMENT_REJECTED",
                reason.clone(),
                Some(json!({ "orderId": order_id })),
            ),
            ApiError::Callback(e) => {
                let (status, code) = match e {
                    CallbackError::Malformed(_) => (StatusCode::BAD_REQUEST, "CALLBACK_MALFORMED"),
                    CallbackError::Unauthorized => (StatusCode::UNAUTHORIZED, "CALLBACK_UNAUTHORIZED"),
                    CallbackError::UnknownTransaction => (StatusCode::NOT_FOUND, "TRANSACTION_NOT_FOUND"),
                    CallbackError::WrongGateway { .. } => (StatusCode::CONFLICT, "CALLBACK_WRONG_GATEWAY"),
                    CallbackError::Mismatch { .. } => (StatusCode::BAD_REQUEST, "CALLBACK_MISMATCH"),
                    CallbackError::Unverifiable(_) | CallbackError::FetchBackLimited => {
                        (StatusCode::SERVICE_UNAVAILABLE, "CALLBACK_UNVERIFIABLE")
                    }
                    CallbackError::Store(_) => (StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL_ERROR"),
                };
                (status, code, e.to_string(), None)
            }
            ApiError::IdempotencyInFlight => (
                StatusCode::CONFLICT,
                "IDEMPOTENCY_KEY_IN_FLIGHT",
                "같은 Idempotency-Key 의 요청이 아직 처리 중입니다.".into(),
                None,
            ),
            ApiError::IdempotencyMismatch => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "IDEMPOTENCY_KEY_REUSED",
                "이 Idempotency-Key 는 다른 요청에 이미 사용되었습니다.".into(),
                None,
            ),
            ApiError::TooManyRequests { retry_after_secs } => (
                StatusCode::TOO_MANY_REQUESTS,
                "TOO_MANY_REQUESTS",
                format!("주문 요청이 너무 많습니다. {retry_after_secs}초 후 다시 시도해주세요."),
                None,
            ),
            ApiError::PayloadTooLarge => {
                (StatusCode::PAYLOAD_TOO_LARGE, "PAYLOAD_TOO_LARGE", "요청 본문은 64KiB 이하여야 합니다.".into(), None)
            }
            ApiError::BodyTimeout => (
                StatusCode::REQUEST_TIMEOUT,
                "REQUEST_TIMEOUT",
                "요청 본문이 제시간에 도착하지 않았습니다.".into(),
                None,
            ),
            ApiError::RequestTimeout => (
                StatusCode::SERVICE_UNAVAILABLE,
                "REQUEST_TIMEOUT",
                "요청 처리 시간이 초과되었습니다. 잠시 후 다시 시도해주세요.".into(),
                None,
            ),
            ApiError::Unauthorized => {
                (StatusCode::UNAUTHORIZED, "UNAUTHORIZED", "관리자 토큰이 필요합니다.".into(), None)
            }
            ApiError::UnknownPath => (StatusCode::NOT_FOUND, "NOT_FOUND", "존재하지 않는 요청입니다.".into(), None),
            ApiError::MethodNotAllowed => {
                (StatusCode::METHOD_NOT_ALLOWED, "METHOD_NOT_ALLOWED", "지원하지 않는 메서드입니다.".into(), None)
            }
            ApiError::StoreUnavailable(detail) => {
                // Logged where it starts and ends (the store's health), not per request.
                tracing::debug!(%detail, "database unavailable");
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "STORE_UNAVAILABLE",
                    "주문 시스템이 일시적으로 응답하지 않습니다. 잠시 후 다시 시도해주세요.".into(),
                    None,
                )
            }
            ApiError::Overloaded => (
                StatusCode::SERVICE_UNAVAILABLE,
                "CHECKOUT_OVERLOADED",
                "주문이 몰려 처리할 수 없습니다. 잠시 후 다시 시도해주세요.".into(),
                None,
            ),
            ApiError::Internal(detail) => {
                tracing::error!(%detail, "internal error");
                (StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL_ERROR", "일시적인 오류가 발생했습니다.".into(), None)
            }
        };
        let mut envelope = Envelope::<serde_json::Value>::fail(code, message);
        envelope.data = data;
        let mut response = (status, Json(envelope)).into_response();
        if status == StatusCode::SERVICE_UNAVAILABLE {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
        }
        if status == StatusCode::REQUEST_TIMEOUT {
            // The rest of a trickled body is never read: the connection cannot be reused.
            response.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        if let ApiError::Overloaded = self {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        if let ApiError::TooManyRequests { retry_after_secs } = self {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(retry_after_secs));
        }
        response
    }
}
