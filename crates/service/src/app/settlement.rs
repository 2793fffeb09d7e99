//! Applies what the PG says about an attempt: the one place where a final status is
//! decided, for callbacks and the reconciler alike. Late, duplicate and contradictory
//! news is recorded, never applied; a second charge or a charge for a failed attempt
//! is flagged for an operator. Its events say what happened; the attempt, gateway and
//! PG orderId are in the caller's span (`callback`, `reconcile`).

use std::sync::Arc;

use gateway::wire::TransactionStatus;

pub use crate::domain::Source;
use crate::domain::{AttemptId, Final, PaymentStatus, Settlement, Timestamp, TransactionKey};
use crate::store::{Attempt, EventKind, PaymentStore, StoreError, Transition};
use crate::telemetry::Metrics;

/// What the PG says about one of its transactions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observed {
    pub transaction_key: String,
    pub status: TransactionStatus,
    pub reason: Option<String>,
}

/// What applying an observation did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Applied {
    /// The attempt moved to this final status.
    Settled(PaymentStatus),
    /// The PG still processes it; its key is now recorded.
    KeyAdopted,
    StillPending,
    /// Same news again: nothing to do.
    Duplicate,
    /// PENDING news about a settled attempt.
    Stale,
    /// News that contradicts the settled status; recorded, not applied.
    Conflict,
    DoubleCharge,
    RefundNeeded,
}

impl Applied {
    pub fn as_str(self) -> &'static str {
        match self {
            Applied::Settled(PaymentStatus::Success) => "settled_success",
            Applied::Settled(_) => "settled_failed",
            Applied::KeyAdopted => "key_adopted",
            Applied::StillPending => "still_pending",
            Applied::Duplicate => "duplicate",
            Applied::Stale => "stale",
            Applied::Conflict => "conflict",
            Applied::DoubleCharge => "double_charge",
            Applied::RefundNeeded => "refund_needed",
        }
    }
}

#[derive(Clone)]
pub struct Settler {
    store: Arc<dyn PaymentStore>,
    metrics: Arc<Metrics>,
}

impl Settler {
    pub fn new(store: Arc<dyn PaymentStore>, metrics: Arc<Metrics>) -> Settler {
        Settler { store, metrics }
    }

    /// A final status decided without news of a transaction: the PG rejected the request
    /// at checkout, or never received it (the reconciler). Applied like any other: only
    /// from a status the state machine allows, stock released.
    pub async fn decide(
        &self,
        attempt_id: AttemptId,
        settlement: &Settlement,
        source: Source,
    ) -> Result<Transition, StoreError> {
        self.store.settle(attempt_id, settlement, source, Timestamp::now()).await
    }

    pub async fn apply(&self, attempt: &Attempt, observed: &Observed, source: Source) -> Result<Applied, StoreError> {
        let key = observed.transaction_key.as_str();
        // An attempt is settled only by its own transaction once it knows it. Any other
        // SUCCESS for it took money that is not this order's payment: it goes back.
        if attempt.transaction_key.as_ref().map(TransactionKey::as_str).is_some_and(|own| own != key) {
            return self.other_transaction(attempt, observed, source).await;
        }
        match self.apply_own(attempt, observed, source).await {
            Err(StoreError::KeyTaken(_)) => {
                self.note(attempt, EventKind::ConflictingDelivery, source, observed).await?;
                tracing::warn!(transaction_key = key, "news names a transaction of another attempt: ignored");
                Ok(Applied::Conflict)
            }
            other => other,
        }
    }

    async fn other_transaction(
        &self,
        attempt: &Attempt,
        observed: &Observed,
        source: Source,
    ) -> Result<Applied, StoreError> {
        if observed.status != TransactionStatus::Success {
            self.note(attempt, EventKind::ConflictingDelivery, source, observed).await?;
            return Ok(Applied::Conflict);
        }
        self.second_charge(attempt, observed, source).await?;
        Ok(Applied::DoubleCharge)
    }

