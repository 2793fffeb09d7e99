//! The cost of the resilience stack itself: one call through retry + circuit breaker +
//! bulkhead over an inner service that answers at once. Target: under 1 µs.
//!
//! `cargo bench -p gateway --bench stack`

use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use gateway::breaker::CircuitBreaker;
use gateway::observer::{GatewayObserver, NoopObserver};
use gateway::outcome::{CallError, PgAnswer};
use gateway::retry::Attempted;
use gateway::transport::PgCall;
use gateway::{ResilienceConfig, stack};
use tower::ServiceExt;
use tower::retry::budget::TpsBudget;

fn bench(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
    let config = ResilienceConfig::default();
    let _guard = runtime.enter();
    let breaker = CircuitBreaker::new("bench", config.payment_breaker.clone()).unwrap();
    let budget = Arc::new(TpsBudget::new(
        config.retry.budget_window,
        config.retry.budget_min_per_second,
        config.retry.budget_ratio,
    ));
    let observer: Arc<dyn GatewayObserver> = Arc::new(NoopObserver);
    let noop = tower::service_fn(|_: PgCall| std::future::ready(Ok::<_, CallError>(PgAnswer::NotFound)));
    let service = stack(&config, noop, &breaker, &budget, &observer);
    let call = PgCall::GetTransaction("20250816:TR:9577c5".into());

    c.bench_function("breaker+retry+bulkhead, no-op inner", |b| {
        b.to_async(&runtime).iter(|| {
            let attempted = Attempted { call: call.clone(), started: tokio::time::Instant::now(), max_attempts: None };
            service.clone().oneshot(attempted)
        })
    });
    c.bench_function("breaker alone: acquire + record", |b| {
        b.iter(|| breaker.try_acquire().unwrap().record(gateway::breaker::CallResult::Success))
    });
    let mut owned = service.clone();
    c.bench_function("stack without the per-call clone", |b| {
        b.to_async(&runtime).iter(|| {
            let attempted = Attempted { call: call.clone(), started: tokio::time::Instant::now(), max_attempts: None };
            use tower::Service;
            futures_ready(&mut owned);
            owned.call(attempted)
        })
    });
    c.bench_function("baseline: no-op inner alone", |b| b.to_async(&runtime).iter(|| noop.oneshot(call.clone())));
}

/// Polls readiness once; every layer here is ready at once (the bulkhead has room).
fn futures_ready<S: tower::Service<Attempted>>(service: &mut S) {
    let waker = std::task::Waker::noop();
    let mut cx = std::task::Context::from_waker(waker);
    assert!(service.poll_ready(&mut cx).is_ready());
}

criterion_group!(benches, bench);
criterion_main!(benches);
