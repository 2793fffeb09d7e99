//! The PostgreSQL store, for several payguard instances on one database. Times are
//! BIGINT unix milliseconds, as on SQLite (migration 0005). Reconciliation claims use
//! `FOR UPDATE SKIP LOCKED`, so instances never claim the same attempt. What both
//! backends run as written lives in shared.rs.

use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{Postgres, Row, Transaction};

use super::{Attempt, EventKind, PaymentStore, ReconciliationStore, StoreError, Transition, key_taken, status_names};
use crate::domain::{Final, PaymentStatus, Settlement, Source};

/// Pool settings.
#[derive(Debug, Clone, Copy)]
pub struct PoolSettings {
    pub max_connections: u32,
    pub acquire_timeout: Duration,
}

#[derive(Clone)]
pub struct PgStore {
    pool: PgPool,
}

const ATTEMPT: &str = "id, order_id, pg_order_id, gateway, amount, status, transaction_key, reason, \
                       created_at, checks";

impl PgStore {
    /// Connects to `postgres://...` and migrates.
    pub async fn connect(url: &str, pool: PoolSettings) -> Result<PgStore, StoreError> {
        PgStore::connect_with(PgConnectOptions::from_str(url)?, pool).await
    }

    pub async fn connect_with(options: PgConnectOptions, settings: PoolSettings) -> Result<PgStore, StoreError> {
        let pool = PgPoolOptions::new()
            .max_connections(settings.max_connections)
            .acquire_timeout(settings.acquire_timeout)
            .connect_with(options)
            .await?;
        sqlx::migrate!("./migrations/postgres").run(&pool).await?;
        Ok(PgStore { pool })
    }

    /// A transaction that writes (named like SQLite's, which must say so up front, so
    /// that shared.rs calls the same method on both).
    async fn write(&self) -> Result<Transaction<'static, Postgres>, StoreError> {
        Ok(self.pool.begin().await?)
    }
}

super::shared::row_helpers!(PgStore, Postgres);

super::shared::impl_catalog!(PgStore);

super::shared::impl_orders!(PgStore);

#[async_trait]
impl PaymentStore for PgStore {
    async fn mark_pending(&self, attempt_id: i64, key: Option<&str>, now_ms: i64) -> Result<Transition, StoreError> {
        let mut tx = self.write().await?;
        let updated = sqlx::query(
            "UPDATE payment_attempts SET status = $4, transaction_key = COALESCE($1, transaction_key),
               version = version + 1, updated_at = $2
             WHERE id = $3 AND status = ANY($5)",
        )
        .bind(key)
        .bind(now_ms)
        .bind(attempt_id)
        .bind(PaymentStatus::Pending.as_str())
        .bind(status_names(PaymentStatus::allowed_sources(PaymentStatus::Pending)))
        .execute(&mut *tx)
        .await
        .map_err(|e| key_taken(e, key))?;
        let result =
            if updated.rows_affected() == 1 { Transition::Applied } else { current(&mut tx, attempt_id).await? };
        tx.commit().await?;
        Ok(result)
    }

    async fn adopt_key(&self, attempt_id: i64, key: &str, now_ms: i64) -> Result<bool, StoreError> {
        let updated = sqlx::query(
            "UPDATE payment_attempts SET transaction_key = $1, status = $4, version = version + 1,
               updated_at = $2
             WHERE id = $3 AND transaction_key IS NULL AND status = ANY($5)",
        )
        .bind(key)
        .bind(now_ms)
        .bind(attempt_id)
        .bind(PaymentStatus::Pending.as_str())
        .bind(status_names(PaymentStatus::UNSETTLED))
        .execute(&self.pool)
        .await
        .map_err(|e| key_taken(e, Some(key)))?;
        Ok(updated.rows_affected() == 1)
    }

    async fn settle(
        &self,
        attempt_id: i64,
        settlement: &Settlement,
        source: Source,
        now_ms: i64,
    ) -> Result<Transition, StoreError> {
        let mut tx = self.write().await?;
        let order_id: Option<i64> = sqlx::query_scalar(
            "UPDATE payment_attempts SET status = $1, transaction_key = COALESCE($2, transaction_key), reason = $3,
               version = version + 1, updated_at = $4, finalized_at = $4,
               settled_by = $5, stuck = FALSE, lease_owner = NULL, lease_until = NULL
             WHERE id = $6 AND status = ANY($7)
             RETURNING order_id",
        )
        .bind(settlement.status.as_str())
        .bind(settlement.transaction_key.as_deref())
        .bind(settlement.reason.as_deref())
        .bind(now_ms)
        .bind(source.as_str())
        .bind(attempt_id)
        .bind(status_names(PaymentStatus::allowed_sources(settlement.status.into())))
        .fetch_optional(&mut *tx)
        .await
        .map_err(|e| key_taken(e, settlement.transaction_key.as_deref()))?;
        let Some(order_id) = order_id else {
            let result = current(&mut tx, attempt_id).await?;
            tx.commit().await?;
            return Ok(result);
        };
        release_stock(&mut tx, order_id, settlement.status == Final::Success).await?;
        tx.commit().await?;
        Ok(Transition::Applied)
    }

    async fn roll_back(&self, attempt_id: i64) -> Result<Transition, StoreError> {
        let mut tx = self.write().await?;
        let order_id: Option<i64> =
            sqlx::query_scalar("SELECT order_id FROM payment_attempts WHERE id = $1 AND status = ANY($2) FOR UPDATE")
                .bind(attempt_id)
                .bind(status_names(PaymentStatus::UNSENT))
                .fetch_optional(&mut *tx)
                .await?;
        let Some(order_id) = order_id else {
            let result = current(&mut tx, attempt_id).await?;
            tx.commit().await?;
            return Ok(result);
        };
        release_stock(&mut tx, order_id, false).await?;
        sqlx::query("DELETE FROM orders WHERE id = $1").bind(order_id).execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(Transition::Applied)
    }

