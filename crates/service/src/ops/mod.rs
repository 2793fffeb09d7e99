//! The live ops page (`/ops`) and its data (`/ops/state`): breaker states with their
//! rates against thresholds, PG payment traffic and latency, the pending backlog, the
//! last transitions with reasons, and the active alert conditions (the Prometheus
//! rules' expressions, without their `for` delay). Assets are embedded: no network use.

mod activity;

use std::time::Duration;

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use gateway::breaker::{SlidingWindow, State as BreakerState};
use serde::Serialize;

pub use self::activity::{Activity, Tee};
use crate::http::AppState;
use crate::http::response::{ApiError, ok};

const PAGE: &str = include_str!("page.html");

pub async fn page() -> Response {
    ([(header::CACHE_CONTROL, "no-store")], Html(PAGE)).into_response()
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct OpsState {
    breakers: Vec<BreakerView>,
    traffic: activity::Traffic,
    series: Vec<activity::Sample>,
    latency: activity::Latency,
    pending: Pending,
    transitions: Vec<activity::TransitionRecord>,
    alerts: Vec<Alert>,
    admin_enabled: bool,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct BreakerView {
    name: String,
    state: &'static str,
    /// The circuit-open alert's rule, decided once by `alerting`.
    #[serde(skip)]
    alerting: bool,
    since_seconds: f64,
    failure_rate: f64,
    slow_call_rate: f64,
    failure_threshold: f64,
    slow_call_threshold: f64,
    buffered_calls: u32,
    window: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Pending {
    count: i64,
    oldest_age_seconds: f64,
}

#[derive(Serialize)]
struct Alert {
    name: &'static str,
    severity: &'static str,
    detail: String,
}

/// Thresholds of deploy/prometheus/alerts.yml; a test keeps the two in step.
pub const FAILURE_SHARE_THRESHOLD: f64 = 0.5;
pub const FAILURE_SHARE_MIN_REQUESTS: u64 = 50;
pub const STUCK_PENDING_SECONDS: f64 = 600.0;
pub const ANOMALY_LOOKBACK: Duration = Duration::from_secs(15 * 60);

pub async fn state(State(app): State<AppState>) -> Result<Response, ApiError> {
    let (count, oldest) = app.store.unsettled().await?;
    let oldest_age_seconds = oldest.map_or(0.0, |t| (crate::app::now_ms() - t).max(0) as f64 / 1_000.0);
    let breakers: Vec<BreakerView> = [app.gateway.payment_breaker(), app.gateway.status_breaker()]
        .into_iter()
        .map(|b| {
            let s = b.snapshot();
            BreakerView {
                name: s.name,
                state: s.state.as_str(),
                alerting: alerting(s.state),
                since_seconds: s.since.elapsed().as_secs_f64(),
                failure_rate: s.metrics.failure_rate,
                slow_call_rate: s.metrics.slow_call_rate,
                failure_threshold: s.config.failure_rate_threshold,
                slow_call_threshold: s.config.slow_call_rate_threshold,
                buffered_calls: s.metrics.buffered,
                window: match s.config.sliding_window {
                    SlidingWindow::Count(n) => format!("last {n} calls (min {})", s.config.minimum_calls),
                    SlidingWindow::Time(n) => format!("last {n} s (min {} calls)", s.config.minimum_calls),
                },
            }
        })
        .collect();
    let traffic = app.activity.traffic(Duration::from_secs(60));
    let five_minutes = app.activity.traffic(Duration::from_secs(300));
    let mut alerts = Vec::new();
    for b in &breakers {
        if b.alerting {
            let effect = if b.name.ends_with(".payments") {
                "new checkouts are refused"
            } else {
                "callbacks cannot be verified and reconciliation pauses"
            };
            alerts.push(Alert {
                name: "PaymentGatewayCircuitOpen",
                severity: "critical",
                detail: format!("{} is {}: {effect}", b.name, b.state.to_uppercase()),
            });
        }
    }
    if five_minutes.total >= FAILURE_SHARE_MIN_REQUESTS && five_minutes.failure_share > FAILURE_SHARE_THRESHOLD {
        alerts.push(Alert {
            name: "PaymentGatewayFailureRateHigh",
            severity: "warning",
            detail: format!(
                "{:.0}% of PG payment requests failed over 5 min (threshold 50%)",
                five_minutes.failure_share * 100.0
            ),
        });
    }
    if oldest_age_seconds > STUCK_PENDING_SECONDS {
        alerts.push(Alert {
            name: "PaymentsStuckPending",
            severity: "warning",
            detail: format!("oldest pending payment: {oldest_age_seconds:.0} s"),
        });
    }
    if app.metrics.last_anomaly_age().is_some_and(|age| age <= ANOMALY_LOOKBACK) {
        alerts.push(Alert {
            name: "PaymentDoubleChargeDetected",
            severity: "critical",
            detail: "a charge to refund was found in the last 15 min (see orders with an anomaly)".into(),
        });
    }
    let view = OpsState {
        breakers,
        traffic,
        series: app.activity.series(),
        latency: app.activity.latency(Duration::from_secs(60)),
        pending: Pending { count, oldest_age_seconds },
        transitions: app.activity.transitions(),
        alerts,
        admin_enabled: app.admin_token.is_some(),
    };
    Ok(ok(StatusCode::OK, view))
}

/// Whether a breaker state counts as "not closed" for the circuit-open alert.
pub fn alerting(state: BreakerState) -> bool {
    matches!(state, BreakerState::Open | BreakerState::ForcedOpen | BreakerState::HalfOpen)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_uses_the_thresholds_of_the_prometheus_rules() {
        let rules = include_str!("../../../../deploy/prometheus/alerts.yml");
        assert!(rules.contains(&format!(") > {FAILURE_SHARE_THRESHOLD}")), "failure share threshold");
        assert!(rules.contains(&format!("[5m])) >= {FAILURE_SHARE_MIN_REQUESTS}")), "request floor");
        assert!(
            rules.contains(&format!("payguard_payments_pending_oldest_age_seconds > {STUCK_PENDING_SECONDS}")),
            "stuck bound"
        );
        assert!(rules.contains(&format!("[{}m]) > 0", ANOMALY_LOOKBACK.as_secs() / 60)), "anomaly lookback");
        assert!(rules.contains(r#"state=~"open|forced_open|half_open""#));
        for state in [BreakerState::Open, BreakerState::ForcedOpen, BreakerState::HalfOpen] {
            assert!(alerting(state));
        }
        assert!(!alerting(BreakerState::Closed) && !alerting(BreakerState::Disabled));
    }
}
