//! Retry policy for tower's `Retry`: only failures where the request surely did not
//! reach the PG, exponential backoff with full jitter, a cap on attempts, a retry budget
//! shared by all calls, and never past the total deadline.

use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use tokio::time::Instant;
use tower::retry::Policy;
use tower::retry::budget::{Budget, TpsBudget};

use crate::config::RetryConfig;
use crate::observer::{GatewayEvent, GatewayObserver};
use crate::outcome::{CallError, NotDelivered, PgAnswer};
use crate::transport::PgCall;

/// A call with the instant it started, so every attempt knows the deadline, and its
/// own cap on attempts when it has one (a payment another gateway can take).
#[derive(Debug, Clone)]
pub struct Attempted {
    pub call: PgCall,
    pub started: Instant,
    pub max_attempts: Option<u32>,
}

/// Cloned per call by `tower::retry::Retry`; `attempts` is that call's own count.
#[derive(Clone)]
pub(crate) struct RetryPolicy {
    config: RetryConfig,
    budget: Arc<TpsBudget>,
    observer: Arc<dyn GatewayObserver>,
    /// No retry is started unless it can finish (backoff + one attempt) before this.
    deadline: Duration,
    attempt_timeout: Duration,
    attempts: u32,
}

impl RetryPolicy {
    pub(crate) fn new(
        config: RetryConfig,
        budget: Arc<TpsBudget>,
        observer: Arc<dyn GatewayObserver>,
        deadline: Duration,
        attempt_timeout: Duration,
    ) -> RetryPolicy {
        RetryPolicy { config, budget, observer, deadline, attempt_timeout, attempts: 1 }
    }
}

/// Retrying is safe only where the PG surely did nothing; an open breaker or a full
/// bulkhead is our own refusal, and retrying it would only add load.
pub fn is_retryable(error: &CallError) -> bool {
    matches!(
        error,
        CallError::NotDelivered(
            NotDelivered::Connect(_) | NotDelivered::Unavailable { .. } | NotDelivered::RateLimited
        )
    )
}

/// Full jitter: uniform in [0, min(max, initial * 2^(attempt-1))].
pub fn backoff(config: &RetryConfig, attempt: u32, rng: &mut impl Rng) -> Duration {
    let exp = config.initial_backoff.saturating_mul(1u32 << (attempt.saturating_sub(1)).min(20));
    let ceiling = exp.min(config.max_backoff);
    Duration::from_micros(rng.random_range(0..=ceiling.as_micros() as u64))
}

impl Policy<Attempted, PgAnswer, CallError> for RetryPolicy {
    type Future = tokio::time::Sleep;

    fn retry(&mut self, request: &mut Attempted, result: &mut Result<PgAnswer, CallError>) -> Option<Self::Future> {
        let Err(error) = result else { return None };
        let max_attempts = request.max_attempts.unwrap_or(self.config.max_attempts);
        if !is_retryable(error) || self.attempts >= max_attempts {
            return None;
        }
        let operation = request.call.operation();
        let wait = backoff(&self.config, self.attempts, &mut rand::rng());
        if Instant::now() + wait + self.attempt_timeout > request.started + self.deadline {
            self.observer.on_event(&GatewayEvent::RetryDeadlineReached { operation });
            return None;
        }
        if !self.budget.withdraw() {
            self.observer.on_event(&GatewayEvent::RetryBudgetExhausted { operation });
            return None;
        }
        self.attempts += 1;
        self.observer.on_event(&GatewayEvent::Retry { operation, attempt: self.attempts, backoff: wait });
        Some(tokio::time::sleep(wait))
    }

    fn clone_request(&mut self, request: &Attempted) -> Option<Attempted> {
        Some(request.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outcome::Unknown;
    use rand::SeedableRng;

    #[test]
    fn only_surely_undelivered_failures_are_retryable() {
        assert!(is_retryable(&NotDelivered::Connect("refused".into()).into()));
        assert!(is_retryable(&NotDelivered::Unavailable { status: 500, message: String::new() }.into()));
        assert!(is_retryable(&NotDelivered::RateLimited.into()));
        assert!(!is_retryable(&NotDelivered::BulkheadFull.into()));
        let open = NotDelivered::CircuitOpen { breaker: "b".into(), state: crate::breaker::State::Open };
        assert!(!is_retryable(&open.into()));
        assert!(!is_retryable(&Unknown::Timeout(Duration::from_secs(1)).into()));
        assert!(!is_retryable(&Unknown::ConnectionLost("reset".into()).into()));
    }

    #[test]
    fn backoff_is_full_jitter_under_an_exponential_ceiling() {
        let config = RetryConfig {
            initial_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_millis(300),
            ..RetryConfig::default()
        };
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        for (attempt, ceiling) in [(1, 50), (2, 100), (3, 200), (4, 300), (10, 300)] {
            let draws: Vec<Duration> = (0..2_000).map(|_| backoff(&config, attempt, &mut rng)).collect();
            let max = draws.iter().max().unwrap().as_millis();
            let min = draws.iter().min().unwrap().as_millis();
            assert!(max <= ceiling && max >= ceiling * 9 / 10, "attempt {attempt}: max {max}");
            assert!(min <= ceiling / 10, "attempt {attempt}: full jitter reaches near zero, min {min}");
        }
    }
}
