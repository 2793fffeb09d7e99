//! Recent activity for the ops page: per-second samples of PG payment requests, a
//! window of recent latencies, and the last breaker transitions. Bounded in memory.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use gateway::GatewayClient;
use gateway::breaker::Event;
use gateway::observer::{GatewayEvent, GatewayObserver, Operation};
use serde::Serialize;
use tokio::time::Instant;

const SAMPLES: usize = 300; // five minutes of one-second samples
const LATENCIES: usize = 4_096;
const TRANSITIONS: usize = 30;

/// Passes every gateway event to several observers (metrics and the ops page).
pub struct Tee(pub Vec<Arc<dyn GatewayObserver>>);

impl GatewayObserver for Tee {
    fn on_event(&self, event: &GatewayEvent) {
        for observer in &self.0 {
            observer.on_event(event);
        }
    }
}

#[derive(Debug, Clone, Copy, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Sample {
    /// Seconds before now.
    pub ago: f64,
    pub success: u64,
    pub failure: u64,
    pub rejected: u64,
    pub refused: u64,
}

#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Traffic {
    pub window_seconds: u64,
    pub total: u64,
    pub success_per_second: f64,
    pub failure_per_second: f64,
    pub rejected_per_second: f64,
    pub refused_per_second: f64,
    pub failure_share: f64,
    /// Calls refused before any HTTP (breaker open, bulkhead full) in the window.
    pub refused: u64,
    /// Of the payment calls made in the window, the share admitted to the PG rather
    /// than refused by the breaker or the bulkhead: what admission lets through.
    pub admit_share: f64,
}

#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Latency {
    pub samples: usize,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TransitionRecord {
    pub at: String,
    pub breaker: String,
    pub from: &'static str,
    pub to: &'static str,
    pub reason: String,
}

#[derive(Default)]
struct Counters {
    success: AtomicU64,
    failure: AtomicU64,
    rejected: AtomicU64,
    refused: AtomicU64,
}

pub struct Activity {
    counters: Counters,
    /// (taken at, cumulative counts) once a second.
    samples: Mutex<VecDeque<(Instant, [u64; 4])>>,
    latencies: Mutex<VecDeque<(Instant, Duration)>>,
    transitions: Mutex<VecDeque<TransitionRecord>>,
}

impl Default for Activity {
    fn default() -> Self {
        Activity {
            counters: Counters::default(),
            samples: Mutex::new(VecDeque::with_capacity(SAMPLES + 1)),
            latencies: Mutex::new(VecDeque::with_capacity(LATENCIES)),
            transitions: Mutex::new(VecDeque::with_capacity(TRANSITIONS)),
        }
    }
}

impl Activity {
    pub fn watch_breakers(self: &Arc<Self>, gateway: &GatewayClient) {
        for breaker in [gateway.payment_breaker(), gateway.status_breaker()] {
            let activity = Arc::downgrade(self);
            breaker.subscribe(move |name, event| {
                if let (Some(a), Event::StateTransition { from, to, reason }) = (activity.upgrade(), event) {
                    let mut log = a.transitions.lock().expect("transitions lock");
                    if log.len() == TRANSITIONS {
                        log.pop_back();
                    }
                    log.push_front(TransitionRecord {
                        at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                        breaker: name.to_string(),
                        from: from.as_str(),
                        to: to.as_str(),
                        reason: reason.clone(),
                    });
                }
            });
        }
    }

    fn cumulative(&self) -> [u64; 4] {
        let c = &self.counters;
        [
            c.success.load(Ordering::Relaxed),
            c.failure.load(Ordering::Relaxed),
            c.rejected.load(Ordering::Relaxed),
            c.refused.load(Ordering::Relaxed),
        ]
    }

    /// Takes one sample; the app calls it every second.
    pub fn sample(&self) {
        let mut samples = self.samples.lock().expect("samples lock");
        if samples.len() > SAMPLES {
            samples.pop_front();
        }
        samples.push_back((Instant::now(), self.cumulative()));
    }

