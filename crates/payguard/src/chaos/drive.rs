//! Drives checkouts at a set concurrency from many buyers, applies the profile's fault
//! schedule and crashes as the run progresses, and watches the payment breaker.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{Value, json};

use super::profile::Profile;
use super::stack::Stack;

#[derive(Debug, Clone)]
pub struct Checkout {
    /// 202, 503, other statuses; 0 when no answer came (the service was killed).
    pub status: u16,
    pub order_id: Option<i64>,
    pub latency: Duration,
    /// The payment breaker was not closed when the request started.
    pub breaker_open: bool,
    /// Started while the profile had the primary PG faulty.
    pub during_outage: bool,
}

pub struct Driven {
    pub checkouts: Vec<Checkout>,
    pub elapsed: Duration,
    /// Wall-clock time the PG outage began, for the time to open.
    pub outage_started: Option<chrono::DateTime<chrono::Utc>>,
    pub peak_rss: Option<u64>,
}

pub async fn drive(
    stack: &mut Stack,
    profile: Profile,
    total: usize,
    concurrency: usize,
    quiet: bool,
) -> Result<Driven, String> {
    let schedule = profile.schedule();
    stack.set_faults(&schedule[0].1).await?;
    let started = Arc::new(AtomicUsize::new(0));
    let open = Arc::new(AtomicBool::new(false));
    let stop_watch = Arc::new(AtomicBool::new(false));
    let watcher = {
        let (open, stop, url) = (open.clone(), stop_watch.clone(), format!("{}/ops/state", stack.shop));
        tokio::spawn(async move {
            let client = reqwest::Client::builder().timeout(Duration::from_millis(500)).build().unwrap();
            while !stop.load(Ordering::Relaxed) {
                if let Ok(r) = client.get(&url).send().await
                    && let Ok(body) = r.json::<Value>().await
                {
                    let state = body["data"]["breakers"][0]["state"].as_str().unwrap_or("closed").to_string();
                    open.store(state != "closed", Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };
    // Down while the service restarts: requests in flight die with it, new ones wait.
    let (up_tx, up_rx) = tokio::sync::watch::channel(true);
    let bar = if quiet { ProgressBar::hidden() } else { ProgressBar::new(total as u64) };
    bar.set_style(
        ProgressStyle::with_template("  {prefix:>18} [{bar:30}] {pos}/{len} checkouts {msg}")
            .unwrap()
            .progress_chars("=> "),
    );
    bar.set_prefix(profile.name());
    let clock = Instant::now();
    let workers: Vec<_> = (0..concurrency)
        .map(|_| {
            let (started, open, bar, shop) = (started.clone(), open.clone(), bar.clone(), stack.shop.clone());
            let window = profile.outage_window();
            let mut up = up_rx.clone();
            tokio::spawn(async move {
                let client = reqwest::Client::builder().timeout(Duration::from_secs(60)).build().unwrap();
                let mut done = Vec::new();
                loop {
                    let _ = up.wait_for(|up| *up).await;
                    let n = started.fetch_add(1, Ordering::Relaxed);
                    if n >= total {
                        break done;
                    }
                    // Products 1, 2, 4 and 5 hold 1,000 each: room for 4,000 checkouts a run.
                    let product = [1, 2, 4, 5][n % 4];
                    let body = json!({"items": [{"productId": product, "quantity": 1}], "cardType": "SAMSUNG", "cardNo": "1234-5678-9814-1451"});
                    let breaker_open = open.load(Ordering::Relaxed);
                    let t = Instant::now();
                    let answer = client.post(format!("{shop}/api/v1/orders")).header("X-USER-ID", format!("buyer-{}", n % 997)).json(&body).send().await;
                    let (status, order_id) = match answer {
                        Ok(r) => {
                            let status = r.status().as_u16();
                            let body: Value = r.json().await.unwrap_or(Value::Null);
                            (status, body["data"]["orderId"].as_i64())
                        }
                        Err(_) => (0, None),
                    };
                    let share = n as f64 / total as f64;
                    let during_outage = window.is_some_and(|(from, to)| share >= from && share < to);
                    done.push(Checkout { status, order_id, latency: t.elapsed(), breaker_open, during_outage });
                    bar.inc(1);
                }
            })
        })
        .collect();

    // The coordinator: fault schedule and crashes, keyed to the share started.
    let mut steps = schedule.into_iter().skip(1).peekable();
    let mut crashes = profile.crashes().iter().copied().peekable();
    let mut outage_started = None;
    let mut peak_rss = stack.peak_rss();
    while started.load(Ordering::Relaxed) < total {
        let share = started.load(Ordering::Relaxed) as f64 / total as f64;
        if let Some((at, patch)) = steps.peek()
            && share >= *at
        {
            if profile.outage_starts_at() == Some(*at) {
                outage_started = Some(chrono::Utc::now());
            }
            stack.set_faults(patch).await?;
            steps.next();
        }
        if crashes.peek().is_some_and(|at| share >= *at) {
            crashes.next();
            peak_rss = peak_rss.max(stack.peak_rss());
            bar.set_message("(service killed, restarting)");
            up_tx.send_replace(false);
            stack.crash_and_restart().await?;
            up_tx.send_replace(true);
            bar.set_message("");
        }
        peak_rss = peak_rss.max(stack.peak_rss());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut checkouts = Vec::with_capacity(total);
    for worker in workers {
        checkouts.extend(worker.await.map_err(|e| e.to_string())?);
    }
    let elapsed = clock.elapsed();
    peak_rss = peak_rss.max(stack.peak_rss());
    stop_watch.store(true, Ordering::Relaxed);
    let _ = watcher.await;
    // Back to the reference behaviour so that everything can settle.
    stack.set_faults(&json!({"down": null, "hang": null, "requestLatencyMs": null, "requestFailureRate": null, "storeThenTimeout": null})).await?;
    bar.finish_and_clear();
    Ok(Driven { checkouts, elapsed, outage_started, peak_rss })
}
