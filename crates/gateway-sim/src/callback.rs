//! Delivery of the final status to the merchant's callback URL: one POST of the flat
//! transaction object, as the reference does, plus the opt-in faults (drop, delay,
//! duplicate, stale or contradictory redelivery, retries) and HMAC signature.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use gateway::signature;
use gateway::wire::{CancelDetail, SIGNATURE_HEADER, TransactionDetail, TransactionStatus, message};
use serde::Serialize;

use crate::state::Sim;

/// What a callback reports: a payment's status, or one of its cancels'.
trait News: Serialize + Sync {
    /// The transaction it is about, for logs and the ledger's tally.
    fn transaction_key(&self) -> &str;
    /// Whether a delivery counts on the transaction's own tally (its payment's callbacks).
    fn is_payment(&self) -> bool;
}

impl News for TransactionDetail {
    fn transaction_key(&self) -> &str {
        &self.transaction_key
    }

    fn is_payment(&self) -> bool {
        true
    }
}

impl News for CancelDetail {
    fn transaction_key(&self) -> &str {
        &self.transaction_key
    }

    fn is_payment(&self) -> bool {
        false
    }
}

/// A cancel's final status to its callback URL, with the same drop, delay, duplicate and
/// retry faults as a payment's (stale and contradictory redelivery are a payment's).
pub(crate) async fn deliver_cancel(sim: &Sim, detail: CancelDetail, url: &str, rng: &mut impl rand::Rng) {
    let plan = sim.faults().draw_callback_plan(rng);
    if plan.drop {
        sim.ledger().counts.callbacks_dropped += 1;
        return;
    }
    tokio::time::sleep(plan.delay).await;
    send_with_retries(sim, &detail, url).await;
    if plan.duplicate {
        send_with_retries(sim, &detail, url).await;
    }
}

pub(crate) async fn deliver(sim: &Sim, detail: TransactionDetail, url: &str, rng: &mut impl rand::Rng) {
    let plan = sim.faults().draw_callback_plan(rng);
    if plan.drop {
        sim.ledger().counts.callbacks_dropped += 1;
        tracing::debug!(key = %detail.transaction_key, "callback dropped by fault");
        return;
    }
    tokio::time::sleep(plan.delay).await;
    send_with_retries(sim, &detail, url).await;
    if plan.duplicate {
        send_with_retries(sim, &detail, url).await;
    }
    if plan.stale_after {
        let stale = TransactionDetail { status: TransactionStatus::Pending, reason: None, ..detail.clone() };
        send_once(sim, &stale, url).await;
    }
    if plan.contradictory_after {
        let (status, reason) = match detail.status {
            TransactionStatus::Success => (TransactionStatus::Failed, message::LIMIT_EXCEEDED),
            _ => (TransactionStatus::Success, message::APPROVED),
        };
        let contradictory = TransactionDetail { status, reason: Some(reason.to_string()), ..detail.clone() };
        send_once(sim, &contradictory, url).await;
    }
}

async fn send_with_retries(sim: &Sim, detail: &impl News, url: &str) {
    let retry = sim.faults().callback.retry;
    for attempt in 1..=retry.max_attempts {
        if send_once(sim, detail, url).await {
            return;
        }
        if attempt < retry.max_attempts {
            let backoff = retry.initial_backoff_ms.saturating_mul(1 << (attempt - 1).min(16));
            tokio::time::sleep(Duration::from_millis(backoff)).await;
        }
    }
}

/// One POST; true when the receiver answered 2xx.
async fn send_once(sim: &Sim, detail: &impl News, url: &str) -> bool {
    let body = serde_json::to_vec(detail).expect("a transaction serialises");
    let mut request = sim.http.post(url).header("content-type", "application/json");
    if let Some(secret) = &sim.secret {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64);
        request = request.header(SIGNATURE_HEADER, signature::sign(secret, now, &body));
    }
    let delivered = match request.body(body).send().await {
        Ok(response) if response.status().is_success() => true,
        Ok(response) => {
            tracing::warn!(key = detail.transaction_key(), status = %response.status(), "callback refused by receiver");
            false
        }
        Err(error) => {
            tracing::warn!(key = detail.transaction_key(), %error, "callback delivery failed");
            false
        }
    };
    let mut ledger = sim.ledger();
    if delivered {
        ledger.counts.callbacks_delivered += 1;
        if detail.is_payment()
            && let Some(tx) = ledger.get_mut(detail.transaction_key())
        {
            tx.callbacks_delivered += 1;
        }
    } else {
        ledger.counts.callbacks_failed += 1;
    }
    delivered
}
