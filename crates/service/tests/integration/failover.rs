//! Failover to a second gateway, over real HTTP against two simulators: the primary
//! (`pg`) misbehaves, the secondary (`pg2`) works. A payment moves on only when the
//! primary surely did not receive it; whatever may be at the primary stays there.

use std::time::Duration;

use crate::common::*;
use gateway::breaker::{BreakerConfig, SlidingWindow, State};
use gateway::signature;
use gateway_sim::faults::{CallbackFaults, DownMode, OutcomeSplit};
use gateway_sim::{Faults, SimConfig};
use reqwest::StatusCode;
use serde_json::json;
use service::Settings;
use service::domain::pg_order_id;

/// Every payment the simulator decides is approved.
fn approving() -> Faults {
    Faults { outcome: OutcomeSplit { limit_exceeded: 0.0, invalid_card: 0.0 }, ..reliable() }
}

fn sim(faults: Faults) -> SimConfig {
    SimConfig { faults, ..sim_config() }
}

/// Payment breakers that judge after 4 calls and stay open for `wait`.
fn quick_breakers(settings: &mut Settings, wait: Duration) {
    let breaker = BreakerConfig {
        minimum_calls: 4,
        sliding_window: SlidingWindow::Count(4),
        failure_rate_threshold: 50.0,
        slow_call_rate_threshold: 100.0,
        slow_call_duration: Duration::from_millis(250),
        permitted_calls_in_half_open: 2,
        wait_in_open: wait,
        ..settings.gateway.resilience.payment_breaker.clone()
    };
    settings.gateway.resilience.payment_breaker = breaker.clone();
    for failover in &mut settings.failover_gateways {
        failover.resilience.payment_breaker = breaker.clone();
    }
}

/// The gateway an order's (first) attempt was sent to.
async fn gateway_of(app: &TestApp, order_id: i64) -> String {
    app.store.attempt_by_pg_order_id(&pg_order_id(order_id, 1)).await.unwrap().expect("an attempt").gateway.to_string()
}

fn secondary(app: &TestApp) -> &gateway_sim::RunningSim {
    app.secondary.as_ref().expect("spawned with a secondary")
}

fn order_ids_at(sim: &gateway_sim::RunningSim) -> Vec<String> {
    sim.sim().ledger().transactions().iter().map(|t| t.order_id.clone()).collect()
}

/// Checks out until the primary's payment breaker opens; returns each result.
async fn until_primary_opens(app: &TestApp) -> Vec<(StatusCode, serde_json::Value)> {
    let mut results = Vec::new();
    while app.gateway.payment_breaker().state() != State::Open {
        assert!(results.len() < 20, "the primary's breaker never opened");
        results.push(app.checkout("buyer-1", &[(1, 1)]).await);
    }
    results
}

/// The shared scenario: with the primary down in some way, once its breaker is open
/// every checkout goes to the secondary and is paid there, and the primary hears nothing.
async fn primary_down_means_checkouts_go_to_the_secondary(down: Faults) {
    let app = spawn_app_on(sim(down), Some(sim(approving())), |s| quick_breakers(s, Duration::from_secs(60))).await;
    let before_open = until_primary_opens(&app).await;
    let primary_heard = app.pg_requests();

    let mut orders = Vec::new();
    for _ in 0..8 {
        let (status, body) = app.checkout("buyer-1", &[(2, 1)]).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{body}");
        orders.push(body["data"]["orderId"].as_i64().unwrap());
    }
    for &order in &orders {
        assert_eq!(gateway_of(&app, order).await, SECONDARY);
        app.wait_for_status("buyer-1", order, "PAID").await;
    }
    assert_eq!(app.pg_requests(), primary_heard, "nothing reached the primary while its breaker was open");
    assert_eq!(app.gateway.payment_breaker().state(), State::Open);
    let at_secondary = order_ids_at(secondary(&app));
    for &order in &orders {
        assert!(at_secondary.contains(&pg_order_id(order, 1)));
    }
    // Before the breaker opened, each accepted payment stayed where it was recorded:
    // failed over (at the secondary only) or unknown (with the primary, never re-sent).
    app.pg_settled().await;
    let at_primary = order_ids_at(&app.sim);
    for (_, body) in before_open.iter().filter(|(status, _)| *status == StatusCode::ACCEPTED) {
        let order = body["data"]["orderId"].as_i64().unwrap();
        let elsewhere = if gateway_of(&app, order).await == "pg" { &at_secondary } else { &at_primary };
        assert!(!elsewhere.contains(&pg_order_id(order, 1)), "order {order} reached both gateways");
    }
    assert_stock_conserved(&app.stock().await);
}

