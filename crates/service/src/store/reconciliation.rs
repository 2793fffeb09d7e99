//! The reconciler's queue: unsettled attempts, their leases and checks. Claims pass over
//! rows another instance holds locked where the backend has row locks
//! (`Dialect::SKIP_LOCKED`); SQLite's single writer needs none.

use async_trait::async_trait;
use sqlx::AssertSqlSafe;

use super::StoreError;
use super::payments::{ATTEMPT_COLUMNS, Attempt, attempt};
use super::sql::{Arg, Column, Dialect, SqlStore, one_of};
use crate::domain::{AttemptId, PaymentStatus, Timestamp};

/// Reconciliation checks written in one transaction at most: one commit for many, while
/// a transaction holds SQLite's writer, and PostgreSQL's locks on its rows, only briefly.
const CHECKS_PER_TRANSACTION: usize = 64;

/// A reconciliation check that did not settle its attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    pub attempt_id: AttemptId,
    /// When the attempt is due again.
    pub next_check_at: Timestamp,
    /// What the check saw, for operators.
    pub note: String,
    /// Checked so often without an answer that operators must look.
    pub stuck: bool,
}

/// A claim on due attempts: unsettled attempts of `gateway` created before
/// `created_before` whose next check is due at `now` and that no live lease holds,
/// `limit` at most, each leased to `owner` until `lease_until`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Claim<'a> {
    pub gateway: &'a str,
    pub owner: &'a str,
    pub lease_until: Timestamp,
    pub created_before: Timestamp,
    pub now: Timestamp,
    pub limit: i64,
}

/// The reconciler's queue: unsettled attempts, their leases and checks.
#[async_trait]
pub trait ReconciliationStore: Send + Sync + 'static {
    /// The attempts `claim` describes, each now leased to its owner. Concurrent
    /// claimers never get the same attempt.
    async fn claim_due_attempts(&self, claim: Claim<'_>) -> Result<Vec<Attempt>, StoreError>;

    /// Extends every lease `owner` holds on an unsettled attempt (while a pass works).
    async fn renew_leases(&self, owner: &str, lease_until: Timestamp) -> Result<u64, StoreError>;

    /// Gives up every lease `owner` holds (on shutdown).
    async fn release_leases(&self, owner: &str) -> Result<u64, StoreError>;

    /// Books reconciliation checks that did not settle their attempts, and ends their
    /// leases: a pass's checks together, a few dozen to a transaction, so that a backlog
    /// the PG still calls pending costs a commit per few dozen payments rather than one
    /// per payment. Checks of attempts settled meanwhile change nothing.
    async fn record_checks(&self, checks: &[Check], now: Timestamp) -> Result<(), StoreError>;

    /// Unsettled attempts now, and the creation time of the oldest.
    async fn unsettled(&self) -> Result<(i64, Option<Timestamp>), StoreError>;

    /// Unsettled attempts per gateway, by gateway name.
    async fn unsettled_by_gateway(&self) -> Result<Vec<(String, i64)>, StoreError>;
}

/// The reconciler's claim: the due attempts of a gateway, oldest check first, leased to
/// `$1` until `$2`. `finalized_at IS NULL` is what lets it read them by `attempts_due`
/// (migration 0006) instead of every attempt of the gateway.
pub(super) fn claim_due<D: Dialect>() -> String {
    format!(
        "UPDATE payment_attempts SET lease_owner = $1, lease_until = $2
         WHERE id IN (
           SELECT id FROM payment_attempts
           WHERE gateway = $6 AND finalized_at IS NULL AND status {}
             AND created_at <= $3 AND next_check_at <= $4 AND (lease_until IS NULL OR lease_until < $4)
           ORDER BY next_check_at LIMIT $5{})
         RETURNING {ATTEMPT_COLUMNS}",
        one_of::<D>("$7"),
        D::SKIP_LOCKED,
    )
}

