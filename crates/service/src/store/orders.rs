//! Orders: created with their first attempt, stock reserved, in one transaction; read back.
//! Checkouts that arrive together are created together (store/batch.rs): one statement
//! reserves the stock of the whole group, one inserts its items and one its attempts.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use async_trait::async_trait;
use sqlx::QueryBuilder;

use super::StoreError;
use super::batch::write_group;
use super::sql::{Arg, Column, Dialect, PushArg, PushUnseparated, SqlStore, begin_group, lock_in_order, push_binds};
use crate::domain::{
    AttemptId, BuyerId, CardType, GatewayName, Money, OrderId, PaymentStatus, Priced, PricedLine, Timestamp,
    pg_order_id,
};

/// An order to create with its first payment attempt (checkout's transaction 1).
#[derive(Debug, Clone)]
pub struct NewOrder {
    pub buyer: BuyerId,
    /// Priced by the checkout from `CatalogStore::listings`; the order is created only
    /// if every price still holds when its stock is reserved.
    pub priced: Priced,
    pub gateway: GatewayName,
    pub card_type: CardType,
    pub card_last4: String,
    pub now: Timestamp,
    /// The buyer's `Idempotency-Key`, when the checkout came with one: the key is
    /// linked to the order in the order's own transaction.
    pub idempotency_key: Option<String>,
}

/// What transaction 1 created.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreatedOrder {
    pub order_id: OrderId,
    pub attempt_id: AttemptId,
    pub pg_order_id: String,
    pub amount: Money,
    /// The lines as priced and stored.
    pub items: Vec<OrderItem>,
    pub created_at: Timestamp,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderItem {
    pub product_id: i64,
    pub name: String,
    pub unit_price: i64,
    pub quantity: i64,
    pub amount: i64,
}

/// An order with its items and latest payment attempt, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderRecord {
    pub order_id: OrderId,
    pub buyer_id: BuyerId,
    pub total_amount: i64,
    pub created_at: Timestamp,
    pub anomaly: Option<String>,
    pub items: Vec<OrderItem>,
    pub attempt: AttemptView,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptView {
    pub status: PaymentStatus,
    pub reason: Option<String>,
    pub card_type: String,
    pub card_last4: String,
    pub transaction_key: Option<String>,
    pub stuck: bool,
}

/// Orders: created with their first attempt (stock reserved) and read back.
#[async_trait]
pub trait OrderStore: Send + Sync + 'static {
    /// Transaction 1: the order, its items, the stock reservation and the REQUESTED attempt.
    async fn create_order(&self, order: NewOrder) -> Result<CreatedOrder, StoreError>;

    async fn order(&self, order_id: OrderId) -> Result<Option<OrderRecord>, StoreError>;

    /// The order if it is `buyer`'s. Another buyer's order costs the same one indexed
    /// lookup as an unknown id, so timing does not tell that it exists.
    async fn buyer_order(&self, buyer: &BuyerId, order_id: OrderId) -> Result<Option<OrderRecord>, StoreError>;

    /// A buyer's orders, newest first; `limit + 1` are read to tell whether more follow.
    async fn orders_for_buyer(&self, buyer: &BuyerId, offset: i64, limit: i64) -> Result<Vec<OrderRecord>, StoreError>;
}

/// The order columns `assemble` reads.
const ORDER_COLUMNS: &str = "id, buyer_id, total_amount, created_at, anomaly";

#[async_trait]
impl<D: Dialect> OrderStore for SqlStore<D> {
    async fn create_order(&self, order: NewOrder) -> Result<CreatedOrder, StoreError> {
        self.rounds.create_order(order).await
    }

