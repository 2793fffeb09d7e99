//! Payment attempts: every status change conditional on the statuses the state machine
//! (`domain::payment`) lets it start from, bound as a parameter, so that a callback and
//! the reconciler racing over one attempt can never both win. PENDING marks and
//! settlements are group-committed (store/batch.rs).

use std::collections::{HashMap, HashSet};

use async_trait::async_trait;
use sqlx::QueryBuilder;

use futures_util::future::BoxFuture;

use super::batch::write_group;
use super::catalog::release_stock;
use super::sql::{
    Arg, Column, Dialect, PushArg, PushUnseparated, SqlStore, begin_group, lock_in_order, one_of, push_binds,
    push_str_binds,
};
use super::{StoreError, key_taken, status_of};
use crate::domain::{
    AttemptId, Final, GatewayName, Money, OrderId, PaymentStatus, Settlement, Source, Timestamp, TransactionKey,
};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    pub id: AttemptId,
    pub order_id: OrderId,
    pub pg_order_id: String,
    pub gateway: GatewayName,
    pub amount: Money,
    pub status: PaymentStatus,
    pub transaction_key: Option<TransactionKey>,
    pub reason: Option<String>,
    pub created_at: Timestamp,
    pub checks: i64,
}

/// The columns `attempt` reads.
pub(super) const ATTEMPT_COLUMNS: &str =
    "id, order_id, pg_order_id, gateway, amount, status, transaction_key, reason, created_at, checks";

/// A payment_attempts row as an attempt.
pub(super) fn attempt<D: Dialect>(row: &D::Row) -> Result<Attempt, StoreError> {
    Ok(Attempt {
        id: AttemptId(row.col("id")?),
        order_id: OrderId(row.col("order_id")?),
        pg_order_id: row.col("pg_order_id")?,
        gateway: GatewayName::new(row.col::<String>("gateway")?),
        amount: Money::won(row.col("amount")?),
        status: status_of(&row.col::<String>("status")?)?,
        transaction_key: row.col::<Option<String>>("transaction_key")?.map(TransactionKey::new),
        reason: row.col("reason")?,
        created_at: Timestamp::from_millis(row.col("created_at")?),
        checks: row.col("checks")?,
    })
}

/// PENDING to write on an attempt the PG accepted, as queued for its round (store/batch.rs).
#[derive(Debug, Clone)]
pub(crate) struct MarkPending {
    pub attempt_id: AttemptId,
    pub key: Option<String>,
    pub now: Timestamp,
}

/// A final status to apply to an attempt, as queued for its round (store/batch.rs).
#[derive(Debug, Clone)]
pub(crate) struct Settle {
    pub attempt_id: AttemptId,
    pub settlement: Settlement,
    pub source: Source,
    pub now: Timestamp,
}

/// The result of a conditional status change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transition {
    Applied,
    /// The attempt was no longer in a source status: someone else moved it first.
    AlreadyMoved {
        current: PaymentStatus,
        transaction_key: Option<String>,
    },
    NotFound,
}

/// Findings kept in `payment_events`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    DuplicateDelivery,
    StaleDelivery,
    ConflictingDelivery,
    /// A second SUCCESS for one attempt: the buyer was charged twice.
    DoubleCharge,
    /// A SUCCESS for an attempt we had failed: the money must go back.
    RefundNeeded,
    MismatchedCallback,
}

impl EventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::DuplicateDelivery => "duplicate_delivery",
            EventKind::StaleDelivery => "stale_delivery",
            EventKind::ConflictingDelivery => "conflicting_delivery",
            EventKind::DoubleCharge => "double_charge",
            EventKind::RefundNeeded => "refund_needed",
            EventKind::MismatchedCallback => "mismatched_callback",
        }
    }

    /// Findings that need an operator: they mark the order too.
    pub fn is_anomaly(self) -> bool {
        matches!(self, EventKind::DoubleCharge | EventKind::RefundNeeded)
    }
}

