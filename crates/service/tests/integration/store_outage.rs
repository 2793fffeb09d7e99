//! The shop's own failures: a database that cannot be reached or cannot take a write is
//! answered fast with 503 `STORE_UNAVAILABLE` and nothing half-written; a payment that
//! may have reached the PG is never answered with an error; past capacity a checkout
//! is refused before it writes anything.
//!
//! The PostgreSQL tests are ignored unless run with `--run-ignored all` (they need
//! `PAYGUARD_TEST_DATABASE_URL`), and cut the service's
//! connection to it through a TCP hop (what a stopped or unreachable server looks like
//! to the service) rather than stopping the shared server other tests use.

use std::time::Duration;

use crate::common::{TestApp, checkout_body, reliable, sim_config, spawn_app_with};
use gateway::wire::TransactionStatus;
use gateway_sim::SimConfig;
use gateway_sim::faults::{MsRange, OutcomeSplit};
use gateway_sim::link::Link;
use reqwest::StatusCode;
use serde_json::Value;
use service::Settings;
use sqlx::Connection;
use tokio::time::Instant;

/// Generous against a noisy machine; the service's own bound is the 1 s acquire timeout.
const FAST: Duration = Duration::from_secs(3);

/// Every outcome approved, so a settled order must read PAID.
fn approve_all() -> gateway_sim::Faults {
    gateway_sim::Faults { outcome: OutcomeSplit { limit_exceeded: 0.0, invalid_card: 0.0 }, ..reliable() }
}

/// An app on a fresh PostgreSQL database reached through `link`.
async fn on_postgres(sim: SimConfig, tweak: impl FnOnce(&mut Settings)) -> (TestApp, Link, Cleanup) {
    let (server, database) = crate::common::fresh_postgres_database("payguard_outage").await;
    let mut url = reqwest::Url::parse(&server).unwrap();
    let upstream =
        tokio::net::lookup_host((url.host_str().unwrap(), url.port().unwrap_or(5432))).await.unwrap().next().unwrap();
    let link = Link::to(upstream).await.unwrap();
    url.set_host(Some("127.0.0.1")).unwrap();
    url.set_port(Some(link.local_addr().port())).unwrap();
    url.set_path(&database);
    let app = spawn_app_with(sim, |s| {
        s.database_url = url.to_string();
        tweak(s);
    })
    .await;
    (app, link, Cleanup { server, database })
}

struct Cleanup {
    server: String,
    database: String,
}

impl Cleanup {
    async fn drop_database(self) {
        let admin = sqlx::PgPool::connect(&self.server).await.unwrap();
        let sql = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.database);
        let _ = sqlx::query(sqlx::AssertSqlSafe(sql)).execute(&admin).await;
    }
}

async fn readiness(app: &TestApp) -> StatusCode {
    app.http.get(format!("{}/readyz", app.url)).send().await.unwrap().status()
}

