//! The PostgreSQL store, for several payguard instances on one database. Times are
//! BIGINT unix milliseconds, as on SQLite (migration 0005). Reconciliation claims use
//! `FOR UPDATE SKIP LOCKED`, so instances never claim the same attempt. What both
//! backends run as written is `SqlStore` (sql.rs and the aggregates' files).

use std::str::FromStr;
use std::time::Duration;

use futures_util::future::BoxFuture;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions};
use sqlx::query::Query;
use sqlx::{Connection, Postgres, QueryBuilder, Transaction};

use super::batch::{Answers, Round, Writer, Writers, copies};
use super::orders::create_orders;
use super::payments::{mark_all_pending, settle_all};
use super::sql::{Dialect, SqlStore};
use super::{StoreError, at_startup};
use crate::domain::PaymentStatus;

/// Pool settings.
#[derive(Debug, Clone, Copy)]
pub struct PoolSettings {
    pub max_connections: u32,
    pub acquire_timeout: Duration,
}

/// The store on PostgreSQL: reads and writes on one pool, any of its connections.
pub type PgStore = SqlStore<Postgres>;

impl Dialect for Postgres {
    /// A group locks its rows in id order first, so that two groups (or two instances)
    /// touching the same rows queue instead of deadlocking.
    const LOCKS_ROWS: bool = true;
    const ROW_LOCK: &'static str = " FOR UPDATE";
    const SKIP_LOCKED: &'static str = " FOR UPDATE SKIP LOCKED";
    /// The set is bound as a `text[]`.
    const ONE_OF: (&'static str, &'static str) = ("= ANY(", ")");

    fn bind_statuses<'q>(
        query: Query<'q, Postgres, Self::Arguments>,
        set: &[PaymentStatus],
    ) -> Query<'q, Postgres, Self::Arguments> {
        query.bind(status_names(set))
    }

    fn rows_affected(result: &sqlx::postgres::PgQueryResult) -> u64 {
        result.rows_affected()
    }

    fn push_one_of(query: &mut QueryBuilder<Postgres>, set: &[PaymentStatus]) {
        let (open, close) = Self::ONE_OF;
        query.push(open).push_bind(status_names(set)).push(close);
    }

    async fn begin_write(conn: &mut PgConnection) -> Result<Transaction<'_, Postgres>, StoreError> {
        Ok(conn.begin().await?)
    }
}

fn status_names(statuses: &[PaymentStatus]) -> Vec<&'static str> {
    statuses.iter().map(|s| s.as_str()).collect()
}

/// Writes a round of a writer (store/batch.rs): each kind of write in a transaction of
/// its own, on a connection of its own. Not the kinds in one transaction, as on SQLite:
/// it would lock products for the orders and then attempts for the settlements, while a
/// rollback beside it locks an attempt and then its products, and the two would wait for
/// each other. Each kind has a writer of its own (`rounds`), so a round holds one kind.
async fn write_round(pool: PgPool, round: Round) -> Result<Answers, StoreError> {
    let (orders, pending, settlements) = tokio::join!(
        on_a_connection(&pool, round.orders, |conn, group| Box::pin(create_orders::<Postgres>(conn, group))),
        on_a_connection(&pool, round.pending, |conn, group| Box::pin(mark_all_pending::<Postgres>(conn, group))),
        on_a_connection(&pool, round.settlements, |conn, group| Box::pin(settle_all::<Postgres>(conn, group))),
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

impl SqlStore<Postgres> {
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
        // PostgreSQL takes concurrent writers: any of the pool's connections writes.
        Ok(SqlStore { writer: pool.clone(), pool, rounds, _background: None })
    }
}
