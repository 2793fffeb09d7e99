//! The bulkhead: at most `max_concurrent_calls` attempts of one stack at the PG at once.
//! One more waits up to `max_wait` for a place (Resilience4j's `maxWaitDuration`, Polly's
//! queue) and is then refused, nothing sent; it never waits so long that the attempt could
//! not finish before the call's deadline, so the deadline never cuts a call that is still
//! only waiting (that would make a call we never sent look unknown). It sits outside the
//! breaker (whose clock must not run while a call waits), so before waiting it asks the
//! breaker whether the call would be let through: while it is open, the call is refused
//! at once rather than after waiting for a place.
//!
//! Written here because tower has the two ends and not the middle: `ConcurrencyLimit`
//! waits without a bound, `LoadShed` over it refuses without waiting.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio::time::Instant;
use tower::{Layer, Service};

use crate::breaker::CircuitBreaker;
use crate::outcome::{CallError, NotDelivered, PgAnswer};
use crate::retry::Attempted;

#[derive(Clone)]
pub(crate) struct BulkheadLayer {
    places: Arc<Semaphore>,
    max_wait: Duration,
    /// The call's whole deadline and one attempt's longest exchange: a wait ends in time
    /// for the attempt to finish before the deadline.
    deadline: Duration,
    attempt_timeout: Duration,
    /// The breaker inside: no call waits for a place only to be refused by it.
    breaker: CircuitBreaker,
}

impl BulkheadLayer {
    pub(crate) fn new(
        max_concurrent_calls: usize,
        max_wait: Duration,
        deadline: Duration,
        attempt_timeout: Duration,
        breaker: CircuitBreaker,
    ) -> BulkheadLayer {
        let places = Arc::new(Semaphore::new(max_concurrent_calls));
        BulkheadLayer { places, max_wait, deadline, attempt_timeout, breaker }
    }
}

impl<S> Layer<S> for BulkheadLayer {
    type Service = Bulkhead<S>;

    fn layer(&self, inner: S) -> Bulkhead<S> {
        Bulkhead { inner, layer: self.clone() }
    }
}

#[derive(Clone)]
pub(crate) struct Bulkhead<S> {
    inner: S,
    layer: BulkheadLayer,
}

impl<S> Bulkhead<S> {
    /// How long this attempt may wait for a place.
    fn patience(&self, attempted: &Attempted) -> Duration {
        let last_start = attempted.started + self.layer.deadline.saturating_sub(self.layer.attempt_timeout);
        self.layer.max_wait.min(last_start.saturating_duration_since(Instant::now()))
    }
}

