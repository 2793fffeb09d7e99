//! Persistence: one trait per aggregate, the SQL written once for both databases
//! (shared.rs), only what differs per backend. Every status change is
//! a conditional update whose source statuses come from the state machine
//! (`domain::payment`) as a bound parameter, so a callback and the reconciler racing
//! over one attempt can never both win, and a transition changes in one place. No
//! transaction spans a PG call.

mod batch;
mod error;
mod postgres;
mod shared;
mod sqlite;

use async_trait::async_trait;

pub use self::error::StoreError;
pub(crate) use self::error::key_taken;
pub use self::postgres::{PgStore, PoolSettings};
pub use self::sqlite::SqliteStore;
use crate::domain::{
    AttemptId, BuyerId, CardType, GatewayName, Listing, Money, OrderId, PaymentStatus, Priced, PricedLine, ProductId,
    Settlement, Source, TransactionKey,
};

/// How long startup may take to open, create and migrate the database: longer than a
/// request may wait for a connection, since a new database waits on the disk or the
/// network, and the migrations on whatever else holds their lock.
const STARTUP_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Reconciliation checks written in one transaction at most: one commit for many, while
/// a transaction holds SQLite's writer, and PostgreSQL's locks on its rows, only briefly.
pub(crate) const CHECKS_PER_TRANSACTION: usize = 64;

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

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Product {
    pub product_id: i64,
    pub name: String,
    pub price: i64,
    pub stock: i64,
}

/// An order to create with its first payment attempt (checkout's transaction 1).
#[derive(Debug, Clone)]
pub struct NewOrder {
    pub buyer: BuyerId,
    /// Priced by the checkout from `CatalogStore::listings`; the order is created only
    /// if every price still holds when its stock is reserved.
    pub priced: Priced,
    pub gateway: String,
    pub card_type: CardType,
    pub card_last4: String,
    pub now_ms: i64,
    /// The buyer's `Idempotency-Key`, when the checkout came with one: the key is
    /// linked to the order in the order's own transaction.
    pub idempotency_key: Option<String>,
}

/// PENDING to write on an attempt the PG accepted, as queued for its round (store/batch.rs).
#[derive(Debug, Clone)]
pub(crate) struct MarkPending {
    pub attempt_id: AttemptId,
    pub key: Option<String>,
    pub now_ms: i64,
}

/// A final status to apply to an attempt, as queued for its round (store/batch.rs).
#[derive(Debug, Clone)]
pub(crate) struct Settle {
    pub attempt_id: AttemptId,
    pub settlement: Settlement,
    pub source: Source,
    pub now_ms: i64,
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
    pub created_at_ms: i64,
}

/// A reconciliation check that did not settle its attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    pub attempt_id: AttemptId,
    /// When the attempt is due again.
    pub next_check_at_ms: i64,
    /// What the check saw, for operators.
    pub note: String,
    /// Checked so often without an answer that operators must look.
    pub stuck: bool,
}

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
    pub created_at_ms: i64,
    pub checks: i64,
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
    pub buyer_id: String,
    pub total_amount: i64,
    pub created_at_ms: i64,
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

/// What an `Idempotency-Key` says about a checkout request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdempotencyStart {
    /// First use of the key (or its earlier use expired): process the request.
    Started,
    /// The first request with this key has not finished, or its process died: it
    /// started at `since_ms` and had created `order_id` when one is set.
    InFlight { order_id: Option<OrderId>, since_ms: i64 },
    /// The key was used with another request body.
    Mismatch,
    /// The first request finished: answer with its response, byte for byte.
    Saved { status: u16, body: Vec<u8> },
}

/// Stock of one product, for conservation checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StockLevels {
    pub product_id: i64,
    pub available: i64,
    pub reserved: i64,
    pub sold: i64,
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

/// The columns `catalog_entry` reads, in the order both backends select them.
pub(crate) const CATALOG_COLUMNS: &str = "id, name, price, available, reserved, sold";

/// One products row as a catalog entry; the same on every backend.
pub(crate) fn catalog_entry<'r, R>(row: &'r R) -> Result<CatalogEntry, StoreError>
where
    R: sqlx::Row,
    &'static str: sqlx::ColumnIndex<R>,
    i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    Ok(CatalogEntry {
        product_id: row.try_get("id")?,
        name: row.try_get("name")?,
        price: row.try_get("price")?,
        available: row.try_get("available")?,
        reserved: row.try_get("reserved")?,
        sold: row.try_get("sold")?,
    })
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