    async fn reassign_gateway(&self, attempt_id: i64, from: &str, to: &str, now_ms: i64) -> Result<bool, StoreError> {
        let updated = sqlx::query(
            "UPDATE payment_attempts SET gateway = $1, version = version + 1,
               updated_at = $2
             WHERE id = $3 AND gateway = $4 AND status = ANY($5)",
        )
        .bind(to)
        .bind(now_ms)
        .bind(attempt_id)
        .bind(from)
        .bind(status_names(PaymentStatus::UNSENT))
        .execute(&self.pool)
        .await?;
        Ok(updated.rows_affected() == 1)
    }

    async fn attempt_by_pg_order_id(&self, pg_order_id: &str) -> Result<Option<Attempt>, StoreError> {
        let sql = sqlx::AssertSqlSafe(format!("SELECT {ATTEMPT} FROM payment_attempts WHERE pg_order_id = $1"));
        let row = sqlx::query(sql).bind(pg_order_id).fetch_optional(&self.pool).await?;
        row.as_ref().map(attempt).transpose()
    }

    async fn record_event(
        &self,
        attempt_id: i64,
        kind: EventKind,
        detail: &str,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        let mut tx = self.write().await?;
        sqlx::query("INSERT INTO payment_events (attempt_id, kind, detail, created_at) VALUES ($1, $2, $3, $4)")
            .bind(attempt_id)
            .bind(kind.as_str())
            .bind(detail)
            .bind(now_ms)
            .execute(&mut *tx)
            .await?;
        if kind.is_anomaly() {
            sqlx::query(
                "UPDATE orders SET anomaly = $1 WHERE id = (SELECT order_id FROM payment_attempts WHERE id = $2)",
            )
            .bind(kind.as_str())
            .bind(attempt_id)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }
}

#[async_trait]
impl ReconciliationStore for PgStore {
    async fn claim_due_attempts(
        &self,
        gateway: &str,
        owner: &str,
        lease_until_ms: i64,
        created_before_ms: i64,
        now_ms: i64,
        limit: i64,
    ) -> Result<Vec<Attempt>, StoreError> {
        let sql = sqlx::AssertSqlSafe(format!(
            "UPDATE payment_attempts SET lease_owner = $1, lease_until = $2
             WHERE id IN (
               SELECT id FROM payment_attempts
               WHERE gateway = $6 AND status = ANY($7)
                 AND created_at <= $3
                 AND next_check_at <= $4
                 AND (lease_until IS NULL OR lease_until < $4)
               ORDER BY next_check_at LIMIT $5
               FOR UPDATE SKIP LOCKED)
             RETURNING {ATTEMPT}"
        ));
        let rows = sqlx::query(sql)
            .bind(owner)
            .bind(lease_until_ms)
            .bind(created_before_ms)
            .bind(now_ms)
            .bind(limit)
            .bind(gateway)
            .bind(status_names(PaymentStatus::UNSETTLED))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(attempt).collect()
    }

    async fn renew_leases(&self, owner: &str, lease_until_ms: i64) -> Result<u64, StoreError> {
        let renewed = sqlx::query(
            "UPDATE payment_attempts SET lease_until = $1
             WHERE lease_owner = $2 AND status = ANY($3)",
        )
        .bind(lease_until_ms)
        .bind(owner)
        .bind(status_names(PaymentStatus::UNSETTLED))
        .execute(&self.pool)
        .await?;
        Ok(renewed.rows_affected())
    }

    async fn release_leases(&self, owner: &str) -> Result<u64, StoreError> {
        let done =
            sqlx::query("UPDATE payment_attempts SET lease_owner = NULL, lease_until = NULL WHERE lease_owner = $1")
                .bind(owner)
                .execute(&self.pool)
                .await?;
        Ok(done.rows_affected())
    }

    async fn record_check(
        &self,
        attempt_id: i64,
        next_check_at_ms: i64,
        note: &str,
        stuck: bool,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE payment_attempts SET checks = checks + 1, next_check_at = $1,
               last_check = $2, stuck = $3, updated_at = $4, lease_owner = NULL, lease_until = NULL
             WHERE id = $5 AND status = ANY($6)",
        )
        .bind(next_check_at_ms)
        .bind(note)
        .bind(stuck)
        .bind(now_ms)
        .bind(attempt_id)
        .bind(status_names(PaymentStatus::UNSETTLED))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn unsettled(&self) -> Result<(i64, Option<i64>), StoreError> {
        let row = sqlx::query(
            "SELECT COUNT(*) AS n, MIN(created_at) AS oldest
             FROM payment_attempts WHERE status = ANY($1)",
        )
        .bind(status_names(PaymentStatus::UNSETTLED))
        .fetch_one(&self.pool)
        .await?;
        Ok((row.try_get("n")?, row.try_get("oldest")?))
    }

    async fn unsettled_by_gateway(&self) -> Result<Vec<(String, i64)>, StoreError> {
        let sql = "SELECT gateway, COUNT(*) FROM payment_attempts WHERE status = ANY($1)
                   GROUP BY gateway ORDER BY gateway";
        Ok(sqlx::query_as(sql).bind(status_names(PaymentStatus::UNSETTLED)).fetch_all(&self.pool).await?)
    }
}

super::shared::impl_idempotency!(PgStore);

super::shared::impl_ping!(PgStore);

super::shared::impl_inspect!(PgStore);
