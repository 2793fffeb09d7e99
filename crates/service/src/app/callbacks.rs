//! Callback intake. The body is never trusted: with a shared secret the HMAC signature
//! (over timestamp + raw body, within a replay window) must verify; without one, the
//! transaction is fetched back from the PG and the PG's answer is what counts. Amount
//! and orderId must match our attempt either way. A signature is accepted once: a
//! replay within the window is refused (per instance; with several instances a replay
//! that reaches another one is still harmless, since settling is idempotent). There is
//! one intake per gateway, each with its own URL and secret; a gateway's callback about
//! an attempt sent to another gateway is refused.
//!
//! Anyone can post here, so nothing a caller sends costs more than a bounded amount:
//! the attempt is looked up in our own records before the PG is asked (an orderId we
//! never issued needs no PG query), fetch-backs have a rate limit of their own so
//! forged callbacks cannot spend the status API, and every value that reaches a log line
//! or the database is cut to a bounded length.

use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use gateway::GatewayClient;
use gateway::signature::SignatureHeader;
use gateway::wire::TransactionDetail;
use tracing::Instrument;

use super::replay::SeenSignatures;
use super::settlement::{Applied, Observed, Settler, Source};
use crate::domain::Timestamp;
use crate::store::{Attempt, EventKind, PaymentStore, StoreError};
use crate::telemetry::Metrics;

#[derive(Debug, thiserror::Error)]
pub enum CallbackError {
    #[error("the callback body is not a transaction: {0}")]
    Malformed(String),
    #[error("the callback signature is missing, invalid or outside the replay window")]
    Unauthorized,
    #[error("no payment attempt has this transaction")]
    UnknownTransaction,
    // The texts below are answered to an unauthenticated caller: they name none of our
    // values (the detail goes to the log and the payment's events).
    #[error("the payment was sent to another gateway, not to the one calling back")]
    WrongGateway { attempt_gateway: String },
    #[error("the callback does not match our payment")]
    Mismatch { detail: String },
    #[error("the PG could not confirm the callback now: {0}")]
    Unverifiable(String),
    #[error("too many callbacks to confirm with the PG now")]
    FetchBackLimited,
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl CallbackError {
    /// The `result` label of the callbacks metric for this refusal.
    pub fn label(&self) -> &'static str {
        match self {
            CallbackError::Malformed(_) => "malformed",
            CallbackError::Unauthorized => "unauthorized",
            CallbackError::UnknownTransaction => "unknown_transaction",
            CallbackError::WrongGateway { .. } => "wrong_gateway",
            CallbackError::Mismatch { .. } => "mismatch",
            CallbackError::Unverifiable(_) => "unverifiable",
            CallbackError::FetchBackLimited => "fetch_back_limited",
            CallbackError::Store(_) => "error",
        }
    }
}

pub struct CallbackIntake {
    store: Arc<dyn PaymentStore>,
    gateway: GatewayClient,
    settler: Settler,
    secret: Option<Vec<u8>>,
    replay_window: Duration,
    /// Signatures accepted within the replay window, with their timestamps.
    seen: Arc<Mutex<SeenSignatures>>,
    /// Caps the PG status queries that unsigned callbacks cause.
    fetch_backs: Arc<governor::DefaultDirectRateLimiter>,
}

/// The longest orderId or transaction key we accept: ours are 11-20 characters, the
/// reference PG's keys 18.
const MAX_ID_LEN: usize = 64;
/// The longest reason kept: the reference PG's are under 40 characters.
const MAX_REASON_CHARS: usize = 200;

/// `value` cut to `max` characters, saying how much was cut: for log lines and stored
/// details, which a caller's input must not be able to grow.
pub fn bounded(value: &str, max: usize) -> String {
    match value.char_indices().nth(max) {
        None => value.to_string(),
        Some((cut, _)) => format!("{}...(+{} bytes)", &value[..cut], value.len() - cut),
    }
}

impl CallbackIntake {
    pub fn new(
        store: Arc<dyn PaymentStore>,
        gateway: GatewayClient,
        metrics: Arc<Metrics>,
        secret: Option<String>,
        replay_window: Duration,
        fetch_backs_per_second: NonZeroU32,
    ) -> Self {
        let settler = Settler::new(store.clone(), metrics);
        let quota = governor::Quota::per_second(fetch_backs_per_second);
        CallbackIntake {
            store,
            gateway,
            settler,
            secret: secret.map(String::into_bytes),
            replay_window,
            seen: Arc::default(),
            fetch_backs: Arc::new(governor::RateLimiter::direct(quota)),
        }
    }

