//! The breaker as a tower `Layer`: a denied call returns at once without touching the
//! inner service; a granted one is timed and classified into success, failure or ignored.
//!
//! Optionally a trickle: while the breaker is OPEN, one denied call in `n` goes through
//! anyway, outside the breaker's books (no permit, nothing recorded). This finds a recovered PG on the request path,
//! however fast the refused calls come (a timer or an out-of-band probe needs time that
//! a burst of instant refusals does not leave), at a cost of 1/n of the calls reaching
//! a PG that is down: Google SRE's adaptive throttling keeps such a trickle for the same
//! reason. Its success closes the breaker (for a breaker that opens only when every call
//! fails, one success is exactly what its half-open would close on).

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::task::{Context, Poll};

use tower::{Layer, Service};

use super::{CallNotPermitted, CallResult, CircuitBreaker, State};

/// Decides how a finished call counts for the breaker.
pub type Classifier<R, E> = Arc<dyn Fn(&Result<R, E>) -> CallResult + Send + Sync>;

pub struct CircuitBreakerLayer<R, E> {
    breaker: CircuitBreaker,
    classify: Classifier<R, E>,
    trickle: Option<Arc<Trickle>>,
}

/// One call in `one_in` refused while OPEN goes through anyway. Refusals are counted
/// wherever they happen: here, and in a caller's pre-check (which then grants a token
/// that the call it lets through takes here).
pub struct Trickle {
    one_in: u64,
    refused: AtomicU64,
    tokens: AtomicU32,
}

impl Trickle {
    pub fn new(one_in: u32) -> Option<Arc<Trickle>> {
        (one_in > 0)
            .then(|| Arc::new(Trickle { one_in: one_in.into(), refused: AtomicU64::new(0), tokens: AtomicU32::new(0) }))
    }

    /// Counts a refusal; true for the one in `one_in` that should go through.
    pub fn on_refused(&self) -> bool {
        (self.refused.fetch_add(1, Ordering::Relaxed) + 1).is_multiple_of(self.one_in)
    }

    /// A pre-check let a call through as the trickle: the call takes this token.
    pub fn grant(&self) {
        self.tokens.fetch_add(1, Ordering::Relaxed);
    }

    fn take(&self) -> bool {
        self.tokens.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |t| t.checked_sub(1)).is_ok()
    }
}

impl<R, E> CircuitBreakerLayer<R, E> {
    pub fn new(breaker: CircuitBreaker, classify: Classifier<R, E>) -> Self {
        CircuitBreakerLayer { breaker, classify, trickle: None }
    }

    /// Lets calls denied by an OPEN breaker through as `trickle` decides.
    pub fn with_trickle(mut self, trickle: Option<Arc<Trickle>>) -> Self {
        self.trickle = trickle;
        self
    }
}

impl<R, E> Clone for CircuitBreakerLayer<R, E> {
    fn clone(&self) -> Self {
        CircuitBreakerLayer {
            breaker: self.breaker.clone(),
            classify: self.classify.clone(),
            trickle: self.trickle.clone(),
        }
    }
}

impl<S, R, E> Layer<S> for CircuitBreakerLayer<R, E> {
    type Service = CircuitBreakerService<S, R, E>;

    fn layer(&self, inner: S) -> Self::Service {
        CircuitBreakerService {
            inner,
            breaker: self.breaker.clone(),
            classify: self.classify.clone(),
            trickle: self.trickle.clone(),
        }
    }
}

pub struct CircuitBreakerService<S, R, E> {
    inner: S,
    breaker: CircuitBreaker,
    classify: Classifier<R, E>,
    trickle: Option<Arc<Trickle>>,
}

impl<S: Clone, R, E> Clone for CircuitBreakerService<S, R, E> {
    fn clone(&self) -> Self {
        CircuitBreakerService {
            inner: self.inner.clone(),
            breaker: self.breaker.clone(),
            classify: self.classify.clone(),
            trickle: self.trickle.clone(),
        }
    }
}

impl<S, Req, R, E> Service<Req> for CircuitBreakerService<S, R, E>
where
    S: Service<Req, Response = R, Error = E>,
    S::Future: Send + 'static,
    E: From<CallNotPermitted> + Send + 'static,
    R: Send + 'static,
{
    type Response = R;
    type Error = E;
    type Future = Pin<Box<dyn Future<Output = Result<R, E>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), E>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Req) -> Self::Future {
        let permit = match self.breaker.try_acquire() {
            Ok(permit) => permit,
            Err(denied) => {
                let trickles =
                    denied.state == State::Open && self.trickle.as_ref().is_some_and(|t| t.take() || t.on_refused());
                if !trickles {
                    return Box::pin(std::future::ready(Err(E::from(denied))));
                }
                let (call, classify, breaker) = (self.inner.call(request), self.classify.clone(), self.breaker.clone());
                return Box::pin(async move {
                    let result = call.await;
                    // The PG took a call again: with a breaker that opens only when every
                    // call fails, one success is what a half-open would close on anyway.
                    if classify(&result) == CallResult::Success && breaker.state() == State::Open {
                        let _ = breaker.transition_to(State::Closed);
                        tracing::info!(
                            breaker = breaker.name(),
                            "a call let through the open breaker succeeded: closed"
                        );
                    }
                    result
                });
            }
        };
        let call = self.inner.call(request);
        let classify = self.classify.clone();
        Box::pin(async move {
            let result = call.await;
            permit.record(classify(&result));
            result
        })
    }
}

/// Resilience4j's error classification: the ignore check runs first, then the record
/// predicate; an error that is neither ignored nor recorded counts as a success.
pub fn classify_error<E>(error: &E, ignore: impl Fn(&E) -> bool, record: impl Fn(&E) -> bool) -> CallResult {
    if ignore(error) {
        CallResult::Ignored
    } else if record(error) {
        CallResult::Failure
    } else {
        CallResult::Success
    }
}
