//! breaker-conformance.md, one test per numbered behaviour (Resilience4j's state machine).
//! Optional items not built: 23 (per-attempt wait functions), 40-41 and the METRICS_ONLY
//! parts of 42, 44 and 45 (METRICS_ONLY state).
//!
//! Most tests drive the pure core with an explicit clock; the ones about timers and
//! measured durations drive the real `CircuitBreaker` under tokio's paused time.

use std::time::Duration;

use gateway::breaker::core::{Core, Effects, Event, Grant, Metrics, State, Timer, TimerKind};
use gateway::breaker::layer::classify_error;
use gateway::breaker::{BreakerConfig, CallResult, CircuitBreaker, HalfOpenTimeoutTarget, InitialState, SlidingWindow};
use tokio::time::Instant;

use CallResult::{Failure as E, Ignored as I, Success as S};

const SLOW: Duration = Duration::from_secs(5);

fn base() -> BreakerConfig {
    BreakerConfig {
        failure_rate_threshold: 50.0,
        slow_call_rate_threshold: 50.0,
        slow_call_duration: Duration::from_secs(4),
        sliding_window: SlidingWindow::Time(20),
        minimum_calls: 5,
        permitted_calls_in_half_open: 4,
        wait_in_open: Duration::from_secs(5),
        automatic_transition: false,
        max_wait_in_half_open: Duration::from_secs(1),
        half_open_timeout_target: HalfOpenTimeoutTarget::Open,
        initial_state: InitialState::Closed,
        ..BreakerConfig::default()
    }
}

/// The core, a test clock, and every event it published.
struct Harness {
    core: Core,
    t0: Instant,
    now: Instant,
    events: Vec<Event>,
    timers: Vec<Timer>,
}

impl Harness {
    fn new(config: BreakerConfig) -> Harness {
        let t0 = Instant::now();
        Harness { core: Core::new("test", config, t0), t0, now: t0, events: Vec::new(), timers: Vec::new() }
    }

    fn at(&mut self, secs: f64) -> &mut Self {
        self.now = self.t0 + Duration::from_secs_f64(secs);
        self
    }

    fn take(&mut self, fx: Effects) {
        self.events.extend(fx.events);
        self.timers.extend(fx.timer);
    }

    fn acquire(&mut self) -> Option<Grant> {
        let (result, fx) = self.core.try_acquire(self.now);
        self.take(fx);
        result.ok()
    }

    fn finish(&mut self, grant: Grant, result: CallResult, elapsed: Duration) {
        let fx = self.core.on_result(grant, result, elapsed, self.now);
        self.take(fx);
    }

    /// One fast call: acquire, then record.
    fn call(&mut self, result: CallResult) -> &mut Self {
        self.call_taking(result, Duration::from_millis(1))
    }

    fn call_taking(&mut self, result: CallResult, elapsed: Duration) -> &mut Self {
        let grant = self.acquire().expect("call permitted");
        self.finish(grant, result, elapsed);
        self
    }

    fn calls(&mut self, results: &[CallResult]) -> &mut Self {
        for &r in results {
            self.call(r);
        }
        self
    }

    fn m(&mut self) -> (f64, u32, u32, u32, u64) {
        self.core.metrics(self.now).tuple()
    }

    fn metrics(&mut self) -> Metrics {
        self.core.metrics(self.now)
    }

    fn state(&self) -> State {
        self.core.state()
    }

    fn to(&mut self, state: State) {
        let fx = self.core.transition_to(state, self.now).expect("legal");
        self.take(fx);
    }

    fn fire(&mut self, timer: Timer) {
        let fx = self.core.on_timer(timer, self.now);
        self.take(fx);
    }

    fn transitions(&self) -> Vec<(State, State)> {
        self.events
            .iter()
            .filter_map(|e| match e {
                Event::StateTransition { from, to, .. } => Some((*from, *to)),
                _ => None,
            })
            .collect()
    }

    /// Opens the breaker the way item 2 does: E, E, E, S, S.
    fn opened(config: BreakerConfig) -> Harness {
        let mut h = Harness::new(config);
        h.calls(&[E, E, E, S, S]);
        assert_eq!(h.state(), State::Open);
        h
    }

    /// OPEN, then HALF_OPEN after the wait, with the permit of the entering request
    /// handed back so all four are free.
    fn half_open(config: BreakerConfig) -> Harness {
        let mut h = Harness::new(config);
        h.to(State::Open);
        h.at(6.0);
        let grant = h.acquire().expect("granted after the wait");
        h.core.release(grant);
        assert_eq!(h.state(), State::HalfOpen);
        h
    }
}

// A. Closed-state evaluation and failure rate

#[test]
fn a01_closed_always_grants_and_fresh_metrics_are_empty() {
    let mut h = Harness::new(base());
    assert_eq!(h.m(), (-1.0, 0, 0, 0, 0));
    for _ in 0..10 {
        assert!(h.acquire().is_some());
    }
    assert_eq!(h.m().4, 0, "asking never counts as not-permitted");
}