    /// Samples every second until `shutdown` turns true.
    pub async fn run_sampler(self: Arc<Self>, mut shutdown: tokio::sync::watch::Receiver<bool>) {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                _ = tick.tick() => self.sample(),
                _ = shutdown.wait_for(|stop| *stop) => break,
            }
        }
    }

    /// Per-second rates over the last `window` (as far back as samples go).
    pub fn traffic(&self, window: Duration) -> Traffic {
        let now = self.cumulative();
        let samples = self.samples.lock().expect("samples lock");
        let cutoff = Instant::now().checked_sub(window);
        let Some((at, base)) = samples.iter().find(|(at, _)| cutoff.is_none_or(|c| *at >= c)).copied() else {
            return Traffic { window_seconds: window.as_secs(), ..Traffic::default() };
        };
        let seconds = at.elapsed().as_secs_f64().max(1.0);
        let delta: Vec<u64> = now.iter().zip(base).map(|(n, b)| n.saturating_sub(b)).collect();
        let total = delta[0] + delta[1] + delta[2];
        Traffic {
            window_seconds: window.as_secs(),
            total,
            success_per_second: delta[0] as f64 / seconds,
            failure_per_second: delta[1] as f64 / seconds,
            rejected_per_second: delta[2] as f64 / seconds,
            refused_per_second: delta[3] as f64 / seconds,
            failure_share: if total == 0 { 0.0 } else { delta[1] as f64 / total as f64 },
            refused: delta[3],
            admit_share: if total + delta[3] == 0 { 1.0 } else { total as f64 / (total + delta[3]) as f64 },
        }
    }

    /// Per-second counts for the chart, oldest first.
    pub fn series(&self) -> Vec<Sample> {
        let samples = self.samples.lock().expect("samples lock");
        samples
            .iter()
            .zip(samples.iter().skip(1))
            .map(|((_, a), (at, b))| Sample {
                ago: at.elapsed().as_secs_f64(),
                success: b[0] - a[0],
                failure: b[1] - a[1],
                rejected: b[2] - a[2],
                refused: b[3] - a[3],
            })
            .collect()
    }

    pub fn latency(&self, window: Duration) -> Latency {
        let latencies = self.latencies.lock().expect("latencies lock");
        let cutoff = Instant::now().checked_sub(window);
        let mut recent: Vec<Duration> =
            latencies.iter().filter(|(at, _)| cutoff.is_none_or(|c| *at >= c)).map(|(_, d)| *d).collect();
        if recent.is_empty() {
            return Latency::default();
        }
        recent.sort_unstable();
        let q = |p: f64| recent[((recent.len() - 1) as f64 * p).round() as usize].as_secs_f64() * 1_000.0;
        Latency { samples: recent.len(), p50_ms: q(0.5), p95_ms: q(0.95), p99_ms: q(0.99) }
    }

    pub fn transitions(&self) -> Vec<TransitionRecord> {
        self.transitions.lock().expect("transitions lock").iter().cloned().collect()
    }
}

impl GatewayObserver for Activity {
    fn on_event(&self, event: &GatewayEvent) {
        let c = &self.counters;
        match event {
            GatewayEvent::Attempt { operation: Operation::RequestPayment, outcome, elapsed } => {
                let counter = match *outcome {
                    "ok" => &c.success,
                    "rejected" | "not_found" => &c.rejected,
                    _ => &c.failure,
                };
                counter.fetch_add(1, Ordering::Relaxed);
                let mut latencies = self.latencies.lock().expect("latencies lock");
                if latencies.len() == LATENCIES {
                    latencies.pop_front();
                }
                latencies.push_back((Instant::now(), *elapsed));
            }
            GatewayEvent::Refused { operation: Operation::RequestPayment, .. } => {
                c.refused.fetch_add(1, Ordering::Relaxed);
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attempt(outcome: &'static str, ms: u64) -> GatewayEvent {
        GatewayEvent::Attempt { operation: Operation::RequestPayment, outcome, elapsed: Duration::from_millis(ms) }
    }

    #[tokio::test(start_paused = true)]
    async fn traffic_is_the_per_second_rate_since_the_window_start() {
        let activity = Activity::default();
        activity.sample();
        for _ in 0..30 {
            activity.on_event(&attempt("ok", 10));
        }
        for _ in 0..10 {
            activity.on_event(&attempt("unavailable", 10));
        }
        for _ in 0..10 {
            let refused = GatewayEvent::Refused { operation: Operation::RequestPayment, reason: "circuit_open" };
            activity.on_event(&refused);
        }
        tokio::time::advance(Duration::from_secs(10)).await;
        activity.sample();
        let t = activity.traffic(Duration::from_secs(60));
        assert_eq!(t.total, 40);
        assert_eq!((t.success_per_second, t.failure_per_second), (3.0, 1.0));
        assert_eq!(t.failure_share, 0.25);
        assert_eq!((t.refused, t.admit_share), (10, 0.8), "40 of 50 payment calls admitted");
        let series = activity.series();
        assert_eq!((series.len(), series[0].success, series[0].failure), (1, 30, 10));
    }

    #[test]
    fn latency_percentiles_come_from_recent_attempts_only() {
        let activity = Activity::default();
        for ms in 1..=100 {
            activity.on_event(&attempt("ok", ms));
        }
        let l = activity.latency(Duration::from_secs(60));
        assert_eq!((l.samples, l.p50_ms.round(), l.p95_ms.round(), l.p99_ms.round()), (100, 51.0, 95.0, 99.0));
        // Status queries are not payment traffic.
        activity.on_event(&GatewayEvent::Attempt {
            operation: Operation::GetTransaction,
            outcome: "ok",
            elapsed: Duration::ZERO,
        });
        assert_eq!(activity.latency(Duration::from_secs(60)).samples, 100);
    }
}
