//! The reconciler: asks the PG about attempts left unsettled past a grace period (lost
//! callback, unknown outcome, crash between the two checkout transactions) until each
//! one matches the PG. Each attempt is checked at the gateway it was sent to, through
//! that gateway's client: while a gateway's status breaker is open its attempts wait
//! instead of hammering a PG that is down; the other gateways' attempts go on.

use std::sync::Arc;
use std::time::Duration;

use gateway::wire::{OrderTransactions, TransactionStatus};
use gateway::{GatewayClient, LookupOutcome};

use super::gateways::Gateways;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::settlement::{Applied, Observed, Settler, Source};
use crate::domain::payment::NOT_RECEIVED_REASON;
use crate::domain::{PaymentStatus, Settlement};
use crate::metrics::Metrics;
use crate::store::{Attempt, EventKind, Store, StoreError, Transition};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ReconcilerSettings {
    pub interval_ms: u64,
    /// Leave an attempt to its callback this long before asking the PG.
    pub grace_ms: u64,
    pub batch_size: i64,
    /// After this long, an attempt the PG has no transaction for was never received:
    /// longer than any request of ours can still be on its way (the client deadline).
    pub acceptance_window_ms: u64,
    pub backoff_initial_ms: u64,
    pub backoff_max_ms: u64,
    /// After this many inconclusive checks an attempt is flagged stuck (it is still
    /// checked, at the longest backoff).
    pub stuck_after_checks: i64,
    /// How long a claimed attempt is this instance's; longer than one check can take.
    pub lease_ms: u64,
}

impl Default for ReconcilerSettings {
    fn default() -> Self {
        ReconcilerSettings {
            interval_ms: 2_000,
            // The reference PG decides within 5 s and calls back at once.
            grace_ms: 10_000,
            batch_size: 50,
            acceptance_window_ms: 60_000,
            backoff_initial_ms: 1_000,
            backoff_max_ms: 60_000,
            stuck_after_checks: 20,
            lease_ms: 30_000,
        }
    }
}

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
}

#[derive(Clone)]
pub struct Reconciler {
    store: Arc<dyn Store>,
    gateways: Gateways,
    settler: Settler,
    metrics: Arc<Metrics>,
    settings: ReconcilerSettings,
    /// This instance's name on the leases it takes.
    owner: String,
}

impl Reconciler {
    pub fn new(
        store: Arc<dyn Store>,
        gateways: Gateways,
        metrics: Arc<Metrics>,
        settings: ReconcilerSettings,
    ) -> Reconciler {
        let settler = Settler::new(store.clone(), metrics.clone());
        let owner = format!("{}-{}-{:08x}", hostname(), std::process::id(), rand::random::<u32>());
        Reconciler { store, gateways, settler, metrics, settings, owner }
    }

