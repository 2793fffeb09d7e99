//! The breaker's state machine, free of clocks, locks and tasks: every method takes `now`
//! and returns the effects (events to publish, timers to arm) for the caller to carry
//! out. That keeps each behaviour of breaker-conformance.md a plain, exact test.

use std::fmt;
use std::time::Duration;

use tokio::time::Instant;

use super::config::{BreakerConfig, HalfOpenTimeoutTarget, InitialState, SlidingWindow};
use super::window::{Totals, Window};

/// Resilience4j's state names; `as_str` gives the metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    Closed,
    Open,
    HalfOpen,
    ForcedOpen,
    Disabled,
}

impl State {
    pub const ALL: [State; 5] = [State::Closed, State::Open, State::HalfOpen, State::ForcedOpen, State::Disabled];

    pub fn as_str(self) -> &'static str {
        match self {
            State::Closed => "closed",
            State::Open => "open",
            State::HalfOpen => "half_open",
            State::ForcedOpen => "forced_open",
            State::Disabled => "disabled",
        }
    }

    /// Whether new calls are refused in this state (HALF_OPEN admits its probes).
    pub fn rejects_calls(self) -> bool {
        matches!(self, State::Open | State::ForcedOpen)
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.as_str().to_uppercase())
    }
}

/// How a finished call counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallResult {
    Success,
    Failure,
    /// A failure that also says the other side is silent: no answer, and no trace of the
    /// call there. Counts as a failure, and a run of them opens the breaker on its own
    /// (`open_after_unanswered`).
    Unanswered,
    /// A failure the other side itself calls passing ("try again"): a failure in the
    /// window; a half-open trial that meets one is followed by the next trial as soon as
    /// `min_wait_in_open` allows, not `half_open_after_refusals` refusals later (one
    /// unlucky request is no news that the other side is still down).
    Transient,
    /// Neither: not buffered, and a half-open permit is handed back.
    Ignored,
}

/// A snapshot of the current window. Rates are percentages, -1 until judged.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Metrics {
    pub failure_rate: f64,
    pub slow_call_rate: f64,
    pub successful: u32,
    pub buffered: u32,
    pub failed: u32,
    pub slow: u32,
    pub not_permitted: u64,
    /// `Unanswered` results in a row, in this state.
    pub unanswered_run: u32,
}

impl Metrics {
    /// (failure rate, successful, buffered, failed, not permitted): the conformance tuple.
    pub fn tuple(&self) -> (f64, u32, u32, u32, u64) {
        (self.failure_rate, self.successful, self.buffered, self.failed, self.not_permitted)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    Success { elapsed: Duration },
    Error { elapsed: Duration },
    IgnoredError,
    NotPermitted,
    FailureRateExceeded { rate: f64 },
    SlowCallRateExceeded { rate: f64 },
    StateTransition { from: State, to: State, reason: String },
    Reset,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimerKind {
    OpenToHalfOpen,
    HalfOpenMaxWait,
}

/// A timer to arm. It is stale, and does nothing, once the breaker has changed state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timer {
    pub kind: TimerKind,
    pub at: Instant,
    pub generation: u64,
}

#[derive(Debug, Default, PartialEq)]
pub struct Effects {
    pub events: Vec<Event>,
    pub timer: Option<Timer>,
    /// The state changed (or was rebuilt): any armed timer is now stale.
    pub state_entered: bool,
}

/// Permission to make one call, tied to the state it was granted in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Grant {
    generation: u64,
    half_open_permit: bool,
}

/// An illegal manual transition (only CLOSED -> HALF_OPEN is).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("circuit breaker '{name}' cannot go from {from} to {to}")]
pub struct IllegalTransition {
    pub name: String,
    pub from: State,
    pub to: State,
}

#[derive(Debug)]
enum Phase {
    Closed {
        window: Window,
    },
    /// Keeps the window that opened it; outcomes of calls granted earlier still land there.
    Open {
        window: Window,
        retry_at: Instant,
    },
    HalfOpen {
        window: Window,
        permits_left: u32,
        /// The PG's "try again" answers this half-open handed back (`TRANSIENTS_PER_HALF_OPEN`).
        transients: u32,
    },
    ForcedOpen,
    Disabled,
}

