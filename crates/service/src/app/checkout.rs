//! Checkout, by the outcome table of design section 4: never a database transaction
//! across the PG call; every PG outcome is one `match` arm. With several gateways the
//! attempt goes to the first whose payment breaker admits it, and moves on only after
//! a NotDelivered outcome (breaker refusal, full bulkhead, connection refused, the PG's
//! "temporarily unavailable"): never after a timeout, an answer or a rejection.

use std::sync::Arc;

use gateway::PaymentOutcome;
use gateway::observer::{GatewayEvent, Operation};
use gateway::wire::{CardType, PaymentRequest};

use super::gateways::Gateways;
use crate::domain::{BuyerId, CardNumber, CheckoutLine, Settlement};
use crate::metrics::Metrics;
use crate::store::{CreatedOrder, NewOrder, Store, StoreError, Transition};

#[derive(Debug)]
pub struct CheckoutRequest {
    pub buyer: BuyerId,
    pub lines: Vec<CheckoutLine>,
    pub card_type: CardType,
    pub card: CardNumber,
    /// The buyer's `Idempotency-Key`, linked to the order when it is created.
    pub idempotency_key: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum CheckoutError {
    #[error("the payment gateway is unavailable: {0}")]
    GatewayUnavailable(String),
    #[error("the PG rejected the payment: {reason}")]
    Rejected { order_id: i64, reason: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// How a checkout ended for the buyer (the HTTP layer reads the order back).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Placed {
    pub order_id: i64,
}

#[derive(Clone)]
pub struct Checkout {
    store: Arc<dyn Store>,
    gateways: Gateways,
    metrics: Arc<Metrics>,
}

impl Checkout {
    pub fn new(store: Arc<dyn Store>, gateways: Gateways, metrics: Arc<Metrics>) -> Checkout {
        Checkout { store, gateways, metrics }
    }

    pub async fn place(&self, request: CheckoutRequest) -> Result<Placed, CheckoutError> {
        let started = tokio::time::Instant::now();
        let result = self.run(request).await;
        let label = match &result {
            Ok((_, label)) => label,
            Err(CheckoutError::GatewayUnavailable(_)) => "gateway_unavailable",
            Err(CheckoutError::Rejected { .. }) => "rejected",
            Err(CheckoutError::Store(crate::store::StoreError::OutOfStock { .. })) => "out_of_stock",
            Err(CheckoutError::Store(crate::store::StoreError::ProductNotFound(_))) => "product_not_found",
            Err(CheckoutError::Store(_)) => "error",
        };
        self.metrics.checkout(label, started.elapsed());
        result.map(|(placed, _)| placed)
    }

    /// The first gateway at or after `from` whose payment breaker admits a call. Each
    /// one skipped is counted as a refusal of its breaker, like the client's own.
    fn route(&self, from: usize) -> Option<usize> {
        let all = self.gateways.all();
        let chosen = (from..all.len()).find(|&i| all[i].admits_payments());
        for skipped in &all[from..chosen.unwrap_or(all.len())] {
            let refused = GatewayEvent::Refused { operation: Operation::RequestPayment, reason: "circuit_open" };
            skipped.client.observer().on_event(&refused);
        }
        chosen
    }

    /// The checkout, and its label for the checkout metrics.
    async fn run(&self, request: CheckoutRequest) -> Result<(Placed, &'static str), CheckoutError> {
        // 1. A cheap pre-check: with every breaker open nothing is written and nothing sent.
        let Some(mut current) = self.route(0) else {
            let states: Vec<String> = self
                .gateways
                .all()
                .iter()
                .map(|g| format!("{} is {}", g.client.payment_breaker().name(), g.client.payment_breaker().state()))
                .collect();
            return Err(CheckoutError::GatewayUnavailable(format!("circuit breaker {}", states.join(", "))));
        };
        // 2. Transaction 1: order, items, stock reservation, REQUESTED attempt.
        let created = self
            .store
            .create_order(NewOrder {
                buyer: request.buyer,
                lines: request.lines,
                gateway: self.gateways.all()[current].name().to_string(),
                card_type: request.card_type,
                card_last4: request.card.last4().to_string(),
                now_ms: super::now_ms(),
                idempotency_key: request.idempotency_key,
            })
            .await?;
        loop {
            // 3. The PG call, outside any transaction.
            let gateway = &self.gateways.all()[current];
            let payment = PaymentRequest {
                order_id: created.pg_order_id.clone(),
                card_type: request.card_type,
                card_no: request.card.expose_for_gateway().to_string(),
                amount: created.amount.get(),
                callback_url: gateway.callback_url.clone(),
            };
            // With a further gateway to take it, a payment that did not arrive moves on
            // after a few attempts instead of this gateway's whole retry sequence.
            let outcome = if self.gateways.all()[current + 1..].iter().any(|g| g.admits_payments()) {
                gateway.client.request_payment_before_failover(payment).await
            } else {
                gateway.client.request_payment(payment).await
            };
            // Only a request that surely never reached this PG may go to the next one:
            // anything else might be (or become) a charge here.
            if let PaymentOutcome::NotDelivered(why) = &outcome
                && let Some(next) = self.route(current + 1)
            {
                let to = self.gateways.all()[next].name();
                if self.store.reassign_gateway(created.attempt_id, gateway.name(), to, super::now_ms()).await? {
                    tracing::warn!(order = created.order_id, pg_order_id = %created.pg_order_id, from = gateway.name(), to, %why, "payment not delivered: failing over to the next gateway");
                    self.metrics.failover(gateway.name(), to);
                    current = next;
                    continue;
                }
            }
            // 4. Transaction 2, by outcome.
            return self.conclude(&created, gateway.name(), outcome).await;
        }
    }

    async fn conclude(
        &self,
        created: &CreatedOrder,
        gateway: &str,
        outcome: PaymentOutcome,
    ) -> Result<(Placed, &'static str), CheckoutError> {
        let placed = Placed { order_id: created.order_id };
        let now = super::now_ms();
        match outcome {
            PaymentOutcome::Accepted { transaction_key } => {
                // A fast callback may have settled it already; that is fine.
                self.store.mark_pending(created.attempt_id, Some(&transaction_key), now).await?;
                Ok((placed, "accepted"))
            }
            PaymentOutcome::Unknown(why) => {
                tracing::warn!(order = created.order_id, pg_order_id = %created.pg_order_id, gateway, %why, "payment outcome unknown: left PENDING for the reconciler");
                self.store.mark_pending(created.attempt_id, None, now).await?;
                Ok((placed, "unknown"))
            }
            PaymentOutcome::NotDelivered(why) => {
                match self.store.roll_back(created.attempt_id).await? {
                    Transition::Applied => {
                        tracing::info!(order = created.order_id, pg_order_id = %created.pg_order_id, gateway, %why, "payment not delivered: order rolled back")
                    }
                    // Only a REQUESTED attempt is rolled back; anything else is settled news.
                    other => {
                        tracing::error!(order = created.order_id, ?other, "a not-delivered attempt had already moved")
                    }
                }
                Err(CheckoutError::GatewayUnavailable(why.to_string()))
            }
            PaymentOutcome::Rejected(rejection) => {
                let failed = Settlement {
                    status: crate::domain::PaymentStatus::Failed,
                    transaction_key: None,
                    reason: Some(rejection.reason.clone()),
                };
                self.store.settle(created.attempt_id, &failed, "checkout", now).await?;
                tracing::warn!(order = created.order_id, gateway, status = rejection.status, reason = %rejection.reason, "the PG rejected a payment request");
                Err(CheckoutError::Rejected { order_id: created.order_id, reason: rejection.reason })
            }
        }
    }
}
