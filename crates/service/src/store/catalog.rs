//! Products, prices and stock.

use async_trait::async_trait;
use sqlx::{AssertSqlSafe, QueryBuilder};

use super::StoreError;
use super::sql::{Arg, Column, Dialect, PushUnseparated, SqlStore, lock_in_order};
use crate::domain::{Listing, Money, ProductId};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Product {
    pub product_id: i64,
    pub name: String,
    pub price: i64,
    pub stock: i64,
}

/// A product as the catalog's admin sees it: where all of its stock is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CatalogEntry {
    pub product_id: i64,
    pub name: String,
    pub price: i64,
    /// For sale now.
    pub available: i64,
    /// Held by orders whose payment is not settled yet.
    pub reserved: i64,
    pub sold: i64,
}

/// A stock change from the catalog's admin. Reserved stock is never touched: it belongs
/// to orders in flight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StockChange {
    /// Available plus reserved becomes this; refused below what is reserved.
    OnHand(i64),
    /// Available grows (or shrinks) by this; refused below zero.
    Add(i64),
}

/// Stock of one product, for conservation checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StockLevels {
    pub product_id: i64,
    pub available: i64,
    pub reserved: i64,
    pub sold: i64,
}

/// Products, prices and stock.
#[async_trait]
pub trait CatalogStore: Send + Sync + 'static {
    async fn products(&self) -> Result<Vec<Product>, StoreError>;

    /// Every product with its stock, by id.
    async fn catalog(&self) -> Result<Vec<CatalogEntry>, StoreError>;

    /// The name and price of each of `products` as listed now; `ProductNotFound` for
    /// the first that does not exist.
    async fn listings(&self, products: &[ProductId]) -> Result<Vec<(ProductId, Listing)>, StoreError>;

    async fn create_product(&self, name: &str, price: Money, available: i64) -> Result<CatalogEntry, StoreError>;

    /// Renames or reprices a product (orders keep the price they were placed at); None
    /// when there is no such product.
    async fn update_product(
        &self,
        product_id: i64,
        name: Option<&str>,
        price: Option<Money>,
    ) -> Result<Option<CatalogEntry>, StoreError>;

    /// One conditional update, so a checkout reserving at the same moment can never
    /// oversell; `StockConflict` when the change would break its rule, None when there is
    /// no such product.
    async fn change_stock(&self, product_id: i64, change: StockChange) -> Result<Option<CatalogEntry>, StoreError>;
}

/// The columns `catalog_entry` reads.
const COLUMNS: &str = "id, name, price, available, reserved, sold";

fn catalog_entry<D: Dialect>(row: &D::Row) -> Result<CatalogEntry, StoreError> {
    Ok(CatalogEntry {
        product_id: row.col("id")?,
        name: row.col("name")?,
        price: row.col("price")?,
        available: row.col("available")?,
        reserved: row.col("reserved")?,
        sold: row.col("sold")?,
    })
}

#[async_trait]
impl<D: Dialect> CatalogStore for SqlStore<D> {
    async fn products(&self) -> Result<Vec<Product>, StoreError> {
        let for_sale =
            |e: CatalogEntry| Product { product_id: e.product_id, name: e.name, price: e.price, stock: e.available };
        Ok(self.catalog().await?.into_iter().map(for_sale).collect())
    }

    async fn catalog(&self) -> Result<Vec<CatalogEntry>, StoreError> {
        let sql = format!("SELECT {COLUMNS} FROM products ORDER BY id");
        let rows = sqlx::query(AssertSqlSafe(sql)).fetch_all(D::on(&mut *self.reader().await?)).await?;
        rows.iter().map(catalog_entry::<D>).collect()
    }

    async fn listings(&self, products: &[ProductId]) -> Result<Vec<(ProductId, Listing)>, StoreError> {
        let mut conn = self.reader().await?;
        let mut listed = Vec::with_capacity(products.len());
        for &id in products {
            let row = sqlx::query("SELECT name, price FROM products WHERE id = $1")
                .arg(id.0)
                .fetch_optional(D::on(&mut *conn))
                .await?
                .ok_or(StoreError::ProductNotFound(id.0))?;
            listed.push((id, Listing { name: row.col("name")?, price: Money::won(row.col("price")?) }));
        }
        Ok(listed)
    }