/// Payment attempts: every status change is conditional on the statuses it may start from.
#[async_trait]
pub trait PaymentStore: Send + Sync + 'static {
    /// REQUESTED -> PENDING, with the transaction key when the PG gave one.
    async fn mark_pending(
        &self,
        attempt_id: AttemptId,
        key: Option<&str>,
        now_ms: i64,
    ) -> Result<Transition, StoreError>;

    /// Records the key of a still unsettled attempt that has none yet.
    async fn adopt_key(&self, attempt_id: AttemptId, key: &str, now_ms: i64) -> Result<bool, StoreError>;

    /// REQUESTED or PENDING -> SUCCESS or FAILED; moves the reserved stock to sold or
    /// back to available in the same transaction.
    async fn settle(
        &self,
        attempt_id: AttemptId,
        settlement: &Settlement,
        source: Source,
        now_ms: i64,
    ) -> Result<Transition, StoreError>;

    /// Undoes transaction 1 of an attempt that surely never reached the PG: the order
    /// is removed and its stock released. Only a REQUESTED attempt can be rolled back.
    async fn roll_back(&self, attempt_id: AttemptId) -> Result<Transition, StoreError>;

    /// Hands a REQUESTED attempt of gateway `from` to gateway `to` (failover after the
    /// first surely did not receive it). False when the attempt is no longer REQUESTED at
    /// `from`: then it must not be sent anywhere else.
    async fn reassign_gateway(
        &self,
        attempt_id: AttemptId,
        from: &str,
        to: &str,
        now_ms: i64,
    ) -> Result<bool, StoreError>;

    async fn attempt_by_pg_order_id(&self, pg_order_id: &str) -> Result<Option<Attempt>, StoreError>;

    async fn record_event(
        &self,
        attempt_id: AttemptId,
        kind: EventKind,
        detail: &str,
        now_ms: i64,
    ) -> Result<(), StoreError>;
}

/// The reconciler's queue: unsettled attempts, their leases and checks.
#[async_trait]
pub trait ReconciliationStore: Send + Sync + 'static {
    /// Claims unsettled attempts of `gateway` created before `created_before_ms` whose
    /// next check is due and that no live lease holds: each gets a lease for `owner`
    /// until `lease_until_ms`. Concurrent claimers never get the same attempt.
    async fn claim_due_attempts(
        &self,
        gateway: &str,
        owner: &str,
        lease_until_ms: i64,
        created_before_ms: i64,
        now_ms: i64,
        limit: i64,
    ) -> Result<Vec<Attempt>, StoreError>;

    /// Extends every lease `owner` holds on an unsettled attempt (while a pass works).
    async fn renew_leases(&self, owner: &str, lease_until_ms: i64) -> Result<u64, StoreError>;

    /// Gives up every lease `owner` holds (on shutdown).
    async fn release_leases(&self, owner: &str) -> Result<u64, StoreError>;

    /// Books reconciliation checks that did not settle their attempts, and ends their
    /// leases: a pass's checks together, a few dozen to a transaction, so that a backlog
    /// the PG still calls pending costs a commit per few dozen payments rather than one
    /// per payment. Checks of attempts settled meanwhile change nothing.
    async fn record_checks(&self, checks: &[Check], now_ms: i64) -> Result<(), StoreError>;

    /// Unsettled attempts now, and the creation time of the oldest.
    async fn unsettled(&self) -> Result<(i64, Option<i64>), StoreError>;

    /// Unsettled attempts per gateway, by gateway name.
    async fn unsettled_by_gateway(&self) -> Result<Vec<(String, i64)>, StoreError>;
}

