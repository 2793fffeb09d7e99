//! The reconciler: asks the PG about attempts left unsettled past a grace period (lost
//! callback, unknown outcome, crash between the two checkout transactions) until each
//! one matches the PG. Each attempt is checked at the gateway it was sent to, through
//! that gateway's client: while a gateway's status breaker is open its attempts wait
//! instead of hammering a PG that is down; the other gateways' attempts go on.
//!
//! Throughput follows the backlog: a pass that finds a full batch is followed by the
//! next at once, and a batch's lookups run concurrently (up to `concurrency`, under the
//! status stack's own bulkhead and breaker), paced by a rate limit so a big backlog
//! never sends the PG more than `max_lookups_per_second`. Leases are short and renewed
//! while a pass works, so a dead instance's payments are taken over within seconds.

use std::sync::Arc;
use std::time::Duration;

use gateway::GatewayClient;
use gateway::wire::{OrderTransactions, TransactionStatus, TransactionSummary};

use super::gateways::Gateways;
use serde::Serialize;
use tokio::sync::watch;
use tracing::Instrument;

use super::settlement::{Applied, Observed, Settler, Source};
use crate::configuration::ReconcilerSettings;
use crate::domain::payment::NOT_RECEIVED_REASON;
use crate::domain::{Final, Settlement, Timestamp};
use crate::store::{Attempt, Check, Claim, PaymentStore, ReconciliationStore, StoreError, Transition};
use crate::telemetry::Metrics;

/// What one pass did, for tests, logs and "reconcile now".
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PassReport {
    pub examined: usize,
    pub settled: usize,
    pub still_pending: usize,
    pub not_received: usize,
    pub errors: usize,
    pub double_charges: usize,
    /// Gateways skipped by this pass because their status breaker is open.
    pub paused: Vec<String>,
    /// Some gateway had a full batch due: more is waiting, the next pass starts at once.
    pub more_due: bool,
}

#[derive(Clone)]
pub struct Reconciler {
    queue: Arc<dyn ReconciliationStore>,
    gateways: Gateways,
    settler: Settler,
    metrics: Arc<Metrics>,
    settings: ReconcilerSettings,
    /// This instance's name on the leases it takes.
    owner: String,
    lookups: Arc<governor::DefaultDirectRateLimiter>,
    throughput: Arc<Throughput>,
}

/// Attempts settled by this instance's reconciler, sampled for a rate: what the ops
/// page shows as throughput and time to drain.
#[derive(Default)]
pub struct Throughput {
    settled: std::sync::atomic::AtomicU64,
    /// (when, settled so far), the last minute.
    samples: std::sync::Mutex<std::collections::VecDeque<(tokio::time::Instant, u64)>>,
}

impl Throughput {
    fn add(&self, settled: u64) {
        self.settled.fetch_add(settled, std::sync::atomic::Ordering::Relaxed);
    }

    /// Settled per second over the last `window` (as far back as samples go).
    pub fn per_second(&self, window: Duration) -> f64 {
        let now = tokio::time::Instant::now();
        let total = self.settled.load(std::sync::atomic::Ordering::Relaxed);
        let mut samples = self.samples.lock().expect("throughput samples");
        samples.push_back((now, total));
        while samples.front().is_some_and(|(at, _)| now.duration_since(*at) > Duration::from_secs(60)) {
            samples.pop_front();
        }
        let Some((at, base)) = samples.iter().find(|(at, _)| now.duration_since(*at) <= window).copied() else {
            return 0.0;
        };
        let seconds = now.duration_since(at).as_secs_f64();
        if seconds < 1.0 { 0.0 } else { (total - base) as f64 / seconds }
    }
}

