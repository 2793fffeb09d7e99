//! A circuit breaker with Resilience4j's semantics, on tokio's clock.
//!
//! Why our own and not a crate: the one Rust crate with Resilience4j-style breakers
//! (tower-resilience-circuitbreaker 0.14) reads `std::time::Instant`, so paused-time
//! tests cannot drive it; it closes half-open after N successes instead of judging the
//! probes' failure rate; and it never resets its old state gauge. The state machine is
//! in `core` (pure, clock passed in); this module adds the lock, the clock, listeners,
//! transition logs and timers; `layer` makes it a tower `Layer`.

pub mod config;
pub mod core;
pub mod layer;
mod window;

use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use tokio::time::Instant;

pub use self::config::{BreakerConfig, HalfOpenTimeoutTarget, InitialState, SlidingWindow};
pub use self::core::{CallResult, Event, IllegalTransition, Metrics, State};
use self::core::{Core, Effects, Grant, Timer};
pub use self::layer::CircuitBreakerLayer;

/// Called for every event of a breaker, with the breaker's name. Keep it cheap.
pub type Listener = Arc<dyn Fn(&str, &Event) + Send + Sync>;

/// A call refused by an open breaker: nothing was sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("circuit breaker '{breaker}' is {state}: call not permitted")]
pub struct CallNotPermitted {
    pub breaker: String,
    pub state: State,
}

/// A cheap handle; clones share one breaker.
#[derive(Clone)]
pub struct CircuitBreaker {
    shared: Arc<Shared>,
}

struct Shared {
    name: String,
    core: Mutex<Core>,
    listeners: RwLock<Vec<Listener>>,
    timer: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

/// What an operator or the ops page reads about a breaker.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    pub name: String,
    pub state: State,
    pub since: Instant,
    pub metrics: Metrics,
    pub config: BreakerConfig,
}

impl CircuitBreaker {
    pub fn new(name: impl Into<String>, config: BreakerConfig) -> Result<CircuitBreaker, String> {
        config.validate()?;
        let name = name.into();
        let core = Core::new(name.clone(), config, Instant::now());
        Ok(CircuitBreaker {
            shared: Arc::new(Shared {
                name,
                core: Mutex::new(core),
                listeners: RwLock::new(Vec::new()),
                timer: Mutex::new(None),
            }),
        })
    }

    pub fn name(&self) -> &str {
        &self.shared.name
    }

    pub fn state(&self) -> State {
        self.core().state()
    }

    /// Whether a call asked for now would be admitted; takes no permit. Callers that
    /// choose between breakers use it: reading `state()` instead would leave an OPEN
    /// breaker without automatic transition skipped forever.
    pub fn admits_calls(&self) -> bool {
        self.core().would_admit(Instant::now())
    }

    /// `admits_calls`, asked for a call that is refused when the answer is no (a router
    /// skipping this gateway refuses on its behalf): the no counts as a denied call, so
    /// an OPEN breaker's trials follow the pace of the calls it refuses.
    pub fn ask(&self) -> bool {
        let (admitted, fx) = self.core().ask(Instant::now());
        self.apply(fx);
        admitted
    }

    /// Reading the metrics also ages a time window.
    pub fn metrics(&self) -> Metrics {
        self.core().metrics(Instant::now())
    }

    pub fn snapshot(&self) -> Snapshot {
        let mut core = self.core();
        Snapshot {
            name: self.shared.name.clone(),
            state: core.state(),
            since: core.entered_at(),
            metrics: core.metrics(Instant::now()),
            config: core.config().clone(),
        }
    }

    /// Normal opens since the breaker was last CLOSED.
    pub fn attempts(&self) -> u32 {
        self.core().attempts()
    }

    pub fn subscribe(&self, listener: impl Fn(&str, &Event) + Send + Sync + 'static) {
        self.shared.listeners.write().expect("listeners lock").push(Arc::new(listener));
    }

    /// Asks to make one call. A denial is counted and must not be followed by a call.
    pub fn try_acquire(&self) -> Result<Permit, CallNotPermitted> {
        let (result, fx, state) = {
            let mut core = self.core();
            let (result, fx) = core.try_acquire(Instant::now());
            (result, fx, core.state())
        };
        self.apply(fx);
        match result {
            Ok(grant) => Ok(Permit { breaker: self.clone(), grant, started: Instant::now(), done: false }),
            Err(()) => Err(CallNotPermitted { breaker: self.shared.name.clone(), state }),
        }
    }

