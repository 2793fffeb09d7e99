//! The PostgreSQL store, for several payguard instances on one database. Times are
//! BIGINT unix milliseconds, as on SQLite (migration 0005). Reconciliation claims use
//! `FOR UPDATE SKIP LOCKED`, so instances never claim the same attempt. What both
//! backends run as written lives in shared.rs.

use std::str::FromStr;
use std::time::Duration;

use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions};
use sqlx::{Connection, Postgres, Row, Transaction};

use futures_util::future::BoxFuture;

use super::batch::{Answers, Round, Writer, Writers, copies};
use super::{StoreError, at_startup, status_names};
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
    /// Orders, PENDING marks and settlements written in rounds (store/batch.rs), each kind
    /// by a task of its own: one transaction and a few round trips for a group instead
    /// of a few for each write.
    rounds: Writers,
}

/// Writes a round of a writer (store/batch.rs): each kind of write in a transaction of
/// its own, on a connection of its own. Not the kinds in one transaction, as on SQLite:
/// it would lock products for the orders and then attempts for the settlements, while a
/// rollback beside it locks an attempt and then its products, and the two would wait for
/// each other. Each kind has a writer of its own (`rounds`), so a round holds one kind.
async fn write_round(pool: PgPool, round: Round) -> Result<Answers, StoreError> {
    let (orders, pending, settlements) = tokio::join!(
        on_a_connection(&pool, round.orders, |conn, group| Box::pin(create_orders(conn, group))),
        on_a_connection(&pool, round.pending, |conn, group| Box::pin(mark_all_pending(conn, group))),
        on_a_connection(&pool, round.settlements, |conn, group| Box::pin(settle_all(conn, group))),
    );
    Ok(Answers { orders, pending, settlements })
}

/// The tasks that write the rounds, on `pool`: one for each kind of write.
fn rounds(pool: &PgPool, timeout: Duration) -> Writers {
    Writers::one_per_kind(|| {
        let pool = pool.clone();
        Writer::start(timeout, move |round| write_round(pool.clone(), round))
    })
}

/// `write` of `group` on a connection of the pool; each write answered unavailable when
/// none comes in time.
async fn on_a_connection<I, O>(
    pool: &PgPool,
    group: Vec<I>,
    write: impl for<'c> FnOnce(&'c mut PgConnection, Vec<I>) -> BoxFuture<'c, Vec<Result<O, StoreError>>>,
) -> Vec<Result<O, StoreError>> {
    if group.is_empty() {
        return Vec::new();
    }
    match pool.acquire().await {
        Ok(mut conn) => write(&mut conn, group).await,
        Err(error) => copies(error.into(), group.len()).map(Err).collect(),
    }
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
        at_startup(async {
            let mut setup = PgConnection::connect_with(&options).await?;
            sqlx::migrate!("./migrations/postgres").run(&mut setup).await?;
            Ok(setup.close().await?)
        })
        .await?;
        // No ping before each use: sqlx already tests a connection when it is returned,
        // and each ping is one more round trip to the server (docs/benchmarks.md). A
        // connection the server dropped while idle fails its next statement, which the
        // caller answers as STORE_UNAVAILABLE, and is closed on return.
        let pool = PgPoolOptions::new()
            .max_connections(settings.max_connections)
            .acquire_timeout(settings.acquire_timeout)
            .test_before_acquire(false)
            .connect_lazy_with(options);
        let rounds = rounds(&pool, settings.acquire_timeout);
        Ok(PgStore { pool, rounds })
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
