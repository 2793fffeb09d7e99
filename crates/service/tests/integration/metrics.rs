//! The metrics of docs/operations.md on a live scrape: names, labels, and values that
//! follow what happened.

use crate::common::*;
use gateway_sim::Faults;
use gateway_sim::faults::{CallbackFaults, OutcomeSplit};
use reqwest::StatusCode;

async fn scrape(app: &TestApp) -> String {
    let response = reqwest::get(format!("{}/metrics", app.url)).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response.headers()["content-type"].to_str().unwrap().starts_with("application/openmetrics-text"));
    response.text().await.unwrap()
}

/// The value of the sample whose name and labels are exactly these.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.split(' ').next()?.parse().ok())
}

#[tokio::test]
async fn a_live_scrape_has_the_required_metrics_with_their_labels() {
    let app = spawn_app(Faults {
        request_failure_rate: 0.5,
        outcome: OutcomeSplit { limit_exceeded: 0.0, invalid_card: 0.0 },
        ..Faults::instant()
    })
    .await;
    for _ in 0..10 {
        app.checkout("buyer-1", &[(1, 1)]).await;
    }
    app.pg_settled().await;
    app.reconcile().await;
    let text = scrape(&app).await;

    let ok =
        sample(&text, r#"payguard_gateway_requests_total{gateway="pg",operation="request_payment",outcome="success"}"#)
            .unwrap();
    let failed =
        sample(&text, r#"payguard_gateway_requests_total{gateway="pg",operation="request_payment",outcome="failure"}"#)
            .unwrap();
    assert_eq!(ok, 10.0, "every checkout got through");
    assert!(failed >= 1.0, "the 50% failures were counted");
    assert_eq!(
        sample(
            &text,
            r#"payguard_gateway_failures_total{gateway="pg",operation="request_payment",reason="unavailable"}"#
        ),
        Some(failed)
    );
    assert_eq!(ok + failed, app.pg_requests() as f64, "one count per PG request");
    assert_eq!(
        sample(&text, r#"payguard_gateway_retries_total{gateway="pg",operation="request_payment"}"#),
        Some(failed)
    );
    assert!(
        text.contains(
            r#"payguard_gateway_request_duration_seconds_bucket{le="+Inf",gateway="pg",operation="request_payment"}"#
        ) || text.contains(
            r#"payguard_gateway_request_duration_seconds_bucket{gateway="pg",operation="request_payment",le="+Inf"}"#
        ),
        "{text}"
    );
    assert_eq!(sample(&text, r#"payguard_checkouts_total{result="accepted"}"#), Some(10.0));
    assert_eq!(sample(&text, r#"payguard_callbacks_total{result="settled_success"}"#), Some(10.0));
    assert_eq!(sample(&text, "payguard_payments_pending"), Some(0.0));
    assert!(text.contains("# TYPE payguard_payment_settle_duration_seconds histogram"));
    assert!(text.contains("payguard_double_charges_total 0"));

    for breaker in ["pg.payments", "pg.status"] {
        let states: Vec<(String, f64)> = ["closed", "open", "half_open", "forced_open", "disabled"]
            .iter()
            .map(|s| {
                (
                    s.to_string(),
                    sample(
                        &text,
                        &format!(r#"payguard_circuit_breaker_state{{gateway="pg",breaker="{breaker}",state="{s}"}}"#),
                    )
                    .unwrap(),
                )
            })
            .collect();
        assert_eq!(
            states.iter().filter(|(_, v)| *v == 1.0).map(|(s, _)| s.as_str()).collect::<Vec<_>>(),
            ["closed"],
            "{breaker}"
        );
        assert_eq!(states.iter().map(|(_, v)| v).sum::<f64>(), 1.0);
    }
    assert!(!text.contains("1234-5678-9814-1451") && !text.contains("1234567898141451"));
}

#[tokio::test]
async fn breaker_state_and_transitions_follow_the_breaker_at_every_scrape() {
    let app = spawn_app(reliable()).await;
    app.gateway.payment_breaker().force_open();
    let text = scrape(&app).await;
    assert_eq!(
        sample(&text, r#"payguard_circuit_breaker_state{gateway="pg",breaker="pg.payments",state="forced_open"}"#),
        Some(1.0)
    );
    assert_eq!(
        sample(&text, r#"payguard_circuit_breaker_state{gateway="pg",breaker="pg.payments",state="closed"}"#),
        Some(0.0)
    );
    assert_eq!(
        sample(
            &text,
            r#"payguard_circuit_breaker_transitions_total{gateway="pg",breaker="pg.payments",from="closed",to="forced_open"}"#
        ),
        Some(1.0)
    );
    let (status, _) = app.checkout("buyer-1", &[(1, 1)]).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);

    app.gateway.payment_breaker().reset();
    let text = scrape(&app).await;
    assert_eq!(
        sample(&text, r#"payguard_circuit_breaker_state{gateway="pg",breaker="pg.payments",state="forced_open"}"#),
        Some(0.0),
        "the old state is reset to 0"
    );
    assert_eq!(
        sample(&text, r#"payguard_circuit_breaker_state{gateway="pg",breaker="pg.payments",state="closed"}"#),
        Some(1.0)
    );
    assert_eq!(sample(&text, r#"payguard_checkouts_total{result="gateway_unavailable"}"#), Some(1.0));
}

#[tokio::test]
async fn the_pending_backlog_and_its_oldest_age_are_exported() {
    let app = spawn_app(Faults {
        callback: CallbackFaults { drop_rate: 1.0, ..Default::default() },
        processing_delay_ms: gateway_sim::faults::MsRange::new(600_000, 600_000),
        ..reliable()
    })
    .await;
    for _ in 0..3 {
        app.checkout("buyer-1", &[(2, 1)]).await;
    }
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    let text = scrape(&app).await;
    assert_eq!(sample(&text, "payguard_payments_pending"), Some(3.0));
    assert!(sample(&text, "payguard_payments_pending_oldest_age_seconds").unwrap() >= 0.02);
    app.reconcile().await;
    let text = scrape(&app).await;
    assert_eq!(sample(&text, r#"payguard_reconciliations_total{result="still_pending"}"#), Some(3.0));
}