#[test]
fn a02_failure_rate_opens_on_the_fifth_call() {
    let mut h = Harness::new(base());
    let expected = [(-1.0, 0, 1, 1, 0), (-1.0, 0, 2, 2, 0), (-1.0, 0, 3, 3, 0), (-1.0, 1, 4, 3, 0)];
    for (result, tuple) in [E, E, E, S].into_iter().zip(expected) {
        h.call(result);
        assert_eq!(h.state(), State::Closed);
        assert_eq!(h.m(), tuple);
    }
    h.call(S);
    assert_eq!(h.state(), State::Open);
    assert_eq!(h.m(), (60.0, 2, 5, 3, 0));
}

#[test]
fn a03_the_threshold_is_inclusive_and_judged_over_the_whole_window() {
    let mut h = Harness::new(base());
    for (i, r) in [S, S, S, E, E].into_iter().enumerate() {
        h.at(i as f64).call(r);
    }
    assert_eq!(h.m().0, 40.0);
    assert_eq!(h.state(), State::Closed);
    h.at(9.0).call(E);
    assert_eq!(h.metrics().failure_rate, 50.0);
    assert_eq!(h.state(), State::Open, "3/6 = 50% >= 50%");
}

// B. Minimum calls

#[test]
fn b04_below_minimum_calls_nothing_is_judged() {
    let mut h = Harness::new(base());
    h.calls(&[E, E, E, E]);
    let m = h.metrics();
    assert_eq!((m.failure_rate, m.slow_call_rate), (-1.0, -1.0));
    assert_eq!(h.state(), State::Closed, "100% failures, but only 4 of 5 calls");
    let mut empty = Harness::new(BreakerConfig { minimum_calls: 1, ..base() });
    assert_eq!(empty.metrics().failure_rate, -1.0, "buffered = 0 reads -1");
}

#[test]
fn b05_a_count_window_caps_the_minimum_at_its_size() {
    let mut h = Harness::new(BreakerConfig { sliding_window: SlidingWindow::Count(3), minimum_calls: 10, ..base() });
    h.calls(&[E, E]);
    assert_eq!(h.state(), State::Closed);
    h.call(E);
    assert_eq!(h.state(), State::Open);
    assert_eq!(h.metrics().failure_rate, 100.0);
}

#[test]
fn b06_a_time_window_does_not_cap_the_minimum() {
    let mut h = Harness::new(BreakerConfig { sliding_window: SlidingWindow::Time(3), minimum_calls: 10, ..base() });
    for _ in 0..9 {
        h.call(E);
    }
    assert_eq!(h.state(), State::Closed);
    assert_eq!(h.metrics().failure_rate, -1.0);
    h.call(E);
    assert_eq!(h.state(), State::Open);
}

// C. Slow calls

#[test]
fn c07_slow_means_strictly_longer_than_the_threshold() {
    let mut h = Harness::new(base());
    h.call_taking(S, Duration::from_secs(4));
    assert_eq!(h.metrics().slow, 0, "exactly 4 s is not slow");
    h.call_taking(S, Duration::from_secs(4) + Duration::from_nanos(1));
    assert_eq!(h.metrics().slow, 1);
}

#[test]
fn c08_the_slow_rate_alone_can_open_the_breaker() {
    let mut h = Harness::new(base());
    let calls = [(E, SLOW), (S, SLOW), (E, Duration::from_millis(100)), (S, Duration::from_millis(100))];
    for (r, d) in calls {
        h.call_taking(r, d);
    }
    assert_eq!(h.state(), State::Closed);
    h.call_taking(S, SLOW);
    assert_eq!(h.state(), State::Open);
    let m = h.metrics();
    assert_eq!((m.slow, m.slow_call_rate, m.failure_rate), (3, 60.0, 40.0));
}

#[test]
fn c09_slow_errors_and_slow_successes_count_both_ways() {
    let mut h = Harness::new(base());
    h.call_taking(E, SLOW).call_taking(S, SLOW);
    let m = h.metrics();
    assert_eq!((m.failed, m.successful, m.slow, m.buffered), (1, 1, 2, 2));
    assert_eq!(m.successful, m.buffered - m.failed);
}

#[tokio::test(start_paused = true)]
async fn c10_the_wrapped_call_is_timed_on_the_injected_clock() {
    use tower::{Service, ServiceExt};
    let breaker = CircuitBreaker::new("timed", base()).unwrap();
    let classify = gateway::breaker::layer::ByResult(|_: &Result<(), CallNotPermittedError>| S);
    let mut svc = tower::ServiceBuilder::new()
        .layer(gateway::breaker::CircuitBreakerLayer::new(breaker.clone(), classify))
        .service_fn(|secs: u64| async move {
            tokio::time::advance(Duration::from_secs(secs)).await;
            Ok::<(), CallNotPermittedError>(())
        });
    let expected = [(1, 1), (2, 2), (3, 2), (4, 2), (5, 3)];
    for (secs, (buffered, slow)) in [5, 5, 1, 1, 5].into_iter().zip(expected) {
        svc.ready().await.unwrap().call(secs).await.unwrap();
        let m = breaker.metrics();
        assert_eq!((m.buffered, m.slow), (buffered, slow));
    }
    assert_eq!(breaker.state(), State::Open);
    assert_eq!(breaker.metrics().slow_call_rate, 60.0);
}