    async fn order(&self, order_id: OrderId) -> Result<Option<OrderRecord>, StoreError> {
        let mut conn = self.reader().await?;
        let sql = format!("SELECT {ORDER_COLUMNS} FROM orders WHERE id = $1");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql)).arg(order_id.0).fetch_optional(D::on(&mut *conn)).await?;
        match row {
            Some(row) => Ok(Some(assemble::<D>(&mut *conn, &row).await?)),
            None => Ok(None),
        }
    }

    async fn buyer_order(&self, buyer: &BuyerId, order_id: OrderId) -> Result<Option<OrderRecord>, StoreError> {
        let mut conn = self.reader().await?;
        let sql = format!("SELECT {ORDER_COLUMNS} FROM orders WHERE id = $1 AND buyer_id = $2");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .arg(order_id.0)
            .arg(buyer.as_str())
            .fetch_optional(D::on(&mut *conn))
            .await?;
        match row {
            Some(row) => Ok(Some(assemble::<D>(&mut *conn, &row).await?)),
            None => Ok(None),
        }
    }

    async fn orders_for_buyer(&self, buyer: &BuyerId, offset: i64, limit: i64) -> Result<Vec<OrderRecord>, StoreError> {
        let mut conn = self.reader().await?;
        let sql = format!("SELECT {ORDER_COLUMNS} FROM orders WHERE buyer_id = $1 ORDER BY id DESC LIMIT $2 OFFSET $3");
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .arg(buyer.as_str())
            .arg(limit)
            .arg(offset)
            .fetch_all(D::on(&mut *conn))
            .await?;
        let mut orders = Vec::with_capacity(rows.len());
        for row in &rows {
            orders.push(assemble::<D>(&mut *conn, row).await?);
        }
        Ok(orders)
    }
}

/// An orders row with its items and its latest attempt.
async fn assemble<D: Dialect>(conn: &mut D::Connection, row: &D::Row) -> Result<OrderRecord, StoreError> {
    let order_id: i64 = row.col("id")?;
    let items = sqlx::query(
        "SELECT product_id, name, unit_price, quantity, amount FROM order_items WHERE order_id = $1 ORDER BY line",
    )
    .arg(order_id)
    .fetch_all(D::on(conn))
    .await?
    .iter()
    .map(|r| {
        Ok(OrderItem {
            product_id: r.col("product_id")?,
            name: r.col("name")?,
            unit_price: r.col("unit_price")?,
            quantity: r.col("quantity")?,
            amount: r.col("amount")?,
        })
    })
    .collect::<Result<Vec<_>, StoreError>>()?;
    let a = sqlx::query(
        "SELECT status, reason, card_type, card_last4, transaction_key, stuck FROM payment_attempts
         WHERE order_id = $1 ORDER BY id DESC LIMIT 1",
    )
    .arg(order_id)
    .fetch_one(D::on(conn))
    .await?;
    Ok(OrderRecord {
        order_id: OrderId(order_id),
        buyer_id: BuyerId::parse(&row.col::<String>("buyer_id")?)
            .map_err(|_| StoreError::Corrupt(format!("buyer id of order {order_id}")))?,
        total_amount: row.col("total_amount")?,
        created_at: Timestamp::from_millis(row.col("created_at")?),
        anomaly: row.col("anomaly")?,
        items,
        attempt: AttemptView {
            status: super::status_of(&a.col::<String>("status")?)?,
            reason: a.col("reason")?,
            card_type: a.col("card_type")?,
            card_last4: a.col("card_last4")?,
            transaction_key: a.col("transaction_key")?,
            stuck: a.col("stuck")?,
        },
    })
}

/// Each product's quantity over all its lines, with the price it was ordered at:
/// (product, quantity, unit price), in product order, so that one reservation per product
/// reports the stock it really had and concurrent orders take their row locks in the
/// same order.
fn reservations(lines: &[PricedLine]) -> Vec<(i64, i64, i64)> {
    let mut totals = BTreeMap::new();
    for line in lines {
        let entry = totals.entry(line.product_id.0).or_insert((0, line.unit_price.get()));
        entry.0 += line.quantity.get() as i64;
    }
    totals.into_iter().map(|(id, (quantity, price))| (id, quantity, price)).collect()
}