    async fn create_product(&self, name: &str, price: Money, available: i64) -> Result<CatalogEntry, StoreError> {
        let sql = format!("INSERT INTO products (name, price, available) VALUES ($1, $2, $3) RETURNING {COLUMNS}");
        let row = sqlx::query(AssertSqlSafe(sql))
            .arg(name)
            .arg(price.get())
            .arg(available)
            .fetch_one(D::on(&mut *self.writer().await?))
            .await?;
        catalog_entry::<D>(&row)
    }

    async fn update_product(
        &self,
        product_id: i64,
        name: Option<&str>,
        price: Option<Money>,
    ) -> Result<Option<CatalogEntry>, StoreError> {
        let sql = format!(
            "UPDATE products SET name = COALESCE($1, name), price = COALESCE($2, price) WHERE id = $3 RETURNING {COLUMNS}"
        );
        let row = sqlx::query(AssertSqlSafe(sql))
            .arg(name)
            .arg(price.map(Money::get))
            .arg(product_id)
            .fetch_optional(D::on(&mut *self.writer().await?))
            .await?;
        row.as_ref().map(catalog_entry::<D>).transpose()
    }

    async fn change_stock(&self, product_id: i64, change: StockChange) -> Result<Option<CatalogEntry>, StoreError> {
        let (sql, amount) = match change {
            StockChange::OnHand(n) => (
                format!(
                    "UPDATE products SET available = $1 - reserved WHERE id = $2 AND $1 >= reserved RETURNING {COLUMNS}"
                ),
                n,
            ),
            StockChange::Add(n) => (
                format!(
                    "UPDATE products SET available = available + $1 WHERE id = $2 AND available + $1 >= 0 RETURNING {COLUMNS}"
                ),
                n,
            ),
        };
        let changed = sqlx::query(AssertSqlSafe(sql))
            .arg(amount)
            .arg(product_id)
            .fetch_optional(D::on(&mut *self.writer().await?))
            .await?;
        if let Some(row) = changed {
            return catalog_entry::<D>(&row).map(Some);
        }
        let sql = format!("SELECT {COLUMNS} FROM products WHERE id = $1");
        match sqlx::query(AssertSqlSafe(sql)).arg(product_id).fetch_optional(D::on(&mut *self.reader().await?)).await? {
            Some(row) => {
                let now = catalog_entry::<D>(&row)?;
                Err(StoreError::StockConflict { product: product_id, available: now.available, reserved: now.reserved })
            }
            None => Ok(None),
        }
    }
}

/// Moves the reserved stock of each of `orders` (order id, sold) to sold, or back to
/// available when not sold; the products locked in id order first.
pub(super) async fn release_stock<D: Dialect>(
    tx: &mut D::Connection,
    orders: &[(i64, bool)],
) -> Result<(), StoreError> {
    let products = "SELECT id FROM products WHERE id IN (SELECT product_id FROM order_items WHERE order_id IN (";
    lock_in_order::<D>(tx, products, orders.iter().map(|&(order, _)| order), "))").await?;
    let mut release = QueryBuilder::<D>::new(
        "UPDATE products SET reserved = reserved - i.released, sold = sold + i.sold_now,
           available = available + i.released - i.sold_now
         FROM (SELECT oi.product_id, CAST(SUM(oi.quantity) AS BIGINT) AS released,
                      CAST(SUM(oi.quantity * v.column2) AS BIGINT) AS sold_now
               FROM order_items AS oi JOIN (",
    );
    release.push_values(orders, |mut row, &(order, sold)| {
        row.push("CAST(").arg_unseparated(order).push_unseparated(" AS BIGINT)");
        row.push("CAST(").arg_unseparated(i64::from(sold)).push_unseparated(" AS BIGINT)");
    });
    release.push(
        ") AS v ON oi.order_id = v.column1 GROUP BY oi.product_id) AS i
         WHERE products.id = i.product_id",
    );
    release.build().execute(D::on(tx)).await?;
    Ok(())
}