/// Payment attempts: every status change is conditional on the statuses it may start from.
#[async_trait]
pub trait PaymentStore: Send + Sync + 'static {
    /// REQUESTED -> PENDING, with the transaction key when the PG gave one.
    async fn mark_pending(&self, id: AttemptId, key: Option<&str>, now: Timestamp) -> Result<Transition, StoreError>;

    /// Records the key of a still unsettled attempt that has none yet.
    async fn adopt_key(&self, attempt_id: AttemptId, key: &str, now: Timestamp) -> Result<bool, StoreError>;

    /// REQUESTED or PENDING -> SUCCESS or FAILED: attempt `id` settled to `to`, as `by`
    /// found it; moves the reserved stock to sold or back to available in the same
    /// transaction.
    async fn settle(&self, id: AttemptId, to: &Settlement, by: Source, at: Timestamp)
    -> Result<Transition, StoreError>;

    /// Undoes transaction 1 of an attempt that surely never reached the PG: the order
    /// is removed and its stock released. Only a REQUESTED attempt can be rolled back.
    async fn roll_back(&self, attempt_id: AttemptId) -> Result<Transition, StoreError>;

    /// Hands a REQUESTED attempt of gateway `from` to gateway `to` (failover after the
    /// first surely did not receive it). False when the attempt is no longer REQUESTED at
    /// `from`: then it must not be sent anywhere else.
    async fn reassign_gateway(&self, id: AttemptId, from: &str, to: &str, now: Timestamp) -> Result<bool, StoreError>;

    async fn attempt_by_pg_order_id(&self, pg_order_id: &str) -> Result<Option<Attempt>, StoreError>;

    async fn record_event(&self, id: AttemptId, kind: EventKind, detail: &str, at: Timestamp)
    -> Result<(), StoreError>;
}

#[async_trait]
impl<D: Dialect> PaymentStore for SqlStore<D> {
    async fn mark_pending(&self, id: AttemptId, key: Option<&str>, now: Timestamp) -> Result<Transition, StoreError> {
        self.rounds.mark_pending(MarkPending { attempt_id: id, key: key.map(str::to_string), now }).await
    }

    async fn adopt_key(&self, attempt_id: AttemptId, key: &str, now: Timestamp) -> Result<bool, StoreError> {
        let sql = format!(
            "UPDATE payment_attempts SET transaction_key = $1, status = $4, version = version + 1, updated_at = $2
             WHERE id = $3 AND transaction_key IS NULL AND status {}",
            one_of::<D>("$5")
        );
        let query = sqlx::query(sqlx::AssertSqlSafe(sql))
            .arg(key)
            .arg(now.as_millis())
            .arg(attempt_id.0)
            .arg(PaymentStatus::Pending.as_str());
        let updated = D::bind_statuses(query, PaymentStatus::UNSETTLED)
            .execute(D::on(&mut *self.writer().await?))
            .await
            .map_err(|e| key_taken(e, Some(key)))?;
        Ok(D::rows_affected(&updated) == 1)
    }

    async fn settle(
        &self,
        id: AttemptId,
        to: &Settlement,
        by: Source,
        at: Timestamp,
    ) -> Result<Transition, StoreError> {
        self.rounds.settle(Settle { attempt_id: id, settlement: to.clone(), source: by, now: at }).await
    }

    async fn roll_back(&self, attempt_id: AttemptId) -> Result<Transition, StoreError> {
        let mut conn = self.writer().await?;
        let mut tx = D::begin_write(&mut *conn).await?;
        let sql = format!(
            "SELECT order_id FROM payment_attempts WHERE id = $1 AND status {}{}",
            one_of::<D>("$2"),
            D::ROW_LOCK
        );
        let query = sqlx::query(sqlx::AssertSqlSafe(sql)).arg(attempt_id.0);
        let row = D::bind_statuses(query, PaymentStatus::UNSENT).fetch_optional(D::on(&mut *tx)).await?;
        let Some(row) = row else {
            let result = current::<D>(&mut *tx, attempt_id).await?;
            tx.commit().await?;
            return Ok(result);
        };
        let order_id: i64 = row.col("order_id")?;
        release_stock::<D>(&mut *tx, &[(order_id, false)]).await?;
        sqlx::query("DELETE FROM orders WHERE id = $1").arg(order_id).execute(D::on(&mut *tx)).await?;
        tx.commit().await?;
        Ok(Transition::Applied)
    }

