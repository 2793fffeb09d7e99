//! Measures the default resilience settings against the simulator and prints the tables
//! of docs/resilience.md.
//!
//! `cargo run --release -p gateway --example resilience [-- --payments 10000 --runs 3]`
//!
//! 1. Normal: the reference PG's 40% request failures (zero latency, so 10,000 payments
//!    take seconds; the failure statistics are the same). Reports false opens of the
//!    payment breaker, the share of payments accepted, and the extra load from retries.
//! 2. Outage at 50 payments/s with the reference latency: warm up, switch the PG to an
//!    outage mode, report calls and seconds until the breaker opens, then bring the PG
//!    back and report the time until it is CLOSED again (through half-open).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use gateway::breaker::{Event, State};
use gateway::observer::{GatewayEvent, GatewayObserver};
use gateway::wire::{CardType, PaymentRequest};
use gateway::{GatewayClient, GatewaySettings, PaymentOutcome, ResilienceConfig};
use gateway_sim::faults::{DownMode, StoreThenTimeout, StoreThenTimeoutMode};
use gateway_sim::{Faults, RunningSim, SimConfig};
use tokio::time::Instant;

#[derive(Default)]
struct Counts {
    attempts: AtomicU64,
    retries: AtomicU64,
}

impl GatewayObserver for Counts {
    fn on_event(&self, event: &GatewayEvent) {
        match event {
            GatewayEvent::Attempt { .. } => self.attempts.fetch_add(1, Ordering::Relaxed),
            GatewayEvent::Retry { .. } => self.retries.fetch_add(1, Ordering::Relaxed),
            _ => 0,
        };
    }
}

async fn sim(faults: Faults, seed: u64) -> RunningSim {
    let config = SimConfig { listen: "127.0.0.1:0".parse().unwrap(), seed: Some(seed), faults, ..SimConfig::default() };
    gateway_sim::spawn(config).await.expect("simulator starts")
}

fn client(sim: &RunningSim, counts: Arc<Counts>) -> GatewayClient {
    let settings = GatewaySettings {
        name: "pg".into(),
        base_url: sim.base_url(),
        merchant_id: "merchant".into(),
        tls: Default::default(),
    };
    GatewayClient::with_observer(settings, ResilienceConfig::default(), counts).expect("default config is valid")
}

fn payment(n: u64) -> PaymentRequest {
    PaymentRequest {
        order_id: format!("ORD{n:08}-1"),
        card_type: CardType::Samsung,
        card_no: "1234-5678-9814-1451".into(),
        amount: 5_000,
        callback_url: "http://127.0.0.1:9/api/v1/payments/callback".into(),
    }
}

/// (when, from, to, reason) of every transition of the payment breaker.
type TransitionLog = Arc<Mutex<Vec<(Instant, State, State, String)>>>;

fn transitions(client: &GatewayClient) -> TransitionLog {
    let log = Arc::new(Mutex::new(Vec::new()));
    let sink = log.clone();
    client.payment_breaker().subscribe(move |_, event| {
        if let Event::StateTransition { from, to, reason } = event {
            sink.lock().unwrap().push((Instant::now(), *from, *to, reason.clone()));
        }
    });
    log
}