impl Reconciler {
    pub fn new(
        queue: Arc<dyn ReconciliationStore>,
        payments: Arc<dyn PaymentStore>,
        gateways: Gateways,
        metrics: Arc<Metrics>,
        settings: ReconcilerSettings,
    ) -> Reconciler {
        let settler = Settler::new(payments, metrics.clone());
        let owner = format!("{}-{}-{:08x}", hostname(), std::process::id(), rand::random::<u32>());
        let rate = std::num::NonZeroU32::new(settings.max_lookups_per_second).expect("validated positive");
        // No burst: the cap holds over any second, not on average.
        let quota = governor::Quota::per_second(rate).allow_burst(std::num::NonZeroU32::MIN);
        let lookups = Arc::new(governor::RateLimiter::direct(quota));
        Reconciler { queue, gateways, settler, metrics, settings, owner, lookups, throughput: Arc::default() }
    }

    pub fn settings(&self) -> &ReconcilerSettings {
        &self.settings
    }

    /// This instance's settled-per-second record.
    pub fn throughput(&self) -> &Throughput {
        &self.throughput
    }

    /// Runs passes every interval, or back to back while full batches are due, until
    /// `shutdown` turns true.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let every = Duration::from_millis(self.settings.interval_ms);
        // After a restart the callbacks lost while the service was down are waiting:
        // the first pass comes `first_pass_delay_ms` after start (at once by default).
        let first = tokio::time::Instant::now() + Duration::from_millis(self.settings.first_pass_delay_ms);
        let mut tick = tokio::time::interval_at(first, every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut more_due = false;
        // Consecutive failed passes: while the database is down the reconciler waits
        // longer between passes and says so once, then once more when it is back.
        let mut failed_passes = 0u32;
        loop {
            if !more_due {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = shutdown.wait_for(|stop| *stop) => break,
                }
            } else if *shutdown.borrow() {
                break;
            }
            more_due = match self.run_once().await {
                Ok(report) => {
                    if failed_passes > 0 {
                        tracing::info!(failed_passes, "reconciliation passes work again");
                        failed_passes = 0;
                    }
                    if report.examined > 0 {
                        tracing::info!(?report, "reconciliation pass");
                    }
                    report.more_due
                }
                Err(error) => {
                    failed_passes += 1;
                    if failed_passes == 1 {
                        tracing::error!(%error, "reconciliation pass failed: backing off until one succeeds");
                    } else {
                        tracing::debug!(%error, failed_passes, "reconciliation pass failed again");
                    }
                    let pause = (every * 2u32.pow(failed_passes.min(6))).min(Duration::from_secs(10));
                    tokio::select! {
                        _ = tokio::time::sleep(pause) => {}
                        _ = shutdown.wait_for(|stop| *stop) => break,
                    }
                    false
                }
            };
        }
        match self.queue.release_leases(&self.owner).await {
            Ok(released) => tracing::info!(released, "reconciler stopped, leases released"),
            Err(error) => tracing::warn!(%error, "reconciler stopped; releasing its leases failed (they expire)"),
        }
    }

    /// The name this instance puts on its leases.
    pub fn owner(&self) -> &str {
        &self.owner
    }

    pub async fn run_once(&self) -> Result<PassReport, StoreError> {
        let mut report = PassReport::default();
        for gateway in self.gateways.all() {
            if !gateway.client.status_breaker().admits_calls() {
                report.paused.push(gateway.name().to_string());
                continue;
            }
            self.pass_over(&gateway.client, &mut report).await?;
        }
        Ok(report)
    }

    async fn pass_over(&self, gateway: &GatewayClient, report: &mut PassReport) -> Result<(), StoreError> {
        use futures_util::StreamExt;
        let now = Timestamp::now();
        let lease = Duration::from_millis(self.settings.lease_ms);
        let claim = Claim {
            gateway: gateway.name(),
            owner: &self.owner,
            lease_until: now + lease,
            created_before: now - Duration::from_millis(self.settings.grace_ms),
            now,
            limit: self.settings.batch_size,
        };
        let due = self.queue.claim_due_attempts(claim).await?;
        if due.is_empty() {
            // Most passes find nothing: no lease to renew, no task to start.
            return Ok(());
        }
        report.more_due |= due.len() as i64 >= self.settings.batch_size;
        // The leases of this batch outlive a slow PG: renewed every third of their length
        // until the batch is done (each check ends its own lease).
        let renewal = {
            let (queue, owner) = (self.queue.clone(), self.owner.clone());
            let every = (lease / 3).max(Duration::from_millis(1));
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(every).await;
                    match queue.renew_leases(&owner, Timestamp::now() + lease).await {
                        Err(error) if !error.is_unavailable() => {
                            tracing::warn!(%error, "renewing reconciliation leases failed")
                        }
                        _ => {}
                    }
                }
            })
        };
        let verdicts: Vec<(Attempt, Result<Verdict, StoreError>)> = futures_util::stream::iter(due)
            .map(|attempt| async move {
                self.lookups.until_ready().await;
                let span = tracing::info_span!(
                    "reconcile",
                    attempt = %attempt.id,
                    gateway = %attempt.gateway,
                    pg_order_id = %attempt.pg_order_id
                );
                let verdict = self.reconcile(gateway, &attempt).instrument(span).await;
                (attempt, verdict)
            })
            .buffer_unordered(self.settings.concurrency)
            .collect()
            .await;
        renewal.abort();
        let settled_before = report.settled;
        let mut unavailable = None;
        let mut checks = Vec::new();
        for (attempt, verdict) in verdicts {
            report.examined += 1;
            self.metrics.reconciliation(verdict.as_ref().map_or("error", Verdict::label));
            match verdict {
                Ok(Verdict::Settled) => report.settled += 1,
                Ok(Verdict::NotReceived) => {
                    report.settled += 1;
                    report.not_received += 1;
                }
                Ok(Verdict::DoubleCharge) => {
                    report.settled += 1;
                    report.double_charges += 1;
                }
                Ok(Verdict::Pending(note)) => {
                    report.still_pending += 1;
                    checks.push(self.postponed(&attempt, note));
                }
                Ok(Verdict::Unreachable(note)) => {
                    report.errors += 1;
                    checks.push(self.postponed(&attempt, note));
                }
                // A database outage fails the pass once, not once per attempt.
                Err(error) if error.is_unavailable() => {
                    report.errors += 1;
                    unavailable.get_or_insert(error);
                }
                Err(error) => {
                    report.errors += 1;
                    tracing::error!(attempt = %attempt.id, gateway = %attempt.gateway, %error, "reconciling an attempt failed");
                }
            }
        }
        self.queue.record_checks(&checks, Timestamp::now()).await?;
        self.throughput.add((report.settled - settled_before) as u64);
        unavailable.map_or(Ok(()), Err)
    }

    async fn reconcile(&self, gateway: &GatewayClient, attempt: &Attempt) -> Result<Verdict, StoreError> {
        match &attempt.transaction_key {
            Some(key) => match gateway.transaction(key.as_str()).await.answer() {
                Ok(Some(detail)) => {
                    let observed = Observed {
                        transaction_key: detail.transaction_key,
                        status: detail.status,
                        reason: detail.reason,
                    };
                    self.adopt(attempt, &observed).await
                }
                Ok(None) => Ok(Verdict::Pending(format!("the PG does not know key {key}"))),
                Err(why) => Ok(Verdict::Unreachable(why)),
            },
            None => match gateway.transactions_for_order(&attempt.pg_order_id).await.answer() {
                Ok(Some(list)) => self.adopt_one_of(attempt, list).await,
                Ok(None) => self.not_found(attempt).await,
                Err(why) => Ok(Verdict::Unreachable(why)),
            },
        }
    }

    async fn adopt(&self, attempt: &Attempt, observed: &Observed) -> Result<Verdict, StoreError> {
        Ok(match self.settler.apply(attempt, observed, Source::Reconciler).await? {
            Applied::Settled(_) | Applied::Duplicate | Applied::RefundNeeded => Verdict::Settled,
            Applied::Conflict => Verdict::Pending(format!("conflicting news about {}", observed.transaction_key)),
            Applied::DoubleCharge => Verdict::DoubleCharge,
            Applied::KeyAdopted | Applied::StillPending | Applied::Stale => {
                Verdict::Pending(format!("{} is still PENDING at the PG", observed.transaction_key))
            }
        })
    }

    /// Several transactions may exist for one attempt (the PG is not idempotent). At most
    /// one SUCCESS is kept; any further SUCCESS is a double charge.
    async fn adopt_one_of(&self, attempt: &Attempt, list: OrderTransactions) -> Result<Verdict, StoreError> {
        let successes: Vec<_> = list.transactions.iter().filter(|t| t.status == TransactionStatus::Success).collect();
        let chosen = successes
            .last() // the list is newest first: keep the oldest success
            .copied()
            .or_else(|| list.transactions.iter().find(|t| t.status == TransactionStatus::Pending))
            .or_else(|| list.transactions.first())
            .expect("a found order has at least one transaction");
        let observed = |t: &TransactionSummary| Observed {
            transaction_key: t.transaction_key.clone(),
            status: t.status,
            reason: t.reason.clone(),
        };
        let mut verdict = self.adopt(attempt, &observed(chosen)).await?;
        for extra in successes.iter().copied().filter(|t| t.transaction_key != chosen.transaction_key) {
            self.settler.second_charge(attempt, &observed(extra), Source::Reconciler).await?;
            verdict = Verdict::DoubleCharge;
        }
        Ok(verdict)
    }

    async fn not_found(&self, attempt: &Attempt) -> Result<Verdict, StoreError> {
        if Timestamp::now().since(attempt.created_at) < Duration::from_millis(self.settings.acceptance_window_ms) {
            return Ok(Verdict::Pending("no transaction at the PG yet".into()));
        }
        let failed =
            Settlement { status: Final::Failed, transaction_key: None, reason: Some(NOT_RECEIVED_REASON.into()) };
        match self.settler.decide(attempt.id, &failed, Source::Reconciler).await? {
            Transition::Applied => {
                tracing::warn!("the PG never received this payment: FAILED");
                Ok(Verdict::NotReceived)
            }
            _ => Ok(Verdict::Settled),
        }
    }

    /// The check that postpones `attempt`: exponential backoff per attempt; past
    /// `stuck_after_checks` it is flagged stuck.
    fn postponed(&self, attempt: &Attempt, note: String) -> Check {
        let s = &self.settings;
        let exp = s.backoff_initial_ms.saturating_mul(1 << attempt.checks.clamp(0, 20));
        let wait = Duration::from_millis(exp.min(s.backoff_max_ms));
        let stuck = attempt.checks + 1 >= s.stuck_after_checks;
        if stuck {
            tracing::error!(attempt = %attempt.id, gateway = %attempt.gateway, pg_order_id = %attempt.pg_order_id, checks = attempt.checks + 1, note, "payment stuck: still unsettled after many checks");
        }
        Check { attempt_id: attempt.id, next_check_at: Timestamp::now() + wait, note, stuck }
    }
}

enum Verdict {
    Settled,
    NotReceived,
    DoubleCharge,
    Pending(String),
    Unreachable(String),
}

impl Verdict {
    /// The `result` label of the reconciliation metric.
    fn label(&self) -> &'static str {
        match self {
            Verdict::Settled => "settled",
            Verdict::NotReceived => "not_received",
            Verdict::DoubleCharge => "double_charge",
            Verdict::Pending(_) => "still_pending",
            Verdict::Unreachable(_) => "pg_unreachable",
        }
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/etc/hostname").map(|h| h.trim().to_string()).unwrap_or_else(|_| "payguard".into())
}
