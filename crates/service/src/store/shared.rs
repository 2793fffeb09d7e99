//! The store's code both backends run as written. sqlx binds `$N` parameters on SQLite
//! as on PostgreSQL, so a statement in SQL both understand is written once, here, and
//! each backend instantiates it for its own pool (`impl_catalog!(SqliteStore)`).
//! Macros rather than functions generic over `sqlx::Database`: those need an
//! Encode/Decode/Type/ColumnIndex bound for every type a statement touches, which would
//! outweigh the statements. What truly differs per backend (times, locking, the
//! reconciler's claim) stays in sqlite.rs and postgres.rs.

/// Products, prices and stock: the same SQL on both backends.
macro_rules! impl_catalog {
    ($store:ty) => {
        const _: () = {
            use sqlx::Row;
            use $crate::domain::Money;
            use $crate::store::{catalog_entry, CatalogEntry, CatalogStore, Product, StockChange, StoreError, CATALOG_COLUMNS as columns};

            #[async_trait::async_trait]
            impl CatalogStore for $store {
                async fn products(&self) -> Result<Vec<Product>, StoreError> {
                    let rows =
                        sqlx::query("SELECT id, name, price, available FROM products ORDER BY id").fetch_all(&self.pool).await?;
                    rows.iter()
                        .map(|r| {
                            Ok(Product {
                                product_id: r.try_get("id")?,
                                name: r.try_get("name")?,
                                price: r.try_get("price")?,
                                stock: r.try_get("available")?,
                            })
                        })
                        .collect()
            }

            async fn catalog(&self) -> Result<Vec<CatalogEntry>, StoreError> {
                let sql = format!("SELECT {columns} FROM products ORDER BY id");
                let rows = sqlx::query(sqlx::AssertSqlSafe(sql)).fetch_all(&self.pool).await?;
                rows.iter().map(catalog_entry).collect()
            }

            async fn create_product(&self, name: &str, price: Money, available: i64) -> Result<CatalogEntry, StoreError> {
                let sql = format!("INSERT INTO products (name, price, available) VALUES ($1, $2, $3) RETURNING {columns}");
                let row = sqlx::query(sqlx::AssertSqlSafe(sql))
                    .bind(name)
                    .bind(price.get())
                    .bind(available)
                    .fetch_one(&self.pool)
                    .await?;
                catalog_entry(&row)
            }

            async fn update_product(
                &self,
                product_id: i64,
                name: Option<&str>,
                price: Option<Money>,
            ) -> Result<Option<CatalogEntry>, StoreError> {
                let sql = format!(
                    "UPDATE products SET name = COALESCE($1, name), price = COALESCE($2, price) WHERE id = $3 RETURNING {columns}"
                );
                let row = sqlx::query(sqlx::AssertSqlSafe(sql))
                    .bind(name)
                    .bind(price.map(Money::get))
                    .bind(product_id)
                    .fetch_optional(&self.pool)
                    .await?;
                row.as_ref().map(catalog_entry).transpose()
            }

            async fn change_stock(&self, product_id: i64, change: StockChange) -> Result<Option<CatalogEntry>, StoreError> {
                let (sql, amount) = match change {
                    StockChange::OnHand(n) => (
                        format!(
                            "UPDATE products SET available = $1 - reserved WHERE id = $2 AND $1 >= reserved RETURNING {columns}"
                        ),
                        n,
                    ),
                    StockChange::Add(n) => (
                        format!(
                            "UPDATE products SET available = available + $1 WHERE id = $2 AND available + $1 >= 0 RETURNING {columns}"
                        ),
                        n,
                    ),
                };
                let changed =
                    sqlx::query(sqlx::AssertSqlSafe(sql)).bind(amount).bind(product_id).fetch_optional(&self.pool).await?;
                if let Some(row) = changed {
                    return catalog_entry(&row).map(Some);
                }
                let sql = format!("SELECT {columns} FROM products WHERE id = $1");
                match sqlx::query(sqlx::AssertSqlSafe(sql)).bind(product_id).fetch_optional(&self.pool).await? {
                    Some(row) => {
                        let now = catalog_entry(&row)?;
                        Err(StoreError::StockConflict { product: product_id, available: now.available, reserved: now.reserved })
                    }
                    None => Ok(None),
                }
            }
            }
        };
    };
}
pub(crate) use impl_catalog;

