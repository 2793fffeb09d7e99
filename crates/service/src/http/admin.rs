//! Operator controls: force open, disable or reset a breaker; run a reconciliation
//! pass now; manage the catalog (create, rename or reprice, restock). They need `Authorization: Bearer <admin token>`, compared in constant time;
//! without a configured token the routes do not exist (404). Every action is logged
//! with who (the `X-OPERATOR` header, if sent), when and what.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;
use serde_json::json;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use serde::Deserialize;

use super::json::Whole;
use super::response::{ApiError, ok};
use super::schema::{Answer, BreakerState, Failure};
use super::views::{self, CatalogEntry};
use super::{AppState, BodyBytes};
use crate::domain::{Invalid, Money};
use crate::store::StockChange;

/// The configured token, kept as a digest so comparisons take the same time whatever
/// the guess.
#[derive(Clone)]
pub struct AdminToken([u8; 32]);

impl AdminToken {
    pub fn new(token: &str) -> AdminToken {
        AdminToken(Sha256::digest(token.as_bytes()).into())
    }

    fn accepts(&self, headers: &HeaderMap) -> bool {
        let presented = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or_default();
        let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        bool::from(self.0.ct_eq(&digest))
    }
}

fn authorize(state: &AppState, headers: &HeaderMap) -> Result<String, ApiError> {
    let Some(token) = &state.admin_token else { return Err(ApiError::UnknownPath) };
    if !token.accepts(headers) {
        tracing::warn!("admin call refused: missing or wrong token");
        return Err(ApiError::Unauthorized);
    }
    let operator = headers.get("X-OPERATOR").and_then(|v| v.to_str().ok()).unwrap_or("admin-token");
    Ok(operator.chars().filter(|c| c.is_ascii_graphic()).take(64).collect())
}

#[utoipa::path(get, path = "/api/v1/admin/breakers", tag = "admin", security(("admin_token" = [])),
    responses(
        (status = 200, description = "Every breaker of every gateway", body = Answer<Vec<BreakerState>>),
        (status = 401, description = "`UNAUTHORIZED`: the admin token is missing or wrong", body = Failure),
        (status = 404, description = "`NOT_FOUND`: no admin token is configured, the admin API is off", body = Failure),
    ))]
pub async fn breakers(State(state): State<AppState>, headers: HeaderMap) -> Result<Response, ApiError> {
    authorize(&state, &headers)?;
    let list: Vec<_> = state
        .gateways
        .breakers()
        .into_iter()
        .map(|(gateway, b)| json!({"name": b.name(), "gateway": gateway, "state": b.state().as_str()}))
        .collect();
    Ok(ok(StatusCode::OK, list))
}

#[utoipa::path(post, path = "/api/v1/admin/breakers/{name}/{action}", tag = "admin", security(("admin_token" = [])),
    params(("name" = String, Path, description = "`<gateway>.payments` or `<gateway>.status`, e.g. `pg.payments`; another name is 404"),
        ("action" = String, Path, pattern = "^(force-open|disable|reset)$"), ("X-OPERATOR" = Option<String>, Header, description = "Who acts, for the log")),
    responses(
        (status = 200, description = "The breaker's new state", body = Answer<BreakerState>),
        (status = 400, description = "`INVALID_REQUEST`: an unknown action", body = Failure),
        (status = 401, description = "`UNAUTHORIZED`: the admin token is missing or wrong", body = Failure),
        (status = 404, description = "`NOT_FOUND`: no such breaker, or no admin token is configured (the admin API is off)", body = Failure),
    ))]
pub async fn breaker_action(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path((name, action)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let operator = authorize(&state, &headers)?;
    let breaker = state
        .gateways
        .breakers()
        .into_iter()
        .map(|(_, b)| b)
        .find(|b| b.name() == name)
        .ok_or(ApiError::UnknownPath)?;
    let before = breaker.state();
    match action.as_str() {
        "force-open" => breaker.force_open(),
        "disable" => breaker.disable(),
        "reset" => breaker.reset(),
        _ => return Err(ApiError::invalid("action", "action 은 force-open, disable, reset 중 하나여야 합니다.")),
    }
    tracing::warn!(operator, breaker = %name, action, from = before.as_str(), to = breaker.state().as_str(), "operator changed a circuit breaker");
    Ok(ok(StatusCode::OK, json!({"name": name, "state": breaker.state().as_str()})))
}

#[utoipa::path(post, path = "/api/v1/admin/reconcile", tag = "admin", security(("admin_token" = [])),
    params(("X-OPERATOR" = Option<String>, Header, description = "Who acts, for the log")),
    responses(
        (status = 200, description = "What the pass did", body = Answer<serde_json::Value>),
        (status = 401, description = "`UNAUTHORIZED`: the admin token is missing or wrong", body = Failure),
        (status = 404, description = "`NOT_FOUND`: no admin token is configured, the admin API is off", body = Failure),
        (status = 503, description = "`STORE_UNAVAILABLE`, `REQUEST_TIMEOUT`", body = Failure),
    ))]