#[derive(Debug)]
struct CallNotPermittedError;

impl From<gateway::breaker::CallNotPermitted> for CallNotPermittedError {
    fn from(_: gateway::breaker::CallNotPermitted) -> Self {
        CallNotPermittedError
    }
}

// D. Count vs time windows

#[test]
fn d11_a_count_window_holds_the_last_n_outcomes() {
    let mut h = Harness::new(BreakerConfig { sliding_window: SlidingWindow::Count(5), minimum_calls: 5, ..base() });
    h.calls(&[E, S, S, S, S]);
    assert_eq!(h.metrics().failure_rate, 20.0);
    h.call(E);
    assert_eq!(h.metrics().failure_rate, 20.0);
    h.call(E);
    assert_eq!(h.metrics().failure_rate, 40.0);
    assert_eq!(h.state(), State::Closed);
    h.call(E);
    assert_eq!(h.metrics().failure_rate, 60.0);
    assert_eq!(h.state(), State::Open);
    assert_eq!(h.metrics().buffered, 5);
}

#[test]
fn d12_time_window_buckets_by_whole_seconds() {
    let mut h = Harness::new(BreakerConfig { sliding_window: SlidingWindow::Time(5), minimum_calls: 100, ..base() });
    for t in [0.0, 0.1, 0.8] {
        h.at(t).call(S);
    }
    assert_eq!(h.at(4.8).metrics().buffered, 3);
    assert_eq!(h.at(5.8).metrics().buffered, 0);
}

#[test]
fn d13_reading_metrics_advances_the_time_window() {
    let mut h = Harness::new(BreakerConfig { sliding_window: SlidingWindow::Time(5), ..base() });
    h.calls(&[E, E, S]);
    assert_eq!(h.at(5.0).metrics().buffered, 0, "no call needed to age the window");
    h.at(11.0).call(S);
    assert_eq!(h.metrics().buffered, 1, "after a gap a new call sees only itself");
}

#[test]
fn d14_the_oldest_second_leaves_as_a_new_one_arrives() {
    let mut h = Harness::new(BreakerConfig { sliding_window: SlidingWindow::Time(5), minimum_calls: 100, ..base() });
    h.calls(&[E, S, S]);
    for (second, r) in [(1.0, S), (2.0, S), (3.0, E), (4.0, S)] {
        h.at(second).call(r);
    }
    assert_eq!(h.metrics().buffered, 7);
    h.at(5.0).call(S);
    let m = h.metrics();
    assert_eq!((m.buffered, m.failed), (5, 1));
}

#[test]
fn d15_the_half_open_window_is_count_based_with_the_permits_as_size() {
    let mut h = Harness::half_open(base());
    h.calls(&[E, E, S]);
    assert_eq!(h.m(), (-1.0, 1, 3, 2, 0), "min(5 calls, 4 permits) = 4 not reached");
    h.call(S);
    assert_eq!(h.state(), State::Open, "2/4 = 50%");
    assert_eq!(h.m(), (50.0, 2, 4, 2, 0));
}

// E. Open state and rejection

#[test]
fn e16_open_denies_and_counts_each_denial() {
    let mut h = Harness::opened(base());
    for n in 1..=3 {
        assert!(h.acquire().is_none());
        assert_eq!(h.m().4, n);
    }
    let breaker = CircuitBreaker::new("e16", base()).unwrap();
    breaker.transition_to(State::Open).unwrap();
    let denied = breaker.try_acquire().err().expect("acquire-or-error fails");
    assert_eq!((denied.breaker.as_str(), denied.state), ("e16", State::Open));
    assert_eq!(breaker.metrics().not_permitted, 1);
}

#[test]
fn e17_opening_keeps_the_closed_window() {
    let mut h = Harness::opened(base());
    assert_eq!(h.m(), (60.0, 2, 5, 3, 0));
    h.acquire();
    assert_eq!(h.m(), (60.0, 2, 5, 3, 1));
}

#[test]
fn e18_a_manual_open_from_fresh_closed_has_empty_metrics() {
    let mut h = Harness::new(base());
    h.to(State::Open);
    assert_eq!(h.m(), (-1.0, 0, 0, 0, 0));
    h.acquire();
    h.acquire();
    assert_eq!(h.m().4, 2);
}

#[test]
fn e19_a_call_granted_before_opening_is_recorded_but_never_transitions() {
    let mut h = Harness::new(base());
    let early = h.acquire().unwrap();
    h.calls(&[E, E, E, E, E]);
    assert_eq!(h.state(), State::Open);
    let transitions_before = h.transitions().len();
    h.finish(early, S, Duration::from_millis(1));
    assert_eq!(h.state(), State::Open);
    assert_eq!(h.transitions().len(), transitions_before);
    let m = h.metrics();
    assert_eq!((m.buffered, m.successful, m.failed), (6, 1, 5));
}

// F. Wait duration and automatic transition

