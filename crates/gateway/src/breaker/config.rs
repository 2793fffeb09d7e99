//! Breaker settings, Resilience4j's knobs with its meanings.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Which outcomes the closed-state window holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SlidingWindow {
    /// The last N outcomes.
    Count(u32),
    /// Outcomes of the last N whole seconds (one bucket per second).
    Time(u32),
}

/// Where a half-open breaker goes when no decision came within `max_wait_in_half_open`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HalfOpenTimeoutTarget {
    Open,
    Closed,
}

/// The state a breaker starts in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InitialState {
    Closed,
    Open,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BreakerConfig {
    /// Percent; the breaker opens when the failure rate is at or above it.
    pub failure_rate_threshold: f64,
    /// Percent; the breaker opens when the share of slow calls is at or above it.
    pub slow_call_rate_threshold: f64,
    /// A call strictly longer than this is slow.
    #[serde(with = "crate::duration_ms")]
    pub slow_call_duration: Duration,
    pub sliding_window: SlidingWindow,
    /// No rate is judged before this many outcomes are in the window.
    pub minimum_calls: u32,
    pub permitted_calls_in_half_open: u32,
    /// The longest OPEN lasts before HALF_OPEN lets a trial call through.
    #[serde(with = "crate::duration_ms")]
    pub wait_in_open: Duration,
    /// OPEN also goes HALF_OPEN, with the call asking, once it has refused this many
    /// calls, but never before `min_wait_in_open`: trials follow the callers' pace, a
    /// fixed share of what is refused. Zero: off (only `wait_in_open`).
    pub half_open_after_refusals: u32,
    #[serde(with = "crate::duration_ms")]
    pub min_wait_in_open: Duration,
    /// OPEN once this many calls in a row ended `Unanswered` (no answer, and no trace of
    /// the call at the other side), whatever the window holds. Zero: off.
    pub open_after_unanswered: u32,
    /// Move OPEN -> HALF_OPEN by a timer, not only when the next call asks.
    pub automatic_transition: bool,
    /// Zero: wait for the probes without limit.
    #[serde(with = "crate::duration_ms")]
    pub max_wait_in_half_open: Duration,
    pub half_open_timeout_target: HalfOpenTimeoutTarget,
    pub initial_state: InitialState,
}

impl Default for BreakerConfig {
    /// Resilience4j's defaults, and the three knobs it lacks off. The gateway client's chosen values are in
    /// `crate::config` with the measurements behind them.
    fn default() -> Self {
        BreakerConfig {
            failure_rate_threshold: 50.0,
            slow_call_rate_threshold: 100.0,
            slow_call_duration: Duration::from_secs(60),
            sliding_window: SlidingWindow::Count(100),
            minimum_calls: 100,
            permitted_calls_in_half_open: 10,
            wait_in_open: Duration::from_secs(60),
            half_open_after_refusals: 0,
            min_wait_in_open: Duration::ZERO,
            open_after_unanswered: 0,
            automatic_transition: false,
            max_wait_in_half_open: Duration::ZERO,
            half_open_timeout_target: HalfOpenTimeoutTarget::Open,
            initial_state: InitialState::Closed,
        }
    }
}

impl BreakerConfig {
    pub fn validate(&self) -> Result<(), String> {
        let percent = |name: &str, v: f64| {
            if v > 0.0 && v <= 100.0 { Ok(()) } else { Err(format!("{name} must be in (0, 100], got {v}")) }
        };
        percent("failure_rate_threshold", self.failure_rate_threshold)?;
        percent("slow_call_rate_threshold", self.slow_call_rate_threshold)?;
        let window = match self.sliding_window {
            SlidingWindow::Count(n) | SlidingWindow::Time(n) => n,
        };
        if window == 0 || self.minimum_calls == 0 || self.permitted_calls_in_half_open == 0 {
            return Err("window size, minimum_calls and permitted_calls_in_half_open must be at least 1".into());
        }
        if self.min_wait_in_open > self.wait_in_open {
            return Err("min_wait_in_open must not exceed wait_in_open".into());
        }
        Ok(())
    }
}
