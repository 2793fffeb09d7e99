//! Checkout throughput and latency for one database, against a zero-latency simulator
//! that accepts every payment, over real HTTP on loopback. The seeded stock allows
//! 4,000 checkouts (1,000 each of products 1, 2, 4 and 5).
//!
//! `cargo run --release -p service --example load -- [sqlite|postgres://...] [checkouts] [concurrency]`

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use gateway_sim::{Faults, SimConfig};
use service::configuration::GatewaySettings;
use service::{Application, Settings};

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let database = args.get(1).cloned().unwrap_or_else(|| "sqlite".into());
    let total: usize = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(3_600);
    let concurrency: usize = args.get(3).and_then(|a| a.parse().ok()).unwrap_or(32);

    let faults = Faults { request_failure_rate: 0.0, ..Faults::instant() };
    let sim = gateway_sim::spawn(SimConfig { listen: "127.0.0.1:0".parse().unwrap(), faults, ..SimConfig::default() })
        .await
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let file = std::env::temp_dir().join(format!("payguard-load-{}.db", std::process::id()));
    let database_url = if database == "sqlite" { format!("sqlite://{}", file.display()) } else { database.clone() };
    let mut settings = Settings {
        listen: addr,
        public_url: format!("http://{addr}"),
        database_url,
        gateway: GatewaySettings { base_url: sim.base_url(), ..GatewaySettings::default() },
        ..Settings::default()
    };
    settings.checkout.rate_limit_burst = u32::MAX;
    settings.checkout.rate_limit_per_second = u32::MAX;
    let app = Application::build_on(settings, listener).await.expect("app builds");
    tokio::spawn(app.run_until(std::future::pending()));

    let url = format!("http://{addr}/api/v1/orders");
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let workers: Vec<_> = (0..concurrency)
        .map(|_| {
            let (next, url) = (next.clone(), url.clone());
            tokio::spawn(async move {
                let client = reqwest::Client::new();
                let mut latencies = Vec::new();
                loop {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    if n >= total {
                        break latencies;
                    }
                    let product = [1, 2, 4, 5][n % 4];
                    let body = serde_json::json!({"items": [{"productId": product, "quantity": 1}], "cardType": "KB", "cardNo": "1234-5678-9814-1451"});
                    let t = Instant::now();
                    let response = client.post(&url).header("X-USER-ID", format!("buyer-{}", n % 500)).json(&body).send().await.unwrap();
                    assert_eq!(response.status(), 202, "{}", response.text().await.unwrap());
                    latencies.push(t.elapsed());
                }
            })
        })
        .collect();
    let mut latencies: Vec<Duration> = Vec::new();
    for w in workers {
        latencies.extend(w.await.unwrap());
    }
    let elapsed = started.elapsed();
    latencies.sort_unstable();
    let q = |p: f64| latencies[((latencies.len() - 1) as f64 * p) as usize].as_secs_f64() * 1_000.0;
    println!(
        "{}: {total} checkouts, concurrency {concurrency}: {:.0} checkouts/s, latency p50 {:.2} ms, p99 {:.2} ms",
        if database == "sqlite" { "SQLite" } else { "PostgreSQL" },
        total as f64 / elapsed.as_secs_f64(),
        q(0.5),
        q(0.99)
    );
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", file.display()));
    }
}
