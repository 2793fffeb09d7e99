//! `POST /api/v1/orders` (checkout), `GET /api/v1/orders/{id}`, `GET /api/v1/orders`.

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde::{Deserialize, Serialize};

use axum::response::IntoResponse;

use super::AppState;
use super::buyer::Buyer;
use super::idempotency::{self, IdempotencyKey};
use super::json::Whole;
use super::response::{ApiError, ok};
use super::schema::{Answer, Failure};
use super::views::{self, OrderItem};
use crate::app::checkout::{Admission, CheckoutRequest};
use crate::app::idempotency::Start;
use crate::domain::{BuyerId, CardNumber, CheckoutLine, Invalid, OrderId, ProductId, Quantity};
use crate::store::OrderRecord;

pub const MAX_LINES: usize = 50;

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CheckoutBody {
    #[schema(min_items = 1, max_items = 50)]
    items: Vec<ItemBody>,
    #[schema(pattern = "^(SAMSUNG|KB|HYUNDAI)$")]
    card_type: String,
    /// Only the last 4 digits are kept.
    #[schema(pattern = "^[0-9]{4}-[0-9]{4}-[0-9]{4}-[0-9]{4}$")]
    card_no: String,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ItemBody {
    #[schema(value_type = i64, minimum = 1)]
    product_id: Whole,
    #[schema(value_type = i64, minimum = 1, maximum = 999)]
    quantity: Whole,
}

/// Parses the body into a checkout, reporting every broken field at once.
fn parse_checkout(body: CheckoutBody, buyer: &BuyerId, require_luhn: bool) -> Result<CheckoutRequest, ApiError> {
    let mut problems = Vec::new();
    if body.items.is_empty() || body.items.len() > MAX_LINES {
        problems.push(Invalid::new("items", format!("주문 상품은 1개 이상 {MAX_LINES}개 이하여야 합니다.")));
    }
    let mut lines = Vec::with_capacity(body.items.len());
    for item in &body.items {
        if item.product_id.0 <= 0 {
            problems.push(Invalid::new("productId", "상품 ID는 양의 정수여야 합니다."));
        }
        match Quantity::parse(item.quantity.0) {
            Ok(quantity) => lines.push(CheckoutLine { product_id: ProductId(item.product_id.0), quantity }),
            Err(e) => problems.push(e),
        }
    }
    let card_type = crate::domain::CardType::parse(&body.card_type).map_err(|e| problems.push(e)).ok();
    let card = CardNumber::parse(&body.card_no).map_err(|e| problems.push(e)).ok();
    if require_luhn && card.as_ref().is_some_and(|c| !c.passes_luhn()) {
        problems.push(Invalid::new("cardNo", "유효하지 않은 카드 번호입니다."));
    }
    match (problems.is_empty(), card_type, card) {
        (true, Some(card_type), Some(card)) => {
            Ok(CheckoutRequest { buyer: buyer.clone(), lines, card_type, card, idempotency_key: None })
        }
        _ => Err(ApiError::Invalid(problems)),
    }
}

#[utoipa::path(post, path = "/api/v1/orders", tag = "shop",
    params(("X-USER-ID" = String, Header, pattern = "^[A-Za-z0-9._@-]{1,64}$", description = "The buyer, as set by the authenticating edge in front of payguard"),
        ("Idempotency-Key" = Option<String>, Header, pattern = "^[!-~]{1,255}$", description = "1-255 visible ASCII characters: the same key and body from the same buyer get the first answer again (`Idempotent-Replayed: true`) and start no second payment")),
    request_body = CheckoutBody,
    responses(
        (status = 202, description = "Accepted: the order, its payment PENDING (or already settled by a fast callback)", body = Answer<OrderDto>),
        (status = 400, description = "`MISSING_USER_ID`; `INVALID_REQUEST` (with `data.errors[{field, message}]`)", body = Failure),
        (status = 404, description = "`PRODUCT_NOT_FOUND`", body = Failure),
        (status = 408, description = "`REQUEST_TIMEOUT`: the body did not arrive in time", body = Failure),
        (status = 409, description = "`OUT_OF_STOCK` (with `productId`, `available`); `PRICE_CHANGED` (with `productId`: repriced while the order was placed, three times running); `IDEMPOTENCY_KEY_IN_FLIGHT`", body = Failure),
        (status = 413, description = "`PAYLOAD_TOO_LARGE`", body = Failure),
        (status = 422, description = "`PAYMENT_REJECTED` (with `orderId`); `IDEMPOTENCY_KEY_REUSED`", body = Failure),
        (status = 429, description = "`TOO_MANY_REQUESTS`, with `Retry-After`", body = Failure),
        (status = 503, description = "Nothing was sent to the PG, with `Retry-After`: `PAYMENT_GATEWAY_UNAVAILABLE`, `CHECKOUT_OVERLOADED`, `STORE_UNAVAILABLE`, `REQUEST_TIMEOUT`", body = Failure),
    ))]
