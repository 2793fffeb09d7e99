//! The breaker as a tower `Layer`: a denied call returns at once without touching the
//! inner service; a granted one is timed and classified into success, failure or ignored,
//! either at once or, when the result alone cannot tell, once the evidence is in. The
//! caller never waits for that evidence: it has its result as soon as the call ends.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::time::Instant;
use tower::{Layer, Service};

use super::{CallNotPermitted, CallResult, CircuitBreaker};

/// A judgement to be made later, off the caller's path.
pub type Pending = Pin<Box<dyn Future<Output = CallResult> + Send>>;

/// How a finished call counts for the breaker.
pub enum Judgement {
    Now(CallResult),
    /// Recorded when the future ends, with the call's own duration. The permit is held
    /// meanwhile: a half-open trial stays the only one until it is judged.
    Later(Pending),
}

/// Decides how a finished call counts. `note` keeps what the judgement needs of the
/// request, which the inner service consumes.
pub trait Classify<Req, R, E>: Send + Sync + 'static {
    type Note: Send + 'static;
    fn note(&self, request: &Req) -> Self::Note;
    fn classify(&self, note: Self::Note, result: &Result<R, E>) -> Judgement;
}

/// A classifier that decides on the result alone, at once.
pub struct ByResult<F>(pub F);

impl<F, Req, R, E> Classify<Req, R, E> for ByResult<F>
where
    F: Fn(&Result<R, E>) -> CallResult + Send + Sync + 'static,
{
    type Note = ();

    fn note(&self, _: &Req) {}

    fn classify(&self, (): (), result: &Result<R, E>) -> Judgement {
        Judgement::Now((self.0)(result))
    }
}

pub struct CircuitBreakerLayer<C> {
    breaker: CircuitBreaker,
    classify: Arc<C>,
}

impl<C> CircuitBreakerLayer<C> {
    pub fn new(breaker: CircuitBreaker, classify: C) -> Self {
        CircuitBreakerLayer { breaker, classify: Arc::new(classify) }
    }
}

impl<C> Clone for CircuitBreakerLayer<C> {
    fn clone(&self) -> Self {
        CircuitBreakerLayer { breaker: self.breaker.clone(), classify: self.classify.clone() }
    }
}

impl<S, C> Layer<S> for CircuitBreakerLayer<C> {
    type Service = CircuitBreakerService<S, C>;

    fn layer(&self, inner: S) -> Self::Service {
        CircuitBreakerService { inner, breaker: self.breaker.clone(), classify: self.classify.clone() }
    }
}

pub struct CircuitBreakerService<S, C> {
    inner: S,
    breaker: CircuitBreaker,
    classify: Arc<C>,
}

impl<S: Clone, C> Clone for CircuitBreakerService<S, C> {
    fn clone(&self) -> Self {
        CircuitBreakerService {
            inner: self.inner.clone(),
            breaker: self.breaker.clone(),
            classify: self.classify.clone(),
        }
    }
}

impl<S, C, Req, R, E> Service<Req> for CircuitBreakerService<S, C>
where
    S: Service<Req, Response = R, Error = E>,
    S::Future: Send + 'static,
    C: Classify<Req, R, E>,
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
            Err(denied) => return Box::pin(std::future::ready(Err(E::from(denied)))),
        };
        let note = self.classify.note(&request);
        let call = self.inner.call(request);
        let classify = self.classify.clone();
        Box::pin(async move {
            let result = call.await;
            match classify.classify(note, &result) {
                Judgement::Now(judged) => permit.record(judged),
                Judgement::Later(pending) => {
                    let elapsed = Instant::now().saturating_duration_since(permit.started);
                    tokio::spawn(async move { permit.record_with(pending.await, elapsed) });
                }
            }
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
