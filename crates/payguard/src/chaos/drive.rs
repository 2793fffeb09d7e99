//! Drives checkouts from many buyers, either as fast as a set concurrency allows or
//! paced at a shop's rate (checkouts started per second, whatever their answers take),
//! applies the profile's fault schedule and crashes as the run progresses, and records
//! the payment breaker's states over time.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{Value, json};
use tokio::sync::watch;

use super::profile::Profile;
use super::stack::Stack;

/// How a run is driven.
#[derive(Debug, Clone, Copy)]
pub struct Plan {
    pub total: usize,
    /// Checkouts in flight at once, when not paced.
    pub concurrency: usize,
    /// Checkouts started per second; `None`: back to back at `concurrency`.
    pub rate: Option<f64>,
    /// The fault window in progress units (share of checkouts started, or of the paced
    /// run's duration).
    pub window: (f64, f64),
    /// The PG's request failure rate outside the window.
    pub baseline_failure_rate: f64,
    /// How late a `late-answers` PG answers.
    pub late_ms: u64,
    pub quiet: bool,
}

impl Plan {
    /// A paced run's length.
    pub fn duration(&self) -> Option<Duration> {
        self.rate.map(|rate| Duration::from_secs_f64(self.total as f64 / rate))
    }
}

#[derive(Debug, Clone)]
pub struct Checkout {
    /// 202, 503, other statuses; 0 when no answer came (the service was killed).
    pub status: u16,
    /// The answer's `errorCode`, when it was an error.
    pub code: Option<String>,
    pub order_id: Option<i64>,
    /// When it started, from the start of the run.
    pub started_at: Duration,
    pub latency: Duration,
    /// The payment breaker was refusing calls (OPEN) when the request started.
    pub breaker_open: bool,
}

pub struct Driven {
    pub checkouts: Vec<Checkout>,
    pub elapsed: Duration,
    /// When the fault window began and ended, from the start of the run.
    pub window: Option<(Duration, Duration)>,
    /// Wall-clock time the PG outage began, for the time to open.
    pub outage_started: Option<chrono::DateTime<chrono::Utc>>,
    pub peak_rss: Option<u64>,
    /// The primary's payment breaker state from each moment on: (since the start, state).
    pub breaker: Vec<(Duration, String)>,
    /// Every CLOSED -> OPEN of the primary's payment breaker seen during the run.
    pub opened: std::collections::BTreeSet<chrono::DateTime<chrono::FixedOffset>>,
    /// In an outage, PG payment requests per checkout started from 2 s into the window
    /// to its end: how much still reaches a PG that is down.
    pub reach_after_2s: Option<f64>,
}

/// Starts checkouts: waits while the service restarts, records the breaker's state.
#[derive(Clone)]
struct Launcher {
    client: reqwest::Client,
    shop: String,
    open: Arc<AtomicBool>,
    bar: ProgressBar,
    up: watch::Receiver<bool>,
    clock: Instant,
}

impl Launcher {
    async fn launch(mut self, n: usize) -> Checkout {
        let _ = self.up.wait_for(|up| *up).await;
        let done = one_checkout(&self.client, &self.shop, n, self.open.load(Ordering::Relaxed), self.clock).await;
        self.bar.inc(1);
        done
    }
}

async fn one_checkout(client: &reqwest::Client, shop: &str, n: usize, breaker_open: bool, clock: Instant) -> Checkout {
    // Products 1, 2, 4 and 5 hold 1,000 each: room for 4,000 checkouts a run.
    let product = [1, 2, 4, 5][n % 4];
    let body = json!({"items": [{"productId": product, "quantity": 1}], "cardType": "SAMSUNG", "cardNo": "1234-5678-9814-1451"});
    let started_at = clock.elapsed();
    let t = Instant::now();
    let answer = client
        .post(format!("{shop}/api/v1/orders"))
        .header("X-USER-ID", format!("buyer-{}", n % 997))
        .json(&body)
        .send()
        .await;
    let (status, code, order_id) = match answer {
        Ok(r) => {
            let status = r.status().as_u16();
            let body: Value = r.json().await.unwrap_or(Value::Null);
            (status, body["meta"]["errorCode"].as_str().map(String::from), body["data"]["orderId"].as_i64())
        }
        Err(_) => (0, None, None),
    };
    Checkout { status, code, order_id, started_at, latency: t.elapsed(), breaker_open }
}