pub async fn reconcile_now(State(state): State<AppState>, headers: HeaderMap) -> Result<Response, ApiError> {
    let operator = authorize(&state, &headers)?;
    let report = state.reconciler.run_once().await?;
    tracing::warn!(operator, ?report, "operator ran a reconciliation pass");
    Ok(ok(StatusCode::OK, report))
}

/// The catalog: every product with its available, reserved and sold stock.
#[utoipa::path(get, path = "/api/v1/admin/products", tag = "admin", security(("admin_token" = [])),
    responses(
        (status = 200, description = "Every product with its available, reserved and sold stock", body = Answer<Vec<CatalogEntry>>),
        (status = 401, description = "`UNAUTHORIZED`: the admin token is missing or wrong", body = Failure),
        (status = 404, description = "`NOT_FOUND`: no admin token is configured, the admin API is off", body = Failure),
        (status = 503, description = "`STORE_UNAVAILABLE`, `REQUEST_TIMEOUT`", body = Failure),
    ))]
pub async fn catalog(State(state): State<AppState>, headers: HeaderMap) -> Result<Response, ApiError> {
    authorize(&state, &headers)?;
    Ok(ok(StatusCode::OK, views::all::<_, CatalogEntry>(state.catalog.entries().await?)))
}

const MAX_PRICE: i64 = 1_000_000_000;
const MAX_STOCK: i64 = 1_000_000;

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NewProductBody {
    /// Shown to buyers; no control characters.
    #[schema(
        min_length = 1,
        max_length = 100,
        pattern = "^[^\\u0000-\\u001f\\u007f-\\u009f]*[^\\s\\u0000-\\u001f\\u007f-\\u009f][^\\u0000-\\u001f\\u007f-\\u009f]*$"
    )]
    name: String,
    /// Whole won.
    #[schema(value_type = i64, minimum = 1, maximum = 1_000_000_000)]
    price: Whole,
    /// For sale from the start.
    #[schema(value_type = i64, minimum = 0, maximum = 1_000_000)]
    stock: Whole,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
/// Either or both; neither changes nothing and answers the product as it is.
pub struct ProductPatchBody {
    #[serde(default, deserialize_with = "super::json::present")]
    #[schema(nullable = false)]
    #[schema(
        min_length = 1,
        max_length = 100,
        pattern = "^[^\\u0000-\\u001f\\u007f-\\u009f]*[^\\s\\u0000-\\u001f\\u007f-\\u009f][^\\u0000-\\u001f\\u007f-\\u009f]*$"
    )]
    name: Option<String>,
    #[serde(default, deserialize_with = "super::json::present")]
    #[schema(value_type = Option<i64>, nullable = false, minimum = 1, maximum = 1_000_000_000)]
    price: Option<Whole>,
}

/// At most one of: `onHand`, available plus reserved becomes it (never below what is
/// reserved); `add`, available grows by it, which may be negative (never below zero).
/// Neither changes nothing and answers the stock as it is.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schema(max_properties = 1)]
pub struct StockBody {
    #[serde(default, deserialize_with = "super::json::present")]
    #[schema(value_type = Option<i64>, nullable = false, minimum = 0, maximum = 1_000_000)]
    on_hand: Option<Whole>,
    #[serde(default, deserialize_with = "super::json::present")]
    #[schema(value_type = Option<i64>, nullable = false, minimum = -1_000_000, maximum = 1_000_000)]
    add: Option<Whole>,
}

fn product_name(raw: &str) -> Result<String, Invalid> {
    let name = raw.trim();
    if name.is_empty() || name.chars().count() > 100 || name.chars().any(char::is_control) {
        return Err(Invalid::new("name", "상품명은 1~100자여야 하며 제어 문자를 포함할 수 없습니다."));
    }
    Ok(name.to_string())
}

fn product_price(raw: i64) -> Result<Money, Invalid> {
    if !(1..=MAX_PRICE).contains(&raw) {
        return Err(Invalid::new("price", format!("가격은 1 이상 {MAX_PRICE} 이하의 정수(원)여야 합니다.")));
    }
    Ok(Money::won(raw))
}

fn stock_level(field: &'static str, raw: i64) -> Result<i64, Invalid> {
    if !(0..=MAX_STOCK).contains(&raw) {
        return Err(Invalid::new(field, format!("재고는 0 이상 {MAX_STOCK} 이하여야 합니다.")));
    }
    Ok(raw)
}

/// Unknown, malformed and absent ids all answer the same 404.
fn product_id(raw: &str) -> Result<i64, ApiError> {
    raw.parse::<i64>().ok().filter(|id| *id > 0).ok_or(ApiError::ProductNotFound(0))
}

#[utoipa::path(post, path = "/api/v1/admin/products", tag = "admin", security(("admin_token" = [])),
    params(("X-OPERATOR" = Option<String>, Header, description = "Who acts, for the log")),
    request_body = NewProductBody,
    responses(
        (status = 201, description = "The new product", body = Answer<CatalogEntry>),
        (status = 400, description = "`INVALID_REQUEST` (with `data.errors[{field, message}]`)", body = Failure),
        (status = 401, description = "`UNAUTHORIZED`: the admin token is missing or wrong", body = Failure),
        (status = 404, description = "`NOT_FOUND`: no admin token is configured, the admin API is off", body = Failure),
        (status = 413, description = "`PAYLOAD_TOO_LARGE`", body = Failure),
        (status = 503, description = "`STORE_UNAVAILABLE`, `REQUEST_TIMEOUT`", body = Failure),
    ))]
