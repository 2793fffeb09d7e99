//! The reconciler against a backlog of lost callbacks, measured over HTTP: N checkouts
//! are accepted by a PG that decides at once but never calls back (as when the service
//! was down while it did), then a service with the default reconciler settings starts
//! once they are past their grace period, and settles them by asking the PG. Reports the
//! time until nothing is pending, the lookups per second the PG received (never above
//! `reconciler.max_lookups_per_second`) and every state the status breaker was in.
//!
//! `cargo run --release -p service --example backlog -- [payments] [PG lookup latency, ms range]`
//! e.g. `-- 10000 100-500` (the reference's answer latency) or `-- 10000 0` (instant).

use std::time::{Duration, Instant};

use gateway_sim::faults::{CallbackFaults, MsRange};
use gateway_sim::{Faults, SimConfig};
use service::configuration::GatewaySettings;
use service::{Application, Settings};

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let total: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(10_000);
    let latency: MsRange = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(MsRange::new(100, 500));

    let silent = Faults {
        request_failure_rate: 0.0,
        callback: CallbackFaults { drop_rate: 1.0, ..CallbackFaults::default() },
        ..Faults::instant()
    };
    let sim = gateway_sim::spawn(SimConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        faults: silent,
        ..SimConfig::default()
    })
    .await
    .unwrap();
    let file = std::env::temp_dir().join(format!("payguard-backlog-{}.db", std::process::id()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let mut settings = Settings {
        listen: addr,
        public_url: format!("http://{addr}"),
        database_url: format!("sqlite://{}", file.display()),
        gateway: GatewaySettings { base_url: sim.base_url(), ..GatewaySettings::default() },
        ..Settings::default()
    };
    settings.checkout.rate_limit_burst = u32::MAX;
    settings.checkout.rate_limit_per_second = u32::MAX;
    let reconciler = settings.reconciler.clone();

    // 1. The backlog: accepted payments whose callbacks never arrive, nothing reconciling.
    let mut filling = settings.clone();
    filling.reconciler.interval_ms = 3_600_000;
    let app = Application::build_on(filling, listener).await.expect("app builds");
    let pool = sqlx::SqlitePool::connect(&settings.database_url).await.unwrap();
    sqlx::query("UPDATE products SET available = 1000000").execute(&pool).await.unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(app.run_until(async move {
        let _ = stopped.await;
    }));
    let client = reqwest::Client::new();
    let url = format!("http://{addr}/api/v1/orders");
    let filled = Instant::now();
    let mut workers = tokio::task::JoinSet::new();
    for w in 0..64 {
        let (client, url) = (client.clone(), url.clone());
        workers.spawn(async move {
            for n in (w..total).step_by(64) {
                let body = serde_json::json!({"items": [{"productId": 1 + n % 5, "quantity": 1}], "cardType": "KB", "cardNo": "1234-5678-9814-1451"});
                let r = client.post(&url).header("X-USER-ID", format!("buyer-{}", n % 1000)).json(&body).send().await.unwrap();
                assert_eq!(r.status(), 202, "{}", r.text().await.unwrap());
            }
        });
    }
    workers.join_all().await;
    println!("backlog: {total} payments accepted in {:.1} s, their callbacks lost", filled.elapsed().as_secs_f64());
    let _ = stop.send(());
    serving.await.unwrap();

    // 2. The restart: lookups now take `latency`; the backlog is past its grace period.
    sim.sim().set_faults(Faults { lookup_latency_ms: latency, ..silent }).unwrap();
    tokio::time::sleep(Duration::from_millis(reconciler.grace_ms).saturating_sub(filled.elapsed())).await;
    let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
    let app = Application::build_on(settings, listener).await.expect("app builds");
    let started = Instant::now();
    tokio::spawn(app.run_until(std::future::pending()));
    let base = sim.sim().ledger().counts.status_queries;
    let (mut queries, mut per_second, mut breaker_states) = (base, Vec::new(), Vec::<String>::new());
    let mut last = Instant::now();
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let state: serde_json::Value =
            client.get(format!("http://{addr}/ops/state")).send().await.unwrap().json().await.unwrap();
        let pending = state["data"]["pending"]["count"].as_i64().unwrap();
        for b in state["data"]["breakers"].as_array().unwrap().iter().filter(|b| b["name"] == "pg.status") {
            let s = b["state"].as_str().unwrap().to_string();
            if !breaker_states.contains(&s) {
                breaker_states.push(s);
            }
        }
        if last.elapsed() >= Duration::from_secs(1) {
            let now = sim.sim().ledger().counts.status_queries;
            per_second.push((now - queries) as f64 / last.elapsed().as_secs_f64());
            (queries, last) = (now, Instant::now());
        }
        if pending == 0 {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(600), "not drained in 10 minutes: {pending} pending");
    }
    let took = started.elapsed().as_secs_f64();
    let max = per_second.iter().copied().fold(0.0, f64::max);
    println!(
        "drained: {total} payments settled by the reconciler in {took:.1} s after start ({:.0} settled/s); \
         PG lookups {:.0}/s at most in any second (cap {}/s), {:.0}/s on average; lookup latency {}-{} ms; \
         status breaker states seen: {}",
        total as f64 / took,
        max,
        reconciler.max_lookups_per_second,
        (sim.sim().ledger().counts.status_queries - base) as f64 / took,
        latency.min,
        latency.max,
        breaker_states.join(", ")
    );
    pool.close().await;
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", file.display()));
    }
}
