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

use super::response::{ApiError, ok};
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
        .ok_or_else(|| ApiError::invalid("breaker", format!("알 수 없는 서킷 브레이커입니다: {name}")))?;
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

pub async fn reconcile_now(State(state): State<AppState>, headers: HeaderMap) -> Result<Response, ApiError> {
    let operator = authorize(&state, &headers)?;
    let report = state.reconciler.run_once().await?;
    tracing::warn!(operator, ?report, "operator ran a reconciliation pass");
    Ok(ok(StatusCode::OK, report))
}

/// The catalog: every product with its available, reserved and sold stock.
pub async fn catalog(State(state): State<AppState>, headers: HeaderMap) -> Result<Response, ApiError> {
    authorize(&state, &headers)?;
    Ok(ok(StatusCode::OK, state.store.catalog().await?))
}

const MAX_PRICE: i64 = 1_000_000_000;
const MAX_STOCK: i64 = 1_000_000;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct NewProductBody {
    name: String,
    price: i64,
    stock: i64,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ProductPatchBody {
    name: Option<String>,
    price: Option<i64>,
}

/// Exactly one of the two.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct StockBody {
    on_hand: Option<i64>,
    add: Option<i64>,
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

pub async fn create_product(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: BodyBytes,
) -> Result<Response, ApiError> {
    let operator = authorize(&state, &headers)?;
    let body: NewProductBody = super::json::parse(&headers, body)?;
    let (name, price, stock) = (product_name(&body.name), product_price(body.price), stock_level("stock", body.stock));
    let (Ok(name), Ok(price), Ok(stock)) = (name.clone(), price.clone(), stock.clone()) else {
        return Err(ApiError::Invalid([name.err(), price.err(), stock.err()].into_iter().flatten().collect()));
    };
    let product = state.store.create_product(&name, price, stock).await?;
    tracing::warn!(
        operator,
        product = product.product_id,
        name,
        price = price.get(),
        stock,
        "operator created a product"
    );
    Ok(ok(StatusCode::CREATED, product))
}

pub async fn update_product(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(raw_id): Path<String>,
    body: BodyBytes,
) -> Result<Response, ApiError> {
    let operator = authorize(&state, &headers)?;
    let id = product_id(&raw_id)?;
    let body: ProductPatchBody = super::json::parse(&headers, body)?;
    if body.name.is_none() && body.price.is_none() {
        return Err(ApiError::invalid("body", "name 또는 price 중 하나 이상이 필요합니다."));
    }
    let name = body.name.as_deref().map(product_name).transpose();
    let price = body.price.map(product_price).transpose();
    let (Ok(name), Ok(price)) = (name.clone(), price.clone()) else {
        return Err(ApiError::Invalid([name.err(), price.err()].into_iter().flatten().collect()));
    };
    let before = state.store.catalog().await?.into_iter().find(|p| p.product_id == id);
    let product = state.store.update_product(id, name.as_deref(), price).await?.ok_or(ApiError::ProductNotFound(id))?;
    tracing::warn!(
        operator,
        product = id,
        old_name = before.as_ref().map(|p| p.name.as_str()),
        name = product.name,
        old_price = before.as_ref().map(|p| p.price),
        price = product.price,
        "operator changed a product"
    );
    Ok(ok(StatusCode::OK, product))
}

pub async fn change_stock(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(raw_id): Path<String>,
    body: BodyBytes,
) -> Result<Response, ApiError> {
    let operator = authorize(&state, &headers)?;
    let id = product_id(&raw_id)?;
    let body: StockBody = super::json::parse(&headers, body)?;
    let change = match (body.on_hand, body.add) {
        (Some(n), None) => StockChange::OnHand(stock_level("onHand", n).map_err(|e| ApiError::Invalid(vec![e]))?),
        (None, Some(n)) if n != 0 && n.abs() <= MAX_STOCK => StockChange::Add(n),
        (None, Some(_)) => {
            return Err(ApiError::invalid(
                "add",
                format!("add 는 0이 아닌 -{MAX_STOCK}~{MAX_STOCK} 의 정수여야 합니다."),
            ));
        }
        _ => return Err(ApiError::invalid("body", "onHand 와 add 중 정확히 하나가 필요합니다.")),
    };
    let product = state.store.change_stock(id, change).await?.ok_or(ApiError::ProductNotFound(id))?;
    tracing::warn!(
        operator,
        product = id,
        ?change,
        available = product.available,
        reserved = product.reserved,
        "operator changed stock"
    );
    Ok(ok(StatusCode::OK, product))
}
