//! The live ops page (`/ops`) and its data (`/ops/state`): the gateways side by side
//! (breaker states with their rates against thresholds, payment traffic and latency),
//! the pending backlog, the last transitions with reasons, and the active alert
//! conditions (the Prometheus rules' expressions, without their `for` delay). Assets
//! are embedded: no network use.

use std::time::Duration;

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use gateway::breaker::{SlidingWindow, State as BreakerState};
use serde::Serialize;

use super::views::{self, CatalogEntry};
use crate::http::AppState;
use crate::http::response::{ApiError, ok};
use crate::telemetry::activity;

const PAGE: &str = include_str!("ops.html");

/// The page may run only its own script, talk only to us, and never be framed (it
/// carries operator controls: no clickjacking). The script is allowed by its hash, so
/// an injected one would not run; its inline `style` attributes need 'unsafe-inline'.
static CONTENT_SECURITY_POLICY: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    use base64::Engine;
    use sha2::{Digest, Sha256};
    let script = PAGE.split("<script>").nth(1).and_then(|s| s.split("</script>").next()).expect("the page's script");
    let hash = base64::engine::general_purpose::STANDARD.encode(Sha256::digest(script));
    format!(
        "default-src 'none'; script-src 'sha256-{hash}'; style-src 'unsafe-inline'; connect-src 'self'; \
         img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
    )
});

#[utoipa::path(get, path = "/ops", tag = "operations",
    responses((status = 200, description = "The live ops page (no token needed to read it)", content_type = "text/html; charset=utf-8", body = String)))]
