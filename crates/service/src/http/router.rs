//! Every route of the API and the layers around them.

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, patch, post};

use super::handlers::{callback, health, metrics, openapi_document, primary_callback, products, ready};
use super::response::ApiError;
use super::{AppState, BODY_LIMIT, admin, limits, ops, orders};

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