pub async fn create_product(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: BodyBytes,
) -> Result<Response, ApiError> {
    let operator = authorize(&state, &headers)?;
    let body: NewProductBody = super::json::parse(&headers, body)?;
    let (name, price, stock) =
        (product_name(&body.name), product_price(body.price.0), stock_level("stock", body.stock.0));
    let (Ok(name), Ok(price), Ok(stock)) = (name.clone(), price.clone(), stock.clone()) else {
        return Err(ApiError::Invalid([name.err(), price.err(), stock.err()].into_iter().flatten().collect()));
    };
    let product = state.catalog.create(&operator, &name, price, stock).await?;
    Ok(ok(StatusCode::CREATED, CatalogEntry::from(product)))
}

#[utoipa::path(patch, path = "/api/v1/admin/products/{product_id}", tag = "admin", security(("admin_token" = [])),
    params(("product_id" = String, Path, description = "The product's id; unknown or malformed: 404"), ("X-OPERATOR" = Option<String>, Header, description = "Who acts, for the log")),
    request_body = ProductPatchBody,
    responses(
        (status = 200, description = "The product after the change", body = Answer<CatalogEntry>),
        (status = 400, description = "`INVALID_REQUEST`", body = Failure),
        (status = 401, description = "`UNAUTHORIZED`: the admin token is missing or wrong", body = Failure),
        (status = 404, description = "`PRODUCT_NOT_FOUND`; `NOT_FOUND` when no admin token is configured", body = Failure),
        (status = 413, description = "`PAYLOAD_TOO_LARGE`", body = Failure),
        (status = 503, description = "`STORE_UNAVAILABLE`, `REQUEST_TIMEOUT`", body = Failure),
    ))]
pub async fn update_product(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(raw_id): Path<String>,
    body: BodyBytes,
) -> Result<Response, ApiError> {
    let operator = authorize(&state, &headers)?;
    let id = product_id(&raw_id)?;
    let body: ProductPatchBody = super::json::parse(&headers, body)?;
    let name = body.name.as_deref().map(product_name).transpose();
    let price = body.price.map(|p| product_price(p.0)).transpose();
    let (Ok(name), Ok(price)) = (name.clone(), price.clone()) else {
        return Err(ApiError::Invalid([name.err(), price.err()].into_iter().flatten().collect()));
    };
    let product =
        state.catalog.update(&operator, id, name.as_deref(), price).await?.ok_or(ApiError::ProductNotFound(id))?;
    Ok(ok(StatusCode::OK, CatalogEntry::from(product)))
}

#[utoipa::path(post, path = "/api/v1/admin/products/{product_id}/stock", tag = "admin", security(("admin_token" = [])),
    params(("product_id" = String, Path, description = "The product's id; unknown or malformed: 404"), ("X-OPERATOR" = Option<String>, Header, description = "Who acts, for the log")),
    request_body = StockBody,
    responses(
        (status = 200, description = "The product's stock after the change", body = Answer<CatalogEntry>),
        (status = 400, description = "`INVALID_REQUEST`", body = Failure),
        (status = 401, description = "`UNAUTHORIZED`: the admin token is missing or wrong", body = Failure),
        (status = 404, description = "`PRODUCT_NOT_FOUND`; `NOT_FOUND` when no admin token is configured", body = Failure),
        (status = 409, description = "`STOCK_CONFLICT`: below what orders hold, or below zero (with `available`, `reserved`)", body = Failure),
        (status = 413, description = "`PAYLOAD_TOO_LARGE`", body = Failure),
        (status = 503, description = "`STORE_UNAVAILABLE`, `REQUEST_TIMEOUT`", body = Failure),
    ))]
pub async fn change_stock(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(raw_id): Path<String>,
    body: BodyBytes,
) -> Result<Response, ApiError> {
    let operator = authorize(&state, &headers)?;
    let id = product_id(&raw_id)?;
    let body: StockBody = super::json::parse(&headers, body)?;
    let change = match (body.on_hand.map(|n| n.0), body.add.map(|n| n.0)) {
        (Some(n), None) => StockChange::OnHand(stock_level("onHand", n).map_err(|e| ApiError::Invalid(vec![e]))?),
        (None, Some(n)) if n.abs() <= MAX_STOCK => StockChange::Add(n),
        (None, Some(_)) => {
            return Err(ApiError::invalid("add", format!("add 는 -{MAX_STOCK}~{MAX_STOCK} 의 정수여야 합니다.")));
        }
        (None, None) => StockChange::Add(0),
        (Some(_), Some(_)) => return Err(ApiError::invalid("body", "onHand 와 add 중 하나만 보낼 수 있습니다.")),
    };
    let product = state.catalog.change_stock(&operator, id, change).await?.ok_or(ApiError::ProductNotFound(id))?;
    Ok(ok(StatusCode::OK, CatalogEntry::from(product)))
}
