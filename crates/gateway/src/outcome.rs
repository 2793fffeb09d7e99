//! What a PG call came to, classified by what we know about the request's fate: this,
//! not a raw HTTP error, is what the service decides on (docs/resilience.md).

use std::time::Duration;

use crate::breaker::{CallNotPermitted, State};
use crate::wire::{CancelDetail, OrderTransactions, TransactionCancels, TransactionDetail};

/// The request surely did not reach the PG (or the PG surely did nothing with it):
/// safe to retry, and safe to roll the order back.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotDelivered {
    #[error("connection to the PG failed: {0}")]
    Connect(String),
    #[error("the PG is temporarily unavailable (HTTP {status}): {message}")]
    Unavailable { status: u16, message: String },
    #[error("the PG is rate limiting us (HTTP 429)")]
    RateLimited,
    #[error("circuit breaker '{breaker}' is {state}: nothing was sent")]
    CircuitOpen { breaker: String, state: State },
    #[error("too many PG calls in flight: nothing was sent")]
    BulkheadFull,
}

/// The request may have reached the PG: never re-send it blindly; ask the PG instead.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unknown {
    #[error("no answer from the PG within {0:?}")]
    Timeout(Duration),
    #[error("connection to the PG lost after sending: {0}")]
    ConnectionLost(String),
    #[error("total deadline of {0:?} passed")]
    DeadlineExceeded(Duration),
    #[error("unexpected PG answer (HTTP {status}): {detail}")]
    UnexpectedAnswer { status: u16, detail: String },
}

/// The failure of one call through the stack.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    #[error(transparent)]
    NotDelivered(#[from] NotDelivered),
    #[error(transparent)]
    Unknown(#[from] Unknown),
}

impl From<CallNotPermitted> for CallError {
    fn from(denied: CallNotPermitted) -> Self {
        CallError::NotDelivered(NotDelivered::CircuitOpen { breaker: denied.breaker, state: denied.state })
    }
}

impl CallError {
    /// A short, stable label for metrics (`payguard_gateway_failures_total{reason}`).
    pub fn reason(&self) -> &'static str {
        match self {
            CallError::NotDelivered(NotDelivered::Connect(_)) => "connect",
            CallError::NotDelivered(NotDelivered::Unavailable { .. }) => "unavailable",
            CallError::NotDelivered(NotDelivered::RateLimited) => "rate_limited",
            CallError::NotDelivered(NotDelivered::CircuitOpen { .. }) => "circuit_open",
            CallError::NotDelivered(NotDelivered::BulkheadFull) => "bulkhead_full",
            CallError::Unknown(Unknown::Timeout(_)) => "timeout",
            CallError::Unknown(Unknown::ConnectionLost(_)) => "connection_lost",
            CallError::Unknown(Unknown::DeadlineExceeded(_)) => "deadline",
            CallError::Unknown(Unknown::UnexpectedAnswer { .. }) => "unexpected_answer",
        }
    }
}

/// The PG refused the request as invalid (a 4xx with its reason). Never retried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub status: u16,
    /// `meta.errorCode`, e.g. `Bad Request`.
    pub code: String,
    /// `meta.message`, the PG's Korean text.
    pub reason: String,
}

/// The result of asking the PG to take a payment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PaymentOutcome {
    /// The PG stored the transaction; the final status comes later (callback or lookup).
    Accepted {
        transaction_key: String,
    },
    Rejected(Rejection),
    NotDelivered(NotDelivered),
    Unknown(Unknown),
}

/// The result of asking the PG to refund (cancel) all or part of a payment. Unlike a
/// payment, a cancel carries an idempotency key: one whose outcome is unknown may be sent
/// again under the same key, and the PG answers the cancel it made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CancelOutcome {
    /// The PG holds the cancel: PENDING until it decides (callback or lookup), or as it
    /// stands when this key made it before.
    Accepted(CancelDetail),
    /// The PG has no such payment, or no cancel API at all (the reference PG).
    NotFound,
    /// Refused as asked: not paid, more than is left, a key reused for another amount.
    Rejected(Rejection),
    NotDelivered(NotDelivered),
    Unknown(Unknown),
}

