//! Every resilience knob of the gateway client, with the defaults chosen by measurement
//! against the simulator (docs/resilience.md has the table and how to reproduce it).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::breaker::{BreakerConfig, HalfOpenTimeoutTarget, InitialState, SlidingWindow};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ResilienceConfig {
    /// TCP connect; failing it proves nothing was sent (so it is retried).
    #[serde(with = "crate::duration_ms")]
    pub connect_timeout: Duration,
    /// One whole exchange. Above the reference's 500 ms worst latency with room to spare;
    /// not 6 s "because processing takes 5 s": processing happens after the answer.
    #[serde(with = "crate::duration_ms")]
    pub response_timeout: Duration,
    /// All attempts of one call together; shorter than a buyer's HTTP timeout.
    #[serde(with = "crate::duration_ms")]
    pub deadline: Duration,
    pub retry: RetryConfig,
    pub bulkhead: BulkheadConfig,
    pub payment_breaker: BreakerConfig,
    pub status_breaker: BreakerConfig,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetryConfig {
    /// Attempts per call, the first included.
    pub max_attempts: u32,
    /// Attempts at this gateway when a further gateway admits payments: a payment that
    /// surely did not arrive moves on after these instead of spending `max_attempts`.
    pub attempts_before_failover: u32,
    #[serde(with = "crate::duration_ms")]
    pub initial_backoff: Duration,
    #[serde(with = "crate::duration_ms")]
    pub max_backoff: Duration,
    /// Retries may add at most this share of the calls made (1.0 = double the load).
    pub budget_ratio: f32,
    /// Retries always allowed per second, so a quiet client can still retry.
    pub budget_min_per_second: u32,
    #[serde(with = "crate::duration_ms")]
    pub budget_window: Duration,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BulkheadConfig {
    /// Calls at the PG at once per stack (payments, status): one HTTP/1.1 connection each.
    pub max_concurrent_calls: usize,
    /// How long one more waits for a place before it is refused, nothing sent. Zero:
    /// refused at once. Never longer than leaves the attempt time to finish within the
    /// deadline.
    #[serde(with = "crate::duration_ms")]
    pub max_wait: Duration,
}

impl Default for ResilienceConfig {
    fn default() -> Self {
        ResilienceConfig {
            connect_timeout: Duration::from_millis(250),
            response_timeout: Duration::from_millis(1_000),
            deadline: Duration::from_millis(4_000),
            retry: RetryConfig::default(),
            bulkhead: BulkheadConfig::default(),
            payment_breaker: BreakerConfig {
                // Open only on a PG that takes nothing: every one of the last 100 calls
                // failed. A PG that still takes some payments (a brownout) gets them,
                // with retries capped by the budget; opening at 65% refused the 30% a
                // 70%-failing PG would have taken (docs/resilience.md, "Keep selling").
                // A timed-out payment counts by what the PG did with it (evidence.rs).
                failure_rate_threshold: 100.0,
                // Slowness alone never opens it: a PG that takes payments late is
                // limited by the bulkhead; one that takes nothing is found by evidence.
                // (Resilience4j's default: no attempt lasts a minute.)
                slow_call_rate_threshold: 100.0,
                slow_call_duration: Duration::from_secs(60),
                sliding_window: SlidingWindow::Count(100),
                minimum_calls: 100,
                // A hung PG: 10 payments in a row without an answer or a trace.
                open_after_unanswered: 10,
                // Recovery is tried with real payments, one at a time: one refused
                // checkout in 25 (at most 5 a second), and at least one a second.
                permitted_calls_in_half_open: 1,
                half_open_after_refusals: 25,
                min_wait_in_open: Duration::from_millis(200),
                wait_in_open: Duration::from_secs(1),
                automatic_transition: true,
                max_wait_in_half_open: Duration::ZERO,
                half_open_timeout_target: HalfOpenTimeoutTarget::Open,
                initial_state: InitialState::Closed,
            },
            status_breaker: BreakerConfig {
                // Lookups do not fail at random, so a lower bar and a smaller window.
                failure_rate_threshold: 50.0,
                slow_call_rate_threshold: 80.0,
                slow_call_duration: Duration::from_millis(800),
                sliding_window: SlidingWindow::Count(50),
                minimum_calls: 20,
                permitted_calls_in_half_open: 5,
                wait_in_open: Duration::from_secs(5),
                automatic_transition: true,
                max_wait_in_half_open: Duration::ZERO,
                half_open_timeout_target: HalfOpenTimeoutTarget::Open,
                initial_state: InitialState::Closed,
                ..BreakerConfig::default()
            },
        }
    }
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            max_attempts: 6,
            attempts_before_failover: 2,
            initial_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_millis(400),
            budget_ratio: 1.0,
            budget_min_per_second: 10,
            budget_window: Duration::from_secs(10),
        }
    }
}

impl Default for BulkheadConfig {
    fn default() -> Self {
        BulkheadConfig { max_concurrent_calls: 128, max_wait: Duration::ZERO }
    }
}

impl ResilienceConfig {
    pub fn validate(&self) -> Result<(), String> {
        if self.connect_timeout.is_zero() || self.response_timeout.is_zero() {
            return Err("timeouts must be positive".into());
        }
        if self.deadline < self.response_timeout {
            return Err("the deadline must allow at least one whole attempt (deadline >= response_timeout)".into());
        }
        if self.retry.max_attempts == 0 || self.retry.attempts_before_failover == 0 {
            return Err("retry.max_attempts and attempts_before_failover count the first attempt: at least 1".into());
        }
        if self.retry.initial_backoff > self.retry.max_backoff {
            return Err("retry.initial_backoff must not exceed retry.max_backoff".into());
        }
        if !(0.0..=1000.0).contains(&self.retry.budget_ratio) || self.retry.budget_window < Duration::from_secs(1) {
            return Err("retry.budget_ratio must be in [0, 1000] and budget_window at least 1 s".into());
        }
        if self.bulkhead.max_concurrent_calls == 0 {
            return Err("bulkhead.max_concurrent_calls must be at least 1".into());
        }
        self.payment_breaker.validate().map_err(|e| format!("payment_breaker: {e}"))?;
        self.status_breaker.validate().map_err(|e| format!("status_breaker: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate_and_avoid_the_known_traps() {
        let c = ResilienceConfig::default();
        assert_eq!(c.validate(), Ok(()));
        assert!(c.response_timeout > Duration::from_millis(500), "above the reference's worst latency");
        assert!(c.response_timeout < Duration::from_secs(6));
        assert!(c.payment_breaker.failure_rate_threshold > 40.0, "above the reference's normal failure rate");
        assert!(c.payment_breaker.minimum_calls > 1);
    }

    #[test]
    fn config_reads_from_partial_toml_like_json() {
        let c: ResilienceConfig =
            serde_json::from_str(r#"{"response_timeout": 1500, "retry": {"max_attempts": 3}}"#).unwrap();
        assert_eq!(c.response_timeout, Duration::from_millis(1_500));
        assert_eq!(c.retry.max_attempts, 3);
        assert_eq!(c.retry.initial_backoff, Duration::from_millis(50), "unnamed knobs keep defaults");
        assert!(serde_json::from_str::<ResilienceConfig>(r#"{"no_such_knob": 1}"#).is_err());
    }
}
