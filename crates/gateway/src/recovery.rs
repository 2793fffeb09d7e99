//! Recovery in one probe interval: while a payment breaker is OPEN, ask the PG whether
//! it is back, out of band, instead of refusing buyers for the whole `wait_in_open`.
//! The question is a status lookup of a key that cannot exist: any answer from the PG,
//! its 404 included, proves it is up; a 5xx, a refused connection or a timeout does not.
//! When it is up the breaker goes HALF_OPEN at once and the next checkouts are its
//! probes. A half-open that fails again doubles the interval (up to `wait_in_open`), so
//! a PG whose status API answers while its payments fail is not sent a burst of probe
//! payments every interval. The breaker's own timer stays the fallback.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

use tower::ServiceExt;

use crate::breaker::{CircuitBreaker, Event, State};
use crate::transport::{HttpTransport, PgCall};

/// Subscribes to `breaker` and probes the PG through `transport` while it is OPEN.
pub(crate) fn watch(breaker: &CircuitBreaker, transport: HttpTransport, interval: Duration, longest: Duration) {
    if interval.is_zero() {
        return;
    }
    let probing = Arc::new(AtomicBool::new(false));
    let failed_half_opens = Arc::new(AtomicU32::new(0));
    let watched = breaker.clone();
    breaker.subscribe(move |_, event| {
        let Event::StateTransition { from, to, .. } = event else { return };
        match (from, to) {
            (_, State::Closed) => failed_half_opens.store(0, Ordering::Relaxed),
            (State::HalfOpen, State::Open) => {
                failed_half_opens.fetch_add(1, Ordering::Relaxed);
            }
            _ => {}
        }
        // Outside a runtime (a breaker driven by hand in a test) there is nothing to run on.
        let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
        if *to != State::Open || probing.swap(true, Ordering::AcqRel) {
            return;
        }
        let doublings = failed_half_opens.load(Ordering::Relaxed).min(16);
        let every = interval.saturating_mul(1 << doublings).min(longest.max(interval));
        let (breaker, transport, probing) = (watched.clone(), transport.clone(), probing.clone());
        runtime.spawn(async move {
            probe_while_open(&breaker, transport, every).await;
            probing.store(false, Ordering::Release);
        });
    });
}

async fn probe_while_open(breaker: &CircuitBreaker, transport: HttpTransport, every: Duration) {
    loop {
        tokio::time::sleep(every).await;
        if breaker.state() != State::Open {
            return;
        }
        let unknown_key = format!("payguard-probe-{:016x}", rand::random::<u64>());
        let alive = transport.clone().oneshot(PgCall::GetTransaction(unknown_key)).await.is_ok();
        if alive && breaker.state() == State::Open && breaker.transition_to(State::HalfOpen).is_ok() {
            tracing::info!(breaker = breaker.name(), "the PG answers again: half-open now, before the wait is over");
            return;
        }
    }
}