async fn normal(payments: u64, seed: u64) {
    let sim = sim(Faults::instant(), seed).await;
    let counts = Arc::new(Counts::default());
    let client = client(&sim, counts.clone());
    let log = transitions(&client);
    let accepted = Arc::new(AtomicU64::new(0));
    let next = Arc::new(AtomicU64::new(0));
    let workers: Vec<_> = (0..64)
        .map(|_| {
            let (client, accepted, next) = (client.clone(), accepted.clone(), next.clone());
            tokio::spawn(async move {
                loop {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    if n >= payments {
                        break;
                    }
                    if let PaymentOutcome::Accepted { .. } = client.request_payment(payment(n)).await {
                        accepted.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    for w in workers {
        w.await.unwrap();
    }
    let opens = log.lock().unwrap().iter().filter(|t| t.2 == State::Open).count();
    let attempts = counts.attempts.load(Ordering::Relaxed);
    let accepted = accepted.load(Ordering::Relaxed);
    println!(
        "| {seed} | {payments} | {opens} | {:.2}% | {:.3} | {:.1}% |",
        accepted as f64 * 100.0 / payments as f64,
        attempts as f64 / payments as f64,
        (attempts - payments) as f64 * 100.0 / payments as f64,
    );
    sim.shutdown().await;
}

async fn outage(name: &str, fault: Faults, seed: u64) {
    let sim = sim(Faults::default(), seed).await;
    let counts = Arc::new(Counts::default());
    let client = client(&sim, counts.clone());
    let log = transitions(&client);
    let rate = Duration::from_millis(20); // 50 payments/s
    let mut tick = tokio::time::interval(rate);
    let mut n = 0;
    let mut pace = |client: &GatewayClient| {
        n += 1;
        let client = client.clone();
        tokio::spawn(async move { client.request_payment(payment(n)).await })
    };
    let warm_until = Instant::now() + Duration::from_secs(4);
    while Instant::now() < warm_until {
        tick.tick().await;
        pace(&client);
    }
    let opens_before = log.lock().unwrap().len();
    sim.sim().set_faults(fault).unwrap();
    let down_at = Instant::now();
    let attempts_at_down = counts.attempts.load(Ordering::Relaxed);
    let mut opened = None;
    let mut attempts_to_open = 0;
    while down_at.elapsed() < Duration::from_secs(8) {
        tick.tick().await;
        pace(&client);
        if opened.is_none() && client.payment_breaker().state() == State::Open {
            opened = log.lock().unwrap().iter().skip(opens_before).find(|t| t.2 == State::Open).map(|t| t.0);
            attempts_to_open = counts.attempts.load(Ordering::Relaxed) - attempts_at_down;
        }
    }
    let reason = log.lock().unwrap().iter().skip(opens_before).find(|t| t.2 == State::Open).map(|t| t.3.clone());
    sim.sim().set_faults(Faults::default()).unwrap();
    let back_at = Instant::now();
    let mut closed = None;
    while back_at.elapsed() < Duration::from_secs(30) && closed.is_none() {
        tick.tick().await;
        pace(&client);
        if client.payment_breaker().state() == State::Closed {
            closed = Some(back_at.elapsed());
        }
    }
    let secs = |d: Option<Duration>| d.map_or("never".to_string(), |d| format!("{:.2} s", d.as_secs_f64()));
    println!(
        "| {name} | {} | {attempts_to_open} | {} | {} |",
        secs(opened.map(|t| t - down_at)),
        secs(closed),
        reason.unwrap_or_default()
    );
    sim.shutdown().await;
}

/// A PG that takes every payment and answers after the client's 1 s timeout.
fn late() -> StoreThenTimeout {
    StoreThenTimeout { mode: StoreThenTimeoutMode::Delay, rate: 1.0, delay_ms: 1_500 }
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arg = |flag: &str, default: u64| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let (payments, runs) = (arg("--payments", 10_000), arg("--runs", 3));

    println!("## Normal: reference PG, 40% request failures\n");
    println!("| seed | payments | breaker opens | accepted | PG requests per payment | extra load from retries |");
    println!("|---|---|---|---|---|---|");
    for seed in 1..=runs {
        normal(payments, seed).await;
    }

    println!("\n## Outage at 50 payments/s (reference latency), then recovery\n");
    println!("| outage | time to open | PG attempts until open | time to CLOSED after the PG is back | open reason |");
    println!("|---|---|---|---|---|");
    let modes = [
        ("down: refuse connections", Faults { down: Some(DownMode::Refuse), ..Faults::default() }),
        ("down: 503 at once", Faults { down: Some(DownMode::Unavailable), ..Faults::default() }),
        ("payments 503, status API up", Faults { down: Some(DownMode::PaymentsUnavailable), ..Faults::default() }),
        ("hang (never answers)", Faults { hang: true, ..Faults::default() }),
        ("every payment stored, answered 1.5 s late", Faults { store_then_timeout: Some(late()), ..Faults::default() }),
        ("100% HTTP 500", Faults { request_failure_rate: 1.0, ..Faults::default() }),
    ];
    for (i, (name, fault)) in modes.into_iter().enumerate() {
        outage(name, fault, 100 + i as u64).await;
    }
}