async fn wait_ready(app: &TestApp) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while readiness(app).await != StatusCode::OK {
        assert!(Instant::now() < deadline, "the service never became ready again");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The value of `payguard_database_up` in a scrape (which must succeed).
async fn database_up(app: &TestApp) -> String {
    let response = app.http.get(format!("{}/metrics", app.url)).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let text = response.text().await.unwrap();
    let line = text.lines().find(|l| l.starts_with("payguard_database_up ")).expect("the gauge is exported");
    line.rsplit(' ').next().unwrap().to_string()
}

fn settled_as(status: TransactionStatus) -> &'static str {
    match status {
        TransactionStatus::Success => "PAID",
        TransactionStatus::Failed => "FAILED",
        TransactionStatus::Pending => "PENDING",
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL in PAYGUARD_TEST_DATABASE_URL: cargo nextest run --run-ignored all (bash .ci/run does)"]
async fn a_postgresql_outage_is_answered_fast_with_503_and_the_service_heals_by_itself() {
    let (app, link, cleanup) = on_postgres(SimConfig { faults: approve_all(), ..sim_config() }, |_| {}).await;
    let (status, body) = app.checkout("buyer-1", &[(1, 1)]).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let first = body["data"]["orderId"].as_i64().unwrap();
    app.wait_for_status("buyer-1", first, "PAID").await;

    link.cut();
    let requests_before = app.pg_requests();
    let started = Instant::now();
    let response = app
        .http
        .post(format!("{}/api/v1/orders", app.url))
        .header("X-USER-ID", "buyer-1")
        .json(&checkout_body(&[(1, 1)]))
        .send()
        .await
        .unwrap();
    let elapsed = started.elapsed();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(response.headers().contains_key("retry-after"), "a 503 says when to come back");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["meta"]["errorCode"], "STORE_UNAVAILABLE", "{body}");
    assert!(elapsed < FAST, "the refusal took {elapsed:?}");
    assert_eq!(app.pg_requests(), requests_before, "nothing was sent to the PG");

    let started = Instant::now();
    let (status, body) = app.order("buyer-1", first).await;
    assert_eq!(
        (status, body["meta"]["errorCode"].as_str()),
        (StatusCode::SERVICE_UNAVAILABLE, Some("STORE_UNAVAILABLE"))
    );
    assert!(started.elapsed() < FAST, "an order read took {:?}", started.elapsed());
    assert_eq!(readiness(&app).await, StatusCode::SERVICE_UNAVAILABLE, "a load balancer stops sending");
    let health = app.http.get(format!("{}/healthz", app.url)).send().await.unwrap().status();
    assert_eq!(health, StatusCode::OK, "the process itself is fine: restarting it would not help");
    assert_eq!(database_up(&app).await, "0", "the metrics still answer, and say why");
    let (status, ops) = app.get("/ops/state", None).await;
    assert_eq!(status, StatusCode::OK, "the ops page still answers: {ops}");
    let alerts = ops["data"]["alerts"].as_array().unwrap();
    assert!(alerts.iter().any(|a| a["name"] == "ShopDatabaseUnavailable"), "{alerts:?}");

    link.mend();
    wait_ready(&app).await;
    assert_eq!(database_up(&app).await, "1");
    let (status, body) = app.checkout("buyer-1", &[(1, 1)]).await;
    assert_eq!(status, StatusCode::ACCEPTED, "checkouts work again without a restart: {body}");
    let second = body["data"]["orderId"].as_i64().unwrap();
    app.wait_for_status("buyer-1", second, "PAID").await;
    assert_eq!(app.pg_transactions(), 2, "the PG holds the two accepted payments, and only those");
    drop(app);
    cleanup.drop_database().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL in PAYGUARD_TEST_DATABASE_URL: cargo nextest run --run-ignored all (bash .ci/run does)"]
async fn a_payment_sent_before_the_database_failed_is_answered_202_pending_and_settled_afterwards() {
    // The PG answers after 800 ms: time to cut the database between the order's own
    // transaction and the one that records the PG's answer.
    let faults = gateway_sim::Faults {
        request_latency_ms: MsRange::new(800, 800),
        // Its one callback arrives while the database is cut and is lost (the reference
        // PG never sends it again): the reconciler must settle the payment.
        ..approve_all()
    };
    let (app, link, cleanup) = on_postgres(SimConfig { faults, ..sim_config() }, |s| {
        s.gateway.resilience.response_timeout = Duration::from_secs(3);
        s.gateway.resilience.deadline = Duration::from_secs(5);
    })
    .await;
    let checkout = {
        let (http, url) = (app.http.clone(), app.url.clone());
        tokio::spawn(async move {
            let response = http
                .post(format!("{url}/api/v1/orders"))
                .header("X-USER-ID", "buyer-1")
                .json(&checkout_body(&[(2, 3)]))
                .send()
                .await
                .unwrap();
            (response.status(), response.json::<Value>().await.unwrap())
        })
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    while app.pg_requests() == 0 {
        assert!(Instant::now() < deadline, "the payment request never reached the PG");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    link.cut();
    let (status, body) = checkout.await.unwrap();
    assert_eq!(status, StatusCode::ACCEPTED, "the PG took it: never an error: {body}");
    assert_eq!(body["data"]["status"], "PENDING", "{body}");
    assert_eq!(body["data"]["totalAmount"], 3 * 25_000, "{body}");
    let order_id = body["data"]["orderId"].as_i64().unwrap();

    app.pg_settled().await;
    link.mend();
    wait_ready(&app).await;
    let report = app.reconcile().await;
    assert_eq!(report.settled, 1, "{report:?}");
    let ledger = app.sim.sim().ledger().transactions()[0].status;
    assert_eq!(ledger, TransactionStatus::Success);
    app.wait_for_status("buyer-1", order_id, settled_as(ledger)).await;
    drop(app);
    cleanup.drop_database().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_locked_sqlite_database_answers_503_fast_and_nothing_is_written() {
    let app = spawn_app_with(SimConfig { faults: approve_all(), ..sim_config() }, |_| {}).await;
    let before = app.row_counts().await;
    // Another writer holds SQLite's write lock past the service's busy timeout.
    let mut other = sqlx::SqliteConnection::connect(&format!("sqlite://{}", app.db.display())).await.unwrap();
    sqlx::query("BEGIN IMMEDIATE").execute(&mut other).await.unwrap();
    let started = Instant::now();
    let (status, body) = app.checkout("buyer-1", &[(1, 1)]).await;
    assert_eq!(
        (status, body["meta"]["errorCode"].as_str()),
        (StatusCode::SERVICE_UNAVAILABLE, Some("STORE_UNAVAILABLE"))
    );
    assert!(started.elapsed() < FAST, "took {:?}", started.elapsed());
    assert_eq!(app.pg_requests(), 0, "nothing was sent to the PG");
    sqlx::query("ROLLBACK").execute(&mut other).await.unwrap();
    assert_eq!(app.row_counts().await, before, "nothing half-written");
    let (status, body) = app.checkout("buyer-1", &[(1, 1)]).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkouts_past_capacity_are_refused_before_anything_is_written() {
    let faults = gateway_sim::Faults { request_latency_ms: MsRange::new(1_000, 1_000), ..approve_all() };
    let app = spawn_app_with(SimConfig { faults, ..sim_config() }, |s| {
        s.checkout.max_in_flight = 2;
        s.gateway.resilience.response_timeout = Duration::from_secs(3);
        s.gateway.resilience.deadline = Duration::from_secs(5);
    })
    .await;
    let in_flight: Vec<_> = (0..2)
        .map(|i| {
            let (http, url) = (app.http.clone(), app.url.clone());
            tokio::spawn(async move {
                let response = http
                    .post(format!("{url}/api/v1/orders"))
                    .header("X-USER-ID", format!("buyer-{i}"))
                    .json(&checkout_body(&[(1, 1)]))
                    .send()
                    .await
                    .unwrap();
                response.status()
            })
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(5);
    while app.pg_requests() < 2 {
        assert!(Instant::now() < deadline, "the two checkouts never reached the PG");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let before = app.row_counts().await;
    for i in 0..6 {
        let mut request = app
            .http
            .post(format!("{}/api/v1/orders", app.url))
            .header("X-USER-ID", "buyer-late")
            .json(&checkout_body(&[(1, 1)]));
        if i % 2 == 0 {
            // A keyed checkout is refused before its key is written, too.
            request = request.header("Idempotency-Key", format!("late-{i}"));
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers()["retry-after"], "1");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["meta"]["errorCode"], "CHECKOUT_OVERLOADED", "{body}");
    }
    assert_eq!(app.row_counts().await, before, "a refused checkout writes nothing");
    assert_eq!(app.pg_requests(), 2, "and sends nothing");
    for checkout in in_flight {
        assert_eq!(checkout.await.unwrap(), StatusCode::ACCEPTED);
    }
    let (status, body) = app.checkout("buyer-late", &[(1, 1)]).await;
    assert_eq!(status, StatusCode::ACCEPTED, "the slots are free again: {body}");
    let metrics = app.http.get(format!("{}/metrics", app.url)).send().await.unwrap().text().await.unwrap();
    assert!(metrics.lines().any(|l| l.starts_with("payguard_checkouts_total{result=\"overloaded\"} 6")), "{metrics}");
}

/// Log events as (level, message), for a test that counts what was said.
#[derive(Clone, Default)]
struct Said(std::sync::Arc<std::sync::Mutex<Vec<(tracing::Level, String)>>>);

impl Said {
    fn count(&self, level: tracing::Level, message: &str) -> usize {
        self.0.lock().unwrap().iter().filter(|(l, m)| *l == level && m == message).count()
    }

    async fn wait_for(&self, what: &str, done: impl Fn(&Said) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !done(self) {
            assert!(Instant::now() < deadline, "never saw: {what}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Said {
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        struct Message(String);
        impl tracing::field::Visit for Message {
            fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
                if field.name() == "message" {
                    self.0 = format!("{value:?}");
                }
            }
        }
        let mut message = Message(String::new());
        event.record(&mut message);
        self.0.lock().unwrap().push((*event.metadata().level(), message.0));
    }
}

// One thread, so the subscriber set here sees the reconciler's task too.
#[tokio::test(flavor = "current_thread")]
#[ignore = "needs PostgreSQL in PAYGUARD_TEST_DATABASE_URL: cargo nextest run --run-ignored all (bash .ci/run does)"]
async fn the_reconciler_says_once_that_the_database_is_gone_backs_off_and_says_when_it_is_back() {
    use tracing_subscriber::layer::SubscriberExt;
    let said = Said::default();
    let _guard = tracing::subscriber::set_default(tracing_subscriber::registry().with(said.clone()));
    let (app, link, cleanup) = on_postgres(SimConfig { faults: approve_all(), ..sim_config() }, |_| {}).await;
    let settings = service::configuration::ReconcilerSettings {
        interval_ms: 20,
        first_pass_delay_ms: 0,
        ..app.state.reconciler.settings().clone()
    };
    let reconciler = service::app::reconciler::Reconciler::new(
        app.store.clone(),
        app.store.clone(),
        app.gateways.clone(),
        app.state.metrics.clone(),
        settings,
    );
    let (stop, stopped) = tokio::sync::watch::channel(false);
    link.cut();
    let running = tokio::spawn(reconciler.run(stopped));
    let failed = "reconciliation pass failed: backing off until one succeeds";
    let again = "reconciliation pass failed again";
    said.wait_for("three failed passes", |s| s.count(tracing::Level::DEBUG, again) >= 2).await;
    assert_eq!(said.count(tracing::Level::ERROR, failed), 1, "said once, not once per pass");
    link.mend();
    said.wait_for("passes working again", |s| s.count(tracing::Level::INFO, "reconciliation passes work again") == 1)
        .await;
    assert_eq!(said.count(tracing::Level::ERROR, failed), 1);
    stop.send_replace(true);
    running.await.unwrap();
    drop(app);
    cleanup.drop_database().await;
}