impl<S> Service<Attempted> for Bulkhead<S>
where
    S: Service<Attempted, Response = PgAnswer, Error = CallError> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = PgAnswer;
    type Error = CallError;
    type Future = Pin<Box<dyn Future<Output = Result<PgAnswer, CallError>> + Send>>;

    /// Readiness is the place, taken in `call`: a waiting attempt must be able to give up.
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), CallError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, attempted: Attempted) -> Self::Future {
        // The inner service was made ready for this call; a clone takes its place.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        if let Ok(place) = self.layer.places.clone().try_acquire_owned() {
            return Box::pin(async move {
                let _place = place;
                inner.call(attempted).await
            });
        }
        let patience = self.patience(&attempted);
        if patience.is_zero() {
            return Box::pin(std::future::ready(Err(NotDelivered::BulkheadFull.into())));
        }
        // Asked as the breaker itself asks, so that a refusal here counts among its own;
        // a permit granted is handed back at once (the breaker inside asks again).
        if let Err(denied) = self.layer.breaker.try_acquire() {
            return Box::pin(std::future::ready(Err(denied.into())));
        }
        let places = self.layer.places.clone();
        Box::pin(async move {
            let Ok(Ok(_place)) = tokio::time::timeout(patience, places.acquire_owned()).await else {
                return Err(NotDelivered::BulkheadFull.into());
            };
            inner.call(attempted).await
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use tower::ServiceExt;

    use super::*;
    use crate::transport::PgCall;

    /// An inner service whose calls last `answer_after` and count how many started.
    #[derive(Clone)]
    struct Pg {
        answer_after: Duration,
        started: Arc<AtomicUsize>,
    }

    impl Service<Attempted> for Pg {
        type Response = PgAnswer;
        type Error = CallError;
        type Future = Pin<Box<dyn Future<Output = Result<PgAnswer, CallError>> + Send>>;

        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), CallError>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, _: Attempted) -> Self::Future {
            self.started.fetch_add(1, Ordering::SeqCst);
            let answer_after = self.answer_after;
            Box::pin(async move {
                tokio::time::sleep(answer_after).await;
                Ok(PgAnswer::NotFound)
            })
        }
    }

    fn bulkhead(places: usize, max_wait_ms: u64, answer_after_ms: u64) -> (Bulkhead<Pg>, Arc<AtomicUsize>) {
        let started = Arc::new(AtomicUsize::new(0));
        let pg = Pg { answer_after: Duration::from_millis(answer_after_ms), started: started.clone() };
        let breaker = CircuitBreaker::new("pg.payments", crate::breaker::BreakerConfig::default()).unwrap();
        let (max_wait, deadline, attempt) =
            (Duration::from_millis(max_wait_ms), Duration::from_secs(4), Duration::from_secs(1));
        (BulkheadLayer::new(places, max_wait, deadline, attempt, breaker).layer(pg), started)
    }

    fn attempt() -> Attempted {
        Attempted { call: PgCall::GetTransaction("k".into()), started: Instant::now(), max_attempts: None }
    }

    /// Starts `n` calls that hold their places, and lets them reach the PG.
    async fn occupy(bulkhead: &Bulkhead<Pg>, n: usize) {
        for _ in 0..n {
            tokio::spawn(bulkhead.clone().oneshot(attempt()));
        }
        tokio::task::yield_now().await;
    }

    #[tokio::test(start_paused = true)]
    async fn without_a_wait_one_call_too_many_is_refused_at_once() {
        let (bulkhead, started) = bulkhead(2, 0, 300);
        occupy(&bulkhead, 2).await;
        let asked = Instant::now();
        assert_eq!(bulkhead.clone().oneshot(attempt()).await, Err(NotDelivered::BulkheadFull.into()));
        assert_eq!(asked.elapsed(), Duration::ZERO);
        assert_eq!(started.load(Ordering::SeqCst), 2, "the refused call sent nothing");
    }

    #[tokio::test(start_paused = true)]
    async fn a_waiting_call_takes_the_first_place_that_frees() {
        let (bulkhead, started) = bulkhead(2, 500, 300);
        occupy(&bulkhead, 2).await;
        let asked = Instant::now();
        assert_eq!(bulkhead.clone().oneshot(attempt()).await, Ok(PgAnswer::NotFound));
        assert_eq!(asked.elapsed(), Duration::from_millis(600), "300 ms waiting, 300 ms at the PG");
        assert_eq!(started.load(Ordering::SeqCst), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn a_call_that_waits_out_max_wait_is_refused_unsent() {
        let (bulkhead, started) = bulkhead(1, 200, 1_000);
        occupy(&bulkhead, 1).await;
        let asked = Instant::now();
        assert_eq!(bulkhead.clone().oneshot(attempt()).await, Err(NotDelivered::BulkheadFull.into()));
        assert_eq!(asked.elapsed(), Duration::from_millis(200));
        assert_eq!(started.load(Ordering::SeqCst), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn no_wait_outlasts_the_last_moment_an_attempt_can_still_finish() {
        // Deadline 4 s, attempts up to 1 s: a call that started 2.5 s ago may wait 0.5 s,
        // not the 10 s max_wait allows.
        let (bulkhead, _) = bulkhead(1, 10_000, 10_000);
        occupy(&bulkhead, 1).await;
        let late = Attempted { started: Instant::now() - Duration::from_millis(2_500), ..attempt() };
        let asked = Instant::now();
        assert_eq!(bulkhead.clone().oneshot(late).await, Err(NotDelivered::BulkheadFull.into()));
        assert_eq!(asked.elapsed(), Duration::from_millis(500));
        let too_late = Attempted { started: Instant::now() - Duration::from_secs(3), ..attempt() };
        let asked = Instant::now();
        assert_eq!(bulkhead.clone().oneshot(too_late).await, Err(NotDelivered::BulkheadFull.into()));
        assert_eq!(asked.elapsed(), Duration::ZERO, "no time left to wait: refused at once");
    }

    #[tokio::test(start_paused = true)]
    async fn while_the_breaker_is_open_no_call_waits_for_a_place() {
        let (bulkhead, started) = bulkhead(1, 2_000, 1_000);
        occupy(&bulkhead, 1).await;
        bulkhead.layer.breaker.force_open();
        let asked = Instant::now();
        let refused = bulkhead.clone().oneshot(attempt()).await;
        assert!(matches!(refused, Err(CallError::NotDelivered(NotDelivered::CircuitOpen { .. }))), "{refused:?}");
        assert_eq!(asked.elapsed(), Duration::ZERO, "refused at once, not after waiting for the place");
        assert_eq!(started.load(Ordering::SeqCst), 1);
        assert_eq!(bulkhead.layer.breaker.metrics().not_permitted, 1, "counted as the breaker's refusal");
    }
}
