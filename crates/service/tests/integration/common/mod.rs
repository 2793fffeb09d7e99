//! Spawns the real service on a random port, on a fresh SQLite file, against the real
//! simulator; typed helpers read like the use cases.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use gateway::GatewayClient;
use gateway::breaker::BreakerConfig;
use gateway::config::RetryConfig;
use gateway_sim::{Faults, RunningSim, SimConfig};
use reqwest::StatusCode;
use serde_json::{Value, json};
use service::app::gateways::Gateways;
use service::configuration::GatewaySettings;
use service::http::AppState;
use service::store::{Inspect, StockLevels};
use service::{Application, Settings};

pub struct TestApp {
    pub url: String,
    /// The primary gateway's simulator.
    pub sim: RunningSim,
    /// The failover gateway's simulator (gateway `pg2`), when spawned with one.
    pub secondary: Option<RunningSim>,
    pub state: AppState,
    pub store: Arc<dyn Inspect>,
    /// The primary gateway's client.
    pub gateway: GatewayClient,
    pub gateways: Gateways,
    pub http: reqwest::Client,
    pub db: PathBuf,
    /// Set on a second app over another's database: it must not delete the files.
    pub shares_db: bool,
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if self.shares_db {
            return;
        }
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", self.db.display()));
        }
    }
}

/// `TEST_LOG=1` (or a filter such as `TEST_LOG=service=debug`) shows the service's and
/// the simulator's logs in a test's output; without it tests stay quiet.
pub fn init_test_log() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let Ok(filter) = std::env::var("TEST_LOG") else { return };
        let filter = if filter == "1" { "info".to_string() } else { filter };
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_test_writer()
            .try_init();
    });
}

/// The reference PG with no delays and no random failures: outcomes come from faults only.
pub fn reliable() -> Faults {
    Faults { request_failure_rate: 0.0, ..Faults::instant() }
}

pub async fn spawn_app(faults: Faults) -> TestApp {
    spawn_app_with(SimConfig { faults, ..sim_config() }, |_| {}).await
}

pub fn sim_config() -> SimConfig {
    SimConfig { listen: "127.0.0.1:0".parse().unwrap(), seed: Some(5), faults: reliable(), ..SimConfig::default() }
}

pub async fn spawn_app_with(sim: SimConfig, tweak: impl FnOnce(&mut Settings)) -> TestApp {
    spawn_app_on(sim, None, tweak).await
}

/// The name of the failover gateway in `spawn_app_on`.
pub const SECONDARY: &str = "pg2";

/// Spawns the app on the primary simulator and, if given, a second one configured as
/// the failover gateway `pg2` with the same test settings.
pub async fn spawn_app_on(sim: SimConfig, secondary: Option<SimConfig>, tweak: impl FnOnce(&mut Settings)) -> TestApp {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    init_test_log();
    let sim = gateway_sim::spawn(sim).await.expect("simulator starts");
    let secondary = match secondary {
        Some(config) => Some(gateway_sim::spawn(config).await.expect("second simulator starts")),
        None => None,
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let db = std::env::temp_dir().join(format!(
        "payguard-test-{}-{}-{}.db",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed),
        chrono::Utc::now().timestamp_nanos_opt().unwrap_or_default()
    ));
    let mut settings = Settings {
        listen: addr,
        public_url: format!("http://{addr}"),
        database_url: format!("sqlite://{}", db.display()),
        gateway: GatewaySettings { base_url: sim.base_url(), ..GatewaySettings::default() },
        ..Settings::default()
    };
    let r = &mut settings.gateway.resilience;
    r.response_timeout = Duration::from_millis(300);
    r.deadline = Duration::from_secs(2);
    r.retry = RetryConfig {
        initial_backoff: Duration::from_millis(1),
        max_backoff: Duration::from_millis(5),
        ..r.retry.clone()
    };
    // Tests drive the reconciler by hand (`reconcile()`): the background loop sleeps.
    if let Some(second) = &secondary {
        let failover = GatewaySettings {
            name: SECONDARY.into(),
            base_url: second.base_url(),
            resilience: settings.gateway.resilience.clone(),
            ..GatewaySettings::default()
        };
        settings.failover_gateways.push(failover);
    }
    // Tests run passes themselves: the background reconciler never does.
    settings.reconciler.interval_ms = 3_600_000;
    settings.reconciler.first_pass_delay_ms = 3_600_000;
    settings.reconciler.grace_ms = 0;
    settings.reconciler.acceptance_window_ms = 300;
    settings.reconciler.backoff_initial_ms = 0;
    settings.reconciler.backoff_max_ms = 0;
    // Tests fire many checkouts from one buyer; the rate-limit tests lower this again.
    settings.checkout.rate_limit_per_second = 100_000;
    settings.checkout.rate_limit_burst = 100_000;
    tweak(&mut settings);
    // A tweak may point at another app's database (a restart); then it is not ours.
    let db_is_shared = settings.database_url != format!("sqlite://{}", db.display());
    let app = Application::build_on(settings, listener).await.expect("app builds");
    let state = app.state().clone();
    let store = app.store().clone();
    let gateways = app.gateways().clone();
    let gateway = gateways.primary().client.clone();
    tokio::spawn(app.run_until(std::future::pending()));
    TestApp {
        url: format!("http://{addr}"),
        store,
        state,
        gateway,
        gateways,
        sim,
        secondary,
        http: reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap(),
        shares_db: db_is_shared,
        db,
    }
}