pub async fn checkout(
    State(state): State<AppState>,
    Buyer(buyer): Buyer,
    headers: HeaderMap,
    body: super::BodyBytes,
) -> Result<Response, ApiError> {
    if let Err(not_until) = state.limiter.check_key(&buyer.as_str().to_string()) {
        let wait = not_until.wait_time_from(governor::clock::Clock::now(&governor::clock::DefaultClock::default()));
        return Err(ApiError::TooManyRequests { retry_after_secs: wait.as_secs().max(1) });
    }
    let body: CheckoutBody = super::json::parse(&headers, body)?;
    let key = IdempotencyKey::from_headers(&headers)?;
    // The header values are slices of the connection's read buffer: held while the
    // checkout waits on the PG, they keep that buffer from being reused, and the
    // connection reads into a new one (docs/benchmarks.md, memory).
    drop(headers);
    let mut request = parse_checkout(body, &buyer, state.checkout_settings.require_luhn)?;
    // Before the idempotency key is written: a refusal costs the database nothing.
    let slot = state.checkout.admit()?;
    let Some(key) = key else {
        return place(&state, slot, request).await;
    };
    let fingerprint = crate::app::idempotency::fingerprint(&request);
    let response = match state.idempotency.start(&buyer, key.as_str(), &fingerprint).await? {
        Start::Saved { status, body } => return Ok(idempotency::replay(status, body)),
        Start::ReplayOrder(order_id) => {
            let mut replayed = accepted(&state, order_id).await?;
            replayed.headers_mut().insert("Idempotent-Replayed", axum::http::HeaderValue::from_static("true"));
            replayed
        }
        Start::Fresh => {
            request.idempotency_key = Some(key.as_str().to_string());
            match place(&state, slot, request).await {
                // Another request owns the key now: its answer is the one to keep.
                Err(ApiError::IdempotencyInFlight) => return Err(ApiError::IdempotencyInFlight),
                placed => placed.unwrap_or_else(IntoResponse::into_response),
            }
        }
    };
    idempotency::save_response(&state.idempotency, &buyer, &key, response).await
}

async fn place(state: &AppState, slot: Admission, request: CheckoutRequest) -> Result<Response, ApiError> {
    let placed = state.checkout.place(slot, request).await?;
    let order = state.orders.latest(placed).await;
    Ok(ok(StatusCode::ACCEPTED, OrderDto::from(order)))
}

/// The 202 a placed checkout answers: the order as it stands.
async fn accepted(state: &AppState, order_id: OrderId) -> Result<Response, ApiError> {
    let order = state.orders.by_id(order_id).await?.ok_or(ApiError::OrderNotFound)?;
    Ok(ok(StatusCode::ACCEPTED, OrderDto::from(order)))
}

#[utoipa::path(get, path = "/api/v1/orders/{order_id}", tag = "shop",
    params(("X-USER-ID" = String, Header, pattern = "^[A-Za-z0-9._@-]{1,64}$", description = "The buyer, as set by the authenticating edge in front of payguard"), ("order_id" = String, Path, description = "The order's id; another buyer's, an unknown or a malformed id are all 404")),
    responses(
        (status = 200, description = "The buyer's order", body = Answer<OrderDto>),
        (status = 400, description = "`MISSING_USER_ID`; `INVALID_REQUEST`", body = Failure),
        (status = 404, description = "`ORDER_NOT_FOUND`", body = Failure),
        (status = 503, description = "`STORE_UNAVAILABLE`, `REQUEST_TIMEOUT`", body = Failure),
    ))]
