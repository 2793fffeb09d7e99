//! The SQLite store: the embedded default. WAL journal, and every writing transaction
//! starts with `BEGIN IMMEDIATE` so two writers queue on the busy timeout instead of
//! failing when both try to upgrade a read lock.

use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Row, Sqlite, Transaction};

use super::{Attempt, EventKind, PaymentStore, ReconciliationStore, StoreError, Transition, key_taken, status_json};
use crate::domain::{Final, PaymentStatus, Settlement, Source};

#[derive(Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
}

impl SqliteStore {
    /// Opens (creating if missing) and migrates the database at `url`, e.g.
    /// `sqlite://payguard-dev.db` or `sqlite::memory:`. A statement waits at most
    /// `timeout` for a pooled connection and again for another writer's lock; past it the
    /// database counts as unavailable (a 503), not as slow.
    pub async fn connect(url: &str, timeout: Duration) -> Result<SqliteStore, StoreError> {
        let options = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(timeout);
        // An in-memory database lives in one connection; a file is shared by several.
        let max = if url.contains(":memory:") { 1 } else { 8 };
        let pool = SqlitePoolOptions::new().max_connections(max).acquire_timeout(timeout).connect_with(options).await?;
        sqlx::migrate!("./migrations/sqlite").run(&pool).await?;
        Ok(SqliteStore { pool })
    }

    async fn write(&self) -> Result<Transaction<'static, Sqlite>, StoreError> {
        Ok(self.pool.begin_with("BEGIN IMMEDIATE").await?)
    }
}

super::shared::row_helpers!(SqliteStore, Sqlite);

super::shared::impl_catalog!(SqliteStore);

super::shared::impl_orders!(SqliteStore);