#[async_trait]
impl<D: Dialect> ReconciliationStore for SqlStore<D> {
    async fn claim_due_attempts(&self, claim: Claim<'_>) -> Result<Vec<Attempt>, StoreError> {
        let mut conn = self.writer().await?;
        let mut tx = D::begin_write(&mut *conn).await?;
        let query = sqlx::query(AssertSqlSafe(claim_due::<D>()))
            .arg(claim.owner)
            .arg(claim.lease_until.as_millis())
            .arg(claim.created_before.as_millis())
            .arg(claim.now.as_millis())
            .arg(claim.limit)
            .arg(claim.gateway);
        let rows = D::bind_statuses(query, PaymentStatus::UNSETTLED).fetch_all(D::on(&mut *tx)).await?;
        tx.commit().await?;
        rows.iter().map(attempt::<D>).collect()
    }

    async fn renew_leases(&self, owner: &str, lease_until: Timestamp) -> Result<u64, StoreError> {
        let sql = format!(
            "UPDATE payment_attempts SET lease_until = $1 WHERE lease_owner = $2 AND finalized_at IS NULL AND status {}",
            one_of::<D>("$3")
        );
        let query = sqlx::query(AssertSqlSafe(sql)).arg(lease_until.as_millis()).arg(owner);
        let renewed =
            D::bind_statuses(query, PaymentStatus::UNSETTLED).execute(D::on(&mut *self.writer().await?)).await?;
        Ok(D::rows_affected(&renewed))
    }

    async fn release_leases(&self, owner: &str) -> Result<u64, StoreError> {
        let done = sqlx::query(
            "UPDATE payment_attempts SET lease_owner = NULL, lease_until = NULL
             WHERE lease_owner = $1 AND finalized_at IS NULL",
        )
        .arg(owner)
        .execute(D::on(&mut *self.writer().await?))
        .await?;
        Ok(D::rows_affected(&done))
    }

    async fn record_checks(&self, checks: &[Check], now: Timestamp) -> Result<(), StoreError> {
        let sql = format!(
            "UPDATE payment_attempts SET checks = checks + 1, next_check_at = $1,
               last_check = $2, stuck = $3, updated_at = $4, lease_owner = NULL, lease_until = NULL
             WHERE id = $5 AND status {}",
            one_of::<D>("$6")
        );
        // In the order of their ids, as every group locks attempts (`lock_in_order`):
        // PostgreSQL locks each row it updates.
        let mut checks: Vec<&Check> = checks.iter().collect();
        checks.sort_by_key(|c| c.attempt_id);
        for chunk in checks.chunks(CHECKS_PER_TRANSACTION) {
            let mut conn = self.writer().await?;
            let mut tx = D::begin_write(&mut *conn).await?;
            for check in chunk {
                let query = sqlx::query(AssertSqlSafe(sql.as_str()))
                    .arg(check.next_check_at.as_millis())
                    .arg(check.note.as_str())
                    .arg(check.stuck)
                    .arg(now.as_millis())
                    .arg(check.attempt_id.0);
                D::bind_statuses(query, PaymentStatus::UNSETTLED).execute(D::on(&mut *tx)).await?;
            }
            tx.commit().await?;
        }
        Ok(())
    }

    async fn unsettled(&self) -> Result<(i64, Option<Timestamp>), StoreError> {
        let sql = format!(
            "SELECT COUNT(*) AS n, MIN(created_at) AS oldest FROM payment_attempts WHERE finalized_at IS NULL AND status {}",
            one_of::<D>("$1")
        );
        let row = D::bind_statuses(sqlx::query(AssertSqlSafe(sql)), PaymentStatus::UNSETTLED)
            .fetch_one(D::on(&mut *self.reader().await?))
            .await?;
        Ok((row.col("n")?, row.col::<Option<i64>>("oldest")?.map(Timestamp::from_millis)))
    }

    async fn unsettled_by_gateway(&self) -> Result<Vec<(String, i64)>, StoreError> {
        let sql = format!(
            "SELECT gateway, COUNT(*) AS n FROM payment_attempts WHERE finalized_at IS NULL AND status {}
             GROUP BY gateway ORDER BY gateway",
            one_of::<D>("$1")
        );
        let rows = D::bind_statuses(sqlx::query(AssertSqlSafe(sql)), PaymentStatus::UNSETTLED)
            .fetch_all(D::on(&mut *self.reader().await?))
            .await?;
        rows.iter().map(|row| Ok((row.col("gateway")?, row.col("n")?))).collect()
    }
}
