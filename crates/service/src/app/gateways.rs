//! The configured PGs in priority order. Each has its own client (and so its own
//! breakers, bulkhead and retry budget), its own callback URL and its own activity
//! record for the ops page. An attempt names its gateway; everything that talks to the
//! PG about that attempt afterwards looks the gateway up here by that name, its
//! callbacks included: each gateway holds the intake that hears from it.

use std::sync::Arc;

use gateway::GatewayClient;
use gateway::breaker::CircuitBreaker;
use gateway::observer::{GatewayEvent, Operation};

use super::callbacks::CallbackIntake;
use crate::telemetry::Activity;

pub struct Gateway {
    pub client: GatewayClient,
    /// Where this PG posts its results for us.
    pub callback_url: String,
    pub activity: Arc<Activity>,
    /// Where this PG's callbacks are verified and applied.
    pub callbacks: CallbackIntake,
}

impl Gateway {
    pub fn name(&self) -> &str {
        self.client.name()
    }

    /// Whether a new payment may go here now: its payment breaker would admit the call
    /// (an OPEN breaker whose wait is over admits a half-open probe).
    pub fn admits_payments(&self) -> bool {
        self.client.payment_breaker().admits_calls()
    }

    /// `admits_payments`, asked for a checkout that is refused here when the answer is
    /// no: the no counts as a refusal of the breaker, whose trials come one in so many
    /// refused checkouts.
    pub fn offer_payment(&self) -> bool {
        self.client.payment_breaker().ask()
    }
}

/// At least one gateway, the primary first. Cheap to clone.
#[derive(Clone)]
pub struct Gateways(Arc<[Gateway]>);

impl Gateways {
    /// # Panics
    /// With no gateway: configuration always has the primary.
    pub fn new(list: Vec<Gateway>) -> Gateways {
        assert!(!list.is_empty(), "at least the primary gateway");
        Gateways(list.into())
    }

    pub fn primary(&self) -> &Gateway {
        &self.0[0]
    }

    pub fn all(&self) -> &[Gateway] {
        &self.0
    }

    /// The first gateway at or after `from` that takes a new payment now. Each one
    /// skipped is counted as a refusal of its payment breaker, as the client counts its
    /// own: the gateway's metrics and ops page show a refused checkout either way.
    pub fn route(&self, from: usize) -> Option<usize> {
        let chosen = (from..self.0.len()).find(|&i| self.0[i].offer_payment());
        for skipped in &self.0[from..chosen.unwrap_or(self.0.len())] {
            let refused = GatewayEvent::Refused { operation: Operation::RequestPayment, reason: "circuit_open" };
            skipped.client.observer().on_event(&refused);
        }
        chosen
    }

    /// Whether a gateway after `index` would take a payment now (asked without counting
    /// a refusal): a payment that did not arrive at `index` has somewhere to go.
    pub fn admits_payments_after(&self, index: usize) -> bool {
        self.0[index + 1..].iter().any(Gateway::admits_payments)
    }

    pub fn get(&self, name: &str) -> Option<&Gateway> {
        self.0.iter().find(|g| g.name() == name)
    }

    /// Every breaker with its gateway's name: payments and status of each gateway.
    pub fn breakers(&self) -> Vec<(&str, &CircuitBreaker)> {
        self.0
            .iter()
            .flat_map(|g| [(g.name(), g.client.payment_breaker()), (g.name(), g.client.status_breaker())])
            .collect()
    }
}
