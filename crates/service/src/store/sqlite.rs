//! The SQLite store: the embedded default. WAL journal; readers on a pool of their own,
//! every write on one writing connection, each writing transaction starting with
//! `BEGIN IMMEDIATE` so that another process's writer is waited for (busy timeout)
//! instead of failing when both try to upgrade a read lock.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use sqlx::query::Query;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{Connection, QueryBuilder, Sqlite, Transaction};

use super::batch::{Answers, Round, Writer, Writers};
use super::orders::create_orders;
use super::payments::{mark_all_pending, settle_all};
use super::sql::{Dialect, SqlStore};
use super::{Background, STARTUP_TIMEOUT, StoreError, at_startup};
use crate::domain::PaymentStatus;

/// The store on SQLite. Its reader pool lets WAL readers run beside the writer; its
/// writer is the one writing connection. SQLite takes one writer at a time anyway; with
/// several writing connections the losers poll its lock in sleeps of 1 to 100 ms (its
/// busy handler), which under load cost more than the writes (docs/benchmarks.md). A
/// pool of one rather than a connection of our own: the pool replaces it if it breaks.
pub type SqliteStore = SqlStore<Sqlite>;

impl Dialect for Sqlite {
    /// No row locks on SQLite: `BEGIN IMMEDIATE` already holds the one write lock.
    const LOCKS_ROWS: bool = false;
    const ROW_LOCK: &'static str = "";
    const SKIP_LOCKED: &'static str = "";
    /// The set is bound as a JSON array and read with `json_each`.
    const ONE_OF: (&'static str, &'static str) = ("IN (SELECT value FROM json_each(", "))");

    fn bind_statuses<'q>(
        query: Query<'q, Sqlite, Self::Arguments>,
        set: &[PaymentStatus],
    ) -> Query<'q, Sqlite, Self::Arguments> {
        query.bind(status_json(set))
    }

    fn rows_affected(result: &sqlx::sqlite::SqliteQueryResult) -> u64 {
        result.rows_affected()
    }

    fn push_one_of(query: &mut QueryBuilder<Sqlite>, set: &[PaymentStatus]) {
        let (open, close) = Self::ONE_OF;
        query.push(open).push_bind(status_json(set)).push(close);
    }

    /// `BEGIN IMMEDIATE`, so that the transaction holds SQLite's write lock from its
    /// first statement: another process's writer is then waited for (busy timeout)
    /// instead of failing when both try to upgrade a read lock.
    async fn begin_write(conn: &mut SqliteConnection) -> Result<Transaction<'_, Sqlite>, StoreError> {
        Ok(conn.begin_with("BEGIN IMMEDIATE").await?)
    }
}

/// A set of statuses as JSON, which `json_each` reads.
fn status_json(statuses: &[PaymentStatus]) -> String {
    let names: Vec<&str> = statuses.iter().map(|s| s.as_str()).collect();
    serde_json::to_string(&names).expect("a list of names serialises")
}

/// Prepared statements the writing connection keeps. A group's statements are prepared
/// once for each group size (one to 64 writes, several statements each); with sqlx's
/// default of 100 they evicted each other under load and were prepared again.
const WRITER_STATEMENTS: usize = 1024;

/// How often the write-ahead log is copied into the database file.
const CHECKPOINT_EVERY: Duration = Duration::from_secs(1);

