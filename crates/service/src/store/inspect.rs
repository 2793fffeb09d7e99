//! What tests and tools read to check the store's books; no use case calls these.

use async_trait::async_trait;

use super::catalog::{CatalogEntry, CatalogStore, StockLevels};
use super::orders::{NewOrder, orders_the_catalog_refuses};
use super::payments::keys_held_elsewhere;
use super::sql::{Arg, Column, Dialect, SqlStore};
use super::{Store, StoreError};
use crate::domain::AttemptId;

/// What tests and tools read to check the store's books; no use case calls these.
#[async_trait]
pub trait Inspect: Store {
    async fn events(&self, attempt_id: AttemptId) -> Result<Vec<(String, String)>, StoreError>;

    async fn stock_levels(&self) -> Result<Vec<StockLevels>, StoreError>;

    /// Row counts of every table, for tests that prove nothing was written.
    async fn row_counts(&self) -> Result<Vec<(String, i64)>, StoreError>;

    /// Of `writes` (an attempt and the transaction key it would record), those whose key
    /// another attempt of its gateway holds, by their place: what a failed group of
    /// pending marks or settlements sets apart (store/batch.rs).
    async fn keys_held_elsewhere(&self, writes: &[(AttemptId, Option<String>)]) -> Result<Vec<usize>, StoreError>;

    /// Of `orders`, those the catalog as it stands refuses (a product missing or
    /// repriced, or short of what the orders before it take), by their place: what a
    /// failed group of orders sets apart (store/batch.rs).
    async fn orders_the_catalog_refuses(&self, orders: &[NewOrder]) -> Result<Vec<usize>, StoreError>;
}

/// The tables `row_counts` reports, with the query for each.
const COUNTED_TABLES: [(&str, &str); 5] = [
    ("orders", "SELECT COUNT(*) AS n FROM orders"),
    ("order_items", "SELECT COUNT(*) AS n FROM order_items"),
    ("payment_attempts", "SELECT COUNT(*) AS n FROM payment_attempts"),
    ("payment_events", "SELECT COUNT(*) AS n FROM payment_events"),
    ("idempotency_keys", "SELECT COUNT(*) AS n FROM idempotency_keys"),
];

#[async_trait]
impl<D: Dialect> Inspect for SqlStore<D> {
    async fn keys_held_elsewhere(&self, writes: &[(AttemptId, Option<String>)]) -> Result<Vec<usize>, StoreError> {
        keys_held_elsewhere::<D>(&mut *self.reader().await?, writes).await
    }

    async fn orders_the_catalog_refuses(&self, orders: &[NewOrder]) -> Result<Vec<usize>, StoreError> {
        orders_the_catalog_refuses::<D>(&mut *self.reader().await?, orders).await
    }

    async fn events(&self, attempt_id: AttemptId) -> Result<Vec<(String, String)>, StoreError> {
        let rows = sqlx::query("SELECT kind, detail FROM payment_events WHERE attempt_id = $1 ORDER BY id")
            .arg(attempt_id.0)
            .fetch_all(D::on(&mut *self.reader().await?))
            .await?;
        rows.iter().map(|r| Ok((r.col("kind")?, r.col("detail")?))).collect()
    }

    async fn stock_levels(&self) -> Result<Vec<StockLevels>, StoreError> {
        let levels = |e: CatalogEntry| StockLevels {
            product_id: e.product_id,
            available: e.available,
            reserved: e.reserved,
            sold: e.sold,
        };
        Ok(self.catalog().await?.into_iter().map(levels).collect())
    }

    async fn row_counts(&self) -> Result<Vec<(String, i64)>, StoreError> {
        let mut conn = self.reader().await?;
        let mut counts = Vec::new();
        for (table, sql) in COUNTED_TABLES {
            let row = sqlx::query(sql).fetch_one(D::on(&mut *conn)).await?;
            counts.push((table.to_string(), row.col("n")?));
        }
        Ok(counts)
    }
}