pub async fn page() -> Response {
    let headers = [
        (header::CACHE_CONTROL, "no-store"),
        (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY.as_str()),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
    ];
    (headers, Html(PAGE)).into_response()
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct OpsState {
    /// Every breaker of every gateway, the primary's first.
    breakers: Vec<BreakerView>,
    /// The gateways side by side, in priority order.
    gateways: Vec<GatewayView>,
    pending: Pending,
    transitions: Vec<activity::TransitionRecord>,
    alerts: Vec<Alert>,
    admin_enabled: bool,
    /// Products with `LOW_STOCK` or fewer for sale (empty when the database is down).
    low_stock: Vec<CatalogEntry>,
    low_stock_threshold: i64,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct GatewayView {
    name: String,
    /// "primary", or "failover 1", "failover 2", ...
    role: String,
    /// Its payment breaker admits new payments.
    taking_payments: bool,
    traffic: activity::Traffic,
    series: Vec<activity::Sample>,
    latency: activity::Latency,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct BreakerView {
    name: String,
    gateway: String,
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
    /// Calls in a row with no answer and no trace at the PG, and the run that opens the
    /// breaker (0: this breaker has no such rule).
    unanswered_run: u32,
    unanswered_threshold: u32,
    /// When an OPEN breaker lets a trial call through.
    trials: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Pending {
    count: i64,
    oldest_age_seconds: f64,
    /// This instance's reconciler, settled per second over the last 10 s.
    reconciled_per_second: f64,
    /// The backlog over that rate; none while nothing is being settled.
    drain_seconds: Option<f64>,
}

#[derive(Serialize)]
struct Alert {
    name: &'static str,
    severity: &'static str,
    detail: String,
}

/// When an OPEN breaker tries the PG again, in words.
fn trials(c: &gateway::breaker::BreakerConfig) -> String {
    let wait = c.wait_in_open.as_millis();
    match c.half_open_after_refusals {
        0 => format!("a trial after {wait} ms open"),
        n => format!(
            "a trial every {n} refused (not within {} ms), at least every {wait} ms",
            c.min_wait_in_open.as_millis()
        ),
    }
}

/// Thresholds of deploy/prometheus/alerts.yml; a test keeps the two in step.
pub const FAILURE_SHARE_THRESHOLD: f64 = 0.5;
pub const FAILURE_SHARE_MIN_REQUESTS: u64 = 50;
pub const STUCK_PENDING_SECONDS: f64 = 600.0;
pub const ANOMALY_LOOKBACK: Duration = Duration::from_secs(15 * 60);
/// A product with this many or fewer for sale is listed as low on the page.
pub const LOW_STOCK: i64 = 10;

#[utoipa::path(get, path = "/ops/state", tag = "operations",
    responses((status = 200, description = "What the ops page shows: breakers, gateways, the pending backlog, alerts, low stock", body = crate::http::schema::Answer<Object>)))]
pub async fn state(State(app): State<AppState>) -> Result<Response, ApiError> {
    // The page must work best when the database does not: the backlog reads as empty
    // then, and the alert says why.
    let backlog = app.health.backlog().await;
    let database_up = backlog.is_ok();
    let (count, oldest_age_seconds) = backlog.map_or((0, 0.0), |b| (b.count, b.oldest_age.as_secs_f64()));
    let reconciled_per_second = app.reconciler.throughput().per_second(Duration::from_secs(10));
    let breakers: Vec<BreakerView> = app
        .gateways
        .breakers()
        .into_iter()
        .map(|(gateway, b)| {
            let s = b.snapshot();
            BreakerView {
                name: s.name,
                gateway: gateway.to_string(),
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
                unanswered_run: s.metrics.unanswered_run,
                unanswered_threshold: s.config.open_after_unanswered,
                trials: trials(&s.config),
            }
        })
        .collect();
    let gateways: Vec<GatewayView> = (app.gateways.all().iter().enumerate())
        .map(|(i, g)| GatewayView {
            name: g.name().to_string(),
            role: if i == 0 { "primary".into() } else { format!("failover {i}") },
            taking_payments: g.admits_payments(),
            traffic: g.activity.traffic(Duration::from_secs(60)),
            series: g.activity.series(),
            latency: g.activity.latency(Duration::from_secs(60)),
        })
        .collect();
    let mut alerts = Vec::new();
    if gateways.iter().all(|g| !g.taking_payments) {
        alerts.push(Alert {
            name: "AllPaymentGatewaysOpen",
            severity: "critical",
            detail: format!(
                "the payment breaker of every gateway ({}) is open: no checkout can be taken",
                gateways.iter().map(|g| g.name.as_str()).collect::<Vec<_>>().join(", ")
            ),
        });
    }
    for b in &breakers {
        if b.alerting {
            let effect = if b.name.ends_with(".payments") {
                "new checkouts skip this gateway"
            } else {
                "this gateway's callbacks cannot be verified and its reconciliation pauses"
            };
            alerts.push(Alert {
                name: "PaymentGatewayCircuitOpen",
                severity: "critical",
                detail: format!("{} is {}: {effect}", b.name, b.state.to_uppercase()),
            });
        }
    }
    for g in app.gateways.all() {
        let five_minutes = g.activity.traffic(Duration::from_secs(300));
        if five_minutes.total >= FAILURE_SHARE_MIN_REQUESTS && five_minutes.failure_share > FAILURE_SHARE_THRESHOLD {
            alerts.push(Alert {
                name: "PaymentGatewayFailureRateHigh",
                severity: "warning",
                detail: format!(
                    "{:.0}% of payment requests to {} failed over 5 min (threshold 50%)",
                    five_minutes.failure_share * 100.0,
                    g.name()
                ),
            });
        }
    }
    if !database_up {
        alerts.push(Alert {
            name: "ShopDatabaseUnavailable",
            severity: "critical",
            detail: "the database cannot be reached: checkouts and order reads are answered 503 STORE_UNAVAILABLE"
                .into(),
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
    let mut transitions: Vec<_> = app.gateways.all().iter().flat_map(|g| g.activity.transitions()).collect();
    // RFC 3339 times in UTC with fixed precision sort as text; newest first.
    transitions.sort_by(|a, b| b.at.cmp(&a.at));
    let view = OpsState {
        breakers,
        gateways,
        pending: Pending {
            count,
            oldest_age_seconds,
            reconciled_per_second,
            drain_seconds: (reconciled_per_second > 0.0).then(|| count as f64 / reconciled_per_second),
        },
        transitions,
        alerts,
        admin_enabled: app.admin_token.is_some(),
        low_stock: views::all(app.catalog.low_stock(LOW_STOCK).await.unwrap_or_default()),
        low_stock_threshold: LOW_STOCK,
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
