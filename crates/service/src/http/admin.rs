//! Operator controls: force open, disable or reset a breaker; run a reconciliation
//! pass now. They need `Authorization: Bearer <admin token>`, compared in constant time;
//! without a configured token the routes do not exist (404). Every action is logged
//! with who (the `X-OPERATOR` header, if sent), when and what.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;
use serde_json::json;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::AppState;
use super::response::{ApiError, ok};

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