    pub fn transition_to(&self, to: State) -> Result<(), IllegalTransition> {
        let fx = self.core().transition_to(to, Instant::now())?;
        self.apply(fx);
        Ok(())
    }

    pub fn force_open(&self) {
        self.transition_to(State::ForcedOpen).expect("any state may be forced open");
    }

    pub fn disable(&self) {
        self.transition_to(State::Disabled).expect("any state may be disabled");
    }

    pub fn reset(&self) {
        let fx = self.core().reset(Instant::now());
        self.apply(fx);
    }

    /// OPEN for an explicit time, without counting as a normal open.
    pub fn open_for(&self, duration: Duration) {
        let now = Instant::now();
        let fx = self.core().open_until(now + duration, now);
        self.apply(fx);
    }

    pub fn open_until(&self, until: Instant) {
        let fx = self.core().open_until(until, Instant::now());
        self.apply(fx);
    }

    fn core(&self) -> std::sync::MutexGuard<'_, Core> {
        self.shared.core.lock().expect("breaker lock poisoned")
    }

    fn record(&self, grant: Grant, result: CallResult, elapsed: Duration) {
        let fx = self.core().on_result(grant, result, elapsed, Instant::now());
        self.apply(fx);
    }

    fn release(&self, grant: Grant) {
        self.core().release(grant);
    }

    /// Publishes the events (outside the lock) and re-arms the timer.
    fn apply(&self, fx: Effects) {
        if fx.state_entered {
            let mut slot = self.shared.timer.lock().expect("timer lock");
            if let Some(old) = slot.take() {
                old.abort();
            }
            if let Some(timer) = fx.timer {
                *slot = self.arm(timer);
            }
        }
        if fx.events.is_empty() {
            return;
        }
        let listeners = self.shared.listeners.read().expect("listeners lock").clone();
        for event in &fx.events {
            log_transition(&self.shared.name, event);
            for listener in &listeners {
                listener(&self.shared.name, event);
            }
        }
    }

    fn arm(&self, timer: Timer) -> Option<tokio::task::JoinHandle<()>> {
        // Outside a runtime (plain unit tests) only the lazy transition applies.
        let runtime = tokio::runtime::Handle::try_current().ok()?;
        let weak = Arc::downgrade(&self.shared);
        Some(runtime.spawn(async move {
            tokio::time::sleep_until(timer.at).await;
            if let Some(shared) = weak.upgrade() {
                let breaker = CircuitBreaker { shared };
                let fx = breaker.core().on_timer(timer, Instant::now());
                // This task is the armed timer; it must not abort itself while applying.
                if fx.state_entered {
                    breaker.shared.timer.lock().expect("timer lock").take();
                }
                breaker.apply(fx);
            }
        }))
    }
}

/// One structured line per transition: warn when calls start being refused.
fn log_transition(breaker: &str, event: &Event) {
    if let Event::StateTransition { from, to, reason } = event {
        let (from, to) = (from.as_str(), to.as_str());
        if matches!(to, "open" | "forced_open") {
            tracing::warn!(breaker, from, to, reason = reason.as_str(), "circuit breaker state changed");
        } else {
            tracing::info!(breaker, from, to, reason = reason.as_str(), "circuit breaker state changed");
        }
    }
}

/// Permission for one call. Record its result; dropping it unrecorded (a cancelled call)
/// counts as nothing and hands back a half-open permit.
pub struct Permit {
    breaker: CircuitBreaker,
    grant: Grant,
    started: Instant,
    done: bool,
}

impl Permit {
    /// Records the result; the duration is measured on tokio's clock since acquisition.
    pub fn record(mut self, result: CallResult) {
        self.done = true;
        let elapsed = self.started.elapsed();
        self.breaker.record(self.grant, result, elapsed);
    }

    /// Records with an explicit duration (for callers that measured it themselves).
    pub fn record_with(mut self, result: CallResult, elapsed: Duration) {
        self.done = true;
        self.breaker.record(self.grant, result, elapsed);
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        if !self.done {
            self.breaker.release(self.grant);
        }
    }
}