#[test]
fn f20_open_to_half_open_is_lazy_and_resets_the_metrics() {
    let mut h = Harness::opened(base());
    assert!(h.at(3.0).acquire().is_none());
    assert_eq!(h.state(), State::Open);
    h.at(6.0);
    assert_eq!(h.state(), State::Open, "reading the state alone never leaves OPEN");
    assert!(h.acquire().is_some());
    assert_eq!(h.state(), State::HalfOpen);
    assert_eq!(h.m(), (-1.0, 0, 0, 0, 0));
    let more = (0..4).filter(|_| h.acquire().is_some()).count();
    assert_eq!(more, 3, "the entering request used 1 of the 4 permits");
}

#[test]
fn f21_permission_needs_now_strictly_after_the_deadline() {
    let mut h = Harness::new(base());
    h.at(1.0).to(State::Open);
    assert!(h.at(6.0).acquire().is_none(), "exactly opened-at + wait is still denied");
    assert!(h.at(6.000_001).acquire().is_some());
}

#[test]
fn f22_open_for_a_duration_or_until_an_instant() {
    let mut h = Harness::new(base());
    let fx = h.core.open_until(h.now + Duration::from_secs(7_200), h.now);
    h.take(fx);
    assert!(h.at(3_600.0).acquire().is_none());
    assert!(h.at(7_201.0).acquire().is_some());
    assert_eq!(h.state(), State::HalfOpen);

    let mut h = Harness::new(base());
    let until = h.now + Duration::from_secs(1_800);
    let fx = h.core.open_until(until, h.now);
    h.take(fx);
    assert!(h.at(900.0).acquire().is_none());
    assert!(h.at(1_801.0).acquire().is_some());
}

#[test]
fn f24_the_attempt_counter_counts_normal_opens_only() {
    let mut h = Harness::opened(base());
    assert_eq!(h.core.attempts(), 1);
    let probe = h.at(6.0).acquire().unwrap();
    assert_eq!(h.core.attempts(), 1, "carried through half-open");
    h.finish(probe, E, Duration::from_millis(1));
    h.calls(&[E, E, E]);
    assert_eq!(h.state(), State::Open);
    assert_eq!(h.core.attempts(), 2);
    let fx = h.core.open_until(h.now + Duration::from_secs(60), h.now);
    h.take(fx);
    assert_eq!(h.core.attempts(), 2, "an explicit open does not grow it");
    let fx = h.core.reset(h.now);
    h.take(fx);
    assert_eq!(h.core.attempts(), 0);
    let mut closed = Harness::half_open(base());
    closed.calls(&[S, S, S, S]);
    assert_eq!((closed.state(), closed.core.attempts()), (State::Closed, 0));
}

fn auto() -> BreakerConfig {
    BreakerConfig {
        sliding_window: SlidingWindow::Count(5),
        minimum_calls: 5,
        permitted_calls_in_half_open: 3,
        wait_in_open: Duration::from_secs(2),
        automatic_transition: true,
        max_wait_in_half_open: Duration::ZERO,
        ..base()
    }
}

#[test]
fn f25_entering_open_arms_one_timer_for_the_wait() {
    let mut h = Harness::new(auto());
    h.calls(&[E, E, E, E]);
    assert!(h.timers.is_empty());
    h.call(E);
    assert_eq!(
        h.timers,
        vec![Timer {
            kind: TimerKind::OpenToHalfOpen,
            at: h.now + Duration::from_millis(2_000),
            generation: h.timers[0].generation
        }]
    );
    let timer = h.timers[0];
    h.now = timer.at;
    h.fire(timer);
    assert_eq!(h.state(), State::HalfOpen, "no call needed");
}

#[tokio::test(start_paused = true)]
async fn f25_the_armed_timer_moves_a_live_breaker_to_half_open() {
    let breaker = CircuitBreaker::new("auto", auto()).unwrap();
    for _ in 0..5 {
        breaker.try_acquire().unwrap().record(E);
    }
    assert_eq!(breaker.state(), State::Open);
    tokio::time::sleep(Duration::from_millis(1_999)).await;
    assert_eq!(breaker.state(), State::Open);
    tokio::time::sleep(Duration::from_millis(1)).await;
    tokio::task::yield_now().await;
    assert_eq!(breaker.state(), State::HalfOpen);
}

#[test]
fn f26_stale_timers_do_nothing_and_races_give_one_transition() {
    let mut h = Harness::new(auto());
    h.calls(&[E, E, E, E, E]);
    let timer = h.timers[0];
    h.to(State::ForcedOpen);
    h.now = timer.at;
    h.fire(timer);
    assert_eq!(h.state(), State::ForcedOpen, "leaving OPEN cancelled the timer");

    let mut h = Harness::new(auto());
    h.calls(&[E, E, E, E, E]);
    let timer = h.timers[0];
    h.now = timer.at + Duration::from_millis(1);
    h.acquire().expect("the lazy request wins the race");
    h.fire(timer);
    h.fire(timer);
    assert_eq!(h.transitions(), [(State::Closed, State::Open), (State::Open, State::HalfOpen)]);
}

// G. Half-open permits and evaluation