    async fn reassign_gateway(&self, id: AttemptId, from: &str, to: &str, now: Timestamp) -> Result<bool, StoreError> {
        let sql = format!(
            "UPDATE payment_attempts SET gateway = $1, version = version + 1, updated_at = $2
             WHERE id = $3 AND gateway = $4 AND status {}",
            one_of::<D>("$5")
        );
        let query = sqlx::query(sqlx::AssertSqlSafe(sql)).arg(to).arg(now.as_millis()).arg(id.0).arg(from);
        let updated = D::bind_statuses(query, PaymentStatus::UNSENT).execute(D::on(&mut *self.writer().await?)).await?;
        Ok(D::rows_affected(&updated) == 1)
    }

    async fn attempt_by_pg_order_id(&self, pg_order_id: &str) -> Result<Option<Attempt>, StoreError> {
        let sql = format!("SELECT {ATTEMPT_COLUMNS} FROM payment_attempts WHERE pg_order_id = $1");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .arg(pg_order_id)
            .fetch_optional(D::on(&mut *self.reader().await?))
            .await?;
        row.as_ref().map(attempt::<D>).transpose()
    }

    async fn record_event(
        &self,
        id: AttemptId,
        kind: EventKind,
        detail: &str,
        at: Timestamp,
    ) -> Result<(), StoreError> {
        let mut conn = self.writer().await?;
        let mut tx = D::begin_write(&mut *conn).await?;
        sqlx::query("INSERT INTO payment_events (attempt_id, kind, detail, created_at) VALUES ($1, $2, $3, $4)")
            .arg(id.0)
            .arg(kind.as_str())
            .arg(detail)
            .arg(at.as_millis())
            .execute(D::on(&mut *tx))
            .await?;
        if kind.is_anomaly() {
            sqlx::query(
                "UPDATE orders SET anomaly = $1 WHERE id = (SELECT order_id FROM payment_attempts WHERE id = $2)",
            )
            .arg(kind.as_str())
            .arg(id.0)
            .execute(D::on(&mut *tx))
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }
}

/// Where an attempt stands, after a conditional change found it elsewhere.
async fn current<D: Dialect>(conn: &mut D::Connection, attempt_id: AttemptId) -> Result<Transition, StoreError> {
    let row = sqlx::query("SELECT status, transaction_key FROM payment_attempts WHERE id = $1")
        .arg(attempt_id.0)
        .fetch_optional(D::on(conn))
        .await?;
    Ok(match row {
        None => Transition::NotFound,
        Some(row) => Transition::AlreadyMoved {
            current: status_of(&row.col::<String>("status")?)?,
            transaction_key: row.col("transaction_key")?,
        },
    })
}

/// Which of `writes` (attempt, the transaction key it would record) name a key that
/// another attempt of the same gateway holds: the writes the UNIQUE constraint refuses,
/// by their place in `writes`. The attempts' gateways first, then the keys per gateway,
/// so that each lookup is a seek in the UNIQUE index (gateway, transaction_key):
/// PostgreSQL planned one join of the two as a scan of every attempt of the gateway per
/// key (2.9 s for 40 keys over 67,000 attempts).
pub(super) async fn keys_held_elsewhere<D: Dialect>(
    conn: &mut D::Connection,
    writes: &[(AttemptId, Option<String>)],
) -> Result<Vec<usize>, StoreError> {
    let keyed: Vec<(i64, &str)> = writes.iter().filter_map(|(id, key)| Some((id.0, key.as_deref()?))).collect();
    if keyed.is_empty() {
        return Ok(Vec::new());
    }
    let mut query = QueryBuilder::<D>::new("SELECT id, gateway FROM payment_attempts WHERE id IN (");
    push_binds(&mut query, keyed.iter().map(|&(id, _)| id));
    query.push(")");
    let mut gateway_of = HashMap::new();
    for row in query.build().fetch_all(D::on(conn)).await? {
        gateway_of.insert(row.col::<i64>("id")?, row.col::<String>("gateway")?);
    }
    let mut keys_by_gateway: HashMap<&str, Vec<&str>> = HashMap::new();
    for (id, key) in &keyed {
        if let Some(gateway) = gateway_of.get(id) {
            keys_by_gateway.entry(gateway.as_str()).or_default().push(key);
        }
    }
    // (gateway, key) -> the attempt that holds it
    let mut holder = HashMap::new();
    for (gateway, keys) in keys_by_gateway {
        let mut query = QueryBuilder::<D>::new("SELECT id, transaction_key FROM payment_attempts WHERE gateway = ");
        query.arg(gateway).push(" AND transaction_key IN (");
        push_str_binds(&mut query, keys);
        query.push(")");
        for row in query.build().fetch_all(D::on(conn)).await? {
            let key: String = row.col("transaction_key")?;
            holder.insert((gateway.to_string(), key), row.col::<i64>("id")?);
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

/// A status write that may name a transaction key, which another attempt may hold.
trait KeyedWrite: Send + Sync {
    fn attempt(&self) -> AttemptId;
    fn key(&self) -> Option<&str>;
}

impl KeyedWrite for MarkPending {
    fn attempt(&self) -> AttemptId {
        self.attempt_id
    }

    fn key(&self) -> Option<&str> {
        self.key.as_deref()
    }
}

impl KeyedWrite for Settle {
    fn attempt(&self) -> AttemptId {
        self.attempt_id
    }

    fn key(&self) -> Option<&str> {
        self.settlement.transaction_key.as_deref()
    }
}

/// `write_group` for status writes: two writes to one attempt go one by one from the
/// start, and a group refused for a key another attempt holds sets that write apart.
async fn write_keyed<D: Dialect, W: KeyedWrite>(
    conn: &mut D::Connection,
    group: Vec<W>,
    may_share: bool,
    together: impl for<'a> Fn(&'a mut D::Connection, &'a [W]) -> BoxFuture<'a, Result<Vec<Transition>, StoreError>>,
) -> Vec<Result<Transition, StoreError>> {
    let attempts: HashSet<_> = group.iter().map(KeyedWrite::attempt).collect();
    let may_share = may_share && attempts.len() == group.len();
    write_group(conn, group, may_share, together, |conn, group| {
        let keys: Vec<_> = group.iter().map(|w| (w.attempt(), w.key().map(str::to_string))).collect();
        Box::pin(async move { keys_held_elsewhere::<D>(conn, &keys).await })
    })
    .await
}

/// Marks a group of attempts PENDING in one statement; when one of them is refused (its
/// transaction key belongs to another attempt), that one alone and the rest together
/// again. Two marks of one attempt are written one by one from the start.
pub(super) async fn mark_all_pending<D: Dialect>(
    conn: &mut D::Connection,
    group: Vec<MarkPending>,
) -> Vec<Result<Transition, StoreError>> {
    write_keyed::<D, _>(conn, group, true, |conn, group| Box::pin(mark_pending_together::<D>(conn, group))).await
}

/// Marks every attempt of `group` that is still REQUESTED; the others are answered with
/// where they stand.
async fn mark_pending_together<D: Dialect>(
    conn: &mut D::Connection,
    group: &[MarkPending],
) -> Result<Vec<Transition>, StoreError> {
    let mut update = QueryBuilder::<D>::new("UPDATE payment_attempts SET status = ");
    update.arg(PaymentStatus::Pending.as_str());
    update.push(
        ", transaction_key = COALESCE(v.column2, transaction_key), version = version + 1, updated_at = v.column3
         FROM (",
    );
    update.push_values(group, |mut row, m| {
        row.push("CAST(").arg_unseparated(m.attempt_id.0).push_unseparated(" AS BIGINT)");
        row.push("CAST(").arg_unseparated(m.key.as_deref()).push_unseparated(" AS TEXT)");
        row.push("CAST(").arg_unseparated(m.now.as_millis()).push_unseparated(" AS BIGINT)");
    });
    update.push(") AS v WHERE payment_attempts.id = v.column1 AND payment_attempts.status ");
    D::push_one_of(&mut update, PaymentStatus::allowed_sources(PaymentStatus::Pending));
    update.push(" RETURNING payment_attempts.id");
    let mut tx = begin_group::<D>(conn).await?;
    let attempts = group.iter().map(|m| m.attempt_id.0);
    lock_in_order::<D>(&mut *tx, "SELECT id FROM payment_attempts WHERE id IN (", attempts, ")").await?;
    let marked: Vec<i64> = update
        .build()
        .fetch_all(D::on(&mut *tx))
        .await
        .map_err(|e| match group {
            [alone] => key_taken(e, alone.key.as_deref()),
            _ => e.into(),
        })?
        .iter()
        .map(|row| row.col("id"))
        .collect::<Result<_, _>>()?;
    let mut answers = Vec::with_capacity(group.len());
    for m in group {
        answers.push(if marked.contains(&m.attempt_id.0) {
            Transition::Applied
        } else {
            current::<D>(&mut *tx, m.attempt_id).await?
        });
    }
    tx.commit().await?;
    Ok(answers)
}

/// Settles a group of attempts in one transaction; when one of them is refused (a
/// transaction key that belongs to another attempt), that one alone and the rest together
/// again. Two settlements of one attempt, or a state machine whose final statuses start
/// from different sets, are settled one by one from the start.
pub(super) async fn settle_all<D: Dialect>(
    conn: &mut D::Connection,
    group: Vec<Settle>,
) -> Vec<Result<Transition, StoreError>> {
    let sources = |s: &Settle| PaymentStatus::allowed_sources(s.settlement.status.into());
    let alike = group.iter().all(|s| sources(s) == sources(&group[0]));
    write_keyed::<D, _>(conn, group, alike, |conn, group| Box::pin(settle_together::<D>(conn, group))).await
}

/// Settles every attempt of `group` that may still be settled, releasing its order's
/// stock (sold on SUCCESS, for sale again on FAILED), or none. The others are answered
/// with where they stand.
async fn settle_together<D: Dialect>(
    conn: &mut D::Connection,
    group: &[Settle],
) -> Result<Vec<Transition>, StoreError> {
    let mut tx = begin_group::<D>(conn).await?;
    let attempts = group.iter().map(|s| s.attempt_id.0);
    lock_in_order::<D>(&mut *tx, "SELECT id FROM payment_attempts WHERE id IN (", attempts, ")").await?;
    let mut update = QueryBuilder::<D>::new(
        "UPDATE payment_attempts SET status = v.column2, transaction_key = COALESCE(v.column3, transaction_key),
           reason = v.column4, version = version + 1, updated_at = v.column5, finalized_at = v.column5,
           settled_by = v.column6, stuck = FALSE, lease_owner = NULL, lease_until = NULL
         FROM (",
    );
    update.push_values(group, |mut row, s| {
        row.push("CAST(").arg_unseparated(s.attempt_id.0).push_unseparated(" AS BIGINT)");
        row.push("CAST(").arg_unseparated(s.settlement.status.as_str()).push_unseparated(" AS TEXT)");
        row.push("CAST(").arg_unseparated(s.settlement.transaction_key.as_deref()).push_unseparated(" AS TEXT)");
        row.push("CAST(").arg_unseparated(s.settlement.reason.as_deref()).push_unseparated(" AS TEXT)");
        row.push("CAST(").arg_unseparated(s.now.as_millis()).push_unseparated(" AS BIGINT)");
        row.push("CAST(").arg_unseparated(s.source.as_str()).push_unseparated(" AS TEXT)");
    });
    update.push(") AS v WHERE payment_attempts.id = v.column1 AND payment_attempts.status ");
    D::push_one_of(&mut update, PaymentStatus::allowed_sources(group[0].settlement.status.into()));
    update.push(" RETURNING payment_attempts.id, payment_attempts.order_id");
    let applied: Vec<(i64, i64)> = update
        .build()
        .fetch_all(D::on(&mut *tx))
        .await
        .map_err(|e| match group {
            [alone] => key_taken(e, alone.settlement.transaction_key.as_deref()),
            _ => e.into(),
        })?
        .iter()
        .map(|row| Ok((row.col("id")?, row.col("order_id")?)))
        .collect::<Result<_, StoreError>>()?;
    if !applied.is_empty() {
        let sold =
            |attempt: i64| group.iter().any(|s| s.attempt_id.0 == attempt && s.settlement.status == Final::Success);
        let released: Vec<(i64, bool)> = applied.iter().map(|&(attempt, order)| (order, sold(attempt))).collect();
        release_stock::<D>(&mut *tx, &released).await?;
    }
    let mut answers = Vec::with_capacity(group.len());
    for s in group {
        answers.push(if applied.iter().any(|&(attempt, _)| attempt == s.attempt_id.0) {
            Transition::Applied
        } else {
            current::<D>(&mut *tx, s.attempt_id).await?
        });
    }
    tx.commit().await?;
    Ok(answers)
}
