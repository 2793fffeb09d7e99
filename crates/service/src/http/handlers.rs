//! The handlers that belong to no resource of their own: catalog, callbacks and the
//! operations endpoints.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::response::{ApiError, ok};
use super::{AppState, BodyBytes, openapi, schema, views};

#[utoipa::path(get, path = "/api/v1/products", tag = "shop",
    responses(
        (status = 200, description = "The catalog with price and stock for sale", body = schema::Answer<Vec<views::Product>>),
        (status = 503, description = "`STORE_UNAVAILABLE`, `REQUEST_TIMEOUT`", body = schema::Failure),
    ))]
pub(super) async fn products(State(state): State<AppState>) -> Result<Response, ApiError> {
    Ok(ok(StatusCode::OK, views::all::<_, views::Product>(state.catalog.for_sale().await?)))
}

/// The primary gateway's callbacks keep the original path.
#[utoipa::path(post, path = "/api/v1/payments/callback", tag = "pg",
    params(("X-PG-Signature" = Option<String>, Header, description = "`t=<unix seconds>,v1=<hex HMAC-SHA256 of <t>.<body>>` when the gateway has a callback secret; without one the callback is checked against the PG")),
    request_body = schema::CallbackBody,
    responses(schema::CallbackAnswers))]
pub(super) async fn primary_callback(
    state: State<AppState>,
    headers: HeaderMap,
    body: BodyBytes,
) -> Result<Response, ApiError> {
    let primary = state.gateways.primary().name().to_string();
    callback(state, Path(primary), headers, body).await
}

#[utoipa::path(post, path = "/api/v1/payments/callback/{gateway}", tag = "pg",
    params(("gateway" = String, Path, description = "A configured gateway's name"),
        ("X-PG-Signature" = Option<String>, Header, description = "As on the primary's path, with this gateway's secret")),
    request_body = schema::CallbackBody,
    responses(schema::CallbackAnswers))]
pub(super) async fn callback(
    State(state): State<AppState>,
    Path(gateway): Path<String>,
    headers: HeaderMap,
    body: BodyBytes,
) -> Result<Response, ApiError> {
    let body = body.map_err(|_| ApiError::PayloadTooLarge)?;
    let intake = &state.gateways.get(&gateway).ok_or(ApiError::UnknownPath)?.callbacks;
    let signature = headers.get(gateway::wire::SIGNATURE_HEADER).and_then(|v| v.to_str().ok());
    let received = intake.receive(&body, signature).await;
    state.metrics.callback(match &received {
        Ok(applied) => applied.as_str(),
        Err(refused) => refused.label(),
    });
    Ok(ok(StatusCode::OK, json!({ "result": received?.as_str() })))
}

#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, description = "Prometheus metrics (docs/operations.md)", content_type = "application/openmetrics-text; version=1.0.0; charset=utf-8", body = String)))]
pub(super) async fn metrics(State(state): State<AppState>) -> Result<Response, ApiError> {
    let backlog = state.health.backlog().await.ok().map(|b| (b.count, b.oldest_age));
    let breakers = state.gateways.breakers();
    let body = state.metrics.render(&breakers, backlog);
    let content_type = "application/openmetrics-text; version=1.0.0; charset=utf-8";
    Ok(([(axum::http::header::CONTENT_TYPE, content_type)], body).into_response())
}

#[utoipa::path(get, path = "/healthz", tag = "operations",
    responses((status = 200, description = "The process is up", body = schema::Health)))]
pub(super) async fn health() -> Response {
    Json(json!({"status": "ok"})).into_response()
}

#[utoipa::path(get, path = "/openapi.json", tag = "operations",
    responses((status = 200, description = "This document", content_type = "application/json", body = Object)))]
pub(super) async fn openapi_document() -> Response {
    ([(axum::http::header::CONTENT_TYPE, "application/json")], openapi::DOCUMENT.as_str()).into_response()
}

#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses(
        (status = 200, description = "The database answers", body = schema::Answer<schema::Health>),
        (status = 503, description = "`STORE_UNAVAILABLE`: send no traffic here now", body = schema::Failure),
    ))]
pub(super) async fn ready(State(state): State<AppState>) -> Result<Response, ApiError> {
    // Any failure to reach the database means "send no traffic here now".
    state.health.ready().await.map_err(|e| ApiError::StoreUnavailable(e.to_string()))?;
    Ok(ok(StatusCode::OK, json!({"status": "ready"})))
}