#[test]
fn g27_exactly_the_permitted_number_of_probes() {
    let mut h = Harness::half_open(base());
    let grants: Vec<Grant> = (0..4).map(|_| h.acquire().expect("permit")).collect();
    assert!(h.acquire().is_none());
    assert!(h.acquire().is_none());
    h.core.release(grants[0]);
    assert!(h.acquire().is_some(), "a released permit lets the next one in");
    assert!(h.acquire().is_none());
    h.calls_with_grants(&grants[1..], &[E, E, E]);
    assert_eq!(h.state(), State::HalfOpen, "3 of 4 recorded");
    h.to(State::Open);
    h.at(12.0);
    assert_eq!((0..6).filter(|_| h.acquire().is_some()).count(), 4, "a new half-open restores all permits");
}

impl Harness {
    fn calls_with_grants(&mut self, grants: &[Grant], results: &[CallResult]) {
        for (&g, &r) in grants.iter().zip(results) {
            self.finish(g, r, Duration::from_millis(1));
        }
    }
}

#[test]
fn g28_a_half_open_denial_errors_and_counts() {
    let mut h = Harness::half_open(base());
    for _ in 0..4 {
        h.acquire();
    }
    assert!(h.acquire().is_none());
    assert_eq!(h.m().4, 1);
}

#[test]
fn g29_failing_probes_reopen_and_keep_their_metrics() {
    let mut h = Harness::half_open(base());
    h.calls(&[E, E, S]);
    assert_eq!(h.state(), State::HalfOpen);
    h.call(E);
    assert_eq!(h.state(), State::Open);
    assert_eq!(h.m(), (75.0, 1, 4, 3, 0));
}

#[test]
fn g30_slow_probes_reopen() {
    let mut h = Harness::half_open(base());
    h.call_taking(S, SLOW).call_taking(S, SLOW).call_taking(S, SLOW).call_taking(S, Duration::from_secs(1));
    assert_eq!(h.state(), State::Open);
    let m = h.metrics();
    assert_eq!((m.slow, m.slow_call_rate, m.failure_rate), (3, 75.0, 0.0));
}

#[test]
fn g31_healthy_probes_close_with_fresh_metrics() {
    let mut h = Harness::half_open(base());
    h.calls(&[E, S, S, S]);
    assert_eq!(h.state(), State::Closed);
    assert_eq!(h.m(), (-1.0, 0, 0, 0, 0));
    h.call(S);
    assert_eq!(h.m(), (-1.0, 1, 1, 0, 0));
}

#[test]
fn g32_the_decision_comes_at_min_of_minimum_calls_and_permits() {
    let mut h = Harness::half_open(BreakerConfig { minimum_calls: 2, ..base() });
    h.call(S);
    assert_eq!(h.state(), State::HalfOpen);
    assert_eq!(h.metrics().failure_rate, -1.0);
    h.call(S);
    assert_eq!(h.state(), State::Closed);
}

#[test]
fn g33_an_ignored_probe_hands_back_its_permit() {
    let mut h = Harness::half_open(base());
    h.calls(&[S, S, S]);
    assert_eq!(h.m(), (-1.0, 3, 3, 0, 0));
    h.call(I);
    assert_eq!(h.state(), State::HalfOpen);
    assert_eq!(h.m(), (-1.0, 3, 3, 0, 0));
    h.call(E);
    assert_eq!(h.state(), State::Closed, "1/4 = 25%");
    assert_eq!(h.m(), (-1.0, 0, 0, 0, 0));
}

#[test]
fn g34_ignored_probes_never_use_up_the_permits() {
    let mut h = Harness::half_open(base());
    h.calls(&[I, I, I, I]);
    assert_eq!(h.m(), (-1.0, 0, 0, 0, 0));
    h.calls(&[S, S, S]);
    assert_eq!(h.m(), (-1.0, 3, 3, 0, 0));
    assert_eq!(h.state(), State::HalfOpen);
    h.call(S);
    assert_eq!(h.state(), State::Closed);
}

// H. Max wait in half-open

async fn half_open_live(target: HalfOpenTimeoutTarget) -> CircuitBreaker {
    let config = BreakerConfig { half_open_timeout_target: target, ..base() };
    let breaker = CircuitBreaker::new("max-wait", config).unwrap();
    breaker.transition_to(State::Open).unwrap();
    breaker.transition_to(State::HalfOpen).unwrap();
    breaker
}

#[tokio::test(start_paused = true)]
async fn h35_a_silent_half_open_reopens_after_the_max_wait() {
    let breaker = half_open_live(HalfOpenTimeoutTarget::Open).await;
    let attempts = breaker.attempts();
    breaker.try_acquire().unwrap().record(S);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(breaker.state(), State::Open);
    assert_eq!(breaker.attempts(), attempts + 1, "the normal open path");
    assert_eq!(breaker.metrics().buffered, 1, "half-open metrics kept");
}

#[tokio::test(start_paused = true)]
async fn h36_the_max_wait_can_target_closed() {
    let breaker = half_open_live(HalfOpenTimeoutTarget::Closed).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(breaker.state(), State::Closed);
}