pub fn checkout_body(items: &[(i64, i64)]) -> Value {
    let items: Vec<Value> = items.iter().map(|(p, q)| json!({"productId": p, "quantity": q})).collect();
    json!({"items": items, "cardType": "SAMSUNG", "cardNo": "1234-5678-9814-1451"})
}

impl TestApp {
    pub async fn checkout(&self, buyer: &str, items: &[(i64, i64)]) -> (StatusCode, Value) {
        self.post_json("/api/v1/orders", Some(buyer), &checkout_body(items)).await
    }

    pub async fn post_json(&self, path: &str, buyer: Option<&str>, body: &Value) -> (StatusCode, Value) {
        let mut request = self.http.post(format!("{}{path}", self.url)).json(body);
        if let Some(buyer) = buyer {
            request = request.header("X-USER-ID", buyer);
        }
        read(request.send().await.expect("answered")).await
    }

    pub async fn get(&self, path: &str, buyer: Option<&str>) -> (StatusCode, Value) {
        let mut request = self.http.get(format!("{}{path}", self.url));
        if let Some(buyer) = buyer {
            request = request.header("X-USER-ID", buyer);
        }
        read(request.send().await.expect("answered")).await
    }

    pub async fn order(&self, buyer: &str, order_id: i64) -> (StatusCode, Value) {
        self.get(&format!("/api/v1/orders/{order_id}"), Some(buyer)).await
    }

    pub async fn post_callback(&self, raw: &[u8], signature: Option<&str>) -> (StatusCode, Value) {
        let mut request = self
            .http
            .post(format!("{}/api/v1/payments/callback", self.url))
            .header("content-type", "application/json")
            .body(raw.to_vec());
        if let Some(signature) = signature {
            request = request.header("X-PG-Signature", signature);
        }
        read(request.send().await.expect("answered")).await
    }

    pub async fn reconcile(&self) -> service::app::reconciler::PassReport {
        self.state.reconciler.run_once().await.expect("pass runs")
    }

    pub async fn stock(&self) -> Vec<StockLevels> {
        self.store.stock_levels().await.unwrap()
    }

    /// Polls the order until its status is `status` (callbacks arrive asynchronously).
    pub async fn wait_for_status(&self, buyer: &str, order_id: i64, status: &str) -> Value {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            let (_, body) = self.order(buyer, order_id).await;
            if body["data"]["status"] == status {
                return body["data"].clone();
            }
            assert!(tokio::time::Instant::now() < deadline, "order {order_id} never became {status}: {body}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Waits until the simulator has processed everything and sent its callbacks.
    pub async fn pg_settled(&self) {
        tokio::time::timeout(Duration::from_secs(5), self.sim.sim().settled()).await.expect("PG settles");
    }

    pub fn pg_requests(&self) -> u64 {
        self.sim.sim().ledger().counts.payment_requests
    }

    /// Rows per table: equal before and after means nothing was written.
    pub async fn row_counts(&self) -> Vec<(String, i64)> {
        self.store.row_counts().await.unwrap()
    }

    pub fn pg_transactions(&self) -> usize {
        self.sim.sim().ledger().transactions().len()
    }
}

async fn read(response: reqwest::Response) -> (StatusCode, Value) {
    let status = response.status();
    let text = response.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

/// Initial stock per product: the seeded catalog.
pub const INITIAL: [(i64, i64); 5] = [(1, 1000), (2, 1000), (3, 500), (4, 1000), (5, 1000)];

/// available + reserved + sold equals the initial stock of every product.
pub fn assert_stock_conserved(levels: &[StockLevels]) {
    for (level, (id, initial)) in levels.iter().zip(INITIAL) {
        assert_eq!(level.product_id, id);
        assert_eq!(level.available + level.reserved + level.sold, initial, "product {id}: {level:?}");
    }
}

pub fn breaker_that_never_opens() -> BreakerConfig {
    BreakerConfig {
        minimum_calls: 10_000,
        sliding_window: gateway::breaker::SlidingWindow::Count(10_000),
        ..Default::default()
    }
}

/// A child process killed when the test ends, however it ends.
pub struct Proc(pub std::process::Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The first of `names` found on PATH.
pub fn binary(names: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    names.iter().find_map(|name| std::env::split_paths(&path).map(|dir| dir.join(name)).find(|p| p.is_file()))
}

/// The PostgreSQL server the `#[ignore]`d PostgreSQL tests use. They are ignored so a
/// plain test run reports them as not run; `--run-ignored all` runs them, and then a
/// missing server is a failure, never a silent pass.
pub fn test_database_url() -> String {
    std::env::var("PAYGUARD_TEST_DATABASE_URL").expect(
        "PAYGUARD_TEST_DATABASE_URL must name a PostgreSQL server, e.g. postgres://postgres@127.0.0.1:5432/test",
    )
}

/// A fresh PostgreSQL database on the `test_database_url` server: (server URL, name).
pub async fn fresh_postgres_database(prefix: &str) -> (String, String) {
    let server = test_database_url();
    let database = format!("{prefix}_{}_{:x}", std::process::id(), rand::random::<u32>());
    let admin = sqlx::PgPool::connect(&server).await.expect("the test PostgreSQL server answers");
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {database}"))).execute(&admin).await.unwrap();
    admin.close().await;
    (server, database)
}

/// An external program an `#[ignore]`d test needs: the first of `names` on PATH, or a
/// failure that says what to install.
pub fn required_binary(names: &[&str], install: &str) -> PathBuf {
    binary(names).unwrap_or_else(|| panic!("{} not found on PATH: {install}", names.join(" or ")))
}
