//! The store's code both backends run as written. sqlx binds `$N` parameters on SQLite
//! as on PostgreSQL, so a statement in SQL both understand is written once, here, and
//! each backend instantiates it for its own pool (`impl_catalog!(SqliteStore)`).
//! Macros rather than functions generic over `sqlx::Database`: those need an
//! Encode/Decode/Type/ColumnIndex bound for every type a statement touches, which would
//! outweigh the statements. What truly differs per backend (times, locking, the
//! reconciler's claim) stays in sqlite.rs and postgres.rs.
//!
//! Every statement that writes runs on the connection `self.writer()` hands out, in a
//! transaction from `begin_write` where it takes several: SQLite's is its one writing
//! connection, so writers queue for it instead of polling SQLite's lock; PostgreSQL's
//! is any of the pool's. The writes that are group-committed (orders, PENDING marks,
//! settlements) run instead on the connection of their round (store/batch.rs), each
//! group in a transaction from `begin_group`. Reads run on `self.pool`.

/// Products, prices and stock: the same SQL on both backends.
macro_rules! impl_catalog {
    ($store:ty) => {
        const _: () = {
            use sqlx::Row;
            use $crate::domain::{Listing, Money, ProductId};
            use $crate::store::{
                catalog_entry, CatalogEntry, CatalogStore, Product, StockChange, StoreError, CATALOG_COLUMNS as columns,
            };

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

                async fn listings(&self, products: &[ProductId]) -> Result<Vec<(ProductId, Listing)>, StoreError> {
                    let mut listed = Vec::with_capacity(products.len());
                    for &id in products {
                        let row = sqlx::query("SELECT name, price FROM products WHERE id = $1")
                            .bind(id.0)
                            .fetch_optional(&self.pool)
                            .await?
                            .ok_or(StoreError::ProductNotFound(id.0))?;
                        listed.push((id, Listing { name: row.try_get("name")?, price: Money::won(row.try_get("price")?) }));
                    }
                    Ok(listed)
                }

                async fn create_product(
                    &self,
                    name: &str,
                    price: Money,
                    available: i64,
                ) -> Result<CatalogEntry, StoreError> {
                    let sql = format!("INSERT INTO products (name, price, available) VALUES ($1, $2, $3) RETURNING {columns}");
                    let row = sqlx::query(sqlx::AssertSqlSafe(sql))
                        .bind(name)
                        .bind(price.get())
                        .bind(available)
                        .fetch_one(&mut *self.writer().await?)
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
                        .fetch_optional(&mut *self.writer().await?)
                        .await?;
                    row.as_ref().map(catalog_entry).transpose()
                }

                async fn change_stock(
                    &self,
                    product_id: i64,
                    change: StockChange,
                ) -> Result<Option<CatalogEntry>, StoreError> {
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
                        sqlx::query(sqlx::AssertSqlSafe(sql)).bind(amount).bind(product_id).fetch_optional(&mut *self.writer().await?).await?;
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
            use $crate::domain::AttemptId;
            use $crate::store::{Inspect, StockLevels, StoreError};

            #[async_trait::async_trait]
            impl Inspect for $store {
                async fn keys_held_elsewhere(
                    &self,
                    writes: &[(AttemptId, Option<String>)],
                ) -> Result<Vec<usize>, StoreError> {
                    keys_held_elsewhere(&mut *self.pool.acquire().await?, writes).await
                }

                async fn orders_the_catalog_refuses(
                    &self,
                    orders: &[$crate::store::NewOrder],
                ) -> Result<Vec<usize>, StoreError> {
                    orders_the_catalog_refuses(&mut *self.pool.acquire().await?, orders).await
                }

                async fn events(&self, attempt_id: AttemptId) -> Result<Vec<(String, String)>, StoreError> {
                    let rows = sqlx::query("SELECT kind, detail FROM payment_events WHERE attempt_id = $1 ORDER BY id")
                        .bind(attempt_id.0)
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
                    let mut conn = self.writer().await?;
                    let mut tx = begin_write(&mut conn).await?;
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
                    .execute(&mut *self.writer().await?)
                    .await?;
                    Ok(taken.rows_affected() == 1)
                }

                async fn finish_idempotent(
                    &self,
                    buyer: &BuyerId,
                    key: &str,
                    status: u16,
                    body: &[u8],
                ) -> Result<(), StoreError> {
                    sqlx::query(
                        "UPDATE idempotency_keys SET response_status = $1, response_body = $2 WHERE buyer_id = $3 AND key = $4",
                    )
                    .bind(status as i64)
                    .bind(body)
                    .bind(buyer.as_str())
                    .bind(key)
                    .execute(&mut *self.writer().await?)
                    .await?;
                    Ok(())
                }

                async fn release_idempotent(&self, buyer: &BuyerId, key: &str) -> Result<(), StoreError> {
                    sqlx::query("DELETE FROM idempotency_keys WHERE buyer_id = $1 AND key = $2 AND response_status IS NULL")
                        .bind(buyer.as_str())
                        .bind(key)
                        .execute(&mut *self.writer().await?)
                        .await?;
                    Ok(())
                }
            }
        };
    };
}
pub(crate) use impl_idempotency;

/// Row mapping and the steps several statements share, at the backend module's level
/// (`$store` the store, `$db` its sqlx database).
macro_rules! row_helpers {
    ($store:ty, $db:ty) => {
        fn attempt(row: &<$db as sqlx::Database>::Row) -> Result<$crate::store::Attempt, $crate::store::StoreError> {
            use sqlx::Row;
            Ok($crate::store::Attempt {
                id: $crate::domain::AttemptId(row.try_get("id")?),
                order_id: $crate::domain::OrderId(row.try_get("order_id")?),
                pg_order_id: row.try_get("pg_order_id")?,
                gateway: $crate::domain::GatewayName::new(row.try_get::<String, _>("gateway")?),
                amount: $crate::domain::Money::won(row.try_get("amount")?),
                status: $crate::store::status_of(row.try_get("status")?)?,
                transaction_key: row.try_get::<Option<String>, _>("transaction_key")?.map($crate::domain::TransactionKey::new),
                reason: row.try_get("reason")?,
                created_at_ms: row.try_get("created_at")?,
                checks: row.try_get("checks")?,
            })
        }

        /// The transaction a group of one kind of write takes inside its round (store/batch.rs):
        /// on SQLite a savepoint in the round's one transaction, on PostgreSQL a transaction
        /// of its own.
        async fn begin_group(
            conn: &mut <$db as sqlx::Database>::Connection,
        ) -> Result<sqlx::Transaction<'_, $db>, $crate::store::StoreError> {
            Ok(sqlx::Connection::begin(conn).await?)
        }

        /// Binds each of `values` into `query`, separated by commas: the inside of an IN list.
        fn push_binds<'t, T>(query: &mut sqlx::QueryBuilder<$db>, values: impl IntoIterator<Item = T>)
        where
            T: sqlx::Encode<'t, $db> + sqlx::Type<$db>,
        {
            let mut list = query.separated(", ");
            for value in values {
                list.push_bind(value);
            }
        }

        /// Locks the rows that `open` `ids` `close` selects (ids bound in a list), in id
        /// order, where the backend has row locks: a transaction that writes several rows
        /// takes them in the same order as every other, so no two wait for each other.
        /// SQLite's one writer needs none.
        async fn lock_in_order(
            tx: &mut sqlx::Transaction<'_, $db>,
            open: &'static str,
            ids: impl IntoIterator<Item = i64>,
            close: &'static str,
        ) -> Result<(), $crate::store::StoreError> {
            if !LOCKS_ROWS {
                return Ok(());
            }
            let mut lock = sqlx::QueryBuilder::<$db>::new(open);
            push_binds(&mut lock, ids);
            lock.push(close);
            lock.push(concat!(" ORDER BY id", row_lock!()));
            lock.build().execute(&mut **tx).await?;
            Ok(())
        }

        /// Moves the reserved stock of each of `orders` (order id, sold) to sold, or back to
        /// available when not sold; the products locked in id order first.
        async fn release_stock(
            tx: &mut sqlx::Transaction<'_, $db>,
            orders: &[(i64, bool)],
        ) -> Result<(), $crate::store::StoreError> {
            let products = "SELECT id FROM products WHERE id IN (SELECT product_id FROM order_items WHERE order_id IN (";
            lock_in_order(tx, products, orders.iter().map(|&(order, _)| order), "))").await?;
            let mut release = sqlx::QueryBuilder::<$db>::new(
                "UPDATE products SET reserved = reserved - i.released, sold = sold + i.sold_now,
                   available = available + i.released - i.sold_now
                 FROM (SELECT oi.product_id, CAST(SUM(oi.quantity) AS BIGINT) AS released,
                              CAST(SUM(oi.quantity * v.column2) AS BIGINT) AS sold_now
                       FROM order_items AS oi JOIN (",
            );
            release.push_values(orders, |mut row, &(order, sold)| {
                row.push("CAST(").push_bind_unseparated(order).push_unseparated(" AS BIGINT)");
                row.push("CAST(").push_bind_unseparated(i64::from(sold)).push_unseparated(" AS BIGINT)");
            });
            release.push(
                ") AS v ON oi.order_id = v.column1 GROUP BY oi.product_id) AS i
                 WHERE products.id = i.product_id",
            );
            release.build().execute(&mut **tx).await?;
            Ok(())
        }

        /// Where an attempt stands, after a conditional change found it elsewhere.
        async fn current(
            db: impl sqlx::Executor<'_, Database = $db>,
            attempt_id: $crate::domain::AttemptId,
        ) -> Result<$crate::store::Transition, $crate::store::StoreError> {
            let row = sqlx::query("SELECT status, transaction_key FROM payment_attempts WHERE id = $1")
                .bind(attempt_id.0)
                .fetch_optional(db)
                .await?;
            Ok(match row {
                None => $crate::store::Transition::NotFound,
                Some(row) => $crate::store::Transition::AlreadyMoved {
                    current: $crate::store::status_of(sqlx::Row::try_get(&row, "status")?)?,
                    transaction_key: sqlx::Row::try_get(&row, "transaction_key")?,
                },
            })
        }

        impl $store {
            async fn assemble(
                &self,
                row: &<$db as sqlx::Database>::Row,
            ) -> Result<$crate::store::OrderRecord, $crate::store::StoreError> {
                use sqlx::Row;
                use $crate::store::{status_of, AttemptView, OrderItem, OrderRecord, StoreError};
                let order_id: i64 = row.try_get("id")?;
                let items = sqlx::query(
                    "SELECT product_id, name, unit_price, quantity, amount FROM order_items WHERE order_id = $1 ORDER BY line",
                )
                .bind(order_id)
                .fetch_all(&self.pool)
                .await?
                .iter()
                .map(|r| {
                    Ok(OrderItem {
                        product_id: r.try_get("product_id")?,
                        name: r.try_get("name")?,
                        unit_price: r.try_get("unit_price")?,
                        quantity: r.try_get("quantity")?,
                        amount: r.try_get("amount")?,
                    })
                })
                .collect::<Result<Vec<_>, StoreError>>()?;
                let a = sqlx::query(
                    "SELECT status, reason, card_type, card_last4, transaction_key, stuck FROM payment_attempts
                     WHERE order_id = $1 ORDER BY id DESC LIMIT 1",
                )
                .bind(order_id)
                .fetch_one(&self.pool)
                .await?;
                Ok(OrderRecord {
                    order_id: $crate::domain::OrderId(order_id),
                    buyer_id: row.try_get("buyer_id")?,
                    total_amount: row.try_get("total_amount")?,
                    created_at_ms: row.try_get("created_at")?,
                    anomaly: row.try_get("anomaly")?,
                    items,
                    attempt: AttemptView {
                        status: status_of(a.try_get("status")?)?,
                        reason: a.try_get("reason")?,
                        card_type: a.try_get("card_type")?,
                        card_last4: a.try_get("card_last4")?,
                        transaction_key: a.try_get("transaction_key")?,
                        stuck: a.try_get("stuck")?,
                    },
                })
            }
        }
    };
}
pub(crate) use row_helpers;

/// Orders: created with their first attempt, stock reserved, in one transaction; read back.
/// Checkouts that arrive together are created together (store/batch.rs): one statement
/// reserves the stock of the whole group, one inserts its items and one its attempts.
macro_rules! impl_orders {
    ($store:ty, $db:ty) => {
        /// Writes a group of orders in one transaction; when some are refused, those the
        /// catalog refuses alone and the rest together again (or else each alone), so that
        /// each gets its own answer.
        async fn create_orders(
            conn: &mut <$db as sqlx::Database>::Connection,
            orders: Vec<$crate::store::NewOrder>,
        ) -> Vec<Result<$crate::store::CreatedOrder, $crate::store::StoreError>> {
            $crate::store::batch::write_group(
                conn,
                orders,
                true,
                |conn, group| Box::pin(create_together(conn, group)),
                |conn, group| Box::pin(orders_the_catalog_refuses(conn, group)),
            )
            .await
        }

        /// Which of `orders` the catalog as it stands refuses, by their place: a product
        /// missing or repriced, or short of what the orders before it in the group take.
        /// What a failed group of orders sets apart (store/batch.rs): once a product sells
        /// out, every group with an order for it fails, and rewriting each such group one
        /// order per transaction cost 46% of the checkouts per second on SQLite and 62% on
        /// PostgreSQL (docs/benchmarks.md, "Third round").
        async fn orders_the_catalog_refuses(
            conn: &mut <$db as sqlx::Database>::Connection,
            orders: &[$crate::store::NewOrder],
        ) -> Result<Vec<usize>, $crate::store::StoreError> {
            use sqlx::Row;
            let wanted: Vec<Vec<(i64, i64, i64)>> =
                orders.iter().map(|order| $crate::store::reservations(&order.priced.lines)).collect();
            let products: std::collections::BTreeSet<i64> = wanted.iter().flatten().map(|&(id, _, _)| id).collect();
            let mut query = sqlx::QueryBuilder::<$db>::new("SELECT id, available, price FROM products WHERE id IN (");
            push_binds(&mut query, products);
            query.push(")");
            // product -> (available, price)
            let mut left = std::collections::HashMap::new();
            for row in query.build().fetch_all(&mut *conn).await? {
                left.insert(row.try_get::<i64, _>("id")?, (row.try_get::<i64, _>("available")?, row.try_get::<i64, _>("price")?));
            }
            let mut refused = Vec::new();
            for (i, lines) in wanted.iter().enumerate() {
                let fits = lines.iter().all(|(id, quantity, price)| {
                    left.get(id).is_some_and(|(available, listed)| listed == price && available >= quantity)
                });
                if !fits {
                    refused.push(i);
                    continue;
                }
                for (id, quantity, _) in lines {
                    if let Some((available, _)) = left.get_mut(id) {
                        *available -= quantity;
                    }
                }
            }
            Ok(refused)
        }

        /// Creates every order of `orders`, or none.
        async fn create_together(
            conn: &mut <$db as sqlx::Database>::Connection,
            orders: &[$crate::store::NewOrder],
        ) -> Result<Vec<$crate::store::CreatedOrder>, $crate::store::StoreError> {
            use sqlx::Row;
            use $crate::domain::{pg_order_id, AttemptId, OrderId, PaymentStatus};
            use $crate::store::{reservations, CreatedOrder, OrderItem, StoreError};

            let mut tx = begin_group(conn).await?;
            // Stock first, each product once for the group: a reservation holds only at
            // the price the orders were priced at, so a concurrent reprice cannot slip in
            // between. Two orders priced at two prices of one product: one is stale.
            let mut wanted = std::collections::BTreeMap::<i64, (i64, i64)>::new();
            for order in orders {
                for (id, quantity, unit_price) in reservations(&order.priced.lines) {
                    let (total, price) = wanted.entry(id).or_insert((0, unit_price));
                    if *price != unit_price {
                        return Err(StoreError::PriceChanged(id));
                    }
                    *total += quantity;
                }
            }
            lock_in_order(&mut tx, "SELECT id FROM products WHERE id IN (", wanted.keys().copied(), ")").await?;
            let mut reserve = sqlx::QueryBuilder::<$db>::new(
                "UPDATE products SET available = available - v.column2, reserved = reserved + v.column2 FROM (",
            );
            reserve.push_values(&wanted, |mut row, (id, (quantity, price))| {
                row.push("CAST(").push_bind_unseparated(*id).push_unseparated(" AS BIGINT)");
                row.push("CAST(").push_bind_unseparated(*quantity).push_unseparated(" AS BIGINT)");
                row.push("CAST(").push_bind_unseparated(*price).push_unseparated(" AS BIGINT)");
            });
            reserve.push(
                ") AS v WHERE products.id = v.column1 AND products.available >= v.column2 AND products.price = v.column3
                 RETURNING products.id",
            );
            let reserved: Vec<i64> = reserve.build_query_scalar().fetch_all(&mut *tx).await?;
            if let Some((&id, &(_, unit_price))) = wanted.iter().find(|(id, _)| !reserved.contains(id)) {
                let now = sqlx::query("SELECT available, price FROM products WHERE id = $1")
                    .bind(id)
                    .fetch_optional(&mut *tx)
                    .await?
                    .ok_or(StoreError::ProductNotFound(id))?;
                let (available, price): (i64, i64) = (now.try_get("available")?, now.try_get("price")?);
                return Err(if price != unit_price {
                    StoreError::PriceChanged(id)
                } else {
                    StoreError::OutOfStock { product: id, available }
                });
            }
            // One statement for the group's orders. RETURNING lists its rows in no promised
            // order, so each order takes the id of a row equal to it: rows alike in every
            // column are interchangeable, and what tells them apart (items, attempt, key) is
            // written below under the id each was given.
            let mut insert = sqlx::QueryBuilder::<$db>::new("INSERT INTO orders (buyer_id, total_amount, created_at) ");
            insert.push_values(orders, |mut row, order| {
                row.push_bind(order.buyer.as_str()).push_bind(order.priced.total.get()).push_bind(order.now_ms);
            });
            insert.push(" RETURNING id, buyer_id, total_amount, created_at");
            let mut ids_of = std::collections::HashMap::<(String, i64, i64), Vec<i64>>::new();
            for row in insert.build().fetch_all(&mut *tx).await? {
                let columns = (row.try_get("buyer_id")?, row.try_get("total_amount")?, row.try_get("created_at")?);
                ids_of.entry(columns).or_default().push(row.try_get("id")?);
            }
            let order_ids = orders
                .iter()
                .map(|order| {
                    let columns = (order.buyer.as_str().to_string(), order.priced.total.get(), order.now_ms);
                    ids_of.get_mut(&columns).and_then(Vec::pop).ok_or_else(|| {
                        StoreError::Corrupt(format!("order of {} was inserted without its row", order.buyer.as_str()))
                    })
                })
                .collect::<Result<Vec<i64>, StoreError>>()?;
            let mut items = sqlx::QueryBuilder::<$db>::new(
                "INSERT INTO order_items (order_id, line, product_id, name, unit_price, quantity, amount) ",
            );
            let lines = orders
                .iter()
                .zip(&order_ids)
                .flat_map(|(order, &id)| order.priced.lines.iter().enumerate().map(move |(line, l)| (id, line, l)));
            items.push_values(lines, |mut row, (order_id, line, l)| {
                row.push_bind(order_id)
                    .push_bind(line as i64)
                    .push_bind(l.product_id.0)
                    .push_bind(l.name.as_str())
                    .push_bind(l.unit_price.get())
                    .push_bind(l.quantity.get() as i64)
                    .push_bind(l.amount.get());
            });
            items.build().execute(&mut *tx).await?;
            let pg_order_ids: Vec<String> = order_ids.iter().map(|&id| pg_order_id(id, 1)).collect();
            let mut attempts = sqlx::QueryBuilder::<$db>::new(
                "INSERT INTO payment_attempts
                   (order_id, pg_order_id, gateway, card_type, card_last4, amount, status, created_at, updated_at, next_check_at) ",
            );
            attempts.push_values(orders.iter().zip(&order_ids).zip(&pg_order_ids), |mut row, ((order, &id), pg)| {
                row.push_bind(id)
                    .push_bind(pg.as_str())
                    .push_bind(order.gateway.as_str())
                    .push_bind(order.card_type.as_str())
                    .push_bind(order.card_last4.as_str())
                    .push_bind(order.priced.total.get())
                    .push_bind(PaymentStatus::Requested.as_str())
                    .push_bind(order.now_ms)
                    .push_bind(order.now_ms)
                    .push_bind(order.now_ms);
            });
            attempts.push(" RETURNING id, order_id");
            let attempt_of: std::collections::HashMap<i64, i64> = attempts
                .build()
                .fetch_all(&mut *tx)
                .await?
                .iter()
                .map(|row| Ok((row.try_get("order_id")?, row.try_get("id")?)))
                .collect::<Result<_, StoreError>>()?;
            for (order, &order_id) in orders.iter().zip(&order_ids) {
                if let Some(key) = &order.idempotency_key {
                    // Conditional: a request that retook the key after this one stalled owns it.
                    let linked = sqlx::query(
                        "UPDATE idempotency_keys SET order_id = $1
                         WHERE buyer_id = $2 AND key = $3 AND order_id IS NULL AND response_status IS NULL",
                    )
                    .bind(order_id)
                    .bind(order.buyer.as_str())
                    .bind(key)
                    .execute(&mut *tx)
                    .await?;
                    if linked.rows_affected() == 0 {
                        return Err(StoreError::IdempotencyKeyTaken);
                    }
                }
            }
            tx.commit().await?;
            orders
                .iter()
                .zip(order_ids)
                .zip(pg_order_ids)
                .map(|((order, order_id), pg_order_id)| {
                    let attempt_id = *attempt_of
                        .get(&order_id)
                        .ok_or_else(|| StoreError::Corrupt(format!("order {order_id} was created without its attempt")))?;
                    Ok(CreatedOrder {
                        order_id: OrderId(order_id),
                        attempt_id: AttemptId(attempt_id),
                        pg_order_id,
                        amount: order.priced.total,
                        items: order
                            .priced
                            .lines
                            .iter()
                            .map(|l| OrderItem {
                                product_id: l.product_id.0,
                                name: l.name.clone(),
                                unit_price: l.unit_price.get(),
                                quantity: l.quantity.get() as i64,
                                amount: l.amount.get(),
                            })
                            .collect(),
                        created_at_ms: order.now_ms,
                    })
                })
                .collect()
        }

        const _: () = {
            use $crate::domain::{BuyerId, OrderId};
            use $crate::store::{CreatedOrder, NewOrder, OrderRecord, OrderStore, StoreError};

            #[async_trait::async_trait]
            impl OrderStore for $store {
                async fn create_order(&self, order: NewOrder) -> Result<CreatedOrder, StoreError> {
                    self.rounds.create_order(order).await
                }

                async fn order(&self, order_id: OrderId) -> Result<Option<OrderRecord>, StoreError> {
                    let row = sqlx::query(
                        "SELECT id, buyer_id, total_amount, created_at, anomaly
                         FROM orders WHERE id = $1",
                    )
                    .bind(order_id.0)
                    .fetch_optional(&self.pool)
                    .await?;
                    match row {
                        Some(row) => Ok(Some(self.assemble(&row).await?)),
                        None => Ok(None),
                    }
                }

                async fn buyer_order(
                    &self,
                    buyer: &BuyerId,
                    order_id: OrderId,
                ) -> Result<Option<OrderRecord>, StoreError> {
                    let row = sqlx::query(
                        "SELECT id, buyer_id, total_amount, created_at, anomaly
                         FROM orders WHERE id = $1 AND buyer_id = $2",
                    )
                    .bind(order_id.0)
                    .bind(buyer.as_str())
                    .fetch_optional(&self.pool)
                    .await?;
                    match row {
                        Some(row) => Ok(Some(self.assemble(&row).await?)),
                        None => Ok(None),
                    }
                }

                async fn orders_for_buyer(
                    &self,
                    buyer: &BuyerId,
                    offset: i64,
                    limit: i64,
                ) -> Result<Vec<OrderRecord>, StoreError> {
                    let rows = sqlx::query(
                        "SELECT id, buyer_id, total_amount, created_at, anomaly
                         FROM orders WHERE buyer_id = $1 ORDER BY id DESC LIMIT $2 OFFSET $3",
                    )
                    .bind(buyer.as_str())
                    .bind(limit)
                    .bind(offset)
                    .fetch_all(&self.pool)
                    .await?;
                    let mut orders = Vec::with_capacity(rows.len());
                    for row in &rows {
                        orders.push(self.assemble(row).await?);
                    }
                    Ok(orders)
                }
            }
        };
    };
}
pub(crate) use impl_orders;

/// Payment attempts: every status change conditional on the statuses the state machine
/// lets it start from. `one_of!("$n")` and `statuses(..)` are the backend's way to test
/// a status against a bound set, `row_lock!()` its row lock for a read before a write.
macro_rules! impl_payments {
    ($store:ty, $db:ty) => {
        /// Which of `writes` (attempt, the transaction key it would record) name a key
        /// that another attempt of the same gateway holds: the writes the UNIQUE
        /// constraint refuses, by their place in `writes`. The attempts' gateways first,
        /// then the keys per gateway, so that each lookup is a seek in the UNIQUE index
        /// (gateway, transaction_key): PostgreSQL planned one join of the two as a scan
        /// of every attempt of the gateway per key (2.9 s for 40 keys over 67,000 attempts).
        async fn keys_held_elsewhere(
            conn: &mut <$db as sqlx::Database>::Connection,
            writes: &[($crate::domain::AttemptId, Option<String>)],
        ) -> Result<Vec<usize>, $crate::store::StoreError> {
            use sqlx::Row;
            let keyed: Vec<(i64, &str)> = writes.iter().filter_map(|(id, key)| Some((id.0, key.as_deref()?))).collect();
            if keyed.is_empty() {
                return Ok(Vec::new());
            }
            let mut query = sqlx::QueryBuilder::<$db>::new("SELECT id, gateway FROM payment_attempts WHERE id IN (");
            push_binds(&mut query, keyed.iter().map(|&(id, _)| id));
            query.push(")");
            let mut gateway_of = std::collections::HashMap::new();
            for row in query.build().fetch_all(&mut *conn).await? {
                gateway_of.insert(row.try_get::<i64, _>("id")?, row.try_get::<String, _>("gateway")?);
            }
            let mut keys_by_gateway: std::collections::HashMap<&str, Vec<&str>> = std::collections::HashMap::new();
            for (id, key) in &keyed {
                if let Some(gateway) = gateway_of.get(id) {
                    keys_by_gateway.entry(gateway.as_str()).or_default().push(key);
                }
            }
            // (gateway, key) -> the attempt that holds it
            let mut holder = std::collections::HashMap::new();
            for (gateway, keys) in keys_by_gateway {
                let mut query = sqlx::QueryBuilder::<$db>::new("SELECT id, transaction_key FROM payment_attempts WHERE gateway = ");
                query.push_bind(gateway).push(" AND transaction_key IN (");
                push_binds(&mut query, keys);
                query.push(")");
                for row in query.build().fetch_all(&mut *conn).await? {
                    let key: String = row.try_get("transaction_key")?;
                    holder.insert((gateway.to_string(), key), row.try_get::<i64, _>("id")?);
                }
            }
            let held = |id: i64, key: &str| {
                gateway_of
                    .get(&id)
                    .and_then(|gateway| holder.get(&(gateway.clone(), key.to_string())))
                    .is_some_and(|&holder| holder != id)
            };
            Ok(writes
                .iter()
                .enumerate()
                .filter(|(_, (id, key))| key.as_deref().is_some_and(|key| held(id.0, key)))
                .map(|(i, _)| i)
                .collect())
        }

        /// Marks a group of attempts PENDING in one statement; when one of them is refused
        /// (its transaction key belongs to another attempt), that one alone and the rest
        /// together again. Two marks of one attempt are written one by one from the start.
        async fn mark_all_pending(
            conn: &mut <$db as sqlx::Database>::Connection,
            group: Vec<$crate::store::MarkPending>,
        ) -> Vec<Result<$crate::store::Transition, $crate::store::StoreError>> {
            let attempts: std::collections::HashSet<_> = group.iter().map(|m| m.attempt_id).collect();
            let may_share = attempts.len() == group.len();
            $crate::store::batch::write_group(
                conn,
                group,
                may_share,
                |conn, group| Box::pin(mark_pending_together(conn, group)),
                |conn, group| {
                    let keys: Vec<_> = group.iter().map(|m| (m.attempt_id, m.key.clone())).collect();
                    Box::pin(async move { keys_held_elsewhere(conn, &keys).await })
                },
            )
            .await
        }

        /// Marks every attempt of `group` that is still REQUESTED; the others are answered
        /// with where they stand.
        async fn mark_pending_together(
            conn: &mut <$db as sqlx::Database>::Connection,
            group: &[$crate::store::MarkPending],
        ) -> Result<Vec<$crate::store::Transition>, $crate::store::StoreError> {
            use $crate::domain::PaymentStatus;
            use $crate::store::{key_taken, Transition};

            let mut update = sqlx::QueryBuilder::<$db>::new("UPDATE payment_attempts SET status = ");
            update.push_bind(PaymentStatus::Pending.as_str());
            update.push(
                ", transaction_key = COALESCE(v.column2, transaction_key), version = version + 1, updated_at = v.column3
                 FROM (",
            );
            update.push_values(group, |mut row, m| {
                row.push("CAST(").push_bind_unseparated(m.attempt_id.0).push_unseparated(" AS BIGINT)");
                row.push("CAST(").push_bind_unseparated(m.key.as_deref()).push_unseparated(" AS TEXT)");
                row.push("CAST(").push_bind_unseparated(m.now_ms).push_unseparated(" AS BIGINT)");
            });
            update.push(concat!(") AS v WHERE payment_attempts.id = v.column1 AND payment_attempts.status ", one_of_open!()));
            update.push_bind(statuses(PaymentStatus::allowed_sources(PaymentStatus::Pending)));
            update.push(concat!(one_of_close!(), " RETURNING payment_attempts.id"));
            let mut tx = begin_group(conn).await?;
            let attempts = group.iter().map(|m| m.attempt_id.0);
            lock_in_order(&mut tx, "SELECT id FROM payment_attempts WHERE id IN (", attempts, ")").await?;
            let marked: Vec<i64> = update.build_query_scalar().fetch_all(&mut *tx).await.map_err(|e| match group {
                [alone] => key_taken(e, alone.key.as_deref()),
                _ => e.into(),
            })?;
            let mut answers = Vec::with_capacity(group.len());
            for m in group {
                answers.push(if marked.contains(&m.attempt_id.0) {
                    Transition::Applied
                } else {
                    current(&mut *tx, m.attempt_id).await?
                });
            }
            tx.commit().await?;
            Ok(answers)
        }

        /// Settles a group of attempts in one transaction; when one of them is refused
        /// (a transaction key that belongs to another attempt), that one alone and the
        /// rest together again. Two settlements of one attempt, or a state machine whose
        /// final statuses start from different sets, are settled one by one from the start.
        async fn settle_all(
            conn: &mut <$db as sqlx::Database>::Connection,
            group: Vec<$crate::store::Settle>,
        ) -> Vec<Result<$crate::store::Transition, $crate::store::StoreError>> {
            use $crate::domain::PaymentStatus;
            let sources = |s: &$crate::store::Settle| PaymentStatus::allowed_sources(s.settlement.status.into());
            let attempts: std::collections::HashSet<_> = group.iter().map(|s| s.attempt_id).collect();
            let may_share = attempts.len() == group.len() && group.iter().all(|s| sources(s) == sources(&group[0]));
            $crate::store::batch::write_group(
                conn,
                group,
                may_share,
                |conn, group| Box::pin(settle_together(conn, group)),
                |conn, group| {
                    let keys: Vec<_> = group.iter().map(|s| (s.attempt_id, s.settlement.transaction_key.clone())).collect();
                    Box::pin(async move { keys_held_elsewhere(conn, &keys).await })
                },
            )
            .await
        }

        /// Settles every attempt of `group` that may still be settled, releasing its
        /// order's stock (sold on SUCCESS, for sale again on FAILED), or none. The others
        /// are answered with where they stand.
        async fn settle_together(
            conn: &mut <$db as sqlx::Database>::Connection,
            group: &[$crate::store::Settle],
        ) -> Result<Vec<$crate::store::Transition>, $crate::store::StoreError> {
            use $crate::domain::{Final, PaymentStatus};
            use $crate::store::{key_taken, Transition};

            let mut tx = begin_group(conn).await?;
            let attempts = group.iter().map(|s| s.attempt_id.0);
            lock_in_order(&mut tx, "SELECT id FROM payment_attempts WHERE id IN (", attempts, ")").await?;
            let mut update = sqlx::QueryBuilder::<$db>::new(
                "UPDATE payment_attempts SET status = v.column2, transaction_key = COALESCE(v.column3, transaction_key),
                   reason = v.column4, version = version + 1, updated_at = v.column5, finalized_at = v.column5,
                   settled_by = v.column6, stuck = FALSE, lease_owner = NULL, lease_until = NULL
                 FROM (",
            );
            update.push_values(group, |mut row, s| {
                row.push("CAST(").push_bind_unseparated(s.attempt_id.0).push_unseparated(" AS BIGINT)");
                row.push("CAST(").push_bind_unseparated(s.settlement.status.as_str()).push_unseparated(" AS TEXT)");
                row.push("CAST(").push_bind_unseparated(s.settlement.transaction_key.as_deref()).push_unseparated(" AS TEXT)");
                row.push("CAST(").push_bind_unseparated(s.settlement.reason.as_deref()).push_unseparated(" AS TEXT)");
                row.push("CAST(").push_bind_unseparated(s.now_ms).push_unseparated(" AS BIGINT)");
                row.push("CAST(").push_bind_unseparated(s.source.as_str()).push_unseparated(" AS TEXT)");
            });
            update.push(concat!(") AS v WHERE payment_attempts.id = v.column1 AND payment_attempts.status ", one_of_open!()));
            update.push_bind(statuses(PaymentStatus::allowed_sources(group[0].settlement.status.into())));
            update.push(concat!(one_of_close!(), " RETURNING payment_attempts.id, payment_attempts.order_id"));
            let applied: Vec<(i64, i64)> = update.build_query_as().fetch_all(&mut *tx).await.map_err(|e| match group {
                [alone] => key_taken(e, alone.settlement.transaction_key.as_deref()),
                _ => e.into(),
            })?;
            if !applied.is_empty() {
                let sold = |attempt: i64| group.iter().any(|s| s.attempt_id.0 == attempt && s.settlement.status == Final::Success);
                let released: Vec<(i64, bool)> = applied.iter().map(|&(attempt, order)| (order, sold(attempt))).collect();
                release_stock(&mut tx, &released).await?;
            }
            let mut answers = Vec::with_capacity(group.len());
            for s in group {
                answers.push(if applied.iter().any(|&(attempt, _)| attempt == s.attempt_id.0) {
                    Transition::Applied
                } else {
                    current(&mut *tx, s.attempt_id).await?
                });
            }
            tx.commit().await?;
            Ok(answers)
        }

        const _: () = {
            use $crate::domain::{AttemptId, PaymentStatus, Settlement, Source};
            use $crate::store::{key_taken, Attempt, EventKind, PaymentStore, StoreError, Transition};

            #[async_trait::async_trait]
            impl PaymentStore for $store {
                async fn mark_pending(
                    &self,
                    attempt_id: AttemptId,
                    key: Option<&str>,
                    now_ms: i64,
                ) -> Result<Transition, StoreError> {
                    let mark = $crate::store::MarkPending { attempt_id, key: key.map(str::to_string), now_ms };
                    self.rounds.mark_pending(mark).await
                }

                async fn adopt_key(&self, attempt_id: AttemptId, key: &str, now_ms: i64) -> Result<bool, StoreError> {
                    let updated = sqlx::query(
                        concat!("UPDATE payment_attempts SET transaction_key = $1, status = $4, version = version + 1,
                           updated_at = $2
                         WHERE id = $3 AND transaction_key IS NULL AND status ", one_of!("$5")),
                    )
                    .bind(key)
                    .bind(now_ms)
                    .bind(attempt_id.0)
                    .bind(PaymentStatus::Pending.as_str())
                    .bind(statuses(PaymentStatus::UNSETTLED))
                    .execute(&mut *self.writer().await?)
                    .await
                    .map_err(|e| key_taken(e, Some(key)))?;
                    Ok(updated.rows_affected() == 1)
                }

                async fn settle(
                    &self,
                    attempt_id: AttemptId,
                    settlement: &Settlement,
                    source: Source,
                    now_ms: i64,
                ) -> Result<Transition, StoreError> {
                    let settle = $crate::store::Settle { attempt_id, settlement: settlement.clone(), source, now_ms };
                    self.rounds.settle(settle).await
                }

                async fn roll_back(&self, attempt_id: AttemptId) -> Result<Transition, StoreError> {
                    let mut conn = self.writer().await?;
                    let mut tx = begin_write(&mut conn).await?;
                    let order_id: Option<i64> =
                        sqlx::query_scalar(concat!("SELECT order_id FROM payment_attempts WHERE id = $1 AND status ", one_of!("$2"), row_lock!()))
                            .bind(attempt_id.0)
                            .bind(statuses(PaymentStatus::UNSENT))
                            .fetch_optional(&mut *tx)
                            .await?;
                    let Some(order_id) = order_id else {
                        let result = current(&mut *tx, attempt_id).await?;
                        tx.commit().await?;
                        return Ok(result);
                    };
                    release_stock(&mut tx, &[(order_id, false)]).await?;
                    sqlx::query("DELETE FROM orders WHERE id = $1").bind(order_id).execute(&mut *tx).await?;
                    tx.commit().await?;
                    Ok(Transition::Applied)
                }

                async fn reassign_gateway(
                    &self,
                    attempt_id: AttemptId,
                    from: &str,
                    to: &str,
                    now_ms: i64,
                ) -> Result<bool, StoreError> {
                    let updated = sqlx::query(
                        concat!("UPDATE payment_attempts SET gateway = $1, version = version + 1,
                           updated_at = $2
                         WHERE id = $3 AND gateway = $4 AND status ", one_of!("$5")),
                    )
                    .bind(to)
                    .bind(now_ms)
                    .bind(attempt_id.0)
                    .bind(from)
                    .bind(statuses(PaymentStatus::UNSENT))
                    .execute(&mut *self.writer().await?)
                    .await?;
                    Ok(updated.rows_affected() == 1)
                }

                async fn attempt_by_pg_order_id(&self, pg_order_id: &str) -> Result<Option<Attempt>, StoreError> {
                    let sql = "SELECT id, order_id, pg_order_id, gateway, amount, status, transaction_key, reason, created_at, checks
                               FROM payment_attempts WHERE pg_order_id = $1";
                    let row = sqlx::query(sql).bind(pg_order_id).fetch_optional(&self.pool).await?;
                    row.as_ref().map(attempt).transpose()
                }

                async fn record_event(
                    &self,
                    attempt_id: AttemptId,
                    kind: EventKind,
                    detail: &str,
                    now_ms: i64,
                ) -> Result<(), StoreError> {
                    let mut conn = self.writer().await?;
                    let mut tx = begin_write(&mut conn).await?;
                    sqlx::query("INSERT INTO payment_events (attempt_id, kind, detail, created_at) VALUES ($1, $2, $3, $4)")
                        .bind(attempt_id.0)
                        .bind(kind.as_str())
                        .bind(detail)
                        .bind(now_ms)
                        .execute(&mut *tx)
                        .await?;
                    if kind.is_anomaly() {
                        sqlx::query(
                            "UPDATE orders SET anomaly = $1 WHERE id = (SELECT order_id FROM payment_attempts WHERE id = $2)",
                        )
                        .bind(kind.as_str())
                        .bind(attempt_id.0)
                        .execute(&mut *tx)
                        .await?;
                    }
                    tx.commit().await?;
                    Ok(())
                }
            }
        };
    };
}
pub(crate) use impl_payments;

/// The reconciler's queue. Claims skip rows another instance holds locked where the
/// backend has row locks (`skip_locked!()`); SQLite's single writer needs none.
macro_rules! impl_reconciliation {
    ($store:ty) => {
        /// The reconciler's claim: the due attempts of a gateway, oldest check first, leased
        /// to `$1` until `$2`. `finalized_at IS NULL` is what lets it read them by
        /// `attempts_due` (migration 0006) instead of every attempt of the gateway.
        const CLAIM_DUE: &str = concat!(
            "UPDATE payment_attempts SET lease_owner = $1, lease_until = $2
             WHERE id IN (
               SELECT id FROM payment_attempts
               WHERE gateway = $6 AND finalized_at IS NULL AND status ",
            one_of!("$7"),
            " AND created_at <= $3
                 AND next_check_at <= $4 AND (lease_until IS NULL OR lease_until < $4)
               ORDER BY next_check_at LIMIT $5",
            skip_locked!(),
            ")
             RETURNING id, order_id, pg_order_id, gateway, amount, status, transaction_key, reason, created_at, checks",
        );

        const _: () = {
            use $crate::domain::PaymentStatus;
            use $crate::store::{Attempt, CHECKS_PER_TRANSACTION, Check, ReconciliationStore, StoreError};

            #[async_trait::async_trait]
            impl ReconciliationStore for $store {
                async fn claim_due_attempts(
                    &self,
                    gateway: &str,
                    owner: &str,
                    lease_until_ms: i64,
                    created_before_ms: i64,
                    now_ms: i64,
                    limit: i64,
                ) -> Result<Vec<Attempt>, StoreError> {
                    let mut conn = self.writer().await?;
                    let mut tx = begin_write(&mut conn).await?;
                    let rows = sqlx::query(CLAIM_DUE)
                    .bind(owner)
                    .bind(lease_until_ms)
                    .bind(created_before_ms)
                    .bind(now_ms)
                    .bind(limit)
                    .bind(gateway)
                    .bind(statuses(PaymentStatus::UNSETTLED))
                    .fetch_all(&mut *tx)
                    .await?;
                    tx.commit().await?;
                    rows.iter().map(attempt).collect()
                }

                async fn renew_leases(&self, owner: &str, lease_until_ms: i64) -> Result<u64, StoreError> {
                    let renewed = sqlx::query(concat!(
                        "UPDATE payment_attempts SET lease_until = $1
                         WHERE lease_owner = $2 AND finalized_at IS NULL AND status ",
                        one_of!("$3")
                    ))
                    .bind(lease_until_ms)
                    .bind(owner)
                    .bind(statuses(PaymentStatus::UNSETTLED))
                    .execute(&mut *self.writer().await?)
                    .await?;
                    Ok(renewed.rows_affected())
                }

                async fn release_leases(&self, owner: &str) -> Result<u64, StoreError> {
                    let done = sqlx::query(
                        "UPDATE payment_attempts SET lease_owner = NULL, lease_until = NULL
                         WHERE lease_owner = $1 AND finalized_at IS NULL",
                    )
                    .bind(owner)
                    .execute(&mut *self.writer().await?)
                    .await?;
                    Ok(done.rows_affected())
                }

                async fn record_checks(&self, checks: &[Check], now_ms: i64) -> Result<(), StoreError> {
                    // In the order of their ids, as every group locks attempts
                    // (`lock_in_order`): PostgreSQL locks each row it updates.
                    let mut checks: Vec<&Check> = checks.iter().collect();
                    checks.sort_by_key(|c| c.attempt_id);
                    for chunk in checks.chunks(CHECKS_PER_TRANSACTION) {
                        let mut conn = self.writer().await?;
                        let mut tx = begin_write(&mut conn).await?;
                        for check in chunk {
                            sqlx::query(concat!(
                                "UPDATE payment_attempts SET checks = checks + 1, next_check_at = $1,
                                   last_check = $2, stuck = $3, updated_at = $4, lease_owner = NULL, lease_until = NULL
                                 WHERE id = $5 AND status ",
                                one_of!("$6")
                            ))
                            .bind(check.next_check_at_ms)
                            .bind(&check.note)
                            .bind(check.stuck)
                            .bind(now_ms)
                            .bind(check.attempt_id.0)
                            .bind(statuses(PaymentStatus::UNSETTLED))
                            .execute(&mut *tx)
                            .await?;
                        }
                        tx.commit().await?;
                    }
                    Ok(())
                }

                async fn unsettled(&self) -> Result<(i64, Option<i64>), StoreError> {
                    let row = sqlx::query(concat!(
                        "SELECT COUNT(*) AS n, MIN(created_at) AS oldest
                         FROM payment_attempts WHERE finalized_at IS NULL AND status ",
                        one_of!("$1")
                    ))
                    .bind(statuses(PaymentStatus::UNSETTLED))
                    .fetch_one(&self.pool)
                    .await?;
                    Ok((row.try_get("n")?, row.try_get("oldest")?))
                }

                async fn unsettled_by_gateway(&self) -> Result<Vec<(String, i64)>, StoreError> {
                    let sql = concat!(
                        "SELECT gateway, COUNT(*) FROM payment_attempts WHERE finalized_at IS NULL AND status ",
                        one_of!("$1"),
                        "
                               GROUP BY gateway ORDER BY gateway"
                    );
                    Ok(sqlx::query_as(sql).bind(statuses(PaymentStatus::UNSETTLED)).fetch_all(&self.pool).await?)
                }
            }
        };
    };
}
pub(crate) use impl_reconciliation;
