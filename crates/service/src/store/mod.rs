//! Persistence: one file per aggregate (catalog, orders, payments, reconciliation,
//! idempotency), each with its trait, its records and its SQL, written once for both
//! databases as `SqlStore<D>` (sql.rs); what differs per backend is its `Dialect` and
//! its connection setup (sqlite.rs, postgres.rs). Every status change is a conditional
//! update whose source statuses come from the state machine (`domain::payment`) as a
//! bound parameter, so a callback and the reconciler racing over one attempt can never
//! both win, and a transition changes in one place. No transaction spans a PG call.

mod batch;
mod catalog;
mod error;
mod idempotency;
mod inspect;
mod orders;
mod payments;
mod postgres;
mod reconciliation;
mod sql;
mod sqlite;

use async_trait::async_trait;

pub use self::catalog::{CatalogEntry, CatalogStore, Product, StockChange, StockLevels};
pub use self::error::StoreError;
pub(crate) use self::error::key_taken;
pub use self::idempotency::{IdempotencyStart, IdempotencyStore, KeyClaim};
pub use self::inspect::Inspect;
pub use self::orders::{AttemptView, CreatedOrder, NewOrder, OrderItem, OrderRecord, OrderStore};
pub use self::payments::{Attempt, EventKind, PaymentStore, Transition};
pub(crate) use self::payments::{MarkPending, Settle};
pub use self::postgres::{PgStore, PoolSettings};
pub use self::reconciliation::{Check, Claim, ReconciliationStore};
pub use self::sql::{Dialect, SqlStore};
pub use self::sqlite::SqliteStore;
use crate::domain::PaymentStatus;

/// How long startup may take to open, create and migrate the database: longer than a
/// request may wait for a connection, since a new database waits on the disk or the
/// network, and the migrations on whatever else holds their lock.
const STARTUP_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Runs `setup` (open, create, migrate) under the startup deadline rather than the
/// requests' wait for a connection.
async fn at_startup(setup: impl std::future::Future<Output = Result<(), StoreError>>) -> Result<(), StoreError> {
    tokio::time::timeout(STARTUP_TIMEOUT, setup)
        .await
        .map_err(|_| StoreError::Unavailable(sqlx::Error::PoolTimedOut))?
}

/// A task a store runs beside its callers (checkpoints, group commit), stopped when the
/// last clone of the store is dropped.
struct Background(tokio::task::JoinHandle<()>);

impl Drop for Background {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Everything the use cases need; each takes the narrowest part that serves it.
#[async_trait]
pub trait Store: CatalogStore + OrderStore + PaymentStore + ReconciliationStore + IdempotencyStore {
    async fn ping(&self) -> Result<(), StoreError>;
}

#[async_trait]
impl<D: Dialect> Store for SqlStore<D> {
    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(D::on(&mut *self.reader().await?)).await?;
        Ok(())
    }
}

/// Parses a status column; a value outside the CHECK constraint means corruption.
fn status_of(raw: &str) -> Result<PaymentStatus, StoreError> {
    PaymentStatus::parse(raw).ok_or_else(|| StoreError::Corrupt(format!("payment status '{raw}'")))
}
