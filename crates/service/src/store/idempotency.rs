//! Idempotency keys and the answers they replay.

use async_trait::async_trait;

use super::StoreError;
use super::sql::{Arg, Column, Dialect, SqlStore};
use crate::domain::{BuyerId, OrderId, Timestamp};

/// What an `Idempotency-Key` says about a checkout request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdempotencyStart {
    /// First use of the key (or its earlier use expired): process the request.
    Started,
    /// The first request with this key has not finished, or its process died: it
    /// started at `since` and had created `order_id` when one is set.
    InFlight { order_id: Option<OrderId>, since: Timestamp },
    /// The key was used with another request body.
    Mismatch,
    /// The first request finished: answer with its response, byte for byte.
    Saved { status: u16, body: Vec<u8> },
}

/// A request claiming a buyer's `Idempotency-Key`, with its body's fingerprint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyClaim<'a> {
    pub buyer: &'a BuyerId,
    pub key: &'a str,
    pub request_hash: &'a str,
    pub now: Timestamp,
    /// Keys created before this are forgotten: their requests may run again.
    pub expires_before: Timestamp,
}

/// Idempotency keys and the answers they replay.
#[async_trait]
pub trait IdempotencyStore: Send + Sync + 'static {
    /// Claims the key for a request; atomically, so of concurrent duplicates one starts.
    async fn begin_idempotent(&self, claim: KeyClaim<'_>) -> Result<IdempotencyStart, StoreError>;

    /// Takes over the claim's key, left in flight since `since` by a request whose
    /// process died with no order standing (none created, or rolled back): false when
    /// another request took it first.
    async fn retake_idempotent(&self, claim: &KeyClaim<'_>, since: Timestamp) -> Result<bool, StoreError>;

    /// Saves the response of a request that claimed `key`.
    async fn finish_idempotent(&self, buyer: &BuyerId, key: &str, status: u16, body: &[u8]) -> Result<(), StoreError>;

    /// Releases `key` without a saved response (the request may safely run again).
    async fn release_idempotent(&self, buyer: &BuyerId, key: &str) -> Result<(), StoreError>;
}

/// The stored fingerprint of keys from before fingerprints left the card number out
/// (migration 0005 / 0003): any body matches it.
const FINGERPRINT_UNKNOWN: &str = "unknown";

/// Decides what a stored key row means for a request with `fingerprint`.
fn idempotency_start(
    fingerprint: &str,
    stored: &str,
    status: Option<i64>,
    body: Option<Vec<u8>>,
    order_id: Option<i64>,
    since: Timestamp,
) -> Result<IdempotencyStart, StoreError> {
    Ok(match status {
        _ if stored != fingerprint && stored != FINGERPRINT_UNKNOWN => IdempotencyStart::Mismatch,
        None => IdempotencyStart::InFlight { order_id: order_id.map(OrderId), since },
        Some(status) => IdempotencyStart::Saved {
            status: u16::try_from(status).map_err(|_| StoreError::Corrupt(format!("HTTP status {status}")))?,
            body: body.unwrap_or_default(),
        },
    })
}

#[async_trait]
impl<D: Dialect> IdempotencyStore for SqlStore<D> {
    async fn begin_idempotent(&self, claim: KeyClaim<'_>) -> Result<IdempotencyStart, StoreError> {
        let KeyClaim { buyer, key, request_hash, now, expires_before } = claim;
        let mut conn = self.writer().await?;
        let mut tx = D::begin_write(&mut *conn).await?;
        sqlx::query("DELETE FROM idempotency_keys WHERE buyer_id = $1 AND key = $2 AND created_at < $3")
            .arg(buyer.as_str())
            .arg(key)
            .arg(expires_before.as_millis())
            .execute(D::on(&mut *tx))
            .await?;
        let inserted = sqlx::query(
            "INSERT INTO idempotency_keys (buyer_id, key, request_hash, created_at) VALUES ($1, $2, $3, $4)
             ON CONFLICT (buyer_id, key) DO NOTHING",
        )
        .arg(buyer.as_str())
        .arg(key)
        .arg(request_hash)
        .arg(now.as_millis())
        .execute(D::on(&mut *tx))
        .await?;
        let start = if D::rows_affected(&inserted) == 1 {
            IdempotencyStart::Started
        } else {
            let row = sqlx::query(
                "SELECT request_hash, response_status, response_body, order_id, created_at
                 FROM idempotency_keys WHERE buyer_id = $1 AND key = $2",
            )
            .arg(buyer.as_str())
            .arg(key)
            .fetch_one(D::on(&mut *tx))
            .await?;
            idempotency_start(
                request_hash,
                &row.col::<String>("request_hash")?,
                row.col("response_status")?,
                row.col("response_body")?,
                row.col("order_id")?,
                Timestamp::from_millis(row.col("created_at")?),
            )?
        };
        tx.commit().await?;
        Ok(start)
    }

    async fn retake_idempotent(&self, claim: &KeyClaim<'_>, since: Timestamp) -> Result<bool, StoreError> {
        let KeyClaim { buyer, key, now, .. } = *claim;
        let taken = sqlx::query(
            "UPDATE idempotency_keys SET created_at = $1, order_id = NULL
             WHERE buyer_id = $2 AND key = $3 AND created_at = $4 AND response_status IS NULL",
        )
        .arg(now.as_millis())
        .arg(buyer.as_str())
        .arg(key)
        .arg(since.as_millis())
        .execute(D::on(&mut *self.writer().await?))
        .await?;
        Ok(D::rows_affected(&taken) == 1)
    }

    async fn finish_idempotent(&self, buyer: &BuyerId, key: &str, status: u16, body: &[u8]) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE idempotency_keys SET response_status = $1, response_body = $2 WHERE buyer_id = $3 AND key = $4",
        )
        .arg(i64::from(status))
        .arg(body)
        .arg(buyer.as_str())
        .arg(key)
        .execute(D::on(&mut *self.writer().await?))
        .await?;
        Ok(())
    }

    async fn release_idempotent(&self, buyer: &BuyerId, key: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM idempotency_keys WHERE buyer_id = $1 AND key = $2 AND response_status IS NULL")
            .arg(buyer.as_str())
            .arg(key)
            .execute(D::on(&mut *self.writer().await?))
            .await?;
        Ok(())
    }
}