pub async fn drive(stack: &mut Stack, profile: Profile, plan: Plan) -> Result<Driven, String> {
    let total = plan.total;
    let schedule = profile.schedule(plan.window, plan.baseline_failure_rate, plan.late_ms, &stack.pg_latency);
    stack.set_faults(&schedule[0].1).await?;
    let clock = Instant::now();
    let started = Arc::new(AtomicUsize::new(0));
    let open = Arc::new(AtomicBool::new(false));
    let stop_watch = Arc::new(AtomicBool::new(false));
    let watcher = {
        let (open, stop, url) = (open.clone(), stop_watch.clone(), format!("{}/ops/state", stack.shop));
        tokio::spawn(async move {
            let client = reqwest::Client::builder().timeout(Duration::from_millis(500)).build().unwrap();
            let mut states: Vec<(Duration, String)> = vec![(Duration::ZERO, "closed".into())];
            // The page lists only the last transitions; trials while open make many.
            let mut opened = std::collections::BTreeSet::new();
            while !stop.load(Ordering::Relaxed) {
                if let Ok(r) = client.get(&url).send().await
                    && let Ok(body) = r.json::<Value>().await
                {
                    opened.extend(opens_of_the_primary(&body["data"]["transitions"]));
                    let state = body["data"]["breakers"][0]["state"].as_str().unwrap_or("closed").to_string();
                    // Refusing: half-open admits its probes, so it is not counted here.
                    open.store(state == "open" || state == "forced_open", Ordering::Relaxed);
                    if states.last().is_none_or(|(_, last)| *last != state) {
                        states.push((clock.elapsed(), state));
                    }
                }
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
            (states, opened)
        })
    };
    // Down while the service restarts: requests in flight die with it, new ones wait.
    let (up_tx, up_rx) = watch::channel(true);
    let bar = if plan.quiet { ProgressBar::hidden() } else { ProgressBar::new(total as u64) };
    bar.set_style(
        ProgressStyle::with_template("  {prefix:>18} [{bar:30}] {pos}/{len} checkouts {msg}")
            .unwrap()
            .progress_chars("=> "),
    );
    bar.set_prefix(profile.name());
    let launcher = Launcher {
        client: reqwest::Client::builder().timeout(Duration::from_secs(60)).build().unwrap(),
        shop: stack.shop.clone(),
        open: open.clone(),
        bar: bar.clone(),
        up: up_rx,
        clock,
    };
    // The checkout numbers at which each later schedule step applies, and how many have.
    let boundaries: Arc<Vec<usize>> =
        Arc::new(schedule.iter().skip(1).map(|(at, _)| (at * total as f64).ceil() as usize).collect());
    let (applied_tx, applied_rx) = watch::channel(0usize);
    let mut tasks = tokio::task::JoinSet::new();
    match plan.rate {
        // Open loop: each checkout starts on time, however long the earlier ones take.
        Some(rate) => {
            let (started, launcher) = (started.clone(), launcher.clone());
            tasks.spawn(async move {
                let mut inner = tokio::task::JoinSet::new();
                for n in 0..total {
                    tokio::time::sleep_until((clock + Duration::from_secs_f64(n as f64 / rate)).into()).await;
                    started.fetch_add(1, Ordering::Relaxed);
                    inner.spawn(launcher.clone().launch(n));
                }
                inner.join_all().await
            });
        }
        None => {
            for _ in 0..plan.concurrency {
                let (started, launcher, boundaries) = (started.clone(), launcher.clone(), boundaries.clone());
                let mut applied = applied_rx.clone();
                tasks.spawn(async move {
                    let mut done = Vec::new();
                    loop {
                        let n = started.fetch_add(1, Ordering::Relaxed);
                        if n >= total {
                            break done;
                        }
                        // Phases are counted in checkouts: none starts before the faults of
                        // its phase are in place, however fast the earlier ones were answered.
                        let due = boundaries.iter().filter(|&&b| b <= n).count();
                        let _ = applied.wait_for(|a| *a >= due).await;
                        done.push(launcher.clone().launch(n).await);
                    }
                });
            }
        }
    }

    // The coordinator: fault schedule, crashes and window figures, keyed to progress.
    let duration = plan.duration();
    let progress = || match duration {
        Some(d) => clock.elapsed().as_secs_f64() / d.as_secs_f64(),
        None => started.load(Ordering::Relaxed) as f64 / total as f64,
    };
    let mut steps = schedule.clone().into_iter().enumerate().skip(1).peekable();
    let mut crashes = profile.crashes().iter().copied().peekable();
    let (mut outage_started, mut window_from, mut window_to) = (None, None, None);
    let mut reach_from: Option<(u64, usize)> = None;
    let mut reach_after_2s = None;
    let mut peak_rss = stack.peak_rss();
    // Unpaced, workers may wait at a phase boundary with every checkout number taken:
    // the loop goes on until the steps they wait for are applied.
    let waited_for = |step: Option<&(usize, (f64, Value))>| {
        plan.rate.is_none() && step.is_some_and(|(_, (at, _))| ((at * total as f64).ceil() as usize) < total)
    };
    while started.load(Ordering::Relaxed).min(total) < total || waited_for(steps.peek()) {
        if let Some((i, (at, patch))) = steps.peek()
            && progress() >= *at
        {
            stack.set_faults(patch).await?;
            applied_tx.send_modify(|applied| *applied += 1);
            if profile.has_window() && *i == 1 {
                window_from = Some(clock.elapsed());
                if profile.is_outage() {
                    outage_started = Some(chrono::Utc::now());
                }
            } else if profile.has_window() && *i == 2 {
                window_to = Some(clock.elapsed());
                if let (Some((requests, checkouts)), true) = (reach_from, profile.is_outage()) {
                    let now = (stack.pg_payment_requests().await, started.load(Ordering::Relaxed));
                    reach_after_2s = Some((now.0 - requests) as f64 / (now.1 - checkouts).max(1) as f64);
                }
            }
            steps.next();
        }
        if let (Some(from), None, None) = (window_from, window_to, reach_from)
            && clock.elapsed() >= from + Duration::from_secs(2)
        {
            reach_from = Some((stack.pg_payment_requests().await, started.load(Ordering::Relaxed)));
        }
        if crashes.peek().is_some_and(|at| progress() >= *at) {
            crashes.next();
            peak_rss = peak_rss.max(stack.peak_rss());
            bar.set_message("(service killed, restarting)");
            up_tx.send_replace(false);
            stack.crash_and_restart().await?;
            up_tx.send_replace(true);
            bar.set_message("");
        }
        peak_rss = peak_rss.max(stack.peak_rss());
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let mut checkouts = Vec::with_capacity(total);
    for done in tasks.join_all().await {
        checkouts.extend(done);
    }
    checkouts.sort_by_key(|c| c.started_at);
    let elapsed = clock.elapsed();
    peak_rss = peak_rss.max(stack.peak_rss());
    stop_watch.store(true, Ordering::Relaxed);
    let (breaker, opened) = watcher.await.map_err(|e| e.to_string())?;
    // Back to the reference behaviour so that everything can settle.
    stack.set_faults(&json!({"down": null, "hang": null, "requestLatencyMs": null, "requestFailureRate": plan.baseline_failure_rate, "storeThenTimeout": null})).await?;
    bar.finish_and_clear();
    let window = window_from.map(|from| (from, window_to.unwrap_or(elapsed)));
    Ok(Driven { checkouts, elapsed, window, outage_started, peak_rss, breaker, opened, reach_after_2s })
}

/// When the primary's payment breaker went from CLOSED to OPEN, of the transitions an
/// ops page lists.
pub fn opens_of_the_primary(transitions: &Value) -> Vec<chrono::DateTime<chrono::FixedOffset>> {
    let listed = transitions.as_array().map(Vec::as_slice).unwrap_or_default();
    listed
        .iter()
        .filter(|t| t["breaker"] == "pg.payments" && t["to"] == "open" && t["from"] == "closed")
        .filter_map(|t| chrono::DateTime::parse_from_rfc3339(t["at"].as_str()?).ok())
        .collect()
}
