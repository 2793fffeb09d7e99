//! Checkout, by its outcome table (docs/resilience.md): never a database transaction
//! across the PG call; every PG outcome is one `match` arm. With several gateways the
//! attempt goes to the first whose payment breaker admits it, and moves on only after
//! a NotDelivered outcome (breaker refusal, full bulkhead, connection refused, the PG's
//! "temporarily unavailable"): never after a timeout, an answer or a rejection.
//!
//! Admission comes first: a checkout that would find no free slot is refused before it
//! writes anything. Once the payment request may have reached a PG, a failing database
//! never turns the answer into an error: the order and its REQUESTED attempt were
//! committed before the call, and the reconciler settles them by orderId, as after a
//! crash.

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tracing::{Instrument, Span};

use gateway::PaymentOutcome;
use gateway::wire::{self, PaymentRequest};

use super::gateways::Gateways;
use super::listings::Listings;
use super::settlement::Settler;
use crate::domain::{BuyerId, CardNumber, CardType, CheckoutLine, OrderId, ProductId, Settlement, price};
use crate::domain::{GatewayName, PaymentStatus, Source, Timestamp};
use crate::store::{
    AttemptView, CreatedOrder, NewOrder, OrderRecord, OrderStore, PaymentStore, StoreError, Transition,
};
use crate::telemetry::Metrics;

/// How many times an order is priced from a fresh read before a price that keeps
/// changing is answered with `PRICE_CHANGED` (a first pricing from a quote is not counted).
const PRICING_TRIES: u32 = 3;

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
    #[error("checkout is at capacity")]
    Overloaded,
    #[error("the payment gateway is unavailable: {0}")]
    GatewayUnavailable(String),
    #[error("the PG rejected the payment: {reason}")]
    Rejected { order_id: OrderId, reason: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl CheckoutError {
    /// The `result` label of the checkout metrics for this refusal.
    pub fn label(&self) -> &'static str {
        match self {
            CheckoutError::Overloaded => "overloaded",
            CheckoutError::Store(e) if e.is_unavailable() => "store_unavailable",
            CheckoutError::GatewayUnavailable(_) => "gateway_unavailable",
            CheckoutError::Rejected { .. } => "rejected",
            CheckoutError::Store(StoreError::OutOfStock { .. }) => "out_of_stock",
            CheckoutError::Store(StoreError::ProductNotFound(_)) => "product_not_found",
            CheckoutError::Store(StoreError::PriceChanged(_)) => "price_changed",
            CheckoutError::Store(_) => "error",
        }
    }
}

/// A placed checkout: the order as this checkout left it (PENDING), which is how it
/// stands unless news of the payment overtook the checkout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placed {
    pub order: OrderRecord,
    /// True when the PG's news (a fast callback) settled the attempt before the
    /// checkout wrote PENDING: the order as it stands must be read again.
    pub overtaken: bool,
}