/// How many of the PG's "unstable, try again" 500s one half-open hands back before the
/// next one reopens it. The reference PG answers 40% of healthy requests so: with two
/// handed back a recovered PG fails its trial at random 6.4% of the time, not 40%, and a
/// PG that answers nothing else gets three requests per trial (at most five trials a
/// second, `min_wait_in_open`). A down PG answers no such 500 and gets one per trial.
const TRANSIENTS_PER_HALF_OPEN: u32 = 2;

#[derive(Debug)]
pub struct Core {
    name: String,
    config: BreakerConfig,
    /// Time windows bucket by whole seconds since this instant.
    origin: Instant,
    phase: Phase,
    not_permitted: u64,
    /// Normal opens since the last CLOSED.
    attempts: u32,
    /// `Unanswered` results in a row since the state was entered.
    unanswered_run: u32,
    /// This OPEN came from a half-open trial that met a `Transient` failure: the next
    /// trial needs no refusals, only `min_wait_in_open`.
    retry_trial_soon: bool,
    generation: u64,
    entered_at: Instant,
}

impl Core {
    pub fn new(name: impl Into<String>, config: BreakerConfig, now: Instant) -> Core {
        let phase = match config.initial_state {
            InitialState::Closed => Phase::Closed { window: Window::new(config.sliding_window) },
            InitialState::Open => {
                Phase::Open { window: Window::new(config.sliding_window), retry_at: now + config.wait_in_open }
            }
        };
        Core {
            name: name.into(),
            config,
            origin: now,
            phase,
            not_permitted: 0,
            attempts: 0,
            unanswered_run: 0,
            retry_trial_soon: false,
            generation: 0,
            entered_at: now,
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn config(&self) -> &BreakerConfig {
        &self.config
    }

    pub fn state(&self) -> State {
        match self.phase {
            Phase::Closed { .. } => State::Closed,
            Phase::Open { .. } => State::Open,
            Phase::HalfOpen { .. } => State::HalfOpen,
            Phase::ForcedOpen => State::ForcedOpen,
            Phase::Disabled => State::Disabled,
        }
    }

    pub fn entered_at(&self) -> Instant {
        self.entered_at
    }

    /// Normal opens since the breaker was last CLOSED.
    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    /// Reading advances a time window: outcomes that aged out are gone.
    pub fn metrics(&mut self, now: Instant) -> Metrics {
        let now_s = self.second(now);
        let minimum = self.config.minimum_calls;
        let (totals, effective_minimum) = match &mut self.phase {
            Phase::Closed { window } | Phase::Open { window, .. } | Phase::HalfOpen { window, .. } => {
                (window.totals(now_s), window.effective_minimum(minimum))
            }
            Phase::ForcedOpen | Phase::Disabled => (Totals::default(), minimum),
        };
        let (failure_rate, slow_call_rate) = rates(totals, effective_minimum);
        Metrics {
            failure_rate,
            slow_call_rate,
            successful: totals.calls - totals.failed,
            buffered: totals.calls,
            failed: totals.failed,
            slow: totals.slow,
            not_permitted: self.not_permitted,
            unanswered_run: self.unanswered_run,
        }
    }

    /// Whether `try_acquire` at `now` would grant a call, without taking a permit or
    /// moving state: an OPEN breaker past its wait would go HALF_OPEN and admit a probe,
    /// automatic transition or not.
    pub fn would_admit(&self, now: Instant) -> bool {
        match &self.phase {
            Phase::Closed { .. } | Phase::Disabled => true,
            Phase::HalfOpen { permits_left, .. } => *permits_left > 0,
            Phase::Open { retry_at, .. } => now > *retry_at || self.trial_is_due(now),
            Phase::ForcedOpen => false,
        }
    }

    /// `would_admit`, asked for a call that is refused when the answer is no (a router
    /// skipping this breaker's gateway): the no counts as a denied call.
    pub fn ask(&mut self, now: Instant) -> (bool, Effects) {
        let mut fx = Effects::default();
        if self.would_admit(now) {
            return (true, fx);
        }
        self.refuse(&mut fx);
        (false, fx)
    }

    fn refuse(&mut self, fx: &mut Effects) {
        self.not_permitted += 1;
        if self.state() != State::ForcedOpen {
            fx.events.push(Event::NotPermitted);
        }
    }

    /// OPEN has refused `half_open_after_refusals` calls and waited `min_wait_in_open`.
    fn trial_is_due(&self, now: Instant) -> bool {
        let c = &self.config;
        c.half_open_after_refusals > 0
            && (self.retry_trial_soon || self.not_permitted >= u64::from(c.half_open_after_refusals))
            && now.saturating_duration_since(self.entered_at) >= c.min_wait_in_open
    }

    pub fn try_acquire(&mut self, now: Instant) -> (Result<Grant, ()>, Effects) {
        let mut fx = Effects::default();
        if let Phase::Open { retry_at, .. } = self.phase {
            if now > retry_at {
                let reason = format!("waited {} in open", secs(self.config.wait_in_open));
                self.enter(State::HalfOpen, reason, now, &mut fx);
            } else if self.trial_is_due(now) {
                let waited = now.saturating_duration_since(self.entered_at);
                let reason = format!("refused {} calls in {}ms in open", self.not_permitted, waited.as_millis());
                self.enter(State::HalfOpen, reason, now, &mut fx);
            }
        }
        let granted = match &mut self.phase {
            Phase::Closed { .. } | Phase::Disabled => Some(false),
            Phase::HalfOpen { permits_left, .. } if *permits_left > 0 => {
                *permits_left -= 1;
                Some(true)
            }
            Phase::HalfOpen { .. } | Phase::Open { .. } | Phase::ForcedOpen => None,
        };
        match granted {
            Some(half_open_permit) => (Ok(Grant { generation: self.generation, half_open_permit }), fx),
            None => {
                self.refuse(&mut fx);
                (Err(()), fx)
            }
        }
    }

    /// Hands back a half-open permit of a call that was ignored or cancelled.
    pub fn release(&mut self, grant: Grant) {
        if grant.half_open_permit
            && grant.generation == self.generation
            && let Phase::HalfOpen { permits_left, .. } = &mut self.phase
        {
            *permits_left = (*permits_left + 1).min(self.config.permitted_calls_in_half_open);
        }
    }

    pub fn on_result(&mut self, grant: Grant, result: CallResult, elapsed: Duration, now: Instant) -> Effects {
        let mut fx = Effects::default();
        let state = self.state();
        if matches!(state, State::Disabled | State::ForcedOpen) {
            return fx;
        }
        let (failed, unanswered, transient) = match result {
            CallResult::Ignored => {
                fx.events.push(Event::IgnoredError);
                self.release(grant);
                return fx;
            }
            CallResult::Success => {
                fx.events.push(Event::Success { elapsed });
                (false, false, false)
            }
            CallResult::Failure | CallResult::Unanswered | CallResult::Transient => {
                fx.events.push(Event::Error { elapsed });
                (true, result == CallResult::Unanswered, result == CallResult::Transient)
            }
        };
        // Only calls granted in this state count: after a recovery, the verdicts on calls
        // sent during the outage must not open the breaker again.
        if grant.generation == self.generation {
            self.unanswered_run = if unanswered { self.unanswered_run + 1 } else { 0 };
        }
        // A call granted in an earlier state must not pass for one of this half-open's probes.
        if state == State::HalfOpen && grant.generation != self.generation {
            return fx;
        }
        // The PG's "unstable, try again" answer tells nothing of whether payments go through:
        // the trial's permit goes back, and the same buyer's retry (or the next buyer) tries.
        if transient
            && let Phase::HalfOpen { transients, .. } = &mut self.phase
            && *transients < TRANSIENTS_PER_HALF_OPEN
        {
            *transients += 1;
            self.release(grant);
            return fx;
        }
        let slow = elapsed > self.config.slow_call_duration;
        let now_s = self.second(now);
        let minimum = self.config.minimum_calls;
        let (totals, effective_minimum) = match &mut self.phase {
            Phase::Closed { window } | Phase::Open { window, .. } | Phase::HalfOpen { window, .. } => {
                window.record(now_s, failed, slow);
                (window.totals(now_s), window.effective_minimum(minimum))
            }
            Phase::ForcedOpen | Phase::Disabled => unreachable!("returned above"),
        };
        let run = self.config.open_after_unanswered;
        if state == State::Closed && run > 0 && self.unanswered_run >= run {
            self.enter(State::Open, format!("{run} calls in a row unanswered"), now, &mut fx);
            return fx;
        }
        if totals.calls < effective_minimum {
            return fx;
        }
        let (failure_rate, slow_rate) = rates(totals, effective_minimum);
        let failure_exceeded = failure_rate >= self.config.failure_rate_threshold;
        let slow_exceeded = slow_rate >= self.config.slow_call_rate_threshold;
        // The reason is formatted only on a transition: this is the hot path of every call.
        let to = match state {
            State::Closed if failure_exceeded || slow_exceeded => {
                if failure_exceeded {
                    fx.events.push(Event::FailureRateExceeded { rate: failure_rate });
                }
                if slow_exceeded {
                    fx.events.push(Event::SlowCallRateExceeded { rate: slow_rate });
                }
                State::Open
            }
            State::HalfOpen if failure_exceeded || slow_exceeded => State::Open,
            State::HalfOpen => State::Closed,
            _ => return fx,
        };
        let verdict = self.verdict(failure_rate, slow_rate, totals.calls, state);
        self.enter(to, verdict, now, &mut fx);
        self.retry_trial_soon = state == State::HalfOpen && to == State::Open && transient;
        fx
    }

    /// A timer fired; stale timers (the state changed since) do nothing.
    pub fn on_timer(&mut self, timer: Timer, now: Instant) -> Effects {
        let mut fx = Effects::default();
        if timer.generation != self.generation {
            return fx;
        }
        match (timer.kind, self.state()) {
            (TimerKind::OpenToHalfOpen, State::Open) => {
                let reason = format!("waited {} in open", secs(self.config.wait_in_open));
                self.enter(State::HalfOpen, reason, now, &mut fx);
            }
            (TimerKind::HalfOpenMaxWait, State::HalfOpen) => {
                let reason = format!("no decision within {} in half-open", secs(self.config.max_wait_in_half_open));
                let to = match self.config.half_open_timeout_target {
                    HalfOpenTimeoutTarget::Open => State::Open,
                    HalfOpenTimeoutTarget::Closed => State::Closed,
                };
                self.enter(to, reason, now, &mut fx);
            }
            _ => {}
        }
        fx
    }

    /// An operator's or a test's transition. Every pair but CLOSED -> HALF_OPEN is legal.
    pub fn transition_to(&mut self, to: State, now: Instant) -> Result<Effects, IllegalTransition> {
        let from = self.state();
        if from == State::Closed && to == State::HalfOpen {
            return Err(IllegalTransition { name: self.name.clone(), from, to });
        }
        let mut fx = Effects::default();
        self.enter(to, format!("manual transition to {to}"), now, &mut fx);
        Ok(fx)
    }

    /// OPEN until `until`; does not count as a normal open (the attempt counter stays).
    pub fn open_until(&mut self, until: Instant, now: Instant) -> Effects {
        let mut fx = Effects::default();
        self.switch(
            State::Open,
            format!("manual open for {}", secs(until.saturating_duration_since(now))),
            now,
            &mut fx,
        );
        let window = self.take_window();
        if self.config.automatic_transition {
            fx.timer = Some(Timer { kind: TimerKind::OpenToHalfOpen, at: until, generation: self.generation });
        }
        self.phase = Phase::Open { window, retry_at: until };
        fx
    }

    /// A fresh CLOSED breaker, whatever the state was.
    pub fn reset(&mut self, now: Instant) -> Effects {
        let mut fx = Effects::default();
        self.enter(State::Closed, "reset".to_string(), now, &mut fx);
        fx.events.push(Event::Reset);
        fx
    }

    fn enter(&mut self, to: State, reason: String, now: Instant, fx: &mut Effects) {
        self.switch(to, reason, now, fx);
        let window = self.take_window();
        self.phase = match to {
            State::Closed => {
                self.attempts = 0;
                Phase::Closed { window: Window::new(self.config.sliding_window) }
            }
            State::Open => {
                self.attempts += 1;
                let retry_at = now + self.config.wait_in_open;
                if self.config.automatic_transition {
                    fx.timer =
                        Some(Timer { kind: TimerKind::OpenToHalfOpen, at: retry_at, generation: self.generation });
                }
                Phase::Open { window, retry_at }
            }
            State::HalfOpen => {
                let permits = self.config.permitted_calls_in_half_open;
                if self.config.max_wait_in_half_open >= Duration::from_millis(1) {
                    let at = now + self.config.max_wait_in_half_open;
                    fx.timer = Some(Timer { kind: TimerKind::HalfOpenMaxWait, at, generation: self.generation });
                }
                Phase::HalfOpen {
                    window: Window::new(SlidingWindow::Count(permits)),
                    permits_left: permits,
                    transients: 0,
                }
            }
            State::ForcedOpen => Phase::ForcedOpen,
            State::Disabled => Phase::Disabled,
        };
    }

    /// The bookkeeping every entry shares: one event per real change, a new generation.
    fn switch(&mut self, to: State, reason: String, now: Instant, fx: &mut Effects) {
        let from = self.state();
        if from != to {
            fx.events.push(Event::StateTransition { from, to, reason });
        }
        self.generation += 1;
        self.not_permitted = 0;
        self.unanswered_run = 0;
        self.retry_trial_soon = false;
        self.entered_at = now;
        fx.state_entered = true;
    }

    fn take_window(&mut self) -> Window {
        let fresh = Window::new(self.config.sliding_window);
        match std::mem::replace(&mut self.phase, Phase::Disabled) {
            Phase::Closed { window } | Phase::Open { window, .. } | Phase::HalfOpen { window, .. } => window,
            Phase::ForcedOpen | Phase::Disabled => fresh,
        }
    }

    fn second(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.origin).as_secs()
    }

    /// The reason for a decision, with the measured rates, thresholds and window.
    fn verdict(&self, failure_rate: f64, slow_rate: f64, calls: u32, state: State) -> String {
        let c = &self.config;
        let cmp = |rate: f64, threshold: f64| if rate >= threshold { ">=" } else { "<" };
        let over = match (state, c.sliding_window) {
            (State::HalfOpen, _) => format!("over {calls} half-open probes"),
            (_, SlidingWindow::Count(_)) => format!("over last {calls} calls"),
            (_, SlidingWindow::Time(s)) => format!("over last {s}s ({calls} calls)"),
        };
        let failure = format!(
            "failure rate {}% {} {}%",
            pct(failure_rate),
            cmp(failure_rate, c.failure_rate_threshold),
            pct(c.failure_rate_threshold)
        );
        let slow = format!(
            "slow-call rate {}% {} {}% (calls over {})",
            pct(slow_rate),
            cmp(slow_rate, c.slow_call_rate_threshold),
            pct(c.slow_call_rate_threshold),
            secs(c.slow_call_duration)
        );
        let failure_exceeded = failure_rate >= c.failure_rate_threshold;
        let slow_exceeded = slow_rate >= c.slow_call_rate_threshold;
        match (failure_exceeded, slow_exceeded) {
            (true, false) => format!("{failure} {over}"),
            (false, true) => format!("{slow} {over}"),
            _ => format!("{failure} and {slow} {over}"),
        }
    }
}

fn rates(t: Totals, effective_minimum: u32) -> (f64, f64) {
    if t.calls == 0 || t.calls < effective_minimum {
        return (-1.0, -1.0);
    }
    let calls = t.calls as f64;
    (t.failed as f64 * 100.0 / calls, t.slow as f64 * 100.0 / calls)
}

fn pct(v: f64) -> String {
    let s = format!("{v:.1}");
    s.strip_suffix(".0").map(str::to_string).unwrap_or(s)
}

fn secs(d: Duration) -> String {
    if d.subsec_millis() == 0 { format!("{}s", d.as_secs()) } else { format!("{}ms", d.as_millis()) }
}
