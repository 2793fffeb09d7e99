//! `POST /api/v1/orders` (checkout), `GET /api/v1/orders/{id}`, `GET /api/v1/orders`.

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde::{Deserialize, Serialize};

use axum::response::IntoResponse;

use super::AppState;
use super::buyer::Buyer;
use super::idempotency::{self, IdempotencyKey, NextAction};
use super::response::{ApiError, ok};
use crate::app::checkout::{Admission, CheckoutRequest};
use crate::domain::card::parse_card_type;
use crate::domain::{BuyerId, CardNumber, CheckoutLine, Invalid, ProductId, Quantity};
use crate::store::{OrderItem, OrderRecord};

pub const MAX_LINES: usize = 50;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct CheckoutBody {
    items: Vec<ItemBody>,
    card_type: String,
    card_no: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ItemBody {
    product_id: i64,
    quantity: i64,
}

/// Parses the body into a checkout, reporting every broken field at once.
fn parse_checkout(body: CheckoutBody, buyer: &BuyerId, require_luhn: bool) -> Result<CheckoutRequest, ApiError> {
    let mut problems = Vec::new();
    if body.items.is_empty() || body.items.len() > MAX_LINES {
        problems.push(Invalid::new("items", format!("주문 상품은 1개 이상 {MAX_LINES}개 이하여야 합니다.")));
    }
    let mut lines = Vec::with_capacity(body.items.len());
    for item in &body.items {
        if item.product_id <= 0 {
            problems.push(Invalid::new("productId", "상품 ID는 양의 정수여야 합니다."));
        }
        match Quantity::parse(item.quantity) {
            Ok(quantity) => lines.push(CheckoutLine { product_id: ProductId(item.product_id), quantity }),
            Err(e) => problems.push(e),
        }
    }
    let card_type = parse_card_type(&body.card_type).map_err(|e| problems.push(e)).ok();
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
    let mut request = parse_checkout(body, &buyer, state.checkout_settings.require_luhn)?;
    // Before the idempotency key is written: a refusal costs the database nothing.
    let slot = state.checkout.admit()?;
    let Some(key) = key else {
        return place(&state, slot, request).await;
    };
    let fingerprint = idempotency::fingerprint(&request);
    let response =
        match idempotency::try_processing(&*state.store, &buyer, &key, &fingerprint, &state.checkout_settings).await? {
            NextAction::ReturnSavedResponse(saved) => return Ok(saved),
            NextAction::ReplayOrder(order_id) => {
                let mut replayed = accepted(&state, order_id).await?;
                replayed.headers_mut().insert("Idempotent-Replayed", axum::http::HeaderValue::from_static("true"));
                replayed
            }
            NextAction::StartProcessing => {
                request.idempotency_key = Some(key.as_str().to_string());
                match place(&state, slot, request).await {
                    // Another request owns the key now: its answer is the one to keep.
                    Err(ApiError::IdempotencyInFlight) => return Err(ApiError::IdempotencyInFlight),
                    placed => placed.unwrap_or_else(IntoResponse::into_response),
                }
            }
        };
    idempotency::save_response(&*state.store, &buyer, &key, response).await
}

async fn place(state: &AppState, slot: Admission, request: CheckoutRequest) -> Result<Response, ApiError> {
    let placed = state.checkout.place(slot, request).await?;
    // The latest status (a fast callback may have settled it); when the database cannot
    // say, the order as the checkout left it. Never an error: the PG may have taken it.
    if !placed.recorded {
        return Ok(ok(StatusCode::ACCEPTED, OrderDto::from(placed.order)));
    }
    let order = match state.store.order(placed.order.order_id).await {
        Ok(Some(order)) => order,
        Ok(None) | Err(_) => placed.order,
    };
    Ok(ok(StatusCode::ACCEPTED, OrderDto::from(order)))
}

/// The 202 a placed checkout answers: the order as it stands.
async fn accepted(state: &AppState, order_id: i64) -> Result<Response, ApiError> {
    let order = state.store.order(order_id).await?.ok_or(ApiError::OrderNotFound)?;
    Ok(ok(StatusCode::ACCEPTED, OrderDto::from(order)))
}

pub async fn detail(
    State(state): State<AppState>,
    Buyer(buyer): Buyer,
    Path(raw_id): Path<String>,
) -> Result<Response, ApiError> {
    // Unknown, malformed and other buyers' ids all answer the same 404.
    let order_id: i64 = raw_id.parse().map_err(|_| ApiError::OrderNotFound)?;
    let order = state.store.buyer_order(&buyer, order_id).await?.ok_or(ApiError::OrderNotFound)?;
    Ok(ok(StatusCode::OK, OrderDto::from(order)))
}

/// Kept as text so each parameter's error names its own field.
#[derive(Deserialize)]
pub struct Page {
    page: Option<String>,
    size: Option<String>,
}

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
    let offset = number.checked_mul(size).ok_or_else(|| ApiError::invalid("page", "page 가 너무 큽니다."))?;
    let mut orders = state.store.orders_for_buyer(&buyer, offset, size + 1).await?;
    let has_next = orders.len() as i64 > size;
    orders.truncate(size as usize);
    let orders: Vec<OrderDto> = orders.into_iter().map(OrderDto::from).collect();
    Ok(ok(StatusCode::OK, OrderPage { orders, page: number, size, has_next }))
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct OrderPage {
    orders: Vec<OrderDto>,
    page: i64,
    size: i64,
    has_next: bool,
}

#[derive(Debug, Serialize)]
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

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct PaymentDto {
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
        let created_at = chrono::DateTime::from_timestamp_millis(o.created_at_ms)
            .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
            .unwrap_or_default();
        OrderDto {
            order_id: o.order_id,
            status,
            items: o.items,
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