    /// A SUCCESS of a transaction other than the one that settled `attempt`: the buyer
    /// was charged twice. Recorded, counted and logged for a refund; the attempt itself
    /// keeps its own settlement. The one place a double charge is handled, whether a
    /// callback or a lookup of the orderId brought the news.
    pub async fn second_charge(
        &self,
        attempt: &Attempt,
        observed: &Observed,
        source: Source,
    ) -> Result<(), StoreError> {
        self.note(attempt, EventKind::DoubleCharge, source, observed).await?;
        self.metrics.double_charge();
        tracing::error!(
            transaction_key = %observed.transaction_key,
            own_key = attempt.transaction_key.as_ref().map(TransactionKey::as_str).unwrap_or("-"),
            "a second transaction charged this payment: refund it"
        );
        Ok(())
    }

    async fn apply_own(&self, attempt: &Attempt, observed: &Observed, source: Source) -> Result<Applied, StoreError> {
        let now = Timestamp::now();
        let key = observed.transaction_key.as_str();
        let Some(settlement) = from_pg(observed.status, key, observed.reason.clone()) else {
            if attempt.status.is_final() {
                self.note(attempt, EventKind::StaleDelivery, source, observed).await?;
                return Ok(Applied::Stale);
            }
            if attempt.transaction_key.is_none() && self.store.adopt_key(attempt.id, key, now).await? {
                return Ok(Applied::KeyAdopted);
            }
            return Ok(Applied::StillPending);
        };
        let (current, current_key) = match self.store.settle(attempt.id, &settlement, source, now).await? {
            Transition::Applied => {
                tracing::info!(
                    transaction_key = key,
                    status = settlement.status.as_str(),
                    source = source.as_str(),
                    "payment settled"
                );
                let since_request = now.since(attempt.created_at);
                self.metrics.settled(source.as_str(), since_request);
                return Ok(Applied::Settled(settlement.status.into()));
            }
            Transition::AlreadyMoved { current, transaction_key } => (current, transaction_key),
            Transition::NotFound => return Err(StoreError::Corrupt(format!("attempt {} vanished", attempt.id))),
        };
        let same_transaction = current_key.as_deref().is_none_or(|k| k == key);
        let applied = match (current, settlement.status) {
            (c, s) if c == s && same_transaction => Applied::Duplicate,
            (PaymentStatus::Success, Final::Success) => Applied::DoubleCharge,
            (PaymentStatus::Failed, Final::Success) => Applied::RefundNeeded,
            _ => Applied::Conflict,
        };
        let kind = match applied {
            Applied::Duplicate => EventKind::DuplicateDelivery,
            Applied::DoubleCharge => EventKind::DoubleCharge,
            Applied::RefundNeeded => EventKind::RefundNeeded,
            _ => EventKind::ConflictingDelivery,
        };
        self.note(attempt, kind, source, observed).await?;
        match applied {
            Applied::DoubleCharge => self.metrics.double_charge(),
            Applied::RefundNeeded => self.metrics.refund_needed(),
            _ => {}
        }
        match applied {
            Applied::DoubleCharge | Applied::RefundNeeded => tracing::error!(
                transaction_key = key,
                settled_key = current_key.as_deref().unwrap_or("-"),
                finding = applied.as_str(),
                "the PG charged a payment that must be refunded"
            ),
            Applied::Conflict => tracing::warn!(
                transaction_key = key,
                settled = current.as_str(),
                reported = settlement.status.as_str(),
                source = source.as_str(),
                "contradictory news about a settled payment ignored"
            ),
            _ => {}
        }
        Ok(applied)
    }

    async fn note(
        &self,
        attempt: &Attempt,
        kind: EventKind,
        source: Source,
        observed: &Observed,
    ) -> Result<(), StoreError> {
        let detail = format!(
            "{} reported {} {:?} for {}",
            source.as_str(),
            observed.transaction_key,
            observed.status,
            observed.reason.as_deref().unwrap_or("-")
        );
        self.store.record_event(attempt.id, kind, &detail, Timestamp::now()).await
    }
}

/// The PG's final status as a settlement; `None` for PENDING (nothing to settle).
fn from_pg(status: TransactionStatus, key: &str, reason: Option<String>) -> Option<Settlement> {
    let status = match status {
        TransactionStatus::Pending => return None,
        TransactionStatus::Success => Final::Success,
        TransactionStatus::Failed => Final::Failed,
    };
    Some(Settlement { status, transaction_key: Some(key.to_string()), reason })
}
