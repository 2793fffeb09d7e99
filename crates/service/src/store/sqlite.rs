//! The SQLite store: the embedded default. WAL journal, and every writing transaction
//! starts with `BEGIN IMMEDIATE` so two writers queue on the busy timeout instead of
//! failing when both try to upgrade a read lock.

use std::str::FromStr;
use std::time::Duration;

use std::ops::{Deref, DerefMut};
use std::sync::Arc;

use sqlx::pool::PoolConnection;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{ConnectOptions, Connection, Row, Sqlite, Transaction};
use tokio::sync::{Mutex, OwnedMutexGuard};

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
    writer: Writer,
    /// How long a statement waits for a connection, the writing one included.
    timeout: Duration,
}

/// The one writing connection. SQLite takes one writer at a time anyway; with several
/// writing connections the losers poll its lock in sleeps of 1 to 100 ms (its busy
/// handler), which under load cost more than the writes. Held outside sqlx's pool,
/// which tests every connection handed back with one more trip to its thread
/// (docs/benchmarks.md).
#[derive(Clone)]
enum Writer {
    Own(Arc<Mutex<SqliteConnection>>),
    /// An in-memory database lives in its one pooled connection, which also writes.
    Pooled(SqlitePool),
}

/// The writing connection, held until dropped.
pub(crate) enum WriteConnection {
    Own(OwnedMutexGuard<SqliteConnection>),
    Pooled(PoolConnection<Sqlite>),
}

impl Deref for WriteConnection {
    type Target = SqliteConnection;
    fn deref(&self) -> &SqliteConnection {
        match self {
            WriteConnection::Own(c) => c,
            WriteConnection::Pooled(c) => c,
        }
    }
}

impl DerefMut for WriteConnection {
    fn deref_mut(&mut self) -> &mut SqliteConnection {
        match self {
            WriteConnection::Own(c) => c,
            WriteConnection::Pooled(c) => c,
        }
    }
}

/// A writing transaction: `BEGIN IMMEDIATE`, so that it holds SQLite's write lock from
/// its first statement.
async fn begin_write(conn: &mut SqliteConnection) -> Result<Transaction<'_, Sqlite>, StoreError> {
    Ok(conn.begin_with("BEGIN IMMEDIATE").await?)
}

impl SqliteStore {
    /// Opens (creating if missing) and migrates the database at `url`, e.g.
    /// `sqlite://payguard-dev.db` or `sqlite::memory:`. A statement waits at most
    /// `timeout` for a connection (the writing one included) and again for another
    /// process's write lock; past it the database counts as unavailable (a 503), not as
    /// slow.
    pub async fn connect(url: &str, timeout: Duration) -> Result<SqliteStore, StoreError> {
        let options = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(timeout);
        // No ping before each use: each is one more trip to the connection's thread.
        let pool_of =
            |max| SqlitePoolOptions::new().max_connections(max).acquire_timeout(timeout).test_before_acquire(false);
        if url.contains(":memory:") {
            let pool = pool_of(1).connect_with(options).await?;
            sqlx::migrate!("./migrations/sqlite").run(&pool).await?;
            return Ok(SqliteStore { writer: Writer::Pooled(pool.clone()), pool, timeout });
        }
        let mut writer = options.connect().await?;
        sqlx::migrate!("./migrations/sqlite").run(&mut writer).await?;
        let pool = pool_of(8).connect_with(options).await?;
        Ok(SqliteStore { pool, writer: Writer::Own(Arc::new(Mutex::new(writer))), timeout })
    }

    /// The writing connection, once the writer before has finished; waiting longer than
    /// the timeout is the database being unavailable, as for a pooled connection.
    async fn writer(&self) -> Result<WriteConnection, StoreError> {
        match &self.writer {
            Writer::Own(connection) => tokio::time::timeout(self.timeout, connection.clone().lock_owned())
                .await
                .map(WriteConnection::Own)
                .map_err(|_| sqlx::Error::PoolTimedOut.into()),
            Writer::Pooled(pool) => Ok(WriteConnection::Pooled(pool.acquire().await?)),
        }
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
