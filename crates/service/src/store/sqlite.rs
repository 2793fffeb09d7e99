//! The SQLite store: the embedded default. WAL journal, and every writing transaction
//! starts with `BEGIN IMMEDIATE` so two writers queue on the busy timeout instead of
//! failing when both try to upgrade a read lock.

use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Row, Sqlite, Transaction};

use super::{Attempt, StoreError, status_json};
use crate::domain::PaymentStatus;

/// SQLite's test of a status against a bound set (shared.rs): the set is bound as a JSON
/// array and read with `json_each`.
macro_rules! one_of {
    ($n:literal) => {
        concat!("IN (SELECT value FROM json_each(", $n, "))")
    };
}

/// No row locks on SQLite: `BEGIN IMMEDIATE` already holds the one write lock.
macro_rules! row_lock {
    () => {
        ""
    };
}

fn statuses(set: &[PaymentStatus]) -> String {
    status_json(set)
}

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

super::shared::impl_payments!(SqliteStore);

impl SqliteStore {
    /// Leases due attempts to `owner` (SQLite has one writer: no row is contended).
    async fn claim(
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
}

super::shared::impl_reconciliation!(SqliteStore);

super::shared::impl_idempotency!(SqliteStore);

super::shared::impl_ping!(SqliteStore);

super::shared::impl_inspect!(SqliteStore);