#[async_trait]
impl PaymentStore for SqliteStore {
    async fn mark_pending(&self, attempt_id: i64, key: Option<&str>, now_ms: i64) -> Result<Transition, StoreError> {
        let mut tx = self.write().await?;
        let updated = sqlx::query(
            "UPDATE payment_attempts SET status = ?, transaction_key = COALESCE(?, transaction_key),
               version = version + 1, updated_at = ?
             WHERE id = ? AND status IN (SELECT value FROM json_each(?))",
        )
        .bind(PaymentStatus::Pending.as_str())
        .bind(key)
        .bind(now_ms)
        .bind(attempt_id)
        .bind(status_json(PaymentStatus::allowed_sources(PaymentStatus::Pending)))
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
            "UPDATE payment_attempts SET transaction_key = ?, status = ?, version = version + 1, updated_at = ?
             WHERE id = ? AND transaction_key IS NULL AND status IN (SELECT value FROM json_each(?))",
        )
        .bind(key)
        .bind(PaymentStatus::Pending.as_str())
        .bind(now_ms)
        .bind(attempt_id)
        .bind(status_json(PaymentStatus::UNSETTLED))
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
            "UPDATE payment_attempts SET status = ?, transaction_key = COALESCE(?, transaction_key), reason = ?,
               version = version + 1, updated_at = ?, finalized_at = ?, settled_by = ?, stuck = 0,
               lease_owner = NULL, lease_until = NULL
             WHERE id = ? AND status IN (SELECT value FROM json_each(?))
             RETURNING order_id",
        )
        .bind(settlement.status.as_str())
        .bind(settlement.transaction_key.as_deref())
        .bind(settlement.reason.as_deref())
        .bind(now_ms)
        .bind(now_ms)
        .bind(source.as_str())
        .bind(attempt_id)
        .bind(status_json(PaymentStatus::allowed_sources(settlement.status.into())))
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
        let order_id: Option<i64> = sqlx::query_scalar(
            "SELECT order_id FROM payment_attempts WHERE id = ? AND status IN (SELECT value FROM json_each(?))",
        )
        .bind(attempt_id)
        .bind(status_json(PaymentStatus::UNSENT))
        .fetch_optional(&mut *tx)
        .await?;
        let Some(order_id) = order_id else {
            let result = current(&mut tx, attempt_id).await?;
            tx.commit().await?;
            return Ok(result);
        };
        release_stock(&mut tx, order_id, false).await?;
        sqlx::query("DELETE FROM orders WHERE id = ?").bind(order_id).execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(Transition::Applied)
    }

    async fn reassign_gateway(&self, attempt_id: i64, from: &str, to: &str, now_ms: i64) -> Result<bool, StoreError> {
        let updated = sqlx::query(
            "UPDATE payment_attempts SET gateway = ?, version = version + 1, updated_at = ?
             WHERE id = ? AND gateway = ? AND status IN (SELECT value FROM json_each(?))",
        )
        .bind(to)
        .bind(now_ms)
        .bind(attempt_id)
        .bind(from)
        .bind(status_json(PaymentStatus::UNSENT))
        .execute(&self.pool)
        .await?;
        Ok(updated.rows_affected() == 1)
    }

    async fn attempt_by_pg_order_id(&self, pg_order_id: &str) -> Result<Option<Attempt>, StoreError> {
        let sql =
            "SELECT id, order_id, pg_order_id, gateway, amount, status, transaction_key, reason, created_at, checks
                   FROM payment_attempts WHERE pg_order_id = ?";
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
        sqlx::query("INSERT INTO payment_events (attempt_id, kind, detail, created_at) VALUES (?, ?, ?, ?)")
            .bind(attempt_id)
            .bind(kind.as_str())
            .bind(detail)
            .bind(now_ms)
            .execute(&mut *tx)
            .await?;
        if kind.is_anomaly() {
            sqlx::query(
                "UPDATE orders SET anomaly = ? WHERE id = (SELECT order_id FROM payment_attempts WHERE id = ?)",
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
impl ReconciliationStore for SqliteStore {
    async fn claim_due_attempts(
        &self,
        gateway: &str,
        owner: &str,
        lease_until_ms: i64,
        created_before_ms: i64,
        now_ms: i64,
        limit: i64,
    ) -> Result<Vec<Attempt>, StoreError> {
        let mut tx = self.write().await?;
        let rows = sqlx::query(
            "UPDATE payment_attempts SET lease_owner = ?1, lease_until = ?2
             WHERE id IN (
               SELECT id FROM payment_attempts
               WHERE gateway = ?6 AND status IN (SELECT value FROM json_each(?7)) AND created_at <= ?3
                 AND next_check_at <= ?4 AND (lease_until IS NULL OR lease_until < ?4)
               ORDER BY next_check_at LIMIT ?5)
             RETURNING id, order_id, pg_order_id, gateway, amount, status, transaction_key, reason, created_at, checks",
        )
        .bind(owner)
        .bind(lease_until_ms)
        .bind(created_before_ms)
        .bind(now_ms)
        .bind(limit)
        .bind(gateway)
        .bind(status_json(PaymentStatus::UNSETTLED))
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        rows.iter().map(attempt).collect()
    }

    async fn renew_leases(&self, owner: &str, lease_until_ms: i64) -> Result<u64, StoreError> {
        let renewed = sqlx::query(
            "UPDATE payment_attempts SET lease_until = ?
             WHERE lease_owner = ? AND status IN (SELECT value FROM json_each(?))",
        )
        .bind(lease_until_ms)
        .bind(owner)
        .bind(status_json(PaymentStatus::UNSETTLED))
        .execute(&self.pool)
        .await?;
        Ok(renewed.rows_affected())
    }

    async fn release_leases(&self, owner: &str) -> Result<u64, StoreError> {
        let done =
            sqlx::query("UPDATE payment_attempts SET lease_owner = NULL, lease_until = NULL WHERE lease_owner = ?")
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
            "UPDATE payment_attempts SET checks = checks + 1, next_check_at = ?, last_check = ?, stuck = ?, updated_at = ?,
               lease_owner = NULL, lease_until = NULL
             WHERE id = ? AND status IN (SELECT value FROM json_each(?))",
        )
        .bind(next_check_at_ms)
        .bind(note)
        .bind(stuck)
        .bind(now_ms)
        .bind(attempt_id)
        .bind(status_json(PaymentStatus::UNSETTLED))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn unsettled(&self) -> Result<(i64, Option<i64>), StoreError> {
        let row = sqlx::query(
            "SELECT COUNT(*) AS n, MIN(created_at) AS oldest FROM payment_attempts
             WHERE status IN (SELECT value FROM json_each(?))",
        )
        .bind(status_json(PaymentStatus::UNSETTLED))
        .fetch_one(&self.pool)
        .await?;
        Ok((row.try_get("n")?, row.try_get("oldest")?))
    }

    async fn unsettled_by_gateway(&self) -> Result<Vec<(String, i64)>, StoreError> {
        let sql = "SELECT gateway, COUNT(*) FROM payment_attempts WHERE status IN (SELECT value FROM json_each(?))
                   GROUP BY gateway ORDER BY gateway";
        Ok(sqlx::query_as(sql).bind(status_json(PaymentStatus::UNSETTLED)).fetch_all(&self.pool).await?)
    }
}

super::shared::impl_idempotency!(SqliteStore);

super::shared::impl_ping!(SqliteStore);

super::shared::impl_inspect!(SqliteStore);