#[test]
fn h37_no_timer_without_a_max_wait_and_leaving_early_cancels_it() {
    let mut h = Harness::opened(BreakerConfig { max_wait_in_half_open: Duration::ZERO, ..base() });
    h.at(6.0).acquire();
    assert!(h.timers.is_empty(), "0 means wait without limit");

    let mut h = Harness::opened(BreakerConfig { max_wait_in_half_open: Duration::from_micros(999), ..base() });
    h.at(6.0).acquire();
    assert!(h.timers.is_empty(), "armed only from 1 ms");

    let mut h = Harness::opened(base());
    let probe = h.at(6.0).acquire().unwrap();
    let timer = h.timers[0];
    assert_eq!((timer.kind, timer.at), (TimerKind::HalfOpenMaxWait, h.now + Duration::from_secs(1)));
    h.finish(probe, S, Duration::from_millis(1));
    h.calls(&[S, S, S]);
    assert_eq!(h.state(), State::Closed);
    h.now = timer.at;
    h.fire(timer);
    assert_eq!(h.state(), State::Closed, "the timer died with the half-open state");
}

// I. Forced open, disabled

#[test]
fn i38_forced_open_always_denies() {
    let mut h = Harness::new(base());
    h.calls(&[S, E]);
    h.to(State::ForcedOpen);
    assert!(h.acquire().is_none());
    assert!(h.at(6.0).acquire().is_none());
    assert_eq!(h.state(), State::ForcedOpen, "never half-open");
    assert_eq!(h.m(), (-1.0, 0, 0, 0, 2));
    let breaker = CircuitBreaker::new("i38", base()).unwrap();
    breaker.force_open();
    assert!(breaker.try_acquire().is_err());
    assert_eq!(breaker.metrics().not_permitted, 1);
}

#[test]
fn i39_disabled_always_grants_and_records_nothing() {
    let mut h = Harness::new(base());
    h.to(State::Disabled);
    h.calls(&[S, E, E, E, E]);
    assert_eq!(h.m(), (-1.0, 0, 0, 0, 0));
    assert_eq!(h.at(100.0).state(), State::Disabled);
}

#[test]
fn i42_the_initial_state_is_honoured() {
    let h = Harness::new(BreakerConfig { initial_state: InitialState::Closed, ..base() });
    assert_eq!(h.state(), State::Closed);
    let mut h = Harness::new(BreakerConfig { initial_state: InitialState::Open, ..base() });
    assert_eq!(h.state(), State::Open);
    assert!(h.acquire().is_none());
    h.to(State::HalfOpen);
    assert_eq!(h.state(), State::HalfOpen);
}

// J. Reset and manual transitions

#[test]
fn j43_reset_always_leaves_a_fresh_closed_breaker() {
    let mut h = Harness::opened(base());
    let fx = h.core.reset(h.now);
    h.take(fx);
    assert_eq!(h.state(), State::Closed);
    let mut h = Harness::new(base());
    h.calls(&[S, E]);
    assert_eq!(h.m(), (-1.0, 1, 2, 1, 0));
    let fx = h.core.reset(h.now);
    h.take(fx);
    assert_eq!(h.m(), (-1.0, 0, 0, 0, 0));
}

#[test]
fn j44_only_closed_to_half_open_is_illegal() {
    let mut h = Harness::new(base());
    let error = h.core.transition_to(State::HalfOpen, h.now).unwrap_err();
    assert_eq!(error.to_string(), "circuit breaker 'test' cannot go from CLOSED to HALF_OPEN");
    assert_eq!(h.state(), State::Closed);
    for from in State::ALL {
        for to in State::ALL {
            let mut h = Harness::new(base());
            if from != State::Closed {
                h.to(State::Open);
                h.to(from);
            }
            let legal = h.core.transition_to(to, h.now).is_ok();
            assert_eq!(legal, !(from == State::Closed && to == State::HalfOpen), "{from} -> {to}");
        }
    }
}

#[test]
fn j45_same_state_transitions_rebuild_silently() {
    let mut h = Harness::new(base());
    use State::*;
    for s in [Open, Open, HalfOpen, HalfOpen, Disabled, Disabled, ForcedOpen, ForcedOpen, Closed, Closed] {
        h.to(s);
    }
    assert_eq!(h.transitions().len(), 5);

    let mut h = Harness::opened(base());
    h.at(3.0).to(Open);
    assert_eq!(h.core.attempts(), 2, "OPEN -> OPEN restarts the wait as a new open");
    assert_eq!(h.m().2, 5, "metrics kept");
    assert!(h.at(6.0).acquire().is_none(), "the wait restarted at +3 s");
    assert!(h.at(8.5).acquire().is_some());
}

// K. Events and their order

#[test]
fn k46_closed_to_open_publishes_call_then_rates_then_transition() {
    let mut h = Harness::new(base());
    h.calls(&[E, E, E, E]);
    h.events.clear();
    h.call_taking(E, SLOW);
    let kinds: Vec<&str> = h.events.iter().map(kind).collect();
    assert_eq!(kinds, ["error", "failure_rate_exceeded", "transition"]);
    assert!(matches!(h.events[1], Event::FailureRateExceeded { rate } if rate == 100.0));

    let mut h = Harness::new(base());
    for _ in 0..4 {
        h.call_taking(E, SLOW);
    }
    h.events.clear();
    h.call_taking(E, SLOW);
    let kinds: Vec<&str> = h.events.iter().map(kind).collect();
    assert_eq!(kinds, ["error", "failure_rate_exceeded", "slow_call_rate_exceeded", "transition"]);

    let mut h = Harness::half_open(base());
    h.calls(&[E, E, E]);
    h.events.clear();
    h.call(E);
    let kinds: Vec<&str> = h.events.iter().map(kind).collect();
    assert_eq!(kinds, ["error", "transition"], "HALF_OPEN -> OPEN publishes only the transition");
}

