//! The typed PG client: its operations, each through the resilience stack, outer to
//! inner: total deadline -> retry -> bulkhead -> circuit breaker -> per-attempt timeouts
//! -> HTTP. Payments, status lookups and refunds have separate stacks and breakers, so a
//! broken status API does not stop new payments and vice versa, and failing refunds stop
//! neither.

use std::sync::Arc;

use reqwest::Url;
use tokio::time::Instant;
use tower::retry::budget::{Budget, TpsBudget};
use tower::util::BoxCloneSyncService;
use tower::{ServiceBuilder, ServiceExt};

use crate::breaker::layer::{ByResult, Classify};
use crate::breaker::{CircuitBreaker, CircuitBreakerLayer};
use crate::bulkhead::BulkheadLayer;
use crate::config::ResilienceConfig;
use crate::evidence::{PaymentEvidence, by_answer};
use crate::observer::{GatewayEvent, GatewayObserver, NoopObserver};
use crate::outcome::{CallError, CancelOutcome, LookupOutcome, NotDelivered, PaymentOutcome, PgAnswer, Unknown};
use crate::retry::{Attempted, RetryPolicy};
use crate::transport::{HttpTransport, PgCall};
use crate::wire::{CancelRequest, OrderTransactions, PaymentRequest, TransactionCancels, TransactionDetail};