pub async fn detail(
    State(state): State<AppState>,
    Buyer(buyer): Buyer,
    Path(raw_id): Path<String>,
) -> Result<Response, ApiError> {
    // Unknown, malformed and other buyers' ids all answer the same 404.
    let order_id = OrderId(raw_id.parse().map_err(|_| ApiError::OrderNotFound)?);
    let order = state.orders.of_buyer(&buyer, order_id).await?.ok_or(ApiError::OrderNotFound)?;
    Ok(ok(StatusCode::OK, OrderDto::from(order)))
}

/// Kept as text so each parameter's error names its own field.
#[derive(Deserialize)]
pub struct Page {
    page: Option<String>,
    size: Option<String>,
}

#[utoipa::path(get, path = "/api/v1/orders", tag = "shop",
    params(("X-USER-ID" = String, Header, pattern = "^[A-Za-z0-9._@-]{1,64}$", description = "The buyer, as set by the authenticating edge in front of payguard"),
        ("page" = Option<i64>, Query, minimum = 0, description = "0 by default"),
        ("size" = Option<i64>, Query, minimum = 1, maximum = 100, description = "20 by default")),
    responses(
        (status = 200, description = "The buyer's orders, newest first", body = Answer<OrderPage>),
        (status = 400, description = "`MISSING_USER_ID`; `INVALID_REQUEST` (field `page` or `size`)", body = Failure),
        (status = 503, description = "`STORE_UNAVAILABLE`, `REQUEST_TIMEOUT`", body = Failure),
    ))]
pub async fn list(
    State(state): State<AppState>,
    Buyer(buyer): Buyer,
    page: Result<Query<Page>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(page) = page.map_err(|_| ApiError::invalid("page", "page 와 size 는 정수여야 합니다."))?;
    let number = match page.page.as_deref().map(str::parse::<i64>) {
        None => 0,
        Some(Ok(n)) if n >= 0 => n,
        Some(_) => return Err(ApiError::invalid("page", "page 는 0 이상의 정수여야 합니다.")),
    };
    let size = match page.size.as_deref().map(str::parse::<i64>) {
        None => 20,
        Some(Ok(n)) if (1..=100).contains(&n) => n,
        Some(_) => return Err(ApiError::invalid("size", "size 는 1 이상 100 이하의 정수여야 합니다.")),
    };
    number.checked_mul(size).ok_or_else(|| ApiError::invalid("page", "page 가 너무 큽니다."))?;
    let found = state.orders.page(&buyer, number, size).await?;
    let orders: Vec<OrderDto> = found.orders.into_iter().map(OrderDto::from).collect();
    Ok(ok(StatusCode::OK, OrderPage { orders, page: number, size, has_next: found.has_next }))
}

#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct OrderPage {
    orders: Vec<OrderDto>,
    page: i64,
    size: i64,
    has_next: bool,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct OrderDto {
    order_id: i64,
    /// PENDING, PAID or FAILED.
    status: &'static str,
    items: Vec<OrderItem>,
    total_amount: i64,
    payment: PaymentDto,
    /// `double_charge` or `refund_needed` when the PG charged what it should not have.
    anomaly: Option<String>,
    created_at: String,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PaymentDto {
    status: &'static str,
    message: &'static str,
    reason: Option<String>,
    card_type: String,
    card_last4: String,
    transaction_key: Option<String>,
    /// Unsettled after many checks: an operator should look.
    stuck: bool,
}

impl From<OrderRecord> for OrderDto {
    fn from(o: OrderRecord) -> Self {
        use crate::domain::PaymentStatus::*;
        let status = match o.attempt.status {
            Requested | Pending => "PENDING",
            Success => "PAID",
            Failed => "FAILED",
        };
        let created_at = o.created_at.to_rfc3339();
        OrderDto {
            order_id: o.order_id.0,
            status,
            items: views::all(o.items),
            total_amount: o.total_amount,
            payment: PaymentDto {
                status: o.attempt.status.for_buyer(),
                message: o.attempt.status.buyer_message(),
                reason: o.attempt.reason,
                card_type: o.attempt.card_type,
                card_last4: o.attempt.card_last4,
                transaction_key: o.attempt.transaction_key,
                stuck: o.attempt.stuck,
            },
            anomaly: o.anomaly,
            created_at,
        }
    }
}
