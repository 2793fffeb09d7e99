//! What the payment breaker counts: what the PG did with a payment, not how long it took.
//!
//! An answer is judged at once: any answer from the PG is a success (declines come by
//! callback, a 4xx is our fault), a request it surely never took (refused connection,
//! 503, 429) a failure, and its "unstable, try again" 500 a `Transient` failure: the
//! reference PG fails 40% of requests that way at random, so a half-open trial that meets
//! one is tried again soon instead of 25 refusals later. A payment without an answer (a timeout, a
//! connection lost after sending, an unreadable or proxy 5xx answer) is judged once the
//! PG has been asked about it: one lookup by orderId through the status stack, at once.
//! A PG that holds the payment took it, slowly: a success. A PG that has no trace of it,
//! or cannot be asked, is silent: `Unanswered`, a failure that, in a run, opens the
//! breaker on a hung PG within seconds. The buyer is not kept waiting for the lookup:
//! they have their PENDING when the timeout ends.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tower::ServiceExt;
use tower::retry::budget::{Budget, TpsBudget};

use crate::breaker::CallResult;
use crate::breaker::layer::{Classify, Judgement};
use crate::client::Stack;
use crate::outcome::{CallError, NotDelivered, PgAnswer};
use crate::retry::Attempted;
use crate::transport::PgCall;

/// The status stack's classification: any answer is a success, our own refusals are
/// ignored, everything else (lookups are safe to repeat, so a timeout is just a
/// failure) a failure.
pub(crate) fn by_answer(result: &Result<PgAnswer, CallError>) -> CallResult {
    match result {
        Ok(_) => CallResult::Success,
        Err(CallError::NotDelivered(NotDelivered::BulkheadFull | NotDelivered::CircuitOpen { .. })) => {
            CallResult::Ignored
        }
        Err(_) => CallResult::Failure,
    }
}

/// The payment stack's classification: answers at once, silence once the PG was asked.
pub(crate) struct PaymentEvidence {
    /// The gateway's status stack (its breaker, bulkhead and timeouts apply to the
    /// question too: a hung PG's status API is cut off like its payments).
    lookups: Stack,
    /// The status stack's retry budget: a question is one more call it may retry.
    budget: Arc<TpsBudget>,
    /// One lookup's whole time, retries included.
    deadline: Duration,
}

impl PaymentEvidence {
    pub(crate) fn new(lookups: Stack, budget: Arc<TpsBudget>, deadline: Duration) -> PaymentEvidence {
        PaymentEvidence { lookups, budget, deadline }
    }
}

impl Classify<Attempted, PgAnswer, CallError> for PaymentEvidence {
    /// The orderId of a payment: the one thing the PG can be asked about it by.
    type Note = Option<String>;

    fn note(&self, request: &Attempted) -> Option<String> {
        match &request.call {
            PgCall::RequestPayment(payment) => Some(payment.order_id.clone()),
            PgCall::GetTransaction(_) | PgCall::FindByOrder(_) | PgCall::Cancel { .. } | PgCall::GetCancels(_) => None,
        }
    }

    fn classify(&self, order_id: Option<String>, result: &Result<PgAnswer, CallError>) -> Judgement {
        match (result, order_id) {
            (Err(CallError::NotDelivered(NotDelivered::Unavailable { status: 500, .. })), _) => {
                Judgement::Now(CallResult::Transient)
            }
            (Err(CallError::Unknown(_)), Some(order_id)) => {
                self.budget.deposit();
                let (lookups, deadline) = (self.lookups.clone(), self.deadline);
                Judgement::Later(Box::pin(async move { held_by_pg(lookups, order_id, deadline).await }))
            }
            _ => Judgement::Now(by_answer(result)),
        }
    }
}

