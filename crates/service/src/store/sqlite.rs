//! The SQLite store: the embedded default. WAL journal, and every writing transaction
//! starts with `BEGIN IMMEDIATE` so two writers queue on the busy timeout instead of
//! failing when both try to upgrade a read lock.

use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Row, Sqlite, Transaction};

use super::{StoreError, status_json};
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

/// No row locks on SQLite: one writer at a time.
macro_rules! skip_locked {
    () => {
        ""
    };
}

fn statuses(set: &[PaymentStatus]) -> String {
    status_json(set)
}

#[derive(Clone)]
pub struct SqliteStore {
    /// Readers: WAL lets them run beside the writer.
    pool: SqlitePool,
    /// The one writing connection. SQLite takes one writer at a time anyway; with
    /// several writing connections the losers poll its lock in sleeps of 1 to 100 ms
    /// (its busy handler), which under load cost more than the writes (docs/benchmarks.md).
    writer: SqlitePool,
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
        // No ping before each use: sqlx already tests a connection when it is returned,
        // and each ping is one more trip to the connection's thread (docs/benchmarks.md).
        let pool_of =
            |max| SqlitePoolOptions::new().max_connections(max).acquire_timeout(timeout).test_before_acquire(false);
        // An in-memory database lives in one connection, which reads and writes.
        if url.contains(":memory:") {
            let pool = pool_of(1).connect_with(options).await?;
            sqlx::migrate!("./migrations/sqlite").run(&pool).await?;
            return Ok(SqliteStore { writer: pool.clone(), pool });
        }
        let writer = pool_of(1).connect_with(options.clone()).await?;
        sqlx::migrate!("./migrations/sqlite").run(&writer).await?;
        let pool = pool_of(8).connect_with(options).await?;
        Ok(SqliteStore { pool, writer })
    }

    async fn write(&self) -> Result<Transaction<'static, Sqlite>, StoreError> {
        Ok(self.writer.begin_with("BEGIN IMMEDIATE").await?)
    }
}

super::shared::row_helpers!(SqliteStore, Sqlite);

super::shared::impl_catalog!(SqliteStore);

super::shared::impl_orders!(SqliteStore);

super::shared::impl_payments!(SqliteStore);

super::shared::impl_reconciliation!(SqliteStore);

super::shared::impl_idempotency!(SqliteStore);

super::shared::impl_ping!(SqliteStore);

super::shared::impl_inspect!(SqliteStore);