#[tokio::test]
async fn primary_refusing_connections_fails_over_to_the_secondary() {
    primary_down_means_checkouts_go_to_the_secondary(Faults { down: Some(DownMode::Refuse), ..approving() }).await;
}

#[tokio::test]
async fn primary_answering_500_to_everything_fails_over_to_the_secondary() {
    primary_down_means_checkouts_go_to_the_secondary(Faults { request_failure_rate: 1.0, ..approving() }).await;
}

#[tokio::test]
async fn a_hanging_primary_is_skipped_once_its_breaker_opens() {
    primary_down_means_checkouts_go_to_the_secondary(Faults { hang: true, ..approving() }).await;
}

#[tokio::test]
async fn a_failed_over_checkout_is_one_request_to_each_and_paid_once() {
    // Not a breaker story: the primary refuses this one request, the secondary takes it.
    let app =
        spawn_app_on(sim(Faults { down: Some(DownMode::Unavailable), ..approving() }), Some(sim(approving())), |s| {
            s.gateway.resilience.payment_breaker = breaker_that_never_opens();
            s.gateway.resilience.retry.max_attempts = 1;
        })
        .await;
    let (status, body) = app.checkout("buyer-1", &[(1, 2)]).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let order = body["data"]["orderId"].as_i64().unwrap();
    assert_eq!(app.pg_requests(), 1, "the primary said 503 once");
    assert_eq!(app.pg_transactions(), 0, "and stored nothing");
    assert_eq!(secondary(&app).sim().ledger().counts.payment_requests, 1);
    assert_eq!(gateway_of(&app, order).await, SECONDARY);
    let paid = app.wait_for_status("buyer-1", order, "PAID").await;
    assert_eq!(paid["totalAmount"], body["data"]["totalAmount"]);
    let metrics = reqwest::get(format!("{}/metrics", app.url)).await.unwrap().text().await.unwrap();
    assert!(metrics.contains(r#"payguard_gateway_failovers_total{from="pg",to="pg2"} 1"#), "{metrics}");
}

#[tokio::test]
async fn with_a_secondary_the_primary_gets_only_its_first_attempts() {
    let app =
        spawn_app_on(sim(Faults { down: Some(DownMode::Unavailable), ..approving() }), Some(sim(approving())), |s| {
            s.gateway.resilience.payment_breaker = breaker_that_never_opens();
            s.gateway.resilience.retry.max_attempts = 6;
            s.gateway.resilience.retry.attempts_before_failover = 2;
        })
        .await;
    for i in 0..3 {
        let (status, body) = app.checkout("buyer-1", &[(1, 1)]).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{body}");
        assert_eq!(app.pg_requests(), 2 * (i + 1), "two attempts at the primary, not six");
    }
    assert_eq!(secondary(&app).sim().ledger().counts.payment_requests, 3);
}

#[tokio::test]
async fn a_timed_out_attempt_on_the_primary_is_never_sent_to_the_secondary() {
    let app = spawn_app_on(sim(Faults { hang: true, ..approving() }), Some(sim(approving())), |s| {
        s.gateway.resilience.payment_breaker = breaker_that_never_opens();
        s.reconciler.acceptance_window_ms = 0;
    })
    .await;
    let mut orders = Vec::new();
    for _ in 0..3 {
        let (status, body) = app.checkout("buyer-1", &[(1, 1)]).await;
        assert_eq!(status, StatusCode::ACCEPTED, "an unknown outcome is kept PENDING: {body}");
        assert_eq!(body["data"]["status"], "PENDING");
        orders.push(body["data"]["orderId"].as_i64().unwrap());
    }
    assert_eq!(secondary(&app).sim().ledger().counts.payment_requests, 0, "the secondary never heard of them");
    for &order in &orders {
        assert_eq!(gateway_of(&app, order).await, "pg", "settled where it was sent");
    }
    // The reconciler settles them at the primary: it never received them.
    app.sim.sim().set_faults(approving()).unwrap();
    let report = app.reconcile().await;
    assert_eq!(report.not_received, 3, "{report:?}");
    for &order in &orders {
        app.wait_for_status("buyer-1", order, "FAILED").await;
    }
    assert_eq!(secondary(&app).sim().ledger().counts.payment_requests, 0);
    assert_eq!(secondary(&app).sim().ledger().counts.status_queries, 0, "asked only the primary");
}

#[tokio::test]
async fn traffic_returns_to_the_primary_through_half_open_probes() {
    let app =
        spawn_app_on(sim(Faults { down: Some(DownMode::Unavailable), ..approving() }), Some(sim(approving())), |s| {
            quick_breakers(s, Duration::from_millis(300))
        })
        .await;
    until_primary_opens(&app).await;
    app.sim.sim().set_faults(approving()).unwrap();
    // While open: the secondary.
    let (_, body) = app.checkout("buyer-1", &[(1, 1)]).await;
    assert_eq!(gateway_of(&app, body["data"]["orderId"].as_i64().unwrap()).await, SECONDARY);
    // After the wait the breaker lets probes through; good probes close it.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while app.gateway.payment_breaker().state() != State::Closed {
        assert!(tokio::time::Instant::now() < deadline, "the primary never closed again");
        let (status, _) = app.checkout("buyer-1", &[(1, 1)]).await;
        assert_eq!(status, StatusCode::ACCEPTED);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let transitions = reqwest::get(format!("{}/ops/state", app.url)).await.unwrap().json::<serde_json::Value>().await;
    let changes: Vec<String> = transitions.unwrap()["data"]["transitions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["breaker"] == "pg.payments")
        .map(|t| format!("{}->{}", t["from"].as_str().unwrap(), t["to"].as_str().unwrap()))
        .collect();
    assert_eq!(changes, ["half_open->closed", "open->half_open", "closed->open"], "newest first");
    let (_, body) = app.checkout("buyer-1", &[(1, 1)]).await;
    let order = body["data"]["orderId"].as_i64().unwrap();
    assert_eq!(gateway_of(&app, order).await, "pg", "back on the primary");
    app.wait_for_status("buyer-1", order, "PAID").await;
}

#[tokio::test]
async fn with_every_gateway_down_a_checkout_is_a_503_with_nothing_kept_or_sent() {
    let down = Faults { down: Some(DownMode::Unavailable), ..approving() };
    let app = spawn_app_on(sim(down), Some(sim(down)), |s| {
        quick_breakers(s, Duration::from_secs(60));
        s.gateway.resilience.retry.max_attempts = 1;
        s.failover_gateways[0].resilience.retry.max_attempts = 1;
    })
    .await;
    // Both refuse with 503 but their breakers are closed: both are asked, nothing is kept.
    let rows = app.row_counts().await;
    let (status, body) = app.checkout("buyer-1", &[(1, 1)]).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["meta"]["errorCode"], "PAYMENT_GATEWAY_UNAVAILABLE");
    assert_eq!(app.row_counts().await, rows, "the order was rolled back");
    assert_eq!((app.pg_requests(), secondary(&app).sim().ledger().counts.payment_requests), (1, 1));
    // Until both breakers are open.
    while !(app.gateway.payment_breaker().state() == State::Open
        && app.gateways.all()[1].client.payment_breaker().state() == State::Open)
    {
        assert!(app.pg_requests() < 20, "the breakers never opened");
        app.checkout("buyer-1", &[(1, 1)]).await;
    }
    let rows = app.row_counts().await;
    let sent = (app.pg_requests(), secondary(&app).sim().ledger().counts.payment_requests);
    let (status, body) = app.checkout("buyer-1", &[(1, 1)]).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(app.row_counts().await, rows, "nothing persisted");
    assert_eq!((app.pg_requests(), secondary(&app).sim().ledger().counts.payment_requests), sent, "nothing sent");
    assert_stock_conserved(&app.stock().await);
    let ops = reqwest::get(format!("{}/ops/state", app.url)).await.unwrap().json::<serde_json::Value>().await.unwrap();
    let alerts: Vec<&str> =
        ops["data"]["alerts"].as_array().unwrap().iter().map(|a| a["name"].as_str().unwrap()).collect();
    assert!(alerts.contains(&"AllPaymentGatewaysOpen"), "{alerts:?}");
}

#[tokio::test]
async fn callbacks_and_the_reconciler_settle_attempts_on_both_gateways() {
    // Half the callbacks are lost at each PG: those are the reconciler's.
    let lossy = Faults { callback: CallbackFaults { drop_rate: 0.5, ..Default::default() }, ..approving() };
    let app = spawn_app_on(sim(lossy), Some(sim(lossy)), |_| {}).await;
    let mut orders = Vec::new();
    for i in 0..20 {
        // Half go to the secondary: the operator holds the primary open.
        if i == 10 {
            app.gateway.payment_breaker().force_open();
        }
        let (status, body) = app.checkout("buyer-1", &[(1, 1)]).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{body}");
        orders.push(body["data"]["orderId"].as_i64().unwrap());
    }
    app.pg_settled().await;
    tokio::time::timeout(Duration::from_secs(5), secondary(&app).sim().settled()).await.expect("pg2 settles");
    let dropped = app.sim.sim().ledger().counts.callbacks_dropped;
    let dropped2 = secondary(&app).sim().ledger().counts.callbacks_dropped;
    assert!(dropped > 0 && dropped2 > 0, "both lost some callbacks ({dropped}, {dropped2})");
    let report = app.reconcile().await;
    assert_eq!(report.settled as u64, dropped + dropped2, "{report:?}");
    for (i, &order) in orders.iter().enumerate() {
        assert_eq!(gateway_of(&app, order).await, if i < 10 { "pg" } else { SECONDARY });
        app.wait_for_status("buyer-1", order, "PAID").await;
    }
    assert_eq!(app.reconcile().await.examined, 0, "nothing left to check");
}

#[tokio::test]
async fn a_gateway_cannot_settle_another_gateways_payment() {
    let (a, b) = ("primary-secret-primary-secret-primary", "secondary-secret-secondary-secret");
    let silent = Faults { callback: CallbackFaults { drop_rate: 1.0, ..Default::default() }, ..approving() };
    let app = spawn_app_on(sim(silent), Some(sim(silent)), |s| {
        s.gateway.callback_secret = Some(a.into());
        s.failover_gateways[0].callback_secret = Some(b.into());
    })
    .await;
    app.gateway.payment_breaker().force_open();
    let (_, body) = app.checkout("buyer-1", &[(1, 1)]).await;
    let order = body["data"]["orderId"].as_i64().unwrap();
    secondary(&app).sim().settled().await;
    let detail = secondary(&app).sim().ledger().transactions()[0].detail();
    let raw = serde_json::to_vec(&detail).unwrap();
    let signed = |secret: &str| signature::sign(secret.as_bytes(), chrono::Utc::now().timestamp(), &raw);
    let post = |path: String, header: String| {
        let http = app.http.clone();
        let raw = raw.clone();
        async move {
            let r = http
                .post(path)
                .header("content-type", "application/json")
                .header("X-PG-Signature", header)
                .body(raw)
                .send()
                .await
                .unwrap();
            (r.status(), r.json::<serde_json::Value>().await.unwrap())
        }
    };
    let primary_url = format!("{}/api/v1/payments/callback", app.url);
    let secondary_url = format!("{primary_url}/{SECONDARY}");

    // pg2's news on pg's path: pg2's signature does not verify there.
    assert_eq!(post(primary_url.clone(), signed(b)).await.0, StatusCode::UNAUTHORIZED);
    // Signed as pg, about a payment sent to pg2: refused and recorded.
    let (status, body) = post(primary_url, signed(a)).await;
    assert_eq!((status, &body["meta"]["errorCode"]), (StatusCode::CONFLICT, &json!("CALLBACK_WRONG_GATEWAY")));
    assert_eq!(app.order("buyer-1", order).await.1["data"]["status"], "PENDING");
    let attempt = app.store.attempt_by_pg_order_id(&pg_order_id(order, 1)).await.unwrap().unwrap();
    let events = app.store.events(attempt.id).await.unwrap();
    assert!(events.iter().any(|(kind, _)| kind == "mismatched_callback"), "{events:?}");
    // An unknown gateway's path does not exist.
    let (status, _) = post(format!("{}/api/v1/payments/callback/nope", app.url), signed(a)).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    // pg2 on its own path, with its own signature: settled.
    let (status, body) = post(secondary_url, signed(b)).await;
    assert_eq!((status, &body["data"]["result"]), (StatusCode::OK, &json!("settled_success")), "{body}");
    app.wait_for_status("buyer-1", order, "PAID").await;
}

#[tokio::test]
async fn a_primary_with_a_full_bulkhead_passes_the_payment_to_the_secondary() {
    let slow = Faults { request_latency_ms: gateway_sim::faults::MsRange::new(1_000, 1_000), ..approving() };
    let app = std::sync::Arc::new(
        spawn_app_on(sim(slow), Some(sim(approving())), |s| {
            s.gateway.resilience.bulkhead.max_concurrent_calls = 1;
            s.gateway.resilience.response_timeout = Duration::from_secs(2);
            s.gateway.resilience.deadline = Duration::from_secs(3);
        })
        .await,
    );
    let first = {
        let app = app.clone();
        tokio::spawn(async move { app.checkout("buyer-1", &[(1, 1)]).await })
    };
    // The first payment holds the primary's only slot while the PG takes its second.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while app.pg_requests() == 0 {
        assert!(tokio::time::Instant::now() < deadline, "the first payment never reached the primary");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let (status, body) = app.checkout("buyer-2", &[(1, 1)]).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(gateway_of(&app, body["data"]["orderId"].as_i64().unwrap()).await, SECONDARY);
    assert_eq!(app.pg_requests(), 1, "the second payment was never sent to the primary");
    let (status, body) = first.await.unwrap();
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(gateway_of(&app, body["data"]["orderId"].as_i64().unwrap()).await, "pg");
}

#[tokio::test]
async fn an_open_status_breaker_pauses_reconciliation_of_its_own_gateway_only() {
    let silent = Faults { callback: CallbackFaults { drop_rate: 1.0, ..Default::default() }, ..approving() };
    let app = spawn_app_on(sim(silent), Some(sim(silent)), |_| {}).await;
    let (_, body) = app.checkout("buyer-1", &[(1, 1)]).await;
    let on_primary = body["data"]["orderId"].as_i64().unwrap();
    app.gateway.payment_breaker().force_open();
    let (_, body) = app.checkout("buyer-1", &[(1, 1)]).await;
    let on_secondary = body["data"]["orderId"].as_i64().unwrap();
    app.pg_settled().await;
    secondary(&app).sim().settled().await;

    app.gateways.all()[1].client.status_breaker().force_open();
    let report = app.reconcile().await;
    assert_eq!((report.paused.as_slice(), report.settled), (&["pg2".to_string()][..], 1), "{report:?}");
    app.wait_for_status("buyer-1", on_primary, "PAID").await;
    assert_eq!(app.order("buyer-1", on_secondary).await.1["data"]["status"], "PENDING");
    assert_eq!(secondary(&app).sim().ledger().counts.status_queries, 0, "nothing asked of pg2");

    app.gateways.all()[1].client.status_breaker().reset();
    let report = app.reconcile().await;
    assert_eq!((report.paused.len(), report.settled), (0, 1), "{report:?}");
    app.wait_for_status("buyer-1", on_secondary, "PAID").await;
}
