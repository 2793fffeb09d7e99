//! Callback intake. The body is never trusted: with a shared secret the HMAC signature
//! (over timestamp + raw body, within a replay window) must verify; without one, the
//! transaction is fetched back from the PG and the PG's answer is what counts. Amount
//! and orderId must match our attempt either way. A signature is accepted once: a
//! replay within the window is refused (per instance; with several instances a replay
//! that reaches another one is still harmless, since settling is idempotent). There is
//! one intake per gateway, each with its own URL and secret; a gateway's callback about
//! an attempt sent to another gateway is refused.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use gateway::signature::SignatureHeader;
use gateway::wire::TransactionDetail;
use gateway::{GatewayClient, LookupOutcome};

use super::settlement::{Applied, Observed, Settler, Source};
use crate::metrics::Metrics;
use crate::store::{EventKind, Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum CallbackError {
    #[error("the callback body is not a transaction: {0}")]
    Malformed(String),
    #[error("the callback signature is missing, invalid or outside the replay window")]
    Unauthorized,
    #[error("no payment attempt has this transaction")]
    UnknownTransaction,
    #[error("the payment was sent to gateway {attempt_gateway}, not to the one calling back")]
    WrongGateway { attempt_gateway: String },
    #[error("the callback does not match our payment: {0}")]
    Mismatch(String),
    #[error("the PG could not confirm the callback now: {0}")]
    Unverifiable(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

#[derive(Clone)]
pub struct CallbackIntake {
    store: Arc<dyn Store>,
    gateway: GatewayClient,
    settler: Settler,
    secret: Option<Vec<u8>>,
    replay_window: Duration,
    /// Signatures accepted within the replay window, with their timestamps.
    seen: Arc<Mutex<HashMap<Vec<u8>, i64>>>,
}

impl CallbackIntake {
    pub fn new(
        store: Arc<dyn Store>,
        gateway: GatewayClient,
        metrics: Arc<Metrics>,
        secret: Option<String>,
        replay_window: Duration,
    ) -> Self {
        let settler = Settler::new(store.clone(), metrics);
        CallbackIntake {
            store,
            gateway,
            settler,
            secret: secret.map(String::into_bytes),
            replay_window,
            seen: Arc::default(),
        }
    }

    /// The gateway this intake hears from.
    pub fn gateway(&self) -> &str {
        self.gateway.name()
    }

    pub async fn receive(&self, raw: &[u8], signature: Option<&str>) -> Result<Applied, CallbackError> {
        let body: TransactionDetail =
            serde_json::from_slice(raw).map_err(|e| CallbackError::Malformed(e.to_string()))?;
        let truth = match &self.secret {
            Some(secret) => {
                if let Err(refused) = self.verify_signature(secret, raw, signature) {
                    // The key only: never the body's card data.
                    tracing::warn!(gateway = self.gateway.name(), transaction_key = %body.transaction_key, "callback refused: bad, stale or replayed signature");
                    return Err(refused);
                }
                body.clone()
            }
            None => self.fetch_back(&body).await?,
        };
        let attempt =
            self.store.attempt_by_pg_order_id(&truth.order_id).await?.ok_or(CallbackError::UnknownTransaction)?;
        if attempt.gateway != self.gateway.name() {
            // A gateway speaks only for payments it was sent; settling another one's
            // attempt on its word could mark an unpaid order paid.
            let detail = format!(
                "gateway {} called back about {} ({}), which was sent to {}",
                self.gateway.name(),
                attempt.pg_order_id,
                body.transaction_key,
                attempt.gateway
            );
            self.store.record_event(attempt.id, EventKind::MismatchedCallback, &detail, super::now_ms()).await?;
            tracing::warn!(attempt = attempt.id, gateway = %attempt.gateway, "callback refused: {detail}");
            return Err(CallbackError::WrongGateway { attempt_gateway: attempt.gateway });
        }
        if body.amount != attempt.amount || truth.amount != attempt.amount || body.order_id != attempt.pg_order_id {
            let detail = format!(
                "callback for {} says amount {} / orderId {}, ours is {} / {}",
                body.transaction_key, body.amount, body.order_id, attempt.amount, attempt.pg_order_id
            );
            self.store.record_event(attempt.id, EventKind::MismatchedCallback, &detail, super::now_ms()).await?;
            tracing::warn!(attempt = attempt.id, gateway = %attempt.gateway, transaction_key = %body.transaction_key, "callback refused: {detail}");
            return Err(CallbackError::Mismatch(detail));
        }
        let observed = Observed { transaction_key: truth.transaction_key, status: truth.status, reason: truth.reason };
        Ok(self.settler.apply(&attempt, &observed, Source::Callback).await?)
    }

    fn verify_signature(&self, secret: &[u8], raw: &[u8], header: Option<&str>) -> Result<(), CallbackError> {
        let signature = header.and_then(SignatureHeader::parse).ok_or(CallbackError::Unauthorized)?;
        let now = chrono::Utc::now().timestamp();
        let window = self.replay_window.as_secs() as i64;
        if (now - signature.timestamp).abs() > window || !signature.verify(secret, raw) {
            return Err(CallbackError::Unauthorized);
        }
        let mut seen = self.seen.lock().expect("seen-signature lock");
        seen.retain(|_, at| now - *at <= window);
        if seen.insert(signature.v1.clone(), signature.timestamp).is_some() {
            return Err(CallbackError::Unauthorized);
        }
        Ok(())
    }

    /// The PG's own view of the transaction; the body only tells us which one to ask about.
    async fn fetch_back(&self, body: &TransactionDetail) -> Result<TransactionDetail, CallbackError> {
        match self.gateway.transaction(&body.transaction_key).await {
            LookupOutcome::Found(detail) => Ok(detail),
            LookupOutcome::NotFound => Err(CallbackError::UnknownTransaction),
            LookupOutcome::Rejected(r) => Err(CallbackError::Unverifiable(r.reason)),
            LookupOutcome::NotDelivered(why) => Err(CallbackError::Unverifiable(why.to_string())),
            LookupOutcome::Unknown(why) => Err(CallbackError::Unverifiable(why.to_string())),
        }
    }
}