impl CancelOutcome {
    pub(crate) fn from_result(result: Result<PgAnswer, CallError>) -> CancelOutcome {
        match result {
            Ok(PgAnswer::Cancel(detail)) => CancelOutcome::Accepted(detail),
            Ok(PgAnswer::NotFound) => CancelOutcome::NotFound,
            Ok(PgAnswer::Rejected(r)) => CancelOutcome::Rejected(r),
            Ok(other) => {
                CancelOutcome::Unknown(Unknown::UnexpectedAnswer { status: 200, detail: format!("{other:?}") })
            }
            Err(CallError::NotDelivered(n)) => CancelOutcome::NotDelivered(n),
            Err(CallError::Unknown(u)) => CancelOutcome::Unknown(u),
        }
    }
}

/// The result of a status lookup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LookupOutcome<T> {
    Found(T),
    /// The PG answered that it has no such transaction (for our merchant id).
    NotFound,
    Rejected(Rejection),
    NotDelivered(NotDelivered),
    Unknown(Unknown),
}

/// What the transport hands up when the PG answered at all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PgAnswer {
    Accepted { transaction_key: String },
    Transaction(TransactionDetail),
    Transactions(OrderTransactions),
    Cancel(CancelDetail),
    Cancels(TransactionCancels),
    NotFound,
    Rejected(Rejection),
}

impl PaymentOutcome {
    pub(crate) fn from_result(result: Result<PgAnswer, CallError>) -> PaymentOutcome {
        match result {
            Ok(PgAnswer::Accepted { transaction_key }) => PaymentOutcome::Accepted { transaction_key },
            Ok(PgAnswer::Rejected(r)) => PaymentOutcome::Rejected(r),
            Ok(other) => {
                PaymentOutcome::Unknown(Unknown::UnexpectedAnswer { status: 200, detail: format!("{other:?}") })
            }
            Err(CallError::NotDelivered(n)) => PaymentOutcome::NotDelivered(n),
            Err(CallError::Unknown(u)) => PaymentOutcome::Unknown(u),
        }
    }
}

impl<T> LookupOutcome<T> {
    pub(crate) fn from_result(result: Result<PgAnswer, CallError>, pick: impl FnOnce(PgAnswer) -> Option<T>) -> Self {
        match result {
            Ok(PgAnswer::NotFound) => LookupOutcome::NotFound,
            Ok(PgAnswer::Rejected(r)) => LookupOutcome::Rejected(r),
            Ok(answer) => {
                let detail = format!("{answer:?}");
                match pick(answer) {
                    Some(found) => LookupOutcome::Found(found),
                    None => LookupOutcome::Unknown(Unknown::UnexpectedAnswer { status: 200, detail }),
                }
            }
            Err(CallError::NotDelivered(n)) => LookupOutcome::NotDelivered(n),
            Err(CallError::Unknown(u)) => LookupOutcome::Unknown(u),
        }
    }
}

impl<T> LookupOutcome<T> {
    /// What the PG answered: `Ok(Some)` found, `Ok(None)` it has no such transaction;
    /// or why no usable answer came (rejected, not delivered, unknown), for the caller
    /// to retry later. Every caller treats those three alike: the lookup is simply
    /// unanswered.
    pub fn answer(self) -> Result<Option<T>, String> {
        match self {
            LookupOutcome::Found(found) => Ok(Some(found)),
            LookupOutcome::NotFound => Ok(None),
            LookupOutcome::Rejected(r) => Err(r.reason),
            LookupOutcome::NotDelivered(why) => Err(why.to_string()),
            LookupOutcome::Unknown(why) => Err(why.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lookup_answer_is_found_absent_or_the_reason_it_went_unanswered() {
        assert_eq!(LookupOutcome::Found(7).answer(), Ok(Some(7)));
        assert_eq!(LookupOutcome::<i32>::NotFound.answer(), Ok(None));
        let rejected = Rejection { status: 400, code: "Bad Request".into(), reason: "잘못된 요청".into() };
        assert_eq!(LookupOutcome::<i32>::Rejected(rejected).answer(), Err("잘못된 요청".into()));
        let timeout = LookupOutcome::<i32>::Unknown(Unknown::Timeout(Duration::from_secs(1)));
        assert_eq!(timeout.answer(), Err("no answer from the PG within 1s".into()));
        let refused = LookupOutcome::<i32>::NotDelivered(NotDelivered::BulkheadFull);
        assert_eq!(refused.answer(), Err("too many PG calls in flight: nothing was sent".into()));
    }
}
