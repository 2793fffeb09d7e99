//! The PostgreSQL store, for several payguard instances on one database. Times are
//! BIGINT unix milliseconds, as on SQLite (migration 0005). Reconciliation claims use
//! `FOR UPDATE SKIP LOCKED`, so instances never claim the same attempt. What both
//! backends run as written lives in shared.rs.

use std::str::FromStr;
use std::time::Duration;

use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions};
use sqlx::{Connection, Postgres, Row, Transaction};

use super::batch::Batcher;
use super::{CreatedOrder, MarkPending, NewOrder, STARTUP_TIMEOUT, Settle, StoreError, Transition, status_names};
use crate::domain::PaymentStatus;

/// Pool settings.
#[derive(Debug, Clone, Copy)]
pub struct PoolSettings {
    pub max_connections: u32,
    pub acquire_timeout: Duration,
}

/// PostgreSQL's test of a status against a bound set (shared.rs): a text array.
macro_rules! one_of {
    ($n:literal) => {
        concat!(one_of_open!(), $n, one_of_close!())
    };
}

/// `one_of!` in two halves, for a statement built with `QueryBuilder` around its bind.
macro_rules! one_of_open {
    () => {
        "= ANY("
    };
}

macro_rules! one_of_close {
    () => {
        ")"
    };
}

/// Locks the row read before it is changed, against another instance's transaction.
macro_rules! row_lock {
    () => {
        " FOR UPDATE"
    };
}

/// Row locks: a group locks its rows in id order first, so that two groups (or two
/// instances) touching the same rows queue instead of deadlocking (shared.rs).
const LOCKS_ROWS: bool = true;

/// A claim passes over rows another instance is claiming, instead of waiting for them.
macro_rules! skip_locked {
    () => {
        " FOR UPDATE SKIP LOCKED"
    };
}

fn statuses(set: &[PaymentStatus]) -> Vec<&'static str> {
    status_names(set)
}

#[derive(Clone)]
pub struct PgStore {
    pool: PgPool,
    /// Orders created together (store/batch.rs): one transaction and a few round trips
    /// for a group instead of six round trips each.
    orders: Batcher<NewOrder, CreatedOrder>,
    /// Attempts marked PENDING together, and settled together: one statement or
    /// transaction for a group.
    pending: Batcher<MarkPending, Transition>,
    settlements: Batcher<Settle, Transition>,
}

/// A writing transaction (named like SQLite's, which must say so up front, so that
/// shared.rs calls the same function on both).
async fn begin_write(conn: &mut PgConnection) -> Result<Transaction<'_, Postgres>, StoreError> {
    Ok(conn.begin().await?)
}

impl PgStore {
    /// Connects to `postgres://...` and migrates.
    pub async fn connect(url: &str, pool: PoolSettings) -> Result<PgStore, StoreError> {
        PgStore::connect_with(PgConnectOptions::from_str(url)?, pool).await
    }

    pub async fn connect_with(options: PgConnectOptions, settings: PoolSettings) -> Result<PgStore, StoreError> {
        // Connecting and migrating at startup may take longer than a request may wait
        // for a connection (a new database under load, another instance holding the
        // migrations' lock): they run on a connection of their own, under their own
        // deadline; the pool opens its connections on first use.
        tokio::time::timeout(STARTUP_TIMEOUT, async {
            let mut setup = PgConnection::connect_with(&options).await?;
            sqlx::migrate!("./migrations/postgres").run(&mut setup).await?;
            setup.close().await?;
            Ok::<_, StoreError>(())
        })
        .await
        .map_err(|_| StoreError::Unavailable(sqlx::Error::PoolTimedOut))??;
        // No ping before each use: sqlx already tests a connection when it is returned,
        // and each ping is one more round trip to the server (docs/benchmarks.md). A
        // connection the server dropped while idle fails its next statement, which the
        // caller answers as STORE_UNAVAILABLE, and is closed on return.
        let pool = PgPoolOptions::new()
            .max_connections(settings.max_connections)
            .acquire_timeout(settings.acquire_timeout)
            .test_before_acquire(false)
            .connect_lazy_with(options);
        let timeout = settings.acquire_timeout;
        let (for_orders, for_pending, for_settlements) = (pool.clone(), pool.clone(), pool.clone());
        let orders = Batcher::start(timeout, move |group| create_orders(for_orders.clone(), group));
        let pending = Batcher::start(timeout, move |group| mark_all_pending(for_pending.clone(), group));
        let settlements = Batcher::start(timeout, move |group| settle_all(for_settlements.clone(), group));
        Ok(PgStore { pool, orders, pending, settlements })
    }

    /// A connection to write on: any of the pool's, PostgreSQL taking concurrent
    /// writers (shared.rs says why SQLite's differs).
    async fn writer(&self) -> Result<PoolConnection<Postgres>, StoreError> {
        Ok(self.pool.acquire().await?)
    }
}

super::shared::row_helpers!(PgStore, Postgres);

super::shared::impl_catalog!(PgStore);

super::shared::impl_orders!(PgStore, Postgres);

super::shared::impl_payments!(PgStore, Postgres);

super::shared::impl_reconciliation!(PgStore);

super::shared::impl_idempotency!(PgStore);

super::shared::impl_ping!(PgStore);

super::shared::impl_inspect!(PgStore);