fn kind(e: &Event) -> &'static str {
    match e {
        Event::Success { .. } => "success",
        Event::Error { .. } => "error",
        Event::IgnoredError => "ignored",
        Event::NotPermitted => "not_permitted",
        Event::FailureRateExceeded { .. } => "failure_rate_exceeded",
        Event::SlowCallRateExceeded { .. } => "slow_call_rate_exceeded",
        Event::StateTransition { .. } => "transition",
        Event::Reset => "reset",
    }
}

#[test]
fn k47_reset_publishes_the_transition_then_reset() {
    let mut h = Harness::opened(base());
    h.events.clear();
    let fx = h.core.reset(h.now);
    h.take(fx);
    assert_eq!(h.events.iter().map(kind).collect::<Vec<_>>(), ["transition", "reset"]);
    h.events.clear();
    let fx = h.core.reset(h.now);
    h.take(fx);
    assert_eq!(h.events.iter().map(kind).collect::<Vec<_>>(), ["reset"], "no CLOSED -> CLOSED event");
}

#[test]
fn k48_denials_publish_except_in_forced_open_and_disabled() {
    let mut h = Harness::opened(base());
    h.events.clear();
    h.acquire();
    h.acquire();
    assert_eq!(h.events.iter().map(kind).collect::<Vec<_>>(), ["not_permitted", "not_permitted"]);

    let mut h = Harness::new(base());
    h.to(State::ForcedOpen);
    h.events.clear();
    h.acquire();
    h.to(State::Disabled);
    h.calls(&[S, E, I]);
    assert_eq!(h.events.iter().map(kind).collect::<Vec<_>>(), ["transition"], "only the transition");
}

// L. Ignored vs recorded errors

#[derive(Debug, PartialEq)]
enum Err {
    Ign,
    Rec,
    Both,
    Other,
}

fn classify(e: &Err) -> CallResult {
    classify_error(e, |e| matches!(e, Err::Ign | Err::Both), |e| matches!(e, Err::Rec | Err::Both))
}

#[test]
fn l49_the_ignore_check_runs_first() {
    assert_eq!(classify(&Err::Both), I);
    assert_eq!(classify(&Err::Ign), I);
    let mut h = Harness::half_open(base());
    let grants: Vec<Grant> = (0..4).map(|_| h.acquire().unwrap()).collect();
    h.events.clear();
    h.finish(grants[0], classify(&Err::Both), Duration::from_millis(1));
    assert_eq!(h.events.iter().map(kind).collect::<Vec<_>>(), ["ignored"]);
    assert_eq!(h.m(), (-1.0, 0, 0, 0, 0), "not buffered");
    assert!(h.acquire().is_some(), "its permit came back");
}

#[test]
fn l50_an_error_the_record_predicate_rejects_counts_as_success() {
    assert_eq!(classify(&Err::Rec), E);
    assert_eq!(classify(&Err::Other), S);
    let mut h = Harness::new(base());
    h.call(classify(&Err::Other));
    assert_eq!(h.events.iter().map(kind).collect::<Vec<_>>(), ["success"]);
    assert_eq!(h.m(), (-1.0, 1, 1, 0, 0));
    assert_eq!(classify_error(&Err::Other, |_| false, |_| true), E, "by default every error is recorded");
}

// Beyond Resilience4j: the three knobs payguard's payment breaker adds (off in `base()`).

const U: CallResult = CallResult::Unanswered;

fn counting_silence(run: u32) -> BreakerConfig {
    BreakerConfig {
        sliding_window: SlidingWindow::Count(100),
        minimum_calls: 100,
        open_after_unanswered: run,
        ..base()
    }
}

#[test]
fn m1_a_run_of_unanswered_calls_opens_before_the_window_is_judged() {
    let mut h = Harness::new(counting_silence(3));
    h.calls(&[U, U]);
    assert_eq!(h.state(), State::Closed);
    h.call(U);
    assert_eq!(h.state(), State::Open);
    assert_eq!(h.m(), (-1.0, 0, 3, 3, 0), "unanswered calls are failures in the window, which is not judged yet");
    let reason = h.events.iter().find_map(|e| match e {
        Event::StateTransition { reason, .. } => Some(reason.clone()),
        _ => None,
    });
    assert_eq!(reason.as_deref(), Some("3 calls in a row unanswered"));
}

#[test]
fn m2_any_answer_breaks_the_run_and_failures_alone_never_make_one() {
    let mut h = Harness::new(counting_silence(3));
    h.calls(&[U, U, E, U, U, S, U, U, E, E, E, E, E]);
    assert_eq!(h.state(), State::Closed, "answered failures (a brownout) are the window's to judge");
    h.call(U);
    assert_eq!(h.state(), State::Closed);
}

