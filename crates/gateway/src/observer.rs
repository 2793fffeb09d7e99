//! Hooks for metrics: the client reports what happened, the service counts it.

use std::time::Duration;

/// The PG operation a call belongs to (the `operation` metric label).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Operation {
    RequestPayment,
    GetTransaction,
    FindByOrder,
    /// A refund (the cancel API of a PG that has one).
    RequestCancel,
    GetCancels,
}

impl Operation {
    pub const ALL: [Operation; 5] = [
        Operation::RequestPayment,
        Operation::GetTransaction,
        Operation::FindByOrder,
        Operation::RequestCancel,
        Operation::GetCancels,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Operation::RequestPayment => "request_payment",
            Operation::GetTransaction => "get_transaction",
            Operation::FindByOrder => "find_by_order",
            Operation::RequestCancel => "request_cancel",
            Operation::GetCancels => "get_cancels",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GatewayEvent {
    /// One HTTP attempt ended. `outcome` is `ok`, `rejected`, `not_found` or a failure reason.
    Attempt { operation: Operation, outcome: &'static str, elapsed: Duration },
    /// A call refused before any HTTP: `circuit_open` or `bulkhead_full`.
    Refused { operation: Operation, reason: &'static str },
    /// A retry is scheduled after `backoff`; `attempt` is the one about to run (2, 3, ...).
    Retry { operation: Operation, attempt: u32, backoff: Duration },
    /// A retryable failure was not retried because the retry budget is spent.
    RetryBudgetExhausted { operation: Operation },
    /// A retryable failure was not retried because the total deadline would pass.
    RetryDeadlineReached { operation: Operation },
}

pub trait GatewayObserver: Send + Sync + 'static {
    fn on_event(&self, event: &GatewayEvent);
}

/// Observes nothing.
pub struct NoopObserver;

impl GatewayObserver for NoopObserver {
    fn on_event(&self, _: &GatewayEvent) {}
}
