//! Prometheus metrics, one registry per app instance (tests run many apps in one
//! process). Counters and histograms are updated where things happen; gauges that
//! describe the present (breaker states, the pending backlog) are read at scrape time,
//! so every scrape shows every breaker with exactly one state at 1. Every gateway metric
//! carries a `gateway` label (several PGs may be configured).

use std::sync::Arc;
use std::time::Duration;

use gateway::GatewayClient;
use gateway::breaker::{CircuitBreaker, Event, State};
use gateway::observer::{GatewayEvent, GatewayObserver};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OperationOutcome {
    gateway: String,
    operation: &'static str,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OperationReason {
    gateway: String,
    operation: &'static str,
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OperationLabel {
    gateway: String,
    operation: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BreakerState {
    gateway: String,
    breaker: String,
    state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BreakerLabel {
    gateway: String,
    breaker: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Transition {
    gateway: String,
    breaker: String,
    from: &'static str,
    to: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Failover {
    from: String,
    to: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SourceLabel {
    source: &'static str,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

fn latency() -> Histogram {
    // 1 ms .. ~16 s
    Histogram::new(exponential_buckets(0.001, 2.0, 15))
}

fn settle_latency() -> Histogram {
    // 50 ms .. ~14 min
    Histogram::new(exponential_buckets(0.05, 2.0, 15))
}

pub struct Metrics {
    registry: Registry,
    requests: Family<OperationOutcome, Counter>,
    failures: Family<OperationReason, Counter>,
    durations: HistogramFamily<OperationLabel>,
    refused: Family<OperationReason, Counter>,
    retries: Family<OperationLabel, Counter>,
    budget_exhausted: Family<OperationLabel, Counter>,
    breaker_state: Family<BreakerState, Gauge>,
    breaker_failure_rate: Family<BreakerLabel, Gauge<f64, std::sync::atomic::AtomicU64>>,
    breaker_slow_rate: Family<BreakerLabel, Gauge<f64, std::sync::atomic::AtomicU64>>,
    transitions: Family<Transition, Counter>,
    checkouts: Family<ResultLabel, Counter>,
    failovers: Family<Failover, Counter>,
    checkout_duration: HistogramFamily<ResultLabel>,
    settle_duration: HistogramFamily<SourceLabel>,
    callbacks: Family<ResultLabel, Counter>,
    reconciliations: Family<ResultLabel, Counter>,
    double_charges: Counter,
    refunds_needed: Counter,
    pending: Gauge,
    database_up: Gauge,
    oldest_pending_age: Gauge<f64, std::sync::atomic::AtomicU64>,
    /// When the last double charge or refund finding was counted (for the ops page).
    last_anomaly: std::sync::Mutex<Option<tokio::time::Instant>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut r = Registry::default();
        let m = Metrics {
            requests: Family::default(),
            failures: Family::default(),
            durations: Family::new_with_constructor(latency),
            refused: Family::default(),
            retries: Family::default(),
            budget_exhausted: Family::default(),
            breaker_state: Family::default(),
            breaker_failure_rate: Family::default(),
            breaker_slow_rate: Family::default(),
            transitions: Family::default(),
            checkouts: Family::default(),
            failovers: Family::default(),
            checkout_duration: Family::new_with_constructor(latency),
            settle_duration: Family::new_with_constructor(settle_latency),
            callbacks: Family::default(),
            reconciliations: Family::default(),
            double_charges: Counter::default(),
            refunds_needed: Counter::default(),
            pending: Gauge::default(),
            database_up: Gauge::default(),
            oldest_pending_age: Gauge::default(),
            last_anomaly: std::sync::Mutex::new(None),
            registry: Registry::default(),
        };
        r.register("payguard_gateway_requests", "PG HTTP attempts by operation and outcome", m.requests.clone());
        r.register(
            "payguard_gateway_failures",
            "Failed PG HTTP attempts by operation and reason (the PG fail count)",
            m.failures.clone(),
        );
        r.register("payguard_gateway_request_duration_seconds", "PG HTTP attempt latency", m.durations.clone());
        r.register(
            "payguard_gateway_refused",
            "PG calls refused before any HTTP (circuit open, bulkhead full)",
            m.refused.clone(),
        );
        r.register("payguard_gateway_retries", "PG call retries", m.retries.clone());
        r.register(
            "payguard_gateway_retry_budget_exhausted",
            "Retryable failures not retried: the retry budget was spent",
            m.budget_exhausted.clone(),
        );
        r.register(
            "payguard_circuit_breaker_state",
            "1 for the breaker's current state, 0 for the others",
            m.breaker_state.clone(),
        );
        r.register(
            "payguard_circuit_breaker_failure_rate",
            "Failure rate (percent) of the breaker's window, -1 until judged",
            m.breaker_failure_rate.clone(),
        );
        r.register(
            "payguard_circuit_breaker_slow_call_rate",
            "Slow-call rate (percent) of the breaker's window, -1 until judged",
            m.breaker_slow_rate.clone(),
        );
        r.register("payguard_circuit_breaker_transitions", "Breaker state changes", m.transitions.clone());
        r.register("payguard_checkouts", "Checkouts by result", m.checkouts.clone());
        r.register(
            "payguard_gateway_failovers",
            "Payments moved to the next gateway after the previous one surely did not receive them",
            m.failovers.clone(),
        );
        r.register("payguard_checkout_duration_seconds", "Checkout latency by result", m.checkout_duration.clone());
        r.register(
            "payguard_payment_settle_duration_seconds",
            "Time from payment request to final status, by who settled it",
            m.settle_duration.clone(),
        );
        r.register("payguard_callbacks", "Callbacks received by result", m.callbacks.clone());
        r.register("payguard_reconciliations", "Reconciliation checks by result", m.reconciliations.clone());
        r.register(
            "payguard_double_charges",
            "Second successful charges detected for one payment",
            m.double_charges.clone(),
        );
        r.register("payguard_refunds_needed", "Charges found for payments we had failed", m.refunds_needed.clone());
        r.register("payguard_payments_pending", "Payment attempts not settled yet", m.pending.clone());
        r.register(
            "payguard_database_up",
            "1 when the database answered this scrape's backlog query, 0 when it could not be reached",
            m.database_up.clone(),
        );
        r.register(
            "payguard_payments_pending_oldest_age_seconds",
            "Age of the oldest unsettled payment attempt",
            m.oldest_pending_age.clone(),
        );
        Metrics { registry: r, ..m }
    }

    /// Follows a client's breakers: transitions are counted as they happen.
    pub fn watch_breakers(self: &Arc<Self>, gateway: &GatewayClient) {
        for breaker in [gateway.payment_breaker(), gateway.status_breaker()] {
            let metrics = Arc::downgrade(self);
            let gateway = gateway.name().to_string();
            breaker.subscribe(move |name, event| {
                if let (Some(m), Event::StateTransition { from, to, .. }) = (metrics.upgrade(), event) {
                    let labels = Transition {
                        gateway: gateway.clone(),
                        breaker: name.to_string(),
                        from: from.as_str(),
                        to: to.as_str(),
                    };
                    m.transitions.get_or_create(&labels).inc();
                }
            });
        }
    }

    /// The observer for one gateway's client: its events carry the `gateway` label.
    pub fn observer(self: &Arc<Self>, gateway: &str) -> Arc<dyn GatewayObserver> {
        Arc::new(GatewayMetrics { gateway: gateway.to_string(), metrics: self.clone() })
    }

    pub fn failover(&self, from: &str, to: &str) {
        self.failovers.get_or_create(&Failover { from: from.to_string(), to: to.to_string() }).inc();
    }

    pub fn checkout(&self, result: &'static str, elapsed: Duration) {
        let label = ResultLabel { result };
        self.checkouts.get_or_create(&label).inc();
        self.checkout_duration.get_or_create(&label).observe(elapsed.as_secs_f64());
    }

    pub fn settled(&self, source: &'static str, since_request: Duration) {
        self.settle_duration.get_or_create(&SourceLabel { source }).observe(since_request.as_secs_f64());
    }

    pub fn callback(&self, result: &'static str) {
        self.callbacks.get_or_create(&ResultLabel { result }).inc();
    }

    pub fn reconciliation(&self, result: &'static str) {
        self.reconciliations.get_or_create(&ResultLabel { result }).inc();
    }

    pub fn double_charge(&self) {
        self.double_charges.inc();
        self.note_anomaly();
    }

    pub fn refund_needed(&self) {
        self.refunds_needed.inc();
        self.note_anomaly();
    }

    fn note_anomaly(&self) {
        *self.last_anomaly.lock().expect("anomaly lock") = Some(tokio::time::Instant::now());
    }

    /// Time since the last double charge or refund finding, if any.
    pub fn last_anomaly_age(&self) -> Option<Duration> {
        self.last_anomaly.lock().expect("anomaly lock").map(|at| at.elapsed())
    }

    /// The text exposition, after refreshing the gauges that describe the present.
    /// `breakers` are (gateway name, breaker) pairs; `backlog` is the pending count and
    /// the oldest one's age, or None when the database could not say (the backlog gauges
    /// keep their last values and `payguard_database_up` reads 0: the metrics of a shop
    /// whose database is down are the ones an operator needs most).
    pub fn render(&self, breakers: &[(&str, &CircuitBreaker)], backlog: Option<(i64, Duration)>) -> String {
        for (gateway, breaker) in breakers {
            let snapshot = breaker.snapshot();
            for state in State::ALL {
                let labels = BreakerState {
                    gateway: gateway.to_string(),
                    breaker: snapshot.name.clone(),
                    state: state.as_str(),
                };
                self.breaker_state.get_or_create(&labels).set((state == snapshot.state) as i64);
            }
            let label = BreakerLabel { gateway: gateway.to_string(), breaker: snapshot.name.clone() };
            self.breaker_failure_rate.get_or_create(&label).set(snapshot.metrics.failure_rate);
            self.breaker_slow_rate.get_or_create(&label).set(snapshot.metrics.slow_call_rate);
        }
        self.database_up.set(backlog.is_some() as i64);
        if let Some((pending, oldest_pending_age)) = backlog {
            self.pending.set(pending);
            self.oldest_pending_age.set(oldest_pending_age.as_secs_f64());
        }
        let mut out = String::new();
        encode(&mut out, &self.registry).expect("writing to a String cannot fail");
        out
    }
}

/// One gateway's view of the metrics (see `Metrics::observer`).
struct GatewayMetrics {
    gateway: String,
    metrics: Arc<Metrics>,
}

impl GatewayObserver for GatewayMetrics {
    fn on_event(&self, event: &GatewayEvent) {
        self.metrics.gateway_event(&self.gateway, event);
    }
}

impl Metrics {
    /// Counts what one gateway's client reported.
    fn gateway_event(&self, gateway: &str, event: &GatewayEvent) {
        let gateway = gateway.to_string();
        match event {
            GatewayEvent::Attempt { operation, outcome, elapsed } => {
                let operation = operation.as_str();
                let class = match *outcome {
                    "ok" => "success",
                    "rejected" | "not_found" => outcome,
                    reason => {
                        let labels = OperationReason { gateway: gateway.clone(), operation, reason };
                        self.failures.get_or_create(&labels).inc();
                        "failure"
                    }
                };
                let labels = OperationOutcome { gateway: gateway.clone(), operation, outcome: class };
                self.requests.get_or_create(&labels).inc();
                self.durations.get_or_create(&OperationLabel { gateway, operation }).observe(elapsed.as_secs_f64());
            }
            GatewayEvent::Refused { operation, reason } => {
                let labels = OperationReason { gateway, operation: operation.as_str(), reason };
                self.refused.get_or_create(&labels).inc();
            }
            GatewayEvent::Retry { operation, .. } => {
                self.retries.get_or_create(&OperationLabel { gateway, operation: operation.as_str() }).inc();
            }
            GatewayEvent::RetryBudgetExhausted { operation } => {
                let labels = OperationLabel { gateway, operation: operation.as_str() };
                self.budget_exhausted.get_or_create(&labels).inc();
            }
            GatewayEvent::RetryDeadlineReached { .. } => {}
        }
    }
}