    /// Runs passes every interval until `shutdown` turns true.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let every = Duration::from_millis(self.settings.interval_ms);
        // The first pass comes one interval after start, not at once.
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.wait_for(|stop| *stop) => break,
            }
            match self.run_once().await {
                Ok(report) if report.examined > 0 => tracing::info!(?report, "reconciliation pass"),
                Ok(_) => {}
                Err(error) => tracing::error!(%error, "reconciliation pass failed"),
            }
        }
        match self.store.release_leases(&self.owner).await {
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
        let now = super::now_ms();
        let lease_until = now + self.settings.lease_ms as i64;
        let created_before = now - self.settings.grace_ms as i64;
        let due = self
            .store
            .claim_due_attempts(gateway.name(), &self.owner, lease_until, created_before, now, self.settings.batch_size)
            .await?;
        for attempt in due {
            report.examined += 1;
            let verdict = self.reconcile(gateway, &attempt).await;
            self.metrics.reconciliation(match &verdict {
                Ok(Verdict::Settled) => "settled",
                Ok(Verdict::NotReceived) => "not_received",
                Ok(Verdict::DoubleCharge) => "double_charge",
                Ok(Verdict::Pending(_)) => "still_pending",
                Ok(Verdict::Unreachable(_)) => "pg_unreachable",
                Err(_) => "error",
            });
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
                    self.postpone(&attempt, &note).await?;
                }
                Ok(Verdict::Unreachable(note)) => {
                    report.errors += 1;
                    self.postpone(&attempt, &note).await?;
                }
                Err(error) => {
                    report.errors += 1;
                    tracing::error!(attempt = attempt.id, gateway = %attempt.gateway, %error, "reconciling an attempt failed");
                }
            }
        }
        Ok(())
    }

    async fn reconcile(&self, gateway: &GatewayClient, attempt: &Attempt) -> Result<Verdict, StoreError> {
        match &attempt.transaction_key {
            Some(key) => match gateway.transaction(key).await {
                LookupOutcome::Found(detail) => {
                    let observed = Observed {
                        transaction_key: detail.transaction_key,
                        status: detail.status,
                        reason: detail.reason,
                    };
                    self.adopt(attempt, &observed).await
                }
                LookupOutcome::NotFound => Ok(Verdict::Pending(format!("the PG does not know key {key}"))),
                LookupOutcome::Rejected(r) => Ok(Verdict::Unreachable(r.reason)),
                LookupOutcome::NotDelivered(why) => Ok(Verdict::Unreachable(why.to_string())),
                LookupOutcome::Unknown(why) => Ok(Verdict::Unreachable(why.to_string())),
            },
            None => match gateway.transactions_for_order(&attempt.pg_order_id).await {
                LookupOutcome::Found(list) => self.adopt_one_of(attempt, list).await,
                LookupOutcome::NotFound => self.not_found(attempt).await,
                LookupOutcome::Rejected(r) => Ok(Verdict::Unreachable(r.reason)),
                LookupOutcome::NotDelivered(why) => Ok(Verdict::Unreachable(why.to_string())),
                LookupOutcome::Unknown(why) => Ok(Verdict::Unreachable(why.to_string())),
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
        let observed = Observed {
            transaction_key: chosen.transaction_key.clone(),
            status: chosen.status,
            reason: chosen.reason.clone(),
        };
        let mut verdict = self.adopt(attempt, &observed).await?;
        for extra in successes.iter().filter(|t| t.transaction_key != chosen.transaction_key) {
            let detail = format!(
                "second SUCCESS {} besides {} for {}",
                extra.transaction_key, chosen.transaction_key, attempt.pg_order_id
            );
            self.store.record_event(attempt.id, EventKind::DoubleCharge, &detail, super::now_ms()).await?;
            tracing::error!(attempt = attempt.id, gateway = %attempt.gateway, pg_order_id = %attempt.pg_order_id, transaction_key = %extra.transaction_key, "double charge detected");
            self.metrics.double_charge();
            verdict = Verdict::DoubleCharge;
        }
        Ok(verdict)
    }

    async fn not_found(&self, attempt: &Attempt) -> Result<Verdict, StoreError> {
        let age = super::now_ms() - attempt.created_at_ms;
        if age < self.settings.acceptance_window_ms as i64 {
            return Ok(Verdict::Pending("no transaction at the PG yet".into()));
        }
        let failed = Settlement {
            status: PaymentStatus::Failed,
            transaction_key: None,
            reason: Some(NOT_RECEIVED_REASON.into()),
        };
        match self.store.settle(attempt.id, &failed, Source::Reconciler.as_str(), super::now_ms()).await? {
            Transition::Applied => {
                tracing::warn!(attempt = attempt.id, gateway = %attempt.gateway, pg_order_id = %attempt.pg_order_id, "the PG never received this payment: FAILED");
                Ok(Verdict::NotReceived)
            }
            _ => Ok(Verdict::Settled),
        }
    }

    /// Exponential backoff per attempt; past `stuck_after_checks` it is flagged stuck.
    async fn postpone(&self, attempt: &Attempt, note: &str) -> Result<(), StoreError> {
        let s = &self.settings;
        let exp = s.backoff_initial_ms.saturating_mul(1 << attempt.checks.clamp(0, 20));
        let wait = exp.min(s.backoff_max_ms) as i64;
        let stuck = attempt.checks + 1 >= s.stuck_after_checks;
        if stuck {
            tracing::error!(attempt = attempt.id, gateway = %attempt.gateway, pg_order_id = %attempt.pg_order_id, checks = attempt.checks + 1, note, "payment stuck: still unsettled after many checks");
        }
        let now = super::now_ms();
        self.store.record_check(attempt.id, now + wait, note, stuck, now).await
    }
}

enum Verdict {
    Settled,
    NotReceived,
    DoubleCharge,
    Pending(String),
    Unreachable(String),
}

fn hostname() -> String {
    std::fs::read_to_string("/etc/hostname").map(|h| h.trim().to_string()).unwrap_or_else(|_| "payguard".into())
}