/// Copies the write-ahead log into the database file once a second, and lets it start
/// over. SQLite's own automatic checkpoint runs in the commit that crosses 1,000 pages,
/// fsync included, while that commit holds the write lock: every other writer waited
/// 1-20 ms behind it several times a second under load (docs/benchmarks.md). So the bulk
/// is copied beside the writer (PASSIVE, on a reader: it never waits for readers or the
/// writer). But the log starts over only once every frame in it has been copied, and a
/// writer that never pauses always has appended more by the time a copy beside it ends:
/// under steady load the log grew for as long as the load lasted (700 MB in 13 s at
/// 3,000 checkouts/s). So what was appended meanwhile is then copied on the writing
/// connection itself, between two groups, and the writer's next transaction starts the
/// log over.
fn checkpoints(readers: SqlitePool, writer: SqlitePool, period: Duration) -> Background {
    Background(tokio::spawn(async move {
        let mut every = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Said once when checkpoints start failing and once when they recover: a full
        // disk must not also fill the log with a line a second.
        let mut failing = false;
        loop {
            every.tick().await;
            let checkpoint = async {
                sqlx::query("PRAGMA wal_checkpoint(PASSIVE)").execute(&readers).await?;
                sqlx::query("PRAGMA wal_checkpoint(PASSIVE)").execute(&writer).await
            };
            match checkpoint.await {
                Err(error) if !failing => {
                    tracing::warn!(%error, "WAL checkpoint failed: retried every second, the log grows meanwhile");
                    failing = true;
                }
                Ok(_) if failing => {
                    tracing::info!("WAL checkpoints work again");
                    failing = false;
                }
                _ => {}
            }
        }
    }))
}

/// Writes a round of the writer (store/batch.rs) in one transaction, so that the round
/// costs one sync to disk rather than one per kind of write (docs/benchmarks.md, "Sixth
/// round"). Each kind's group takes a savepoint of its own, so that a write refused (sold
/// out, a key another attempt holds) costs only its own group's statements. A write that
/// finds the database unavailable ends the round, and nothing of it is committed: SQLite
/// may already have rolled the transaction back (a full disk, an I/O error), and whatever
/// came after would then commit on its own.
async fn write_round(writer: SqlitePool, round: Round) -> Result<Answers, StoreError> {
    let mut conn = writer.acquire().await?;
    let mut tx = Sqlite::begin_write(&mut conn).await?;
    let mut answers = Answers {
        orders: create_orders::<Sqlite>(&mut tx, round.orders).await,
        pending: Vec::new(),
        settlements: Vec::new(),
    };
    if answers.unavailable().is_none() {
        answers.pending = mark_all_pending::<Sqlite>(&mut tx, round.pending).await;
    }
    if answers.unavailable().is_none() {
        answers.settlements = settle_all::<Sqlite>(&mut tx, round.settlements).await;
    }
    if let Some(error) = answers.unavailable() {
        return Err(error);
    }
    tx.commit().await?;
    Ok(answers)
}

/// The task that writes the rounds, on `writer`: one for every kind of write.
fn rounds(writer: &SqlitePool, timeout: Duration) -> Writers {
    let writer = writer.clone();
    Writers::shared(Writer::start(timeout, move |round| write_round(writer.clone(), round)))
}

impl SqlStore<Sqlite> {
    /// Opens (creating if missing) and migrates the database at `url`, e.g.
    /// `sqlite://payguard-dev.db` or `sqlite::memory:`. A statement waits at most
    /// `timeout` for a connection (the writing one included) and again for another
    /// process's write lock; past it the database counts as unavailable (a 503), not as
    /// slow.
    pub async fn connect(url: &str, timeout: Duration) -> Result<SqliteStore, StoreError> {
        SqliteStore::open(url, timeout, CHECKPOINT_EVERY).await
    }

