//! Property test: random call sequences drive the breaker and a deliberately simple
//! reference model (count window, lazy OPEN -> HALF_OPEN); both must agree on every
//! permission, state and window figure.

use std::collections::VecDeque;
use std::time::Duration;

use gateway::breaker::core::{Core, State};
use gateway::breaker::{BreakerConfig, CallResult, SlidingWindow};
use proptest::prelude::*;
use tokio::time::Instant;

const SIZE: usize = 8;
const MIN: usize = 5;
const PERMITS: usize = 3;
const WAIT_MS: u64 = 1_000;
const SLOW_MS: u64 = 100;

fn config() -> BreakerConfig {
    BreakerConfig {
        failure_rate_threshold: 50.0,
        slow_call_rate_threshold: 75.0,
        slow_call_duration: Duration::from_millis(SLOW_MS),
        sliding_window: SlidingWindow::Count(SIZE as u32),
        minimum_calls: MIN as u32,
        permitted_calls_in_half_open: PERMITS as u32,
        wait_in_open: Duration::from_millis(WAIT_MS),
        ..BreakerConfig::default()
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Mode {
    Closed,
    Open { until_ms: u64 },
    HalfOpen { permits: usize },
}

/// The textbook breaker, written for clarity rather than speed.
struct Model {
    mode: Mode,
    window: VecDeque<(bool, bool)>,
}

impl Model {
    fn acquire(&mut self, now_ms: u64) -> bool {
        if let Mode::Open { until_ms } = self.mode
            && now_ms > until_ms
        {
            self.mode = Mode::HalfOpen { permits: PERMITS };
            self.window.clear();
        }
        match &mut self.mode {
            Mode::Closed => true,
            Mode::HalfOpen { permits } if *permits > 0 => {
                *permits -= 1;
                true
            }
            _ => false,
        }
    }

    fn record(&mut self, failed: bool, slow: bool, now_ms: u64) {
        let (cap, min) = match self.mode {
            Mode::HalfOpen { .. } => (PERMITS, MIN.min(PERMITS)),
            _ => (SIZE, MIN.min(SIZE)),
        };
        if self.window.len() == cap {
            self.window.pop_front();
        }
        self.window.push_back((failed, slow));
        if self.window.len() < min {
            return;
        }
        let n = self.window.len() as f64;
        let failure = self.window.iter().filter(|w| w.0).count() as f64 * 100.0 / n;
        let slowness = self.window.iter().filter(|w| w.1).count() as f64 * 100.0 / n;
        let exceeded = failure >= 50.0 || slowness >= 75.0;
        match self.mode {
            Mode::Closed if exceeded => self.mode = Mode::Open { until_ms: now_ms + WAIT_MS },
            Mode::HalfOpen { .. } if exceeded => self.mode = Mode::Open { until_ms: now_ms + WAIT_MS },
            Mode::HalfOpen { .. } => {
                self.mode = Mode::Closed;
                self.window.clear();
            }
            _ => {}
        }
    }

    fn state(&self) -> State {
        match self.mode {
            Mode::Closed => State::Closed,
            Mode::Open { .. } => State::Open,
            Mode::HalfOpen { .. } => State::HalfOpen,
        }
    }
}

#[derive(Debug, Clone)]
enum Op {
    Call { failed: bool, slow: bool, gap_ms: u64 },
    Wait { ms: u64 },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (any::<bool>(), prop::bool::weighted(0.2), 0u64..300).prop_map(|(failed, slow, gap_ms)| Op::Call { failed, slow, gap_ms }),
        1 => (0u64..2_500).prop_map(|ms| Op::Wait { ms }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2_000, ..ProptestConfig::default() })]

    #[test]
    fn the_breaker_agrees_with_the_reference_model(ops in prop::collection::vec(op(), 1..200)) {
        let t0 = Instant::now();
        let mut core = Core::new("model", config(), t0);
        let mut model = Model { mode: Mode::Closed, window: VecDeque::new() };
        let mut now_ms = 0;
        for op in ops {
            match op {
                Op::Wait { ms } => now_ms += ms,
                Op::Call { failed, slow, gap_ms } => {
                    now_ms += gap_ms;
                    let now = t0 + Duration::from_millis(now_ms);
                    // Asking without acquiring agrees with acquiring, and changes nothing.
                    let would = core.would_admit(now);
                    prop_assert_eq!(core.would_admit(now), would);
                    let (granted, _) = core.try_acquire(now);
                    prop_assert_eq!(granted.is_ok(), would, "would_admit at {} ms", now_ms);
                    prop_assert_eq!(granted.is_ok(), model.acquire(now_ms), "permission at {} ms", now_ms);
                    if let Ok(grant) = granted {
                        let elapsed = Duration::from_millis(if slow { SLOW_MS + 1 } else { 1 });
                        let result = if failed { CallResult::Failure } else { CallResult::Success };
                        core.on_result(grant, result, elapsed, now);
                        model.record(failed, slow, now_ms);
                    }
                }
            }
            let now = t0 + Duration::from_millis(now_ms);
            prop_assert_eq!(core.state(), model.state());
            let m = core.metrics(now);
            prop_assert_eq!(m.buffered as usize, model.window.len());
            prop_assert_eq!(m.failed as usize, model.window.iter().filter(|w| w.0).count());
            prop_assert_eq!(m.slow as usize, model.window.iter().filter(|w| w.1).count());
            prop_assert_eq!(m.successful + m.failed, m.buffered);
            // Invariants that hold whatever the sequence.
            prop_assert!(m.buffered as usize <= SIZE);
            if core.state() == State::HalfOpen {
                prop_assert!(m.buffered as usize <= PERMITS);
            }
        }
    }
}
