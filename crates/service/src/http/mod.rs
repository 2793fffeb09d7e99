//! The HTTP API (docs/openapi.json): `/api/v1` with the PG's `{meta, data}` envelope.

pub mod admin;
pub mod buyer;
pub mod idempotency;
pub mod json;
pub mod limits;
pub mod linger;
pub mod openapi;
pub mod ops;
pub mod orders;
pub mod response;
pub mod schema;
pub mod server;
pub mod views;

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, patch, post};
use axum::{Json, Router};
use serde_json::json;

use self::response::{ApiError, ok};
use crate::app::callbacks::CallbackIntake;
use crate::app::checkout::Checkout;
use crate::app::gateways::Gateways;
use crate::app::reconciler::Reconciler;
use crate::configuration::CheckoutSettings;
use crate::telemetry::Metrics;

/// Bodies above this are refused before they are read.
pub const BODY_LIMIT: usize = 64 * 1024;

/// A body, or why it could not be read (over `BODY_LIMIT`): handlers answer that with
/// the envelope rather than axum's plain-text rejection.
pub type BodyBytes = Result<Bytes, axum::extract::rejection::BytesRejection>;

/// What every handler shares. axum clones the state into every route for every
/// connection, so it is one `Arc`: a clone is a reference count, not a copy of the
/// gateway clients (that cost ~180 KB per open connection; docs/benchmarks.md).
#[derive(Clone)]
pub struct AppState(Arc<AppParts>);

impl AppState {
    pub fn new(parts: AppParts) -> AppState {
        AppState(Arc::new(parts))
    }
}

impl std::ops::Deref for AppState {
    type Target = AppParts;

    fn deref(&self) -> &AppParts {
        &self.0
    }
}

pub struct AppParts {
    pub orders: crate::app::orders::Orders,
    pub catalog: crate::app::catalog::Catalog,
    pub health: crate::app::health::Health,
    pub checkout: Checkout,
    pub idempotency: crate::app::idempotency::Idempotency,
    /// One per gateway, in the gateways' order (the primary first).
    pub callbacks: Vec<CallbackIntake>,
    pub reconciler: Reconciler,
    pub gateways: Gateways,
    pub metrics: Arc<Metrics>,
    pub checkout_settings: CheckoutSettings,
    pub limiter: Arc<BuyerLimiter>,
    pub admin_token: Option<admin::AdminToken>,
    pub request_limits: limits::RequestLimits,
}

/// Per-buyer checkout rate limit (a keyed token bucket).
pub type BuyerLimiter = governor::DefaultKeyedRateLimiter<String>;

pub fn buyer_limiter(settings: &CheckoutSettings) -> BuyerLimiter {
    let per_second = std::num::NonZeroU32::new(settings.rate_limit_per_second).expect("validated positive");
    let burst = std::num::NonZeroU32::new(settings.rate_limit_burst).expect("validated positive");
    governor::RateLimiter::keyed(governor::Quota::per_second(per_second).allow_burst(burst))
}

/// Drops the buckets of buyers idle long enough for theirs to be full again (such a
/// buyer is indistinguishable from a new one), so a flood of one-off buyer ids does not
/// stay in memory. Runs every 30 s until `stop` turns true.
pub async fn sweep_buyer_limiter(limiter: Arc<BuyerLimiter>, mut stop: tokio::sync::watch::Receiver<bool>) {
    let mut every = tokio::time::interval(std::time::Duration::from_secs(30));
    while !*stop.borrow() {
        tokio::select! {
            _ = every.tick() => forget_idle_buyers(&limiter),
            _ = stop.changed() => {}
        }
    }
}

fn forget_idle_buyers<C, MW>(
    limiter: &governor::RateLimiter<String, governor::state::keyed::DashMapStateStore<String>, C, MW>,
) where
    C: governor::clock::Clock,
    MW: governor::middleware::RateLimitingMiddleware<C::Instant>,
{
    limiter.retain_recent();
    limiter.shrink_to_fit();
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/api/v1/products", get(products))
        .route("/api/v1/orders", post(orders::checkout).get(orders::list))
        .route("/api/v1/orders/{order_id}", get(orders::detail))
        .route("/api/v1/payments/callback", post(primary_callback))
        .route("/api/v1/payments/callback/{gateway}", post(callback))
        .route("/api/v1/admin/breakers", get(admin::breakers))
        .route("/api/v1/admin/breakers/{name}/{action}", post(admin::breaker_action))
        .route("/api/v1/admin/reconcile", post(admin::reconcile_now))
        .route("/api/v1/admin/products", get(admin::catalog).post(admin::create_product))
        .route("/api/v1/admin/products/{product_id}", patch(admin::update_product))
        .route("/api/v1/admin/products/{product_id}/stock", post(admin::change_stock))
        .route("/ops", get(ops::page))
        .route("/ops/state", get(ops::state))
        .route("/metrics", get(metrics))
        .route("/healthz", get(health))
        .route("/openapi.json", get(openapi_document))
        .route("/readyz", get(ready))
        .fallback(|| async { ApiError::UnknownPath })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(axum::middleware::from_fn_with_state(state.clone(), limits::bound_request))
        .with_state(state)
}

#[utoipa::path(get, path = "/api/v1/products", tag = "shop",
    responses(
        (status = 200, description = "The catalog with price and stock for sale", body = schema::Answer<Vec<views::Product>>),
        (status = 503, description = "`STORE_UNAVAILABLE`, `REQUEST_TIMEOUT`", body = schema::Failure),
    ))]