/// Writes a group of orders in one transaction; when some are refused, those the catalog
/// refuses alone and the rest together again (or else each alone), so that each gets its
/// own answer.
pub(super) async fn create_orders<D: Dialect>(
    conn: &mut D::Connection,
    orders: Vec<NewOrder>,
) -> Vec<Result<CreatedOrder, StoreError>> {
    write_group(
        conn,
        orders,
        true,
        |conn, group| Box::pin(create_together::<D>(conn, group)),
        |conn, group| Box::pin(orders_the_catalog_refuses::<D>(conn, group)),
    )
    .await
}

/// Which of `orders` the catalog as it stands refuses, by their place: a product missing
/// or repriced, or short of what the orders before it in the group take. What a failed
/// group of orders sets apart (store/batch.rs): once a product sells out, every group with
/// an order for it fails, and rewriting each such group one order per transaction cost 46%
/// of the checkouts per second on SQLite and 62% on PostgreSQL (docs/benchmarks.md, "Third
/// round").
pub(super) async fn orders_the_catalog_refuses<D: Dialect>(
    conn: &mut D::Connection,
    orders: &[NewOrder],
) -> Result<Vec<usize>, StoreError> {
    let wanted: Vec<Vec<(i64, i64, i64)>> = orders.iter().map(|order| reservations(&order.priced.lines)).collect();
    let products: BTreeSet<i64> = wanted.iter().flatten().map(|&(id, _, _)| id).collect();
    let mut query = QueryBuilder::<D>::new("SELECT id, available, price FROM products WHERE id IN (");
    push_binds(&mut query, products);
    query.push(")");
    // product -> (available, price)
    let mut left = HashMap::new();
    for row in query.build().fetch_all(D::on(conn)).await? {
        left.insert(row.col::<i64>("id")?, (row.col::<i64>("available")?, row.col::<i64>("price")?));
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
async fn create_together<D: Dialect>(
    conn: &mut D::Connection,
    orders: &[NewOrder],
) -> Result<Vec<CreatedOrder>, StoreError> {
    let mut tx = begin_group::<D>(conn).await?;
    // Stock first, each product once for the group: a reservation holds only at the price
    // the orders were priced at, so a concurrent reprice cannot slip in between. Two
    // orders priced at two prices of one product: one is stale.
    let mut wanted = BTreeMap::<i64, (i64, i64)>::new();
    for order in orders {
        for (id, quantity, unit_price) in reservations(&order.priced.lines) {
            let (total, price) = wanted.entry(id).or_insert((0, unit_price));
            if *price != unit_price {
                return Err(StoreError::PriceChanged(id));
            }
            *total += quantity;
        }
    }
    lock_in_order::<D>(&mut *tx, "SELECT id FROM products WHERE id IN (", wanted.keys().copied(), ")").await?;
    let mut reserve = QueryBuilder::<D>::new(
        "UPDATE products SET available = available - v.column2, reserved = reserved + v.column2 FROM (",
    );
    reserve.push_values(&wanted, |mut row, (id, (quantity, price))| {
        row.push("CAST(").arg_unseparated(*id).push_unseparated(" AS BIGINT)");
        row.push("CAST(").arg_unseparated(*quantity).push_unseparated(" AS BIGINT)");
        row.push("CAST(").arg_unseparated(*price).push_unseparated(" AS BIGINT)");
    });
    reserve.push(
        ") AS v WHERE products.id = v.column1 AND products.available >= v.column2 AND products.price = v.column3
         RETURNING products.id",
    );
    let reserved: Vec<i64> =
        reserve.build().fetch_all(D::on(&mut *tx)).await?.iter().map(|row| row.col("id")).collect::<Result<_, _>>()?;
    if let Some((&id, &(_, unit_price))) = wanted.iter().find(|(id, _)| !reserved.contains(id)) {
        let now = sqlx::query("SELECT available, price FROM products WHERE id = $1")
            .arg(id)
            .fetch_optional(D::on(&mut *tx))
            .await?
            .ok_or(StoreError::ProductNotFound(id))?;
        let (available, price): (i64, i64) = (now.col("available")?, now.col("price")?);
        return Err(if price != unit_price {
            StoreError::PriceChanged(id)
        } else {
            StoreError::OutOfStock { product: id, available }
        });
    }
    // One statement for the group's orders. RETURNING lists its rows in no promised order,
    // so each order takes the id of a row equal to it: rows alike in every column are
    // interchangeable, and what tells them apart (items, attempt, key) is written below
    // under the id each was given.
    let mut insert = QueryBuilder::<D>::new("INSERT INTO orders (buyer_id, total_amount, created_at) ");
    insert.push_values(orders, |mut row, order| {
        row.arg(order.buyer.as_str()).arg(order.priced.total.get()).arg(order.now.as_millis());
    });
    insert.push(" RETURNING id, buyer_id, total_amount, created_at");
    let mut ids_of = HashMap::<(String, i64, i64), Vec<i64>>::new();
    for row in insert.build().fetch_all(D::on(&mut *tx)).await? {
        let columns = (row.col("buyer_id")?, row.col("total_amount")?, row.col("created_at")?);
        ids_of.entry(columns).or_default().push(row.col("id")?);
    }
    let order_ids = orders
        .iter()
        .map(|order| {
            let columns = (order.buyer.as_str().to_string(), order.priced.total.get(), order.now.as_millis());
            ids_of.get_mut(&columns).and_then(Vec::pop).ok_or_else(|| {
                StoreError::Corrupt(format!("order of {} was inserted without its row", order.buyer.as_str()))
            })
        })
        .collect::<Result<Vec<i64>, StoreError>>()?;
    let mut items = QueryBuilder::<D>::new(
        "INSERT INTO order_items (order_id, line, product_id, name, unit_price, quantity, amount) ",
    );
    let lines = orders
        .iter()
        .zip(&order_ids)
        .flat_map(|(order, &id)| order.priced.lines.iter().enumerate().map(move |(line, l)| (id, line, l)));
    items.push_values(lines, |mut row, (order_id, line, l)| {
        row.arg(order_id)
            .arg(line as i64)
            .arg(l.product_id.0)
            .arg(l.name.as_str())
            .arg(l.unit_price.get())
            .arg(l.quantity.get() as i64)
            .arg(l.amount.get());
    });
    items.build().execute(D::on(&mut *tx)).await?;
    let pg_order_ids: Vec<String> = order_ids.iter().map(|&id| pg_order_id(id, 1)).collect();
    let mut attempts = QueryBuilder::<D>::new(
        "INSERT INTO payment_attempts
           (order_id, pg_order_id, gateway, card_type, card_last4, amount, status, created_at, updated_at, next_check_at) ",
    );
    attempts.push_values(orders.iter().zip(&order_ids).zip(&pg_order_ids), |mut row, ((order, &id), pg)| {
        row.arg(id)
            .arg(pg.as_str())
            .arg(order.gateway.as_str())
            .arg(order.card_type.as_str())
            .arg(order.card_last4.as_str())
            .arg(order.priced.total.get())
            .arg(PaymentStatus::Requested.as_str())
            .arg(order.now.as_millis())
            .arg(order.now.as_millis())
            .arg(order.now.as_millis());
    });
    attempts.push(" RETURNING id, order_id");
    let attempt_of: HashMap<i64, i64> = attempts
        .build()
        .fetch_all(D::on(&mut *tx))
        .await?
        .iter()
        .map(|row| Ok((row.col("order_id")?, row.col("id")?)))
        .collect::<Result<_, StoreError>>()?;
    for (order, &order_id) in orders.iter().zip(&order_ids) {
        if let Some(key) = &order.idempotency_key {
            // Conditional: a request that retook the key after this one stalled owns it.
            let linked = sqlx::query(
                "UPDATE idempotency_keys SET order_id = $1
                 WHERE buyer_id = $2 AND key = $3 AND order_id IS NULL AND response_status IS NULL",
            )
            .arg(order_id)
            .arg(order.buyer.as_str())
            .arg(key.as_str())
            .execute(D::on(&mut *tx))
            .await?;
            if D::rows_affected(&linked) == 0 {
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
                created_at: order.now,
            })
        })
        .collect()
}