/// Idempotency keys and the answers they replay.
#[async_trait]
pub trait IdempotencyStore: Send + Sync + 'static {
    /// Claims `key` for a request; atomically, so of concurrent duplicates one starts.
    /// Keys older than `expires_before_ms` are forgotten.
    async fn begin_idempotent(
        &self,
        buyer: &BuyerId,
        key: &str,
        request_hash: &str,
        now_ms: i64,
        expires_before_ms: i64,
    ) -> Result<IdempotencyStart, StoreError>;

    /// Takes over `key` left in flight since `since_ms` by a request whose process died
    /// with no order standing (none created, or rolled back): false when another
    /// request took it first.
    async fn retake_idempotent(
        &self,
        buyer: &BuyerId,
        key: &str,
        since_ms: i64,
        now_ms: i64,
    ) -> Result<bool, StoreError>;

    /// Saves the response of a request that claimed `key`.
    async fn finish_idempotent(&self, buyer: &BuyerId, key: &str, status: u16, body: &[u8]) -> Result<(), StoreError>;

    /// Releases `key` without a saved response (the request may safely run again).
    async fn release_idempotent(&self, buyer: &BuyerId, key: &str) -> Result<(), StoreError>;
}

/// Everything the use cases need; each takes the narrowest part that serves it.
#[async_trait]
pub trait Store: CatalogStore + OrderStore + PaymentStore + ReconciliationStore + IdempotencyStore {
    async fn ping(&self) -> Result<(), StoreError>;
}

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

/// The stored fingerprint of keys from before fingerprints left the card number out
/// (migration 0005 / 0003): any body matches it.
pub(crate) const FINGERPRINT_UNKNOWN: &str = "unknown";

/// Decides what a stored key row means for a request with `fingerprint`.
pub(crate) fn idempotency_start(
    fingerprint: &str,
    stored: &str,
    status: Option<i64>,
    body: Option<Vec<u8>>,
    order_id: Option<i64>,
    since_ms: i64,
) -> Result<IdempotencyStart, StoreError> {
    Ok(match status {
        _ if stored != fingerprint && stored != FINGERPRINT_UNKNOWN => IdempotencyStart::Mismatch,
        None => IdempotencyStart::InFlight { order_id: order_id.map(OrderId), since_ms },
        Some(status) => IdempotencyStart::Saved {
            status: u16::try_from(status).map_err(|_| StoreError::Corrupt(format!("HTTP status {status}")))?,
            body: body.unwrap_or_default(),
        },
    })
}

/// Each product with the total quantity of it over the lines, in product order: one
/// reservation per product reports the stock it really had, and taking row locks in one
/// order keeps two orders from deadlocking.
/// Each product's quantity over all its lines, with the price it was ordered at:
/// (product, quantity, unit price), in product order so that concurrent orders take
/// their row locks in the same order.
pub(crate) fn reservations(lines: &[PricedLine]) -> Vec<(i64, i64, i64)> {
    let mut totals = std::collections::BTreeMap::new();
    for line in lines {
        let entry = totals.entry(line.product_id.0).or_insert((0, line.unit_price.get()));
        entry.0 += line.quantity.get() as i64;
    }
    totals.into_iter().map(|(id, (quantity, price))| (id, quantity, price)).collect()
}

/// The tables `row_counts` reports, with the query for each.
pub(crate) const COUNTED_TABLES: [(&str, &str); 5] = [
    ("orders", "SELECT COUNT(*) FROM orders"),
    ("order_items", "SELECT COUNT(*) FROM order_items"),
    ("payment_attempts", "SELECT COUNT(*) FROM payment_attempts"),
    ("payment_events", "SELECT COUNT(*) FROM payment_events"),
    ("idempotency_keys", "SELECT COUNT(*) FROM idempotency_keys"),
];

/// A set of statuses as the stores bind it, so no SQL statement names a status of its
/// own: the state machine (`domain::payment`) decides, the store applies. SQLite reads
/// the JSON array with `json_each`; PostgreSQL takes the list as `text[]`.
pub(crate) fn status_json(statuses: &[PaymentStatus]) -> String {
    serde_json::to_string(&status_names(statuses)).expect("a list of names serialises")
}

pub(crate) fn status_names(statuses: &[PaymentStatus]) -> Vec<&'static str> {
    statuses.iter().map(|s| s.as_str()).collect()
}

/// Parses a status column; a value outside the CHECK constraint means corruption.
pub(crate) fn status_of(raw: &str) -> Result<PaymentStatus, StoreError> {
    PaymentStatus::parse(raw).ok_or_else(|| StoreError::Corrupt(format!("payment status '{raw}'")))
}