#[test]
fn m3_unanswered_calls_granted_before_a_recovery_do_not_open_again() {
    let mut h = Harness::new(counting_silence(2));
    let stale: Vec<Grant> = (0..3).map(|_| h.acquire().unwrap()).collect();
    h.calls(&[U, U]);
    assert_eq!(h.state(), State::Open);
    h.to(State::Closed);
    for grant in stale {
        h.finish(grant, U, Duration::from_secs(1));
    }
    assert_eq!(h.state(), State::Closed, "verdicts on calls of the outage are not news of now");
}

#[test]
fn m4_unanswered_is_a_failure_for_the_half_open_trial() {
    let mut h = Harness::half_open(BreakerConfig { permitted_calls_in_half_open: 1, ..counting_silence(10) });
    h.call(U);
    assert_eq!(h.state(), State::Open);
}

fn trials(after: u32, min_ms: u64) -> BreakerConfig {
    BreakerConfig { half_open_after_refusals: after, min_wait_in_open: Duration::from_millis(min_ms), ..base() }
}

#[test]
fn m5_open_lets_a_trial_through_after_so_many_refusals_once_the_minimum_wait_is_over() {
    let mut h = Harness::opened(trials(3, 200));
    h.at(0.1);
    for _ in 0..5 {
        assert!(h.acquire().is_none(), "before the minimum wait, refusals only count");
    }
    h.at(0.2);
    assert!(h.acquire().is_some(), "5 refused and 200 ms waited: the next call is a trial");
    assert_eq!(h.state(), State::HalfOpen);
}

#[test]
fn m6_after_the_minimum_wait_the_refusals_set_the_pace() {
    let mut h = Harness::opened(trials(3, 200));
    h.at(1.0);
    for _ in 0..3 {
        assert!(h.acquire().is_none());
    }
    assert_eq!(h.state(), State::Open);
    assert!(h.core.would_admit(h.now), "the next call would be the trial");
    assert!(h.acquire().is_some());
    assert_eq!(h.state(), State::HalfOpen);
    h.call_taking(E, Duration::from_millis(1));
    assert_eq!(h.state(), State::HalfOpen, "three permits left in base()");
}

#[test]
fn m6b_a_router_asking_on_behalf_of_a_call_counts_its_refusal() {
    let mut h = Harness::opened(trials(3, 200));
    h.at(1.0);
    for _ in 0..3 {
        let (admitted, fx) = h.core.ask(h.now);
        assert!(!admitted);
        h.take(fx);
    }
    assert_eq!(h.m().4, 3, "each no is a denied call");
    assert!(h.core.ask(h.now).0, "the trial is due");
    assert_eq!(h.state(), State::Open, "asking takes no permit: the call itself half-opens it");
    assert!(h.acquire().is_some());
    assert_eq!(h.state(), State::HalfOpen);
}

#[test]
fn m7_without_callers_the_wait_in_open_still_ends_open() {
    let mut h = Harness::opened(trials(1_000, 200));
    h.at(4.0);
    assert!(h.acquire().is_none());
    h.at(5.1);
    assert!(h.acquire().is_some(), "the wait is the fallback");
    assert_eq!(h.state(), State::HalfOpen);
}

#[test]
fn m8_the_minimum_wait_cannot_exceed_the_wait() {
    let config = BreakerConfig { min_wait_in_open: Duration::from_secs(6), ..trials(20, 0) };
    assert!(config.validate().is_err());
}

#[test]
fn m9_a_trial_that_meets_the_pgs_try_again_is_handed_back_twice_then_reopens() {
    let config = BreakerConfig { permitted_calls_in_half_open: 1, ..trials(3, 200) };
    let mut h = Harness::half_open(config.clone());
    h.call(CallResult::Transient);
    assert_eq!(h.state(), State::HalfOpen, "a try-again decides nothing");
    let retry = h.acquire().expect("the permit came back: the buyer's retry is the trial");
    assert!(h.acquire().is_none(), "still one trial at a time");
    h.core.release(retry);
    h.call(CallResult::Transient);
    assert_eq!(h.state(), State::HalfOpen);
    h.call(CallResult::Transient);
    assert_eq!(h.state(), State::Open, "the third try-again of one half-open reopens it");
    h.at(6.1);
    assert!(h.acquire().is_none(), "not before the minimum wait");
    h.at(6.2);
    let trial = h.acquire().expect("no refusals needed after a transient failure");
    assert_eq!(h.state(), State::HalfOpen);
    h.finish(trial, CallResult::Transient, Duration::from_millis(1));
    assert_eq!(h.state(), State::HalfOpen, "a new half-open hands back its own two");

    let mut h = Harness::half_open(config.clone());
    h.call(CallResult::Transient);
    h.call(S);
    assert_eq!(h.state(), State::Closed, "the retried trial decides");

    let mut h = Harness::half_open(config);
    h.call(E);
    assert_eq!(h.state(), State::Open);
    h.at(6.5);
    assert!(h.acquire().is_none(), "a plain failure waits for its refusals");
}