/// The test-only reads.
macro_rules! impl_inspect {
    ($store:ty) => {
        const _: () = {
            use sqlx::Row;
            use $crate::store::{Inspect, StockLevels, StoreError};

            #[async_trait::async_trait]
            impl Inspect for $store {
                async fn events(&self, attempt_id: i64) -> Result<Vec<(String, String)>, StoreError> {
                    let rows = sqlx::query("SELECT kind, detail FROM payment_events WHERE attempt_id = $1 ORDER BY id")
                        .bind(attempt_id)
                        .fetch_all(&self.pool)
                        .await?;
                    rows.iter().map(|r| Ok((r.try_get("kind")?, r.try_get("detail")?))).collect()
                }

                async fn stock_levels(&self) -> Result<Vec<StockLevels>, StoreError> {
                    let rows = sqlx::query("SELECT id, available, reserved, sold FROM products ORDER BY id")
                        .fetch_all(&self.pool)
                        .await?;
                    rows.iter()
                        .map(|r| {
                            Ok(StockLevels {
                                product_id: r.try_get("id")?,
                                available: r.try_get("available")?,
                                reserved: r.try_get("reserved")?,
                                sold: r.try_get("sold")?,
                            })
                        })
                        .collect()
                }

                async fn row_counts(&self) -> Result<Vec<(String, i64)>, StoreError> {
                    let mut counts = Vec::new();
                    for (table, sql) in super::COUNTED_TABLES {
                        counts.push((table.to_string(), sqlx::query_scalar(sql).fetch_one(&self.pool).await?));
                    }
                    Ok(counts)
                }
            }
        };
    };
}
pub(crate) use impl_inspect;

/// Readiness: one round trip.
macro_rules! impl_ping {
    ($store:ty) => {
        const _: () = {
            use $crate::store::{Store, StoreError};

            #[async_trait::async_trait]
            impl Store for $store {
                async fn ping(&self) -> Result<(), StoreError> {
                    sqlx::query("SELECT 1").execute(&self.pool).await?;
                    Ok(())
                }
            }
        };
    };
}
pub(crate) use impl_ping;

/// Idempotency keys: the same SQL on both backends; `write()` is each backend's writing
/// transaction.
macro_rules! impl_idempotency {
    ($store:ty) => {
        const _: () = {
            use sqlx::Row;
            use $crate::domain::BuyerId;
            use $crate::store::{idempotency_start, IdempotencyStart, IdempotencyStore, StoreError};

            #[async_trait::async_trait]
            impl IdempotencyStore for $store {
                async fn begin_idempotent(
                    &self,
                    buyer: &BuyerId,
                    key: &str,
                    request_hash: &str,
                    now_ms: i64,
                    expires_before_ms: i64,
                ) -> Result<IdempotencyStart, StoreError> {
                    let mut tx = self.write().await?;
                    sqlx::query("DELETE FROM idempotency_keys WHERE buyer_id = $1 AND key = $2 AND created_at < $3")
                        .bind(buyer.as_str())
                        .bind(key)
                        .bind(expires_before_ms)
                        .execute(&mut *tx)
                        .await?;
                    let inserted = sqlx::query(
                        "INSERT INTO idempotency_keys (buyer_id, key, request_hash, created_at) VALUES ($1, $2, $3, $4)
                         ON CONFLICT (buyer_id, key) DO NOTHING",
                    )
                    .bind(buyer.as_str())
                    .bind(key)
                    .bind(request_hash)
                    .bind(now_ms)
                    .execute(&mut *tx)
                    .await?;
                    let start = if inserted.rows_affected() == 1 {
                        IdempotencyStart::Started
                    } else {
                        let row = sqlx::query(
                            "SELECT request_hash, response_status, response_body, order_id,
                                    created_at
                             FROM idempotency_keys WHERE buyer_id = $1 AND key = $2",
                        )
                        .bind(buyer.as_str())
                        .bind(key)
                        .fetch_one(&mut *tx)
                        .await?;
                        idempotency_start(
                            request_hash,
                            row.try_get("request_hash")?,
                            row.try_get("response_status")?,
                            row.try_get("response_body")?,
                            row.try_get("order_id")?,
                            row.try_get("created_at")?,
                        )?
                    };
                    tx.commit().await?;
                    Ok(start)
                }

                async fn retake_idempotent(
                    &self,
                    buyer: &BuyerId,
                    key: &str,
                    since_ms: i64,
                    now_ms: i64,
                ) -> Result<bool, StoreError> {
                    let taken = sqlx::query(
                        "UPDATE idempotency_keys SET created_at = $1, order_id = NULL
                         WHERE buyer_id = $2 AND key = $3 AND created_at = $4
                           AND response_status IS NULL",
                    )
                    .bind(now_ms)
                    .bind(buyer.as_str())
                    .bind(key)
                    .bind(since_ms)
                    .execute(&self.pool)
                    .await?;
                    Ok(taken.rows_affected() == 1)
                }

                async fn finish_idempotent(&self, buyer: &BuyerId, key: &str, status: u16, body: &[u8]) -> Result<(), StoreError> {
                    sqlx::query(
                        "UPDATE idempotency_keys SET response_status = $1, response_body = $2 WHERE buyer_id = $3 AND key = $4",
                    )
                    .bind(status as i64)
                    .bind(body)
                    .bind(buyer.as_str())
                    .bind(key)
                    .execute(&self.pool)
                    .await?;
                    Ok(())
                }

                async fn release_idempotent(&self, buyer: &BuyerId, key: &str) -> Result<(), StoreError> {
                    sqlx::query("DELETE FROM idempotency_keys WHERE buyer_id = $1 AND key = $2 AND response_status IS NULL")
                        .bind(buyer.as_str())
                        .bind(key)
                        .execute(&self.pool)
                        .await?;
                    Ok(())
                }
            }
        };
    };
}
pub(crate) use impl_idempotency;