/// A checkout slot, held from admission to the answer.
#[derive(Debug)]
pub struct Admission(#[allow(dead_code)] OwnedSemaphorePermit);

#[derive(Clone)]
pub struct Checkout {
    orders: Arc<dyn OrderStore>,
    payments: Arc<dyn PaymentStore>,
    listings: Listings,
    settler: Settler,
    gateways: Gateways,
    metrics: Arc<Metrics>,
    slots: Arc<Semaphore>,
}

impl Checkout {
    pub fn new(
        orders: Arc<dyn OrderStore>,
        payments: Arc<dyn PaymentStore>,
        listings: Listings,
        gateways: Gateways,
        metrics: Arc<Metrics>,
        max_in_flight: usize,
    ) -> Checkout {
        let settler = Settler::new(payments.clone(), metrics.clone());
        let slots = Arc::new(Semaphore::new(max_in_flight));
        Checkout { orders, payments, listings, settler, gateways, metrics, slots }
    }

    /// A slot for one checkout, or an immediate refusal: called before anything of the
    /// checkout (its idempotency key included) is written.
    pub fn admit(&self) -> Result<Admission, CheckoutError> {
        match self.slots.clone().try_acquire_owned() {
            Ok(permit) => Ok(Admission(permit)),
            Err(_) => {
                self.metrics.checkout(CheckoutError::Overloaded.label(), std::time::Duration::ZERO);
                Err(CheckoutError::Overloaded)
            }
        }
    }

    pub async fn place(&self, _slot: Admission, request: CheckoutRequest) -> Result<Placed, CheckoutError> {
        let started = tokio::time::Instant::now();
        let result = self.run(request).await;
        let label = match &result {
            Ok((_, label)) => label,
            Err(refused) => refused.label(),
        };
        self.metrics.checkout(label, started.elapsed());
        result.map(|(placed, _)| placed)
    }

    /// Prices the order at the catalog's prices and creates it. The first pricing is from
    /// the listings' quote (app/listings.rs); a price that changed since is read again, a
    /// few times at most.
    async fn create_priced(&self, request: &CheckoutRequest, gateway: &str) -> Result<CreatedOrder, CheckoutError> {
        let mut products: Vec<ProductId> = request.lines.iter().map(|l| l.product_id).collect();
        products.sort();
        products.dedup();
        let mut listings = self.listings.quote(&products).await?;
        let mut reads = 0;
        loop {
            let lines = request.lines.iter().map(|line| (*line, listings[&line.product_id].clone()));
            let priced = price(lines).ok_or(StoreError::AmountOverflow)?;
            let order = NewOrder {
                buyer: request.buyer.clone(),
                priced,
                gateway: GatewayName::new(gateway),
                card_type: request.card_type,
                card_last4: request.card.last4().to_string(),
                now: Timestamp::now(),
                idempotency_key: request.idempotency_key.clone(),
            };
            match self.orders.create_order(order).await {
                Err(StoreError::PriceChanged(_)) if reads < PRICING_TRIES => {
                    reads += 1;
                    listings = self.listings.read(&products).await?;
                }
                created => return Ok(created?),
            }
        }
    }

    /// The checkout, and its label for the checkout metrics.
    async fn run(&self, request: CheckoutRequest) -> Result<(Placed, &'static str), CheckoutError> {
        // 1. A cheap pre-check: with every breaker open nothing is written and nothing sent.
        let Some(current) = self.gateways.route(0) else {
            let states: Vec<String> = self
                .gateways
                .all()
                .iter()
                .map(|g| format!("{} is {}", g.client.payment_breaker().name(), g.client.payment_breaker().state()))
                .collect();
            return Err(CheckoutError::GatewayUnavailable(format!("circuit breaker {}", states.join(", "))));
        };
        // 2. Transaction 1: order, items, stock reservation, REQUESTED attempt.
        let created = self.create_priced(&request, self.gateways.all()[current].name()).await?;
        // Every event of the payment from here on is in its span, which names the order,
        // its PG orderId and the gateway: the events themselves say only what happened.
        let span = tracing::info_span!(
            "payment",
            order = %created.order_id,
            pg_order_id = %created.pg_order_id,
            gateway = %self.gateways.all()[current].name()
        );
        self.pay(&request, created, current).instrument(span).await
    }

    /// Steps 3 and 4: the PG call (and failover), then transaction 2.
    async fn pay(
        &self,
        request: &CheckoutRequest,
        created: CreatedOrder,
        mut current: usize,
    ) -> Result<(Placed, &'static str), CheckoutError> {
        loop {
            // 3. The PG call, outside any transaction.
            let gateway = &self.gateways.all()[current];
            let payment = PaymentRequest {
                order_id: created.pg_order_id.clone(),
                card_type: wire_card(request.card_type),
                card_no: request.card.expose_for_gateway().to_string(),
                amount: created.amount.get(),
                callback_url: gateway.callback_url.clone(),
            };
            // With a further gateway to take it, a payment that did not arrive moves on
            // after a few attempts instead of this gateway's whole retry sequence.
            let outcome = if self.gateways.admits_payments_after(current) {
                gateway.client.request_payment_before_failover(payment).await
            } else {
                gateway.client.request_payment(payment).await
            };
            // Only a request that surely never reached this PG may go to the next one:
            // anything else might be (or become) a charge here.
            if let PaymentOutcome::NotDelivered(why) = &outcome
                && let Some(next) = self.gateways.route(current + 1)
            {
                let to = self.gateways.all()[next].name();
                if self.payments.reassign_gateway(created.attempt_id, gateway.name(), to, Timestamp::now()).await? {
                    tracing::warn!(from = gateway.name(), to, %why, "payment not delivered: failing over to the next gateway");
                    Span::current().record("gateway", tracing::field::display(to));
                    self.metrics.failover(gateway.name(), to);
                    current = next;
                    continue;
                }
            }
            // 4. Transaction 2, by outcome.
            return self.conclude(request, created, outcome).await;
        }
    }

    /// Transaction 2. The PG call is over, so a store error here is logged and left to
    /// the reconciler (it finds the REQUESTED attempt by orderId): the buyer hears what
    /// the PG said, never a database error for a payment the PG may have taken.
    async fn conclude(
        &self,
        request: &CheckoutRequest,
        created: CreatedOrder,
        outcome: PaymentOutcome,
    ) -> Result<(Placed, &'static str), CheckoutError> {
        let now = Timestamp::now();
        let unrecorded = |error: StoreError| {
            tracing::error!(%error, "the PG's answer could not be recorded: the reconciler will settle this order");
        };
        match outcome {
            PaymentOutcome::Accepted { transaction_key } => {
                // A fast callback may have settled it already; that is fine.
                let written = self.payments.mark_pending(created.attempt_id, Some(&transaction_key), now).await;
                let overtaken = overtaken(written, unrecorded);
                Ok((placed(request, created, Some(transaction_key), overtaken), "accepted"))
            }
            PaymentOutcome::Unknown(why) => {
                tracing::warn!(%why, "payment outcome unknown: left PENDING for the reconciler");
                let overtaken = overtaken(self.payments.mark_pending(created.attempt_id, None, now).await, unrecorded);
                Ok((placed(request, created, None, overtaken), "unknown"))
            }
            PaymentOutcome::NotDelivered(why) => {
                match self.payments.roll_back(created.attempt_id).await {
                    Ok(Transition::Applied) => tracing::info!(%why, "payment not delivered: order rolled back"),
                    // Only a REQUESTED attempt is rolled back; anything else is settled news.
                    Ok(other) => tracing::error!(?other, "a not-delivered attempt had already moved"),
                    // The reconciler finds that the PG never received it, and fails it.
                    Err(error) => unrecorded(error),
                }
                Err(CheckoutError::GatewayUnavailable(why.to_string()))
            }
            PaymentOutcome::Rejected(rejection) => {
                let failed = Settlement {
                    status: crate::domain::Final::Failed,
                    transaction_key: None,
                    reason: Some(rejection.reason.clone()),
                };
                if let Err(error) = self.settler.decide(created.attempt_id, &failed, Source::Checkout).await {
                    unrecorded(error);
                }
                tracing::warn!(status = rejection.status, reason = %rejection.reason, "the PG rejected a payment request");
                Err(CheckoutError::Rejected { order_id: created.order_id, reason: rejection.reason })
            }
        }
    }
}

/// Whether news of the payment (a fast callback) settled the attempt before the checkout
/// wrote PENDING. A PENDING that could not be written is reported and counts as not.
fn overtaken(written: Result<Transition, StoreError>, unrecorded: impl FnOnce(StoreError)) -> bool {
    matches!(written.map_err(unrecorded), Ok(Transition::AlreadyMoved { .. }))
}

/// The order as a placed checkout left it: PENDING at the PG.
fn placed(
    request: &CheckoutRequest,
    created: CreatedOrder,
    transaction_key: Option<String>,
    overtaken: bool,
) -> Placed {
    Placed {
        overtaken,
        order: OrderRecord {
            order_id: created.order_id,
            buyer_id: request.buyer.clone(),
            total_amount: created.amount.get(),
            created_at: created.created_at,
            anomaly: None,
            items: created.items,
            attempt: AttemptView {
                status: PaymentStatus::Pending,
                reason: None,
                card_type: request.card_type.as_str().to_string(),
                card_last4: request.card.last4().to_string(),
                transaction_key,
                stuck: false,
            },
        },
    }
}

/// The PG's name for a card brand.
fn wire_card(card: CardType) -> wire::CardType {
    match card {
        CardType::Samsung => wire::CardType::Samsung,
        CardType::Kb => wire::CardType::Kb,
        CardType::Hyundai => wire::CardType::Hyundai,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_card_brand_goes_to_the_pg_by_its_own_name() {
        for card in CardType::ALL {
            assert_eq!(wire_card(card).as_str(), card.as_str());
        }
    }
}
