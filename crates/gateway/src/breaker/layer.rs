//! The breaker as a tower `Layer`: a denied call returns at once without touching the
//! inner service; a granted one is timed and classified into success, failure or ignored.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tower::{Layer, Service};

use super::{CallNotPermitted, CallResult, CircuitBreaker};

/// Decides how a finished call counts for the breaker.
pub type Classifier<R, E> = Arc<dyn Fn(&Result<R, E>) -> CallResult + Send + Sync>;

pub struct CircuitBreakerLayer<R, E> {
    breaker: CircuitBreaker,
    classify: Classifier<R, E>,
}

impl<R, E> CircuitBreakerLayer<R, E> {
    pub fn new(breaker: CircuitBreaker, classify: Classifier<R, E>) -> Self {
        CircuitBreakerLayer { breaker, classify }
    }
}

impl<R, E> Clone for CircuitBreakerLayer<R, E> {
    fn clone(&self) -> Self {
        CircuitBreakerLayer { breaker: self.breaker.clone(), classify: self.classify.clone() }
    }
}

impl<S, R, E> Layer<S> for CircuitBreakerLayer<R, E> {
    type Service = CircuitBreakerService<S, R, E>;

    fn layer(&self, inner: S) -> Self::Service {
        CircuitBreakerService { inner, breaker: self.breaker.clone(), classify: self.classify.clone() }
    }
}

pub struct CircuitBreakerService<S, R, E> {
    inner: S,
    breaker: CircuitBreaker,
    classify: Classifier<R, E>,
}

impl<S: Clone, R, E> Clone for CircuitBreakerService<S, R, E> {
    fn clone(&self) -> Self {
        CircuitBreakerService {
            inner: self.inner.clone(),
            breaker: self.breaker.clone(),
            classify: self.classify.clone(),
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
            Err(denied) => return Box::pin(std::future::ready(Err(E::from(denied)))),
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