/// A resilience stack: what `GatewayClient` calls for each PG operation.
pub type Stack = BoxCloneSyncService<Attempted, PgAnswer, CallError>;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("invalid resilience config: {0}")]
    Config(String),
    #[error("invalid gateway URL '{0}'")]
    Url(String),
    #[error("HTTP client: {0}")]
    Http(#[from] reqwest::Error),
    #[error("TLS: {0}")]
    Tls(#[from] crate::tls::TlsError),
}

/// A PG's identity from our side.
#[derive(Debug, Clone)]
pub struct GatewaySettings {
    /// Our name for this PG (breaker names and metric labels).
    pub name: String,
    pub base_url: String,
    /// Sent as `X-USER-ID`: the merchant's id at the PG, never a buyer's.
    pub merchant_id: String,
    /// For an `https://` base URL.
    pub tls: crate::tls::TlsSettings,
}

#[derive(Clone)]
pub struct GatewayClient {
    name: String,
    payments: Stack,
    status: Stack,
    refunds: Stack,
    payment_budget: Arc<TpsBudget>,
    status_budget: Arc<TpsBudget>,
    refund_budget: Arc<TpsBudget>,
    payment_breaker: CircuitBreaker,
    status_breaker: CircuitBreaker,
    refund_breaker: CircuitBreaker,
    config: ResilienceConfig,
    observer: Arc<dyn GatewayObserver>,
}

impl GatewayClient {
    pub fn new(settings: GatewaySettings, config: ResilienceConfig) -> Result<GatewayClient, ClientError> {
        GatewayClient::with_observer(settings, config, Arc::new(NoopObserver))
    }

    pub fn with_observer(
        settings: GatewaySettings,
        config: ResilienceConfig,
        observer: Arc<dyn GatewayObserver>,
    ) -> Result<GatewayClient, ClientError> {
        config.validate().map_err(ClientError::Config)?;
        let base = Url::parse(&settings.base_url)
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https"))
            .ok_or_else(|| ClientError::Url(settings.base_url.clone()))?;
        let transport = HttpTransport::new(
            base,
            settings.merchant_id,
            &settings.tls,
            config.connect_timeout,
            config.response_timeout,
            observer.clone(),
        )?;
        let payment_breaker =
            CircuitBreaker::new(format!("{}.payments", settings.name), config.payment_breaker.clone())
                .map_err(ClientError::Config)?;
        let status_breaker = CircuitBreaker::new(format!("{}.status", settings.name), config.status_breaker.clone())
            .map_err(ClientError::Config)?;
        let budget = || {
            let r = &config.retry;
            Arc::new(TpsBudget::new(r.budget_window, r.budget_min_per_second, r.budget_ratio))
        };
        // Refunds get the status breaker's settings: like a lookup, a cancel under its key
        // is safe to repeat, and every answer (a refusal included) shows the API works.
        let refund_breaker = CircuitBreaker::new(format!("{}.refunds", settings.name), config.status_breaker.clone())
            .map_err(ClientError::Config)?;
        let (payment_budget, status_budget, refund_budget) = (budget(), budget(), budget());
        let status = stack(&config, transport.clone(), &status_breaker, &status_budget, &observer);
        let refunds = stack(&config, transport.clone(), &refund_breaker, &refund_budget, &observer);
        // A payment without an answer counts once the status API says what the PG did with it.
        let evidence = PaymentEvidence::new(status.clone(), status_budget.clone(), config.deadline);
        let payments = build(&config, transport, &payment_breaker, &payment_budget, &observer, evidence);
        Ok(GatewayClient {
            name: settings.name,
            payments,
            status,
            refunds,
            payment_budget,
            status_budget,
            refund_budget,
            payment_breaker,
            status_breaker,
            refund_breaker,
            config,
            observer,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn config(&self) -> &ResilienceConfig {
        &self.config
    }

    pub fn payment_breaker(&self) -> &CircuitBreaker {
        &self.payment_breaker
    }

    pub fn status_breaker(&self) -> &CircuitBreaker {
        &self.status_breaker
    }

    pub fn refund_breaker(&self) -> &CircuitBreaker {
        &self.refund_breaker
    }

    /// Where this client reports what happens to its calls; a caller that refuses a call
    /// on the client's behalf (a router skipping an open gateway) reports it here too.
    pub fn observer(&self) -> &dyn GatewayObserver {
        self.observer.as_ref()
    }

    /// Asks the PG to take a payment. Never retries unless the request surely did not arrive.
    pub async fn request_payment(&self, request: PaymentRequest) -> PaymentOutcome {
        let call = PgCall::RequestPayment(request);
        PaymentOutcome::from_result(self.call(&self.payments, &self.payment_budget, call, None).await)
    }

    /// `request_payment` when a further gateway can take the payment: at most
    /// `retry.attempts_before_failover` attempts here (never more than `max_attempts`), so a payment that surely did not
    /// arrive moves on in a fraction of the full retry sequence.
    pub async fn request_payment_before_failover(&self, request: PaymentRequest) -> PaymentOutcome {
        let call = PgCall::RequestPayment(request);
        let retry = &self.config.retry;
        let cap = Some(retry.attempts_before_failover.min(retry.max_attempts));
        PaymentOutcome::from_result(self.call(&self.payments, &self.payment_budget, call, cap).await)
    }

    pub async fn transaction(&self, transaction_key: &str) -> LookupOutcome<TransactionDetail> {
        self.look_up(PgCall::GetTransaction(transaction_key.to_string()), |answer| match answer {
            PgAnswer::Transaction(detail) => Some(detail),
            _ => None,
        })
        .await
    }

    /// Asks the PG to refund `request.cancel_amount` of the payment `transaction_key`.
    /// Retried only when it surely did not arrive, like a payment; a caller that meets an
    /// unknown outcome sends it again later under the same `idempotency_key`, which the PG
    /// answers with the cancel it made rather than a second refund.
    pub async fn request_cancel(
        &self,
        transaction_key: &str,
        idempotency_key: &str,
        request: CancelRequest,
    ) -> CancelOutcome {
        let call = PgCall::Cancel {
            transaction_key: transaction_key.to_string(),
            idempotency_key: idempotency_key.to_string(),
            request,
        };
        CancelOutcome::from_result(self.call(&self.refunds, &self.refund_budget, call, None).await)
    }

    /// The cancels of a payment, oldest first, through the status stack.
    pub async fn cancels(&self, transaction_key: &str) -> LookupOutcome<TransactionCancels> {
        self.look_up(PgCall::GetCancels(transaction_key.to_string()), |answer| match answer {
            PgAnswer::Cancels(list) => Some(list),
            _ => None,
        })
        .await
    }

    /// Every transaction the PG holds for one of our attempt ids, newest first.
    pub async fn transactions_for_order(&self, order_id: &str) -> LookupOutcome<OrderTransactions> {
        self.look_up(PgCall::FindByOrder(order_id.to_string()), |answer| match answer {
            PgAnswer::Transactions(list) => Some(list),
            _ => None,
        })
        .await
    }

    /// A lookup through the status stack, its answer picked out by `pick`.
    async fn look_up<T>(&self, call: PgCall, pick: impl FnOnce(PgAnswer) -> Option<T>) -> LookupOutcome<T> {
        LookupOutcome::from_result(self.call(&self.status, &self.status_budget, call, None).await, pick)
    }

    async fn call(
        &self,
        stack: &Stack,
        budget: &TpsBudget,
        call: PgCall,
        max_attempts: Option<u32>,
    ) -> Result<PgAnswer, CallError> {
        budget.deposit();
        let operation = call.operation();
        let attempted = Attempted { call, started: Instant::now(), max_attempts };
        let result = match tokio::time::timeout(self.config.deadline, stack.clone().oneshot(attempted)).await {
            Ok(result) => result,
            Err(_) => Err(Unknown::DeadlineExceeded(self.config.deadline).into()),
        };
        if let Err(e @ CallError::NotDelivered(NotDelivered::CircuitOpen { .. } | NotDelivered::BulkheadFull)) = &result
        {
            self.observer.on_event(&GatewayEvent::Refused { operation, reason: e.reason() });
        }
        result
    }
}

/// Builds retry -> bulkhead -> breaker over `inner` (the HTTP transport in production;
/// anything in benchmarks), its breaker counting every answer as a success (the status
/// stack's rule). The deadline is applied per call by `GatewayClient`.
pub fn stack<S>(
    config: &ResilienceConfig,
    inner: S,
    breaker: &CircuitBreaker,
    budget: &Arc<TpsBudget>,
    observer: &Arc<dyn GatewayObserver>,
) -> Stack
where
    S: tower::Service<PgCall, Response = PgAnswer, Error = CallError> + Clone + Send + Sync + 'static,
    S::Future: Send + 'static,
{
    build(config, inner, breaker, budget, observer, ByResult(by_answer))
}

fn build<S, C>(
    config: &ResilienceConfig,
    inner: S,
    breaker: &CircuitBreaker,
    budget: &Arc<TpsBudget>,
    observer: &Arc<dyn GatewayObserver>,
    classify: C,
) -> Stack
where
    S: tower::Service<PgCall, Response = PgAnswer, Error = CallError> + Clone + Send + Sync + 'static,
    S::Future: Send + 'static,
    C: Classify<Attempted, PgAnswer, CallError>,
{
    let attempt_timeout = config.response_timeout;
    let policy =
        RetryPolicy::new(config.retry.clone(), budget.clone(), observer.clone(), config.deadline, attempt_timeout);
    let bulkhead = &config.bulkhead;
    // The bulkhead outside the breaker: a call still waiting for a place has not reached
    // the PG, and the breaker must not time that wait as a slow call.
    let service = ServiceBuilder::new()
        .retry(policy)
        .layer(BulkheadLayer::new(
            bulkhead.max_concurrent_calls,
            bulkhead.max_wait,
            config.deadline,
            attempt_timeout,
            breaker.clone(),
        ))
        .layer(CircuitBreakerLayer::new(breaker.clone(), classify))
        .map_request(|attempted: Attempted| attempted.call)
        .service(inner);
    BoxCloneSyncService::new(service)
}