/// Asks the PG whether it holds a payment for `order_id`.
async fn held_by_pg(lookups: Stack, order_id: String, deadline: Duration) -> CallResult {
    let question = Attempted { call: PgCall::FindByOrder(order_id), started: Instant::now(), max_attempts: None };
    match tokio::time::timeout(deadline, lookups.oneshot(question)).await {
        Ok(Ok(PgAnswer::Transactions(list))) if !list.transactions.is_empty() => CallResult::Success,
        _ => CallResult::Unanswered,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use tower::util::BoxCloneSyncService;

    use super::*;
    use crate::outcome::Unknown;
    use crate::wire::{CardType, OrderTransactions, PaymentRequest, TransactionStatus, TransactionSummary};

    fn payment() -> Attempted {
        let call = PgCall::RequestPayment(PaymentRequest {
            order_id: "ORD000001-1".into(),
            card_type: CardType::Samsung,
            card_no: "1234-5678-9814-1451".into(),
            amount: 5000,
            callback_url: "http://127.0.0.1:9/cb".into(),
        });
        Attempted { call, started: Instant::now(), max_attempts: None }
    }

    /// A status stack that answers every lookup with `answer` and counts the questions.
    fn lookups(answer: Result<PgAnswer, CallError>) -> (Stack, Arc<AtomicUsize>) {
        let asked = Arc::new(AtomicUsize::new(0));
        let count = asked.clone();
        let stack = BoxCloneSyncService::new(tower::service_fn(move |question: Attempted| {
            assert!(matches!(question.call, PgCall::FindByOrder(ref id) if id == "ORD000001-1"), "asked by orderId");
            count.fetch_add(1, Ordering::Relaxed);
            std::future::ready(answer.clone())
        }));
        (stack, asked)
    }

    fn budget() -> Arc<TpsBudget> {
        Arc::new(TpsBudget::new(Duration::from_secs(10), 10, 1.0))
    }

    fn held() -> PgAnswer {
        PgAnswer::Transactions(OrderTransactions {
            order_id: "ORD000001-1".into(),
            transactions: vec![TransactionSummary {
                transaction_key: "20261207:TR:000001".into(),
                status: TransactionStatus::Pending,
                reason: None,
            }],
        })
    }

    async fn judged_later(evidence: &PaymentEvidence, result: Result<PgAnswer, CallError>) -> CallResult {
        match evidence.classify(evidence.note(&payment()), &result) {
            Judgement::Later(pending) => pending.await,
            Judgement::Now(now) => panic!("judged at once as {now:?}, without asking"),
        }
    }

    fn timeout() -> Result<PgAnswer, CallError> {
        Err(Unknown::Timeout(Duration::from_secs(1)).into())
    }

    #[tokio::test]
    async fn a_timed_out_payment_the_pg_holds_is_a_success() {
        let (stack, asked) = lookups(Ok(held()));
        let evidence = PaymentEvidence::new(stack, budget(), Duration::from_secs(1));
        assert_eq!(judged_later(&evidence, timeout()).await, CallResult::Success);
        let lost = Err(Unknown::ConnectionLost("reset".into()).into());
        assert_eq!(judged_later(&evidence, lost).await, CallResult::Success);
        assert_eq!(asked.load(Ordering::Relaxed), 2);
    }

    #[tokio::test]
    async fn a_timed_out_payment_the_pg_has_no_trace_of_is_unanswered() {
        let (stack, _) = lookups(Ok(PgAnswer::NotFound));
        let evidence = PaymentEvidence::new(stack, budget(), Duration::from_secs(1));
        assert_eq!(judged_later(&evidence, timeout()).await, CallResult::Unanswered);
    }

    #[tokio::test]
    async fn a_pg_that_cannot_be_asked_is_unanswered() {
        for failed in [
            Err(Unknown::Timeout(Duration::from_secs(1)).into()),
            Err(NotDelivered::CircuitOpen { breaker: "pg.status".into(), state: crate::breaker::State::Open }.into()),
            Err(NotDelivered::Connect("refused".into()).into()),
        ] {
            let (stack, _) = lookups(failed);
            let evidence = PaymentEvidence::new(stack, budget(), Duration::from_secs(1));
            assert_eq!(judged_later(&evidence, timeout()).await, CallResult::Unanswered);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_lookup_that_never_ends_is_unanswered_after_the_deadline() {
        let hung: Stack = BoxCloneSyncService::new(tower::service_fn(|_: Attempted| std::future::pending()));
        let evidence = PaymentEvidence::new(hung, budget(), Duration::from_secs(2));
        let started = Instant::now();
        assert_eq!(judged_later(&evidence, timeout()).await, CallResult::Unanswered);
        assert_eq!(started.elapsed(), Duration::from_secs(2));
    }

    #[test]
    fn answers_are_judged_at_once_without_asking() {
        let (stack, asked) = lookups(Ok(held()));
        let evidence = PaymentEvidence::new(stack, budget(), Duration::from_secs(1));
        let now = |result: Result<PgAnswer, CallError>| match evidence.classify(evidence.note(&payment()), &result) {
            Judgement::Now(judged) => judged,
            Judgement::Later(_) => panic!("asked the PG about an answer"),
        };
        assert_eq!(now(Ok(PgAnswer::Accepted { transaction_key: "k".into() })), CallResult::Success);
        assert_eq!(
            now(Err(NotDelivered::Unavailable { status: 503, message: String::new() }.into())),
            CallResult::Failure
        );
        assert_eq!(now(Err(NotDelivered::Connect("refused".into()).into())), CallResult::Failure);
        let unstable = NotDelivered::Unavailable { status: 500, message: crate::wire::message::UNSTABLE.into() };
        assert_eq!(now(Err(unstable.into())), CallResult::Transient, "the PG's own try-again");
        assert_eq!(now(Err(NotDelivered::BulkheadFull.into())), CallResult::Ignored);
        assert_eq!(asked.load(Ordering::Relaxed), 0);
    }
}