async fn products(State(state): State<AppState>) -> Result<Response, ApiError> {
    Ok(ok(StatusCode::OK, views::all::<_, views::Product>(state.catalog.for_sale().await?)))
}

/// The primary gateway's callbacks keep the original path.
#[utoipa::path(post, path = "/api/v1/payments/callback", tag = "pg",
    params(("X-PG-Signature" = Option<String>, Header, description = "`t=<unix seconds>,v1=<hex HMAC-SHA256 of <t>.<body>>` when the gateway has a callback secret; without one the callback is checked against the PG")),
    request_body = schema::CallbackBody,
    responses(schema::CallbackAnswers))]
async fn primary_callback(state: State<AppState>, headers: HeaderMap, body: BodyBytes) -> Result<Response, ApiError> {
    let primary = state.gateways.primary().name().to_string();
    callback(state, Path(primary), headers, body).await
}

#[utoipa::path(post, path = "/api/v1/payments/callback/{gateway}", tag = "pg",
    params(("gateway" = String, Path, description = "A configured gateway's name"),
        ("X-PG-Signature" = Option<String>, Header, description = "As on the primary's path, with this gateway's secret")),
    request_body = schema::CallbackBody,
    responses(schema::CallbackAnswers))]
async fn callback(
    State(state): State<AppState>,
    Path(gateway): Path<String>,
    headers: HeaderMap,
    body: BodyBytes,
) -> Result<Response, ApiError> {
    use crate::app::callbacks::CallbackError::*;
    let body = body.map_err(|_| ApiError::PayloadTooLarge)?;
    let intake = state.callbacks.iter().find(|c| c.gateway() == gateway).ok_or(ApiError::UnknownPath)?;
    let signature = headers.get(gateway::wire::SIGNATURE_HEADER).and_then(|v| v.to_str().ok());
    let received = intake.receive(&body, signature).await;
    state.metrics.callback(match &received {
        Ok(applied) => applied.as_str(),
        Err(Malformed(_)) => "malformed",
        Err(Unauthorized) => "unauthorized",
        Err(UnknownTransaction) => "unknown_transaction",
        Err(WrongGateway { .. }) => "wrong_gateway",
        Err(Mismatch { .. }) => "mismatch",
        Err(Unverifiable(_)) => "unverifiable",
        Err(FetchBackLimited) => "fetch_back_limited",
        Err(Store(_)) => "error",
    });
    Ok(ok(StatusCode::OK, json!({ "result": received?.as_str() })))
}

#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, description = "Prometheus metrics (docs/operations.md)", content_type = "application/openmetrics-text; version=1.0.0; charset=utf-8", body = String)))]
async fn metrics(State(state): State<AppState>) -> Result<Response, ApiError> {
    let backlog = state.health.backlog().await.ok().map(|b| (b.count, b.oldest_age));
    let breakers = state.gateways.breakers();
    let body = state.metrics.render(&breakers, backlog);
    let content_type = "application/openmetrics-text; version=1.0.0; charset=utf-8";
    Ok(([(axum::http::header::CONTENT_TYPE, content_type)], body).into_response())
}

#[utoipa::path(get, path = "/healthz", tag = "operations",
    responses((status = 200, description = "The process is up", body = schema::Health)))]
async fn health() -> Response {
    Json(json!({"status": "ok"})).into_response()
}

#[utoipa::path(get, path = "/openapi.json", tag = "operations",
    responses((status = 200, description = "This document", content_type = "application/json", body = Object)))]
async fn openapi_document() -> Response {
    ([(axum::http::header::CONTENT_TYPE, "application/json")], openapi::DOCUMENT.as_str()).into_response()
}

#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses(
        (status = 200, description = "The database answers", body = schema::Answer<schema::Health>),
        (status = 503, description = "`STORE_UNAVAILABLE`: send no traffic here now", body = schema::Failure),
    ))]
async fn ready(State(state): State<AppState>) -> Result<Response, ApiError> {
    // Any failure to reach the database means "send no traffic here now".
    state.health.ready().await.map_err(|e| ApiError::StoreUnavailable(e.to_string()))?;
    Ok(ok(StatusCode::OK, json!({"status": "ready"})))
}

#[cfg(test)]
mod tests {
    use governor::clock::FakeRelativeClock;
    use governor::{Quota, RateLimiter};

    #[test]
    fn idle_buyers_are_forgotten_and_active_ones_kept() {
        let clock = FakeRelativeClock::default();
        let quota = Quota::per_second(std::num::NonZeroU32::new(10).unwrap())
            .allow_burst(std::num::NonZeroU32::new(20).unwrap());
        let limiter = RateLimiter::dashmap_with_clock(quota, clock.clone());
        for buyer in 0..1_000 {
            let buyer = format!("buyer-{buyer}");
            assert!((0..20).all(|_| limiter.check_key(&buyer).is_ok()), "the burst");
        }
        // 1 s refills 10 of the 20 tokens: those buyers must still be remembered.
        clock.advance(std::time::Duration::from_secs(1));
        super::forget_idle_buyers(&limiter);
        assert_eq!(limiter.len(), 1_000, "a bucket that is not full again is kept");
        clock.advance(std::time::Duration::from_millis(1_500));
        assert!(limiter.check_key(&"buyer-7".to_string()).is_ok());
        super::forget_idle_buyers(&limiter);
        assert_eq!(limiter.len(), 1, "only the buyer who just ordered is kept");
    }
}