    pub async fn receive(&self, raw: &[u8], signature: Option<&str>) -> Result<Applied, CallbackError> {
        let mut body: TransactionDetail = serde_json::from_slice(raw)
            .map_err(|e| CallbackError::Malformed(bounded(&e.to_string(), MAX_REASON_CHARS)))?;
        if body.order_id.chars().count() > MAX_ID_LEN || body.transaction_key.chars().count() > MAX_ID_LEN {
            return Err(CallbackError::Malformed(format!(
                "orderId and transactionKey are at most {MAX_ID_LEN} characters"
            )));
        }
        body.reason = body.reason.map(|r| bounded(&r, MAX_REASON_CHARS));
        if let Some(secret) = &self.secret
            && let Err(refused) = self.verify_signature(secret, raw, signature)
        {
            // The key only: never the body's card data.
            tracing::warn!(gateway = self.gateway.name(), transaction_key = %body.transaction_key, "callback refused: bad, stale or replayed signature");
            return Err(refused);
        }
        // Our own records first: an orderId we never issued needs no PG query.
        let attempt =
            self.store.attempt_by_pg_order_id(&body.order_id).await?.ok_or(CallbackError::UnknownTransaction)?;
        // From here on every event is about this attempt: its span names it.
        let span = tracing::info_span!(
            "callback",
            attempt = %attempt.id,
            gateway = %attempt.gateway,
            pg_order_id = %attempt.pg_order_id,
            transaction_key = %body.transaction_key
        );
        self.judge(attempt, body).instrument(span).await
    }

    /// The attempt's own gateway, the PG's word (signed, or fetched back), amount and
    /// orderId checked; then settled.
    async fn judge(&self, attempt: Attempt, body: TransactionDetail) -> Result<Applied, CallbackError> {
        if attempt.gateway.as_str() != self.gateway.name() {
            // A gateway speaks only for payments it was sent; settling another one's
            // attempt on its word could mark an unpaid order paid.
            let detail = format!(
                "gateway {} called back about {} ({}), which was sent to {}",
                self.gateway.name(),
                attempt.pg_order_id,
                body.transaction_key,
                attempt.gateway
            );
            self.store.record_event(attempt.id, EventKind::MismatchedCallback, &detail, Timestamp::now()).await?;
            tracing::warn!("callback refused: {detail}");
            return Err(CallbackError::WrongGateway { attempt_gateway: attempt.gateway.to_string() });
        }
        let truth = match &self.secret {
            Some(_) => body.clone(),
            None => self.fetch_back(&body).await?,
        };
        if body.amount != attempt.amount.get()
            || truth.amount != attempt.amount.get()
            || truth.order_id != attempt.pg_order_id
        {
            let detail = format!(
                "callback for {} says amount {} / orderId {}, the PG {} / {}, ours is {} / {}",
                body.transaction_key,
                body.amount,
                body.order_id,
                truth.amount,
                bounded(&truth.order_id, MAX_ID_LEN),
                attempt.amount.get(),
                attempt.pg_order_id
            );
            self.store.record_event(attempt.id, EventKind::MismatchedCallback, &detail, Timestamp::now()).await?;
            tracing::warn!("callback refused: {detail}");
            return Err(CallbackError::Mismatch { detail });
        }
        let reason = truth.reason.map(|r| bounded(&r, MAX_REASON_CHARS));
        let observed =
            Observed { transaction_key: bounded(&truth.transaction_key, MAX_ID_LEN), status: truth.status, reason };
        Ok(self.settler.apply(&attempt, &observed, Source::Callback).await?)
    }

    fn verify_signature(&self, secret: &[u8], raw: &[u8], header: Option<&str>) -> Result<(), CallbackError> {
        let signature = header.and_then(SignatureHeader::parse).ok_or(CallbackError::Unauthorized)?;
        let now = chrono::Utc::now().timestamp();
        let window = self.replay_window.as_secs() as i64;
        if (now - signature.timestamp).abs() > window || !signature.verify(secret, raw) {
            return Err(CallbackError::Unauthorized);
        }
        if !self.seen.lock().expect("seen-signature lock").first_time(&signature.v1, signature.timestamp, now, window) {
            return Err(CallbackError::Unauthorized);
        }
        Ok(())
    }

    /// The PG's own view of the transaction; the body only tells us which one to ask about.
    async fn fetch_back(&self, body: &TransactionDetail) -> Result<TransactionDetail, CallbackError> {
        if self.fetch_backs.check().is_err() {
            // Refused, not queued: the PG's callback is then lost like any other, and
            // the reconciler settles the payment by asking the PG at its own pace.
            return Err(CallbackError::FetchBackLimited);
        }
        match self.gateway.transaction(&body.transaction_key).await.answer() {
            Ok(Some(detail)) => Ok(detail),
            Ok(None) => Err(CallbackError::UnknownTransaction),
            Err(why) => Err(CallbackError::Unverifiable(why)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::bounded;

    #[test]
    fn bounded_values_keep_their_start_and_say_what_was_cut() {
        assert_eq!(bounded("short", 10), "short");
        assert_eq!(bounded(&"x".repeat(65_000), 8), "xxxxxxxx...(+64992 bytes)");
        // Cut on a character boundary, never inside a multi-byte character.
        assert_eq!(bounded("가나다라", 2), "가나...(+6 bytes)");
    }
}