    async fn open(url: &str, timeout: Duration, checkpoint_every: Duration) -> Result<SqliteStore, StoreError> {
        let options = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // A commit is on disk before it is answered: with NORMAL a WAL commit waits
            // for the next checkpoint's sync, and a power cut before it loses orders whose
            // payments the PG already has (a process crash loses nothing either way, the
            // OS keeps what was written). Group commit makes it one sync per round.
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            // A group's statements change more pages than SQLite keeps in memory for a
            // statement's undo (64 KiB) and spilled them to a temporary file: a file
            // created, written and deleted some 50 times a second under load.
            .pragma("temp_store", "memory")
            .busy_timeout(timeout);
        // No ping before each use: each is one more trip to the connection's thread.
        let pool_of =
            |max| SqlitePoolOptions::new().max_connections(max).acquire_timeout(timeout).test_before_acquire(false);
        if url.contains(":memory:") {
            let pool = pool_of(1).connect_with(options).await?;
            sqlx::migrate!("./migrations/sqlite").run(&pool).await?;
            let rounds = rounds(&pool, timeout);
            return Ok(SqlStore { writer: pool.clone(), pool, rounds, _background: None });
        }
        // Creating the file, switching it to WAL and migrating wait on the disk, which a
        // busy machine can make take longer than a request may wait for a connection (a
        // new WAL database took 0.3 s beside another process's fsyncs): startup does them
        // on a connection of its own, bounded by its own deadline. The pools then open
        // their connections on first use, each a cheap open of a ready database.
        at_startup(async {
            let mut setup = SqliteConnection::connect_with(&options.clone().busy_timeout(STARTUP_TIMEOUT)).await?;
            sqlx::migrate!("./migrations/sqlite").run(&mut setup).await?;
            Ok(setup.close().await?)
        })
        .await?;
        let writer = pool_of(1).connect_lazy_with(
            options.clone().pragma("wal_autocheckpoint", "0").statement_cache_capacity(WRITER_STATEMENTS),
        );
        let pool = pool_of(8).connect_lazy_with(options);
        let checkpoints = Some(Arc::new(checkpoints(pool.clone(), writer.clone(), checkpoint_every)));
        let rounds = rounds(&writer, timeout);
        Ok(SqlStore { pool, writer, rounds, _background: checkpoints })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::{Duration, Instant};

    use sqlx::Connection;

    use super::SqliteStore;
    use crate::domain::{
        BuyerId, CardType, CheckoutLine, Final, Listing, Money, PaymentStatus, ProductId, Quantity, Settlement, Source,
        Timestamp, price,
    };
    use crate::store::batch::{Answers, Round};
    use crate::store::{
        CatalogStore, CreatedOrder, MarkPending, NewOrder, OrderStore, PaymentStore, Settle, StoreError, Transition,
    };

    #[tokio::test]
    async fn creating_and_migrating_the_database_is_not_bound_by_the_requests_wait_for_a_connection() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("shop.db");
        // No request may wait at all; startup still creates the file and migrates it.
        SqliteStore::connect(&format!("sqlite://{}", file.display()), Duration::ZERO).await.expect("opens");
        let mut conn = sqlx::SqliteConnection::connect(&format!("sqlite://{}", file.display())).await.unwrap();
        let tables: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name IN ('orders', 'payment_attempts')",
        )
        .fetch_one(&mut conn)
        .await
        .unwrap();
        assert_eq!(tables, 2, "migrated");
    }

    #[tokio::test]
    async fn both_pools_sync_each_commit_to_disk_and_keep_temporary_storage_in_memory() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("shop.db").display());
        let store = SqliteStore::connect(&url, Duration::from_secs(10)).await.unwrap();
        for pool in [&store.writer, &store.pool] {
            let synchronous: i64 = sqlx::query_scalar("PRAGMA synchronous").fetch_one(pool).await.unwrap();
            assert_eq!(synchronous, 2, "FULL");
            let temp_store: i64 = sqlx::query_scalar("PRAGMA temp_store").fetch_one(pool).await.unwrap();
            assert_eq!(temp_store, 2, "MEMORY");
        }
    }

    /// An in-memory store and the listing of its product 3 (500 in stock).
    async fn store_selling_product_3() -> (SqliteStore, Listing) {
        let store = SqliteStore::connect("sqlite::memory:", Duration::from_secs(10)).await.unwrap();
        let (_, listing) = store.listings(&[ProductId(3)]).await.unwrap().remove(0);
        (store, listing)
    }

    /// `round` written as the writer writes a round.
    async fn written(store: &SqliteStore, round: Round) -> Answers {
        super::write_round(store.writer.clone(), round).await.expect("the round commits")
    }

    async fn create_orders(store: &SqliteStore, orders: Vec<NewOrder>) -> Vec<Result<CreatedOrder, StoreError>> {
        written(store, Round { orders, ..Round::default() }).await.orders
    }

    async fn mark_all_pending(store: &SqliteStore, pending: Vec<MarkPending>) -> Vec<Result<Transition, StoreError>> {
        written(store, Round { pending, ..Round::default() }).await.pending
    }

    async fn settle_all(store: &SqliteStore, settlements: Vec<Settle>) -> Vec<Result<Transition, StoreError>> {
        written(store, Round { settlements, ..Round::default() }).await.settlements
    }

    /// `group` written as one group, every order created.
    async fn created(store: &SqliteStore, group: Vec<NewOrder>) -> Vec<CreatedOrder> {
        create_orders(store, group).await.into_iter().map(Result::unwrap).collect()
    }

    fn order(buyer: &str, listing: &Listing, quantity: i64) -> NewOrder {
        let line = CheckoutLine { product_id: ProductId(3), quantity: Quantity::parse(quantity).unwrap() };
        NewOrder {
            buyer: BuyerId::parse(buyer).unwrap(),
            priced: price([(line, listing.clone())]).unwrap(),
            gateway: "pg".into(),
            card_type: CardType::Kb,
            card_last4: "1451".into(),
            now: Timestamp::from_millis(1),
            idempotency_key: None,
        }
    }

    fn settle(created: &CreatedOrder, status: Final, key: &str) -> Settle {
        Settle {
            attempt_id: created.attempt_id,
            settlement: Settlement { status, transaction_key: Some(key.into()), reason: None },
            source: Source::Callback,
            now: Timestamp::from_millis(3),
        }
    }

    async fn available(store: &SqliteStore) -> i64 {
        store.catalog().await.unwrap().into_iter().find(|p| p.product_id == 3).unwrap().available
    }

    async fn status(store: &SqliteStore, created: &CreatedOrder) -> PaymentStatus {
        store.attempt_by_pg_order_id(&created.pg_order_id).await.unwrap().unwrap().status
    }

    #[tokio::test]
    async fn a_group_of_orders_is_written_together_or_else_without_those_the_stock_refuses() {
        let (store, listing) = store_selling_product_3().await;
        assert_eq!(available(&store).await, 500);
        let group = vec![order("a", &listing, 100), order("b", &listing, 100), order("c", &listing, 100)];
        let created = create_orders(&store, group).await;
        let created: Vec<_> = created.into_iter().map(Result::unwrap).collect();
        for (c, buyer) in created.iter().zip(["a", "b", "c"]) {
            let record = store.order(c.order_id).await.unwrap().unwrap();
            assert_eq!((record.buyer_id.as_str(), record.items[0].quantity), (buyer, 100));
            let attempt = store.attempt_by_pg_order_id(&c.pg_order_id).await.unwrap().unwrap();
            assert_eq!((attempt.id, attempt.order_id), (c.attempt_id, c.order_id));
        }
        assert_eq!(available(&store).await, 200);
        // 350 wanted, 200 left: not together. The one the stock cannot take after the
        // orders before it is set apart, the other two are written together, and the one
        // set apart, tried alone after them, finds what they left.
        let group = vec![order("d", &listing, 100), order("e", &listing, 150), order("f", &listing, 100)];
        let results = create_orders(&store, group).await;
        assert!(
            matches!(results[..], [Ok(_), Err(StoreError::OutOfStock { product: 3, available: 0 }), Ok(_)]),
            "{results:?}"
        );
        assert_eq!(available(&store).await, 0);
        assert_eq!(
            crate::store::orders::orders_the_catalog_refuses::<sqlx::Sqlite>(
                &mut store.writer.acquire().await.unwrap(),
                &[order("g", &listing, 1)]
            )
            .await
            .unwrap(),
            [0],
            "sold out"
        );
    }

    #[tokio::test]
    async fn orders_alike_in_every_column_written_in_one_group_are_each_created_once() {
        let (store, listing) = store_selling_product_3().await;
        let twins = vec![order("a", &listing, 1), order("a", &listing, 1), order("a", &listing, 1)];
        let created = created(&store, twins).await;
        let orders: std::collections::HashSet<_> = created.iter().map(|c| c.order_id).collect();
        let attempts: std::collections::HashSet<_> = created.iter().map(|c| c.attempt_id).collect();
        assert_eq!((orders.len(), attempts.len()), (3, 3), "{created:?}");
        for c in &created {
            let attempt = store.attempt_by_pg_order_id(&c.pg_order_id).await.unwrap().unwrap();
            assert_eq!(attempt.order_id, c.order_id);
            assert_eq!(store.order(c.order_id).await.unwrap().unwrap().items.len(), 1);
        }
    }

    #[tokio::test]
    async fn a_mark_whose_key_another_attempt_holds_is_refused_and_the_rest_of_its_group_written() {
        let (store, listing) = store_selling_product_3().await;
        let created = created(&store, (0..4).map(|i| order(&format!("b{i}"), &listing, 1)).collect()).await;
        let attempt = |i: usize| created[i].attempt_id;
        store.mark_pending(attempt(0), Some("K0"), Timestamp::from_millis(2)).await.unwrap();
        let key = |k: &str| Some(k.to_string());
        let marks = [(1, "K0"), (2, "K2"), (3, "K3")]
            .map(|(i, k)| MarkPending { attempt_id: attempt(i), key: key(k), now: Timestamp::from_millis(3) })
            .to_vec();
        let marked = mark_all_pending(&store, marks).await;
        assert!(
            matches!(&marked[..], [Err(StoreError::KeyTaken(k)), Ok(Transition::Applied), Ok(Transition::Applied)] if k == "K0"),
            "{marked:?}"
        );
        assert_eq!(status(&store, &created[1]).await, PaymentStatus::Requested, "the refused mark wrote nothing");
        assert_eq!(
            (status(&store, &created[2]).await, status(&store, &created[3]).await),
            (PaymentStatus::Pending, PaymentStatus::Pending)
        );
    }

    #[tokio::test]
    async fn groups_of_pending_marks_and_settlements_are_written_together_each_releasing_its_own_stock() {
        let (store, listing) = store_selling_product_3().await;
        let group = vec![order("a", &listing, 100), order("b", &listing, 100), order("c", &listing, 100)];
        let created = created(&store, group).await;
        let marks = (0..3)
            .map(|i| MarkPending { attempt_id: created[i].attempt_id, key: None, now: Timestamp::from_millis(2) })
            .collect();
        let marked = mark_all_pending(&store, marks).await;
        assert!(marked.iter().all(|r| matches!(r, Ok(Transition::Applied))), "{marked:?}");
        let settle = |i: usize, status: Final| settle(&created[i], status, &format!("key-{i}"));
        let group = vec![settle(0, Final::Success), settle(1, Final::Failed), settle(2, Final::Success)];
        let results = settle_all(&store, group).await;
        assert!(results.iter().all(|r| matches!(r, Ok(Transition::Applied))), "{results:?}");
        assert_eq!(available(&store).await, 300, "the failed order's 100 are for sale again, the others' sold");
        let statuses: Vec<_> = futures_util::future::join_all(created.iter().map(|c| status(&store, c))).await;
        assert_eq!(statuses, [PaymentStatus::Success, PaymentStatus::Failed, PaymentStatus::Success]);
        // Settled again: each answered with where it stands, nothing moved twice.
        let again = settle_all(&store, vec![settle(0, Final::Failed), settle(1, Final::Success)]).await;
        assert!(
            matches!(
                again[..],
                [
                    Ok(Transition::AlreadyMoved { current: PaymentStatus::Success, .. }),
                    Ok(Transition::AlreadyMoved { current: PaymentStatus::Failed, .. })
                ]
            ),
            "{again:?}"
        );
        assert_eq!(available(&store).await, 300);
    }

    /// Counts the commits of the writing connection from now on; each is let through
    /// while `allow` says so, and turned into a rollback otherwise.
    async fn count_commits(store: &SqliteStore, allow: bool) -> Arc<AtomicUsize> {
        let commits = Arc::new(AtomicUsize::new(0));
        let counted = commits.clone();
        let mut writer = store.writer().await.unwrap();
        writer.lock_handle().await.unwrap().set_commit_hook(move || {
            counted.fetch_add(1, Ordering::SeqCst);
            allow
        });
        commits
    }

    #[tokio::test]
    async fn a_round_of_every_kind_of_write_is_one_commit_in_which_a_refused_write_undoes_only_its_own() {
        let (store, listing) = store_selling_product_3().await;
        let created =
            created(&store, vec![order("a", &listing, 100), order("b", &listing, 100), order("c", &listing, 100)])
                .await;
        let mark = |i: usize, key: &str| MarkPending {
            attempt_id: created[i].attempt_id,
            key: Some(key.into()),
            now: Timestamp::from_millis(2),
        };
        mark_all_pending(&store, vec![mark(0, "K-a"), mark(1, "K-b")]).await;
        assert_eq!(available(&store).await, 200);

        let commits = count_commits(&store, true).await;
        let answers = written(
            &store,
            Round {
                // 100 left after d: e's 300 do not fit.
                orders: vec![order("d", &listing, 100), order("e", &listing, 300), order("f", &listing, 50)],
                // a's key, for c.
                pending: vec![mark(2, "K-a")],
                settlements: vec![
                    settle(&created[0], Final::Success, "K-a"),
                    settle(&created[1], Final::Failed, "K-b"),
                ],
            },
        )
        .await;
        assert_eq!(commits.load(Ordering::SeqCst), 1, "one commit for the round");
        assert!(
            matches!(answers.orders[..], [Ok(_), Err(StoreError::OutOfStock { product: 3, .. }), Ok(_)]),
            "{:?}",
            answers.orders
        );
        assert!(matches!(&answers.pending[..], [Err(StoreError::KeyTaken(k))] if k == "K-a"), "{:?}", answers.pending);
        assert!(
            matches!(answers.settlements[..], [Ok(Transition::Applied), Ok(Transition::Applied)]),
            "{:?}",
            answers.settlements
        );
        // d's 100 and f's 50 reserved, b's 100 for sale again; e and c's mark wrote nothing.
        assert_eq!(available(&store).await, 150);
        assert_eq!(status(&store, &created[2]).await, PaymentStatus::Requested);
        for (answer, buyer) in answers.orders.iter().zip(["d", "e", "f"]) {
            if let Ok(order) = answer {
                assert_eq!(store.order(order.order_id).await.unwrap().unwrap().buyer_id.as_str(), buyer);
            }
        }
    }

    #[tokio::test]
    async fn a_round_whose_commit_fails_is_refused_whole_and_writes_nothing() {
        let (store, listing) = store_selling_product_3().await;
        let created = created(&store, vec![order("a", &listing, 100), order("b", &listing, 100)]).await;
        let commits = count_commits(&store, false).await;
        let round = Round {
            orders: vec![order("c", &listing, 100)],
            pending: vec![MarkPending {
                attempt_id: created[0].attempt_id,
                key: Some("K-a".into()),
                now: Timestamp::from_millis(2),
            }],
            settlements: vec![settle(&created[1], Final::Failed, "K-b")],
        };
        let refused = super::write_round(store.writer.clone(), round).await;
        assert!(refused.is_err(), "{refused:?}");
        assert_eq!(commits.load(Ordering::SeqCst), 1, "the one commit, refused");
        assert_eq!(available(&store).await, 300, "no stock reserved or released");
        assert_eq!(status(&store, &created[0]).await, PaymentStatus::Requested);
        assert_eq!(status(&store, &created[1]).await, PaymentStatus::Requested);
        let orders: i64 = sqlx::query_scalar("SELECT count(*) FROM orders").fetch_one(&store.pool).await.unwrap();
        assert_eq!(orders, 2, "c's order was not created");
    }

    #[tokio::test]
    async fn the_reconcilers_claim_reads_the_unsettled_attempts_by_their_index_not_every_attempt() {
        let store = SqliteStore::connect("sqlite::memory:", Duration::from_secs(10)).await.unwrap();
        let plan: Vec<String> = sqlx::query(sqlx::AssertSqlSafe(format!(
            "EXPLAIN QUERY PLAN {}",
            crate::store::reconciliation::claim_due::<sqlx::Sqlite>()
        )))
        .bind("owner")
        .bind(2_i64)
        .bind(1_i64)
        .bind(1_i64)
        .bind(10_i64)
        .bind("pg")
        .bind(super::status_json(PaymentStatus::UNSETTLED))
        .fetch_all(&store.pool)
        .await
        .unwrap()
        .iter()
        .map(|row| sqlx::Row::get(row, "detail"))
        .collect();
        assert!(
            plan.iter().any(|step| step.contains("USING INDEX attempts_due (gateway=? AND next_check_at<?)")),
            "{plan:#?}"
        );
        assert!(!plan.iter().any(|step| step.contains("TEMP B-TREE")), "read in order, not sorted: {plan:#?}");
    }

    #[tokio::test]
    async fn the_log_starts_over_while_writes_never_pause() {
        const COMMITS: u64 = 5000;
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("shop.db");
        let wal = dir.path().join("shop.db-wal");
        let store = SqliteStore::open(
            &format!("sqlite://{}", file.display()),
            Duration::from_secs(10),
            Duration::from_millis(20),
        )
        .await
        .unwrap();
        // One write after another with no pause, and reads beside them, for 5,000 commits
        // of about a page each: without the log ever starting over it would hold them all.
        let name = "x".repeat(3000);
        let reads = tokio::spawn({
            let store = store.clone();
            async move {
                loop {
                    store.listings(&[ProductId(1)]).await.unwrap();
                    tokio::task::yield_now().await;
                }
            }
        });
        let mut largest = 0;
        for _ in 0..COMMITS {
            store.create_product(&name, Money::won(1000), 1).await.unwrap();
            largest = largest.max(std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0));
        }
        reads.abort();
        // Every commit wrote at least one 4 KB page to the log. Never starting over, it held
        // 25 MB after 2,000 commits; starting over, 2.8-4.0 MB after 5,000 beside two
        // CPU-bound processes (10.7 MB after 2,000 once beside the whole test suite).
        let one_page_each = COMMITS * 4096;
        assert!(largest < one_page_each, "the log grew to {largest} bytes: it did not start over");
    }

    #[tokio::test]
    async fn the_writer_leaves_copying_the_log_into_the_database_file_to_the_checkpoints() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("shop.db");
        let url = format!("sqlite://{}", file.display());
        let size = || std::fs::metadata(&file).unwrap().len();
        let hour = Duration::from_secs(3600);
        let store = SqliteStore::open(&url, Duration::from_secs(10), hour).await.unwrap();
        let mut writer = store.writer().await.unwrap();
        let automatic: i64 = sqlx::query_scalar("PRAGMA wal_autocheckpoint").fetch_one(&mut *writer).await.unwrap();
        assert_eq!(automatic, 0, "the writer never checkpoints in a commit");
        drop(writer);
        let before = size();
        // About 1,500 pages over 1,500 commits, which stay in the log.
        let name = "x".repeat(3000);
        for _ in 0..1500 {
            store.create_product(&name, Money::won(1000), 1).await.unwrap();
        }
        assert_eq!(size(), before, "no commit copied the log into the database file");

        // A second store on the same file (the first keeps it open, so no connection's
        // close checkpoints it): its checkpoints copy what the first one wrote.
        let _second = SqliteStore::open(&url, Duration::from_secs(10), Duration::from_millis(10)).await.unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while size() < before + 1500 * 3000 {
            assert!(Instant::now() < deadline, "not checkpointed within 20 s: {} bytes", size());
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}
