//! The PostgreSQL store, for several payguard instances on one database. Times are
//! BIGINT unix milliseconds, as on SQLite (migration 0005). Reconciliation claims use
//! `FOR UPDATE SKIP LOCKED`, so instances never claim the same attempt. What both
//! backends run as written lives in shared.rs.

use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{Postgres, Row, Transaction};

use super::{Attempt, StoreError, status_names};
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
        concat!("= ANY(", $n, ")")
    };
}

/// Locks the row read before it is changed, against another instance's transaction.
macro_rules! row_lock {
    () => {
        " FOR UPDATE"
    };
}

fn statuses(set: &[PaymentStatus]) -> Vec<&'static str> {
    status_names(set)
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

super::shared::impl_payments!(PgStore);

impl PgStore {
    /// Leases due attempts to `owner`; rows another instance holds locked are skipped.
    async fn claim(
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
}

super::shared::impl_reconciliation!(PgStore);

super::shared::impl_idempotency!(PgStore);

super::shared::impl_ping!(PgStore);

super::shared::impl_inspect!(PgStore);
