//! One store test-suite, run unchanged against SQLite and PostgreSQL.
//!
//! PostgreSQL tests read the server from `PAYGUARD_TEST_DATABASE_URL` and use a fresh
//! schema per test (dropped afterwards). They are `#[ignore]`d, so a plain test run
//! reports them as not run; `--run-ignored all` (as `bash .ci/run`) runs them, and then a
//! missing server fails them.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use service::domain::CardType;
use service::domain::{
    AttemptId, BuyerId, CheckoutLine, Final, Listing, Money, PaymentStatus, ProductId, Quantity, Settlement, Source,
    Timestamp,
};
use service::store::{
    Check, Claim, CreatedOrder, EventKind, IdempotencyStart, Inspect, KeyClaim, NewOrder, PgStore, PoolSettings,
    SqliteStore, StockChange, StoreError, Transition,
};

/// A store and what to remove when the test ends.
struct Fresh {
    store: Arc<dyn Inspect>,
    cleanup: Cleanup,
}

enum Cleanup {
    File(std::path::PathBuf),
    Schema { url: String, schema: String },
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        match self {
            Cleanup::File(path) => {
                for suffix in ["", "-wal", "-shm"] {
                    let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
                }
            }
            Cleanup::Schema { url, schema } => {
                let (url, sql) = (url.clone(), format!("DROP SCHEMA IF EXISTS {schema} CASCADE"));
                // Drop runs inside the test's runtime: use a thread with its own.
                let _ = std::thread::spawn(move || {
                    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
                        if let Ok(pool) = sqlx::PgPool::connect(&url).await {
                            let _ = sqlx::query(sqlx::AssertSqlSafe(sql)).execute(&pool).await;
                        }
                    })
                })
                .join();
            }
        }
    }
}

fn unique() -> String {
    format!("{}_{:x}", std::process::id(), rand::random::<u64>())
}

async fn sqlite() -> Fresh {
    let path = std::env::temp_dir().join(format!("payguard-store-{}.db", unique()));
    let store = SqliteStore::connect(&format!("sqlite://{}", path.display()), Duration::from_secs(5))
        .await
        .expect("sqlite store");
    Fresh { store: Arc::new(store), cleanup: Cleanup::File(path) }
}

async fn postgres() -> Fresh {
    let url = std::env::var("PAYGUARD_TEST_DATABASE_URL").expect(
        "PAYGUARD_TEST_DATABASE_URL must name a PostgreSQL server, e.g. postgres://postgres@127.0.0.1:5432/test",
    );
    let schema = format!("payguard_test_{}", unique());
    let admin = sqlx::PgPool::connect(&url).await.expect("the test PostgreSQL server answers");
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}"))).execute(&admin).await.unwrap();
    admin.close().await;
    let options = sqlx::postgres::PgConnectOptions::from_str(&url).unwrap().options([("search_path", schema.as_str())]);
    let pool = PoolSettings { max_connections: 8, acquire_timeout: std::time::Duration::from_secs(10) };
    let store = PgStore::connect_with(options, pool).await.expect("postgres store");
    Fresh { store: Arc::new(store), cleanup: Cleanup::Schema { url, schema } }
}

/// Declares each behaviour once and runs it on both backends.
macro_rules! store_suite {
    ($($behaviour:ident),* $(,)?) => {
        mod sqlite_backend {
            $( #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
               async fn $behaviour() {
                   let fresh = super::sqlite().await;
                   super::$behaviour(fresh.store.clone()).await;
                   drop(fresh.cleanup);
               } )*
        }
        mod postgres_backend {
            $( #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
               #[ignore = "needs PostgreSQL in PAYGUARD_TEST_DATABASE_URL: cargo nextest run --run-ignored all (bash .ci/run does)"]
               async fn $behaviour() {
                   let fresh = super::postgres().await;
                   super::$behaviour(fresh.store.clone()).await;
                   drop(fresh.cleanup);
               } )*
        }
    };
}

store_suite!(
    checkout_reserves_stock_and_creates_a_requested_attempt,
    a_shortage_reserves_nothing,
    a_shortage_reports_the_stock_of_the_product_over_all_its_lines,
    a_key_in_flight_names_its_order_and_is_retaken_once,
    of_racing_settlements_exactly_one_wins,
    a_final_status_is_never_left,
    only_a_requested_attempt_is_rolled_back,
    claims_are_exclusive_expire_and_are_released,
    checks_recorded_together_each_book_their_own_and_leave_settled_attempts_alone,
    idempotency_keys_start_once_and_replay,
    a_transaction_key_belongs_to_one_attempt,
    events_flag_anomalies_and_the_backlog_is_counted,
    orders_are_listed_per_buyer_newest_first,
    only_a_requested_attempt_moves_to_another_gateway,
    the_catalog_grows_and_restocks_around_reservations,
    an_order_priced_before_a_price_change_creates_nothing,
    orders_placed_together_are_each_created_whole,
    orders_alike_but_for_their_lines_placed_together_each_keep_their_own_lines,
    of_orders_placed_together_only_those_short_of_stock_are_refused,
    attempts_settled_together_each_settle_once_and_release_their_own_stock,
    of_attempts_settled_together_one_whose_key_is_taken_is_refused_alone,
    attempts_marked_pending_together_each_get_their_own_answer,
    a_key_counts_as_held_elsewhere_only_when_another_attempt_of_its_gateway_holds_it,
    the_catalog_refuses_orders_for_missing_repriced_or_exhausted_products,
);

async fn an_order_priced_before_a_price_change_creates_nothing(store: Arc<dyn Inspect>) {
    let listed = store.listings(&[ProductId(2), ProductId(1)]).await.unwrap();
    assert_eq!(listed.iter().map(|(id, l)| (id.0, l.price.get())).collect::<Vec<_>>(), [(2, 25_000), (1, 39_000)]);
    assert!(matches!(store.listings(&[ProductId(1), ProductId(42)]).await, Err(StoreError::ProductNotFound(42))));
    // Priced at 39,000; repriced before the order is created: refused, nothing written.
    let stale = order("alice", &[(2, 1), (1, 2)]);
    store.update_product(1, None, Some(Money::won(41_000))).await.unwrap().unwrap();
    assert!(matches!(store.create_order(stale).await, Err(StoreError::PriceChanged(1))));
    assert_eq!(store.row_counts().await.unwrap().iter().map(|(_, n)| n).sum::<i64>(), 0);
    assert_eq!((levels(&store, 1).await, levels(&store, 2).await), ((1000, 0, 0), (1000, 0, 0)));
    // Priced again, it goes through at the new price.
    let created = store.create_order(order_at("alice", &[(2, 1, 25_000), (1, 2, 41_000)])).await.unwrap();
    assert_eq!(created.amount, Money::won(25_000 + 82_000));
}

const NOW: Timestamp = Timestamp::from_millis(1_800_000_000_000);

fn ms(millis: u64) -> Duration {
    Duration::from_millis(millis)
}

/// The seeded catalog's prices (migration 0001); other products at 10,000.
fn seeded_price(product: i64) -> i64 {
    match product {
        1 => 39_000,
        2 => 25_000,
        3 => 289_000,
        4 => 45_000,
        5 => 19_900,
        _ => 10_000,
    }
}

/// An order of (product, quantity) lines at the seeded prices.
fn order(buyer: &str, lines: &[(i64, i64)]) -> NewOrder {
    let priced: Vec<_> = lines.iter().map(|&(p, q)| (p, q, seeded_price(p))).collect();
    order_at(buyer, &priced)
}

/// An order of (product, quantity, price) lines.
fn order_at(buyer: &str, lines: &[(i64, i64, i64)]) -> NewOrder {
    let listed = lines.iter().map(|&(p, q, price)| {
        let line = CheckoutLine { product_id: ProductId(p), quantity: Quantity::parse(q).unwrap() };
        (line, Listing { name: format!("product {p}"), price: Money::won(price) })
    });
    NewOrder {
        buyer: BuyerId::parse(buyer).unwrap(),
        priced: service::domain::price(listed).unwrap(),
        gateway: "pg".into(),
        card_type: CardType::Kb,
        card_last4: "1451".into(),
        now: NOW,
        idempotency_key: None,
    }
}

fn success(key: &str) -> Settlement {
    Settlement {
        status: Final::Success,
        transaction_key: Some(key.into()),
        reason: Some("정상 승인되었습니다.".into()),
    }
}

fn failure(key: &str) -> Settlement {
    Settlement {
        status: Final::Failed, transaction_key: Some(key.into()), reason: Some("한도초과입니다.".into())
    }
}

async fn levels(store: &Arc<dyn Inspect>, product: i64) -> (i64, i64, i64) {
    let l = store.stock_levels().await.unwrap().into_iter().find(|l| l.product_id == product).unwrap();
    (l.available, l.reserved, l.sold)
}

async fn create(store: &Arc<dyn Inspect>, buyer: &str, lines: &[(i64, i64)]) -> CreatedOrder {
    store.create_order(order(buyer, lines)).await.unwrap()
}

async fn checkout_reserves_stock_and_creates_a_requested_attempt(store: Arc<dyn Inspect>) {
    let created = create(&store, "alice", &[(1, 2), (3, 1)]).await;
    assert_eq!(created.amount.get(), 39_000 * 2 + 289_000);
    assert_eq!(created.pg_order_id, format!("ORD{:06}-1", created.order_id));
    assert_eq!(levels(&store, 1).await, (998, 2, 0));
    assert_eq!(levels(&store, 3).await, (499, 1, 0));
    let attempt = store.attempt_by_pg_order_id(&created.pg_order_id).await.unwrap().unwrap();
    assert_eq!((attempt.status, attempt.amount, attempt.created_at), (PaymentStatus::Requested, created.amount, NOW));
    let record = store.order(created.order_id).await.unwrap().unwrap();
    assert_eq!(record.items.len(), 2);
    assert_eq!((record.items[0].product_id, record.items[0].quantity, record.items[0].amount), (1, 2, 78_000));
    assert_eq!(record.created_at, NOW);
    assert_eq!(record.attempt.card_last4, "1451");
}

/// Places all `orders` at once, as concurrent checkouts do: they are written in groups.
async fn place_together(store: &Arc<dyn Inspect>, orders: Vec<NewOrder>) -> Vec<Result<CreatedOrder, StoreError>> {
    at_once(orders.into_iter().map(|order| {
        let store = store.clone();
        async move { store.create_order(order).await }
    }))
    .await
}

/// Runs every one of `writes` at once, each its own task, as concurrent requests do, and
/// answers their results in order.
async fn at_once<T: Send + 'static>(
    writes: impl IntoIterator<Item = impl std::future::Future<Output = T> + Send + 'static>,
) -> Vec<T> {
    let running: Vec<_> = writes.into_iter().map(tokio::spawn).collect();
    let mut results = Vec::new();
    for write in running {
        results.push(write.await.unwrap());
    }
    results
}

async fn orders_placed_together_are_each_created_whole(store: Arc<dyn Inspect>) {
    let quantity = |i: i64| 1 + i % 3;
    let orders = (0..40).map(|i| order(&format!("buyer-{i}"), &[(1, quantity(i)), (2, 1)])).collect();
    let created: Vec<CreatedOrder> = place_together(&store, orders).await.into_iter().map(Result::unwrap).collect();
    let distinct = |ids: Vec<i64>| ids.iter().collect::<std::collections::HashSet<_>>().len();
    assert_eq!(distinct(created.iter().map(|c| c.order_id.0).collect()), 40);
    assert_eq!(distinct(created.iter().map(|c| c.attempt_id.0).collect()), 40);
    for (i, c) in (0..).zip(&created) {
        let attempt = store.attempt_by_pg_order_id(&c.pg_order_id).await.unwrap().unwrap();
        assert_eq!((attempt.id, attempt.order_id, attempt.amount), (c.attempt_id, c.order_id, c.amount), "order {i}");
        assert_eq!(c.amount.get(), 39_000 * quantity(i) + 25_000);
        let record = store.order(c.order_id).await.unwrap().unwrap();
        assert_eq!(record.buyer_id.as_str(), format!("buyer-{i}"));
        let lines: Vec<_> = record.items.iter().map(|it| (it.product_id, it.quantity)).collect();
        assert_eq!(lines, [(1, quantity(i)), (2, 1)], "order {i} has its own lines, in order");
        assert_eq!(record.items, c.items, "the order as created is the order as stored");
    }
    let reserved: i64 = (0..40).map(quantity).sum();
    assert_eq!(levels(&store, 1).await, (1000 - reserved, reserved, 0));
    assert_eq!(levels(&store, 2).await, (960, 40, 0));
}

/// One buyer's orders of one total placed in the same millisecond are alike in every
/// column of `orders`: each must still be created with its own lines and attempt.
async fn orders_alike_but_for_their_lines_placed_together_each_keep_their_own_lines(store: Arc<dyn Inspect>) {
    // 25 x 39,000 = 39 x 25,000 = 975,000.
    let lines = [vec![(1, 25)], vec![(2, 39)], vec![(1, 25)], vec![(2, 39)]];
    let orders = lines.iter().map(|l| order("twin", l)).collect();
    let created: Vec<CreatedOrder> = place_together(&store, orders).await.into_iter().map(Result::unwrap).collect();
    for (wanted, c) in lines.iter().zip(&created) {
        assert_eq!(c.amount.get(), 975_000);
        let record = store.order(c.order_id).await.unwrap().unwrap();
        let stored: Vec<_> = record.items.iter().map(|it| (it.product_id, it.quantity)).collect();
        assert_eq!(&stored, wanted, "order {} has the lines it was placed with", c.order_id);
        let attempt = store.attempt_by_pg_order_id(&c.pg_order_id).await.unwrap().unwrap();
        assert_eq!((attempt.id, attempt.order_id), (c.attempt_id, c.order_id));
    }
    let orders: std::collections::HashSet<_> = created.iter().map(|c| c.order_id).collect();
    assert_eq!(orders.len(), 4, "four orders, not one twice");
    assert_eq!((levels(&store, 1).await, levels(&store, 2).await), ((950, 50, 0), (922, 78, 0)));
}

async fn of_orders_placed_together_only_those_short_of_stock_are_refused(store: Arc<dyn Inspect>) {
    // Product 3 has 500: of thirty orders of 20 placed at once, 25 fit.
    let orders = (0..30).map(|i| order(&format!("buyer-{i}"), &[(1, 1), (3, 20)])).collect();
    let results = place_together(&store, orders).await;
    let created = results.iter().filter(|r| r.is_ok()).count();
    assert_eq!(created, 25, "{results:?}");
    for refused in results.iter().filter_map(|r| r.as_ref().err()) {
        assert!(matches!(refused, StoreError::OutOfStock { product: 3, .. }), "{refused}");
    }
    assert_eq!(levels(&store, 3).await, (0, 500, 0));
    assert_eq!(levels(&store, 1).await, (975, 25, 0), "a refused order reserved nothing of its other line");
    let rows = store.row_counts().await.unwrap();
    let count = |table: &str| rows.iter().find(|(t, _)| t == table).unwrap().1;
    assert_eq!((count("orders"), count("order_items"), count("payment_attempts")), (25, 50, 25));
}

/// Settles all at once, as concurrent callbacks and reconciler passes do: they are
/// written in groups.
async fn settle_together(
    store: &Arc<dyn Inspect>,
    settlements: Vec<(service::domain::AttemptId, Settlement, Source)>,
) -> Vec<Result<Transition, StoreError>> {
    at_once(settlements.into_iter().map(|(attempt, settlement, source)| {
        let store = store.clone();
        async move { store.settle(attempt, &settlement, source, NOW).await }
    }))
    .await
}

async fn attempts_settled_together_each_settle_once_and_release_their_own_stock(store: Arc<dyn Inspect>) {
    let quantity = |i: i64| 1 + i % 3;
    let orders = (0..20).map(|i| order(&format!("buyer-{i}"), &[(1, quantity(i))])).collect();
    let created: Vec<CreatedOrder> = place_together(&store, orders).await.into_iter().map(Result::unwrap).collect();
    // Every attempt twice at once, as a callback and the reconciler racing; the even
    // ones paid, the odd ones failed.
    let outcome = |i: i64| if i % 2 == 0 { success(&format!("key-{i}")) } else { failure(&format!("key-{i}")) };
    let settlements = (0..)
        .zip(&created)
        .flat_map(|(i, c)| {
            [(c.attempt_id, outcome(i), Source::Callback), (c.attempt_id, outcome(i), Source::Reconciler)]
        })
        .collect();
    let results = settle_together(&store, settlements).await;
    for (i, pair) in (0..).zip(results.chunks(2)) {
        let applied = pair.iter().filter(|r| matches!(r, Ok(Transition::Applied))).count();
        assert_eq!(applied, 1, "attempt {i} settled once: {pair:?}");
        let status = if i % 2 == 0 { PaymentStatus::Success } else { PaymentStatus::Failed };
        assert!(
            pair.iter().any(|r| matches!(r, Ok(Transition::AlreadyMoved { current, .. }) if *current == status)),
            "the other learns where it stands: {pair:?}"
        );
        let attempt = store.attempt_by_pg_order_id(&created[i as usize].pg_order_id).await.unwrap().unwrap();
        assert_eq!(attempt.status, status);
        assert_eq!(attempt.transaction_key.map(|k| k.as_str().to_string()), Some(format!("key-{i}")));
    }
    let sold: i64 = (0..20).filter(|i| i % 2 == 0).map(quantity).sum();
    assert_eq!(levels(&store, 1).await, (1000 - sold, 0, sold), "each order's stock moved once, its own way");
}

async fn of_attempts_settled_together_one_whose_key_is_taken_is_refused_alone(store: Arc<dyn Inspect>) {
    let orders = (0..3).map(|i| order(&format!("buyer-{i}"), &[(2, 1)])).collect();
    let created: Vec<CreatedOrder> = place_together(&store, orders).await.into_iter().map(Result::unwrap).collect();
    // Two attempts claim one transaction key: one keeps it, the other is refused; the
    // third is settled whatever happens to the other two.
    let settlements = vec![
        (created[0].attempt_id, success("KEY-1"), Source::Callback),
        (created[1].attempt_id, success("KEY-1"), Source::Callback),
        (created[2].attempt_id, success("KEY-2"), Source::Callback),
    ];
    let results = settle_together(&store, settlements).await;
    let applied = results[..2].iter().filter(|r| matches!(r, Ok(Transition::Applied))).count();
    assert_eq!(applied, 1, "{results:?}");
    assert!(results[..2].iter().any(|r| matches!(r, Err(StoreError::KeyTaken(k)) if k == "KEY-1")), "{results:?}");
    assert!(matches!(results[2], Ok(Transition::Applied)), "{results:?}");
    assert_eq!(levels(&store, 2).await, (997, 1, 2), "only the two settled orders moved their stock");
}

async fn a_key_counts_as_held_elsewhere_only_when_another_attempt_of_its_gateway_holds_it(store: Arc<dyn Inspect>) {
    let orders = (0..4).map(|i| order(&format!("buyer-{i}"), &[(2, 1)])).collect();
    let created: Vec<CreatedOrder> = place_together(&store, orders).await.into_iter().map(Result::unwrap).collect();
    let attempt = |i: usize| created[i].attempt_id;
    store.mark_pending(attempt(0), Some("KEY-0"), NOW).await.unwrap();
    store.reassign_gateway(attempt(3), "pg", "pg2", NOW).await.unwrap();
    let key = |k: &str| Some(k.to_string());
    let writes = [
        (attempt(1), key("KEY-0")), // held by attempt 0, same gateway
        (attempt(2), key("KEY-2")), // held by no one
        (attempt(0), key("KEY-0")), // its own
        (attempt(2), None),         // no key
        (attempt(3), key("KEY-0")), // held, but at another gateway
    ];
    assert_eq!(store.keys_held_elsewhere(&writes).await.unwrap(), [0]);
}

async fn the_catalog_refuses_orders_for_missing_repriced_or_exhausted_products(store: Arc<dyn Inspect>) {
    // Product 3 has 500 at its seeded price.
    let orders = [
        order("a", &[(3, 300)]),
        order("b", &[(3, 250)]),                       // short after a
        order_at("c", &[(3, 1, seeded_price(3) + 1)]), // repriced
        order("d", &[(42, 1)]),                        // no such product
        order("e", &[(1, 1), (3, 200)]),               // fits after a
        order("f", &[(3, 1)]),                         // short after a and e
    ];
    assert_eq!(store.orders_the_catalog_refuses(&orders).await.unwrap(), [1, 2, 3, 5]);
}

async fn attempts_marked_pending_together_each_get_their_own_answer(store: Arc<dyn Inspect>) {
    let orders = (0..12).map(|i| order(&format!("buyer-{i}"), &[(2, 1)])).collect();
    let created: Vec<CreatedOrder> = place_together(&store, orders).await.into_iter().map(Result::unwrap).collect();
    // Attempt 0 was settled by a fast callback before the checkout marks it PENDING.
    store.settle(created[0].attempt_id, &success("KEY-0"), Source::Callback, NOW).await.unwrap();
    // Attempts 10 and 11 were answered with one key: only one may keep it.
    let key = |i: usize| if i >= 10 { "KEY-10".to_string() } else { format!("KEY-{i}") };
    let results = at_once((0..12).map(|i| {
        let (store, attempt, key) = (store.clone(), created[i].attempt_id, key(i));
        async move { store.mark_pending(attempt, Some(&key), NOW).await }
    }))
    .await;
    assert!(
        matches!(&results[0], Ok(Transition::AlreadyMoved { current: PaymentStatus::Success, transaction_key: Some(k) }) if k == "KEY-0"),
        "{:?}",
        results[0]
    );
    for (i, result) in results.iter().enumerate().take(10).skip(1) {
        assert!(matches!(result, Ok(Transition::Applied)), "attempt {i}: {result:?}");
        let attempt = store.attempt_by_pg_order_id(&created[i].pg_order_id).await.unwrap().unwrap();
        assert_eq!(attempt.status, PaymentStatus::Pending);
        assert_eq!(attempt.transaction_key.map(|k| k.as_str().to_string()), Some(key(i)));
    }
    let applied = results[10..].iter().filter(|r| matches!(r, Ok(Transition::Applied))).count();
    assert_eq!(applied, 1, "{:?}", &results[10..]);
    assert!(results[10..].iter().any(|r| matches!(r, Err(StoreError::KeyTaken(k)) if k == "KEY-10")));
}

async fn a_shortage_reserves_nothing(store: Arc<dyn Inspect>) {
    let error = store.create_order(order("alice", &[(1, 5), (3, 501)])).await.unwrap_err();
    assert!(matches!(error, StoreError::OutOfStock { product: 3, available: 500 }), "{error}");
    assert_eq!(levels(&store, 1).await, (1000, 0, 0), "the first line's reservation was rolled back too");
    assert!(matches!(
        store.create_order(order("alice", &[(42, 1)])).await.unwrap_err(),
        StoreError::ProductNotFound(42)
    ));
    assert_eq!(store.row_counts().await.unwrap().iter().map(|(_, n)| n).sum::<i64>(), 0);
}

async fn a_shortage_reports_the_stock_of_the_product_over_all_its_lines(store: Arc<dyn Inspect>) {
    // 999 + 2 of a product with 1,000: it had 1,000, not the 1 left after the first line.
    let error = store.create_order(order("alice", &[(1, 999), (2, 1), (1, 2)])).await.unwrap_err();
    assert!(matches!(error, StoreError::OutOfStock { product: 1, available: 1000 }), "{error}");
    assert_eq!(levels(&store, 1).await, (1000, 0, 0));
    let created = store.create_order(order("alice", &[(1, 998), (1, 2)])).await.unwrap();
    assert_eq!(levels(&store, 1).await, (0, 1000, 0), "two lines of one product reserve their sum");
    assert_eq!(store.order(created.order_id).await.unwrap().unwrap().items.len(), 2, "the lines stay as ordered");
}

async fn of_racing_settlements_exactly_one_wins(store: Arc<dyn Inspect>) {
    for round in 0..5 {
        let created = create(&store, "alice", &[(2, 1)]).await;
        let key = format!("20250101:TR:{round:06x}");
        store.mark_pending(created.attempt_id, Some(&key), NOW).await.unwrap();
        let racers: Vec<_> = (0..8)
            .map(|i| {
                let (store, key) = (store.clone(), key.clone());
                let settlement = if i % 2 == 0 { success(&key) } else { failure(&key) };
                tokio::spawn(async move {
                    store.settle(created.attempt_id, &settlement, Source::Callback, NOW).await.unwrap()
                })
            })
            .collect();
        let mut applied = 0;
        for racer in racers {
            if racer.await.unwrap() == Transition::Applied {
                applied += 1;
            }
        }
        assert_eq!(applied, 1, "round {round}");
    }
    let (available, reserved, sold) = levels(&store, 2).await;
    assert_eq!(reserved, 0);
    assert_eq!(available + sold, 1000, "each order's stock moved exactly once");
}

async fn a_final_status_is_never_left(store: Arc<dyn Inspect>) {
    let created = create(&store, "alice", &[(1, 1)]).await;
    assert_eq!(
        store.settle(created.attempt_id, &success("k-final"), Source::Callback, NOW).await.unwrap(),
        Transition::Applied
    );
    let moved = Transition::AlreadyMoved { current: PaymentStatus::Success, transaction_key: Some("k-final".into()) };
    assert_eq!(store.settle(created.attempt_id, &failure("k-final"), Source::Reconciler, NOW).await.unwrap(), moved);
    assert_eq!(store.mark_pending(created.attempt_id, None, NOW).await.unwrap(), moved);
    assert_eq!(store.roll_back(created.attempt_id).await.unwrap(), moved);
    assert!(!store.adopt_key(created.attempt_id, "other", NOW).await.unwrap());
    assert_eq!(levels(&store, 1).await, (999, 0, 1));
}

async fn only_a_requested_attempt_is_rolled_back(store: Arc<dyn Inspect>) {
    let requested = create(&store, "alice", &[(4, 3)]).await;
    assert_eq!(store.roll_back(requested.attempt_id).await.unwrap(), Transition::Applied);
    assert!(store.order(requested.order_id).await.unwrap().is_none(), "the order is gone");
    assert_eq!(levels(&store, 4).await, (1000, 0, 0));
    let pending = create(&store, "alice", &[(4, 1)]).await;
    store.mark_pending(pending.attempt_id, None, NOW).await.unwrap();
    assert!(matches!(
        store.roll_back(pending.attempt_id).await.unwrap(),
        Transition::AlreadyMoved { current: PaymentStatus::Pending, .. }
    ));
    assert_eq!(levels(&store, 4).await, (999, 1, 0));
}

async fn claims_are_exclusive_expire_and_are_released(store: Arc<dyn Inspect>) {
    for _ in 0..20 {
        let created = create(&store, "alice", &[(5, 1)]).await;
        store.mark_pending(created.attempt_id, None, NOW).await.unwrap();
    }
    let claim = |owner: &'static str| {
        let store = store.clone();
        tokio::spawn(async move {
            store
                .claim_due_attempts(Claim {
                    gateway: "pg",
                    owner,
                    lease_until: NOW + ms(30_000),
                    created_before: NOW,
                    now: NOW + ms(1),
                    limit: 15,
                })
                .await
                .unwrap()
        })
    };
    let (a, b) = (claim("a"), claim("b"));
    let (a, b) = (a.await.unwrap(), b.await.unwrap());
    assert_eq!(a.len() + b.len(), 20, "every due attempt claimed once");
    assert!(a.iter().all(|x| b.iter().all(|y| x.id != y.id)), "no attempt claimed twice");
    assert!(
        store.claim_due_attempts(claim_at("c", NOW + ms(30_000), NOW + ms(2))).await.unwrap().is_empty(),
        "live leases hold"
    );

    // A check ends the lease; a crashed owner's lease expires; a stopping owner releases.
    let checked = &a[0];
    store.record_checks(&[check(checked.id, NOW + ms(1), "still pending", false)], NOW + ms(2)).await.unwrap();
    let retaken = store.claim_due_attempts(claim_at("c", NOW + ms(60_000), NOW + ms(3))).await.unwrap();
    assert_eq!(retaken.iter().map(|x| x.id).collect::<Vec<_>>(), [checked.id]);
    assert_eq!(retaken[0].checks, 1);
    let released = store.release_leases("b").await.unwrap() as usize;
    assert_eq!(released, b.len());
    assert_eq!(store.claim_due_attempts(claim_at("d", NOW + ms(60_000), NOW + ms(4))).await.unwrap().len(), b.len());
    let expired = store.claim_due_attempts(claim_at("e", NOW + ms(90_000), NOW + ms(30_001))).await.unwrap();
    assert_eq!(expired.len(), a.len() - 1, "a's expired leases are taken over");
    // Settled attempts are never claimed.
    store.settle(checked.id, &success("k-claimed"), Source::Callback, NOW).await.unwrap();
    assert!(
        store
            .claim_due_attempts(claim_at("f", NOW + ms(200_000), NOW + ms(100_000)))
            .await
            .unwrap()
            .iter()
            .all(|x| x.id != checked.id)
    );
}

/// A claim of up to 50 due attempts of gateway "pg" created before `NOW`.
fn claim_at(owner: &str, lease_until: Timestamp, now: Timestamp) -> Claim<'_> {
    Claim { gateway: "pg", owner, lease_until, created_before: NOW, now, limit: 50 }
}

fn key_claim<'a>(
    buyer: &'a BuyerId,
    key: &'a str,
    request_hash: &'a str,
    now: Timestamp,
    expires_before: Timestamp,
) -> KeyClaim<'a> {
    KeyClaim { buyer, key, request_hash, now, expires_before }
}

fn check(attempt_id: AttemptId, next_check_at: Timestamp, note: &str, stuck: bool) -> Check {
    Check { attempt_id, next_check_at, note: note.into(), stuck }
}

async fn checks_recorded_together_each_book_their_own_and_leave_settled_attempts_alone(store: Arc<dyn Inspect>) {
    // More than one transaction's worth, recorded in no particular order.
    let mut created = Vec::new();
    for _ in 0..70 {
        let order = create(&store, "alice", &[(5, 1)]).await;
        store.mark_pending(order.attempt_id, None, NOW).await.unwrap();
        created.push(order);
    }
    let claimed = store
        .claim_due_attempts(Claim {
            gateway: "pg",
            owner: "a",
            lease_until: NOW + ms(30_000),
            created_before: NOW + ms(1),
            now: NOW,
            limit: 100,
        })
        .await
        .unwrap();
    assert_eq!(claimed.len(), 70);
    let settled = &created[10];
    store.settle(settled.attempt_id, &success("k-settled"), Source::Callback, NOW).await.unwrap();
    let checks: Vec<Check> = created
        .iter()
        .enumerate()
        .rev()
        .map(|(i, o)| {
            let due = if i % 2 == 0 { NOW + ms(10) } else { NOW + ms(1_000_000) };
            check(o.attempt_id, due, &format!("check {i}"), i == 3 || i == 10)
        })
        .collect();
    store.record_checks(&checks, NOW + ms(1)).await.unwrap();

    // Each ended its lease (another owner takes them within a's lease) and is due when
    // its own check said; the settled one is not due at all.
    let due = store
        .claim_due_attempts(Claim {
            gateway: "pg",
            owner: "b",
            lease_until: NOW + ms(60_000),
            created_before: NOW + ms(1),
            now: NOW + ms(10),
            limit: 100,
        })
        .await
        .unwrap();
    let mut due_ids: Vec<_> = due.iter().map(|a| a.id).collect();
    due_ids.sort();
    let expected: Vec<_> =
        created.iter().enumerate().filter(|(i, _)| i % 2 == 0 && *i != 10).map(|(_, o)| o.attempt_id).collect();
    assert_eq!(due_ids, expected);
    assert!(due.iter().all(|a| a.checks == 1), "each check counted once");
    assert!(store.order(created[3].order_id).await.unwrap().unwrap().attempt.stuck, "its own stuck flag");
    assert!(!store.order(created[4].order_id).await.unwrap().unwrap().attempt.stuck);
    let settled_view = store.order(settled.order_id).await.unwrap().unwrap().attempt;
    assert_eq!(
        (settled_view.status, settled_view.stuck),
        (PaymentStatus::Success, false),
        "a settled attempt is left alone"
    );
}

async fn idempotency_keys_start_once_and_replay(store: Arc<dyn Inspect>) {
    let alice = BuyerId::parse("alice").unwrap();
    let bob = BuyerId::parse("bob").unwrap();
    let racers: Vec<_> = (0..10)
        .map(|_| {
            let (store, alice) = (store.clone(), alice.clone());
            tokio::spawn(async move {
                store.begin_idempotent(key_claim(&alice, "k1", "h1", NOW, NOW - ms(1_000))).await.unwrap()
            })
        })
        .collect();
    let mut started = 0;
    for racer in racers {
        match racer.await.unwrap() {
            IdempotencyStart::Started => started += 1,
            other => assert_eq!(other, IdempotencyStart::InFlight { order_id: None, since: NOW }),
        }
    }
    assert_eq!(started, 1);
    assert_eq!(
        store.begin_idempotent(key_claim(&alice, "k1", "h2", NOW, NOW - ms(1_000))).await.unwrap(),
        IdempotencyStart::Mismatch
    );
    assert_eq!(
        store.begin_idempotent(key_claim(&bob, "k1", "h2", NOW, NOW - ms(1_000))).await.unwrap(),
        IdempotencyStart::Started,
        "per buyer"
    );
    store.finish_idempotent(&alice, "k1", 202, b"{\"saved\":true}").await.unwrap();
    assert_eq!(
        store.begin_idempotent(key_claim(&alice, "k1", "h1", NOW, NOW - ms(1_000))).await.unwrap(),
        IdempotencyStart::Saved { status: 202, body: b"{\"saved\":true}".to_vec() }
    );
    assert_eq!(
        store.begin_idempotent(key_claim(&alice, "k1", "h1", NOW + ms(10), NOW + ms(5))).await.unwrap(),
        IdempotencyStart::Started,
        "expired"
    );
    store.release_idempotent(&alice, "k1").await.unwrap();
    assert_eq!(
        store.begin_idempotent(key_claim(&alice, "k1", "h9", NOW + ms(20), NOW)).await.unwrap(),
        IdempotencyStart::Started,
        "released"
    );
}

async fn a_key_in_flight_names_its_order_and_is_retaken_once(store: Arc<dyn Inspect>) {
    let alice = BuyerId::parse("alice").unwrap();
    let in_flight = |order_id| IdempotencyStart::InFlight { order_id, since: NOW };
    // The order is linked to its key in the order's own transaction.
    assert_eq!(
        store.begin_idempotent(key_claim(&alice, "k1", "h1", NOW, NOW - ms(1))).await.unwrap(),
        IdempotencyStart::Started
    );
    let keyed = NewOrder { idempotency_key: Some("k1".into()), ..order("alice", &[(1, 1)]) };
    let created = store.create_order(keyed.clone()).await.unwrap();
    assert_eq!(
        store.begin_idempotent(key_claim(&alice, "k1", "h1", NOW + ms(5), NOW - ms(1))).await.unwrap(),
        in_flight(Some(created.order_id))
    );
    // A second order under a key that already has one is refused, with nothing kept.
    assert!(matches!(store.create_order(keyed).await, Err(StoreError::IdempotencyKeyTaken)));
    assert_eq!(levels(&store, 1).await, (999, 1, 0));
    // A key with no order is retaken once: the loser of a race must not start too.
    assert_eq!(
        store.begin_idempotent(key_claim(&alice, "k2", "h2", NOW, NOW - ms(1))).await.unwrap(),
        IdempotencyStart::Started
    );
    assert_eq!(
        store.begin_idempotent(key_claim(&alice, "k2", "h2", NOW + ms(5), NOW - ms(1))).await.unwrap(),
        in_flight(None)
    );
    assert!(store.retake_idempotent(&key_claim(&alice, "k2", "h2", NOW + ms(60_000), NOW - ms(1)), NOW).await.unwrap());
    assert!(
        !store.retake_idempotent(&key_claim(&alice, "k2", "h2", NOW + ms(60_001), NOW - ms(1)), NOW).await.unwrap(),
        "taken already"
    );
    assert_eq!(
        store.begin_idempotent(key_claim(&alice, "k2", "h2", NOW + ms(60_010), NOW - ms(1))).await.unwrap(),
        IdempotencyStart::InFlight { order_id: None, since: NOW + ms(60_000) }
    );
    // A finished key is never retaken.
    store.finish_idempotent(&alice, "k2", 202, b"{}").await.unwrap();
    assert!(
        !store
            .retake_idempotent(&key_claim(&alice, "k2", "h2", NOW + ms(70_000), NOW - ms(1)), NOW + ms(60_000))
            .await
            .unwrap()
    );
}

async fn a_transaction_key_belongs_to_one_attempt(store: Arc<dyn Inspect>) {
    let first = create(&store, "alice", &[(1, 1)]).await;
    let second = create(&store, "bob", &[(1, 1)]).await;
    store.mark_pending(first.attempt_id, Some("shared-key"), NOW).await.unwrap();
    assert!(matches!(
        store.settle(second.attempt_id, &success("shared-key"), Source::Callback, NOW).await,
        Err(StoreError::KeyTaken(_))
    ));
    assert!(matches!(store.adopt_key(second.attempt_id, "shared-key", NOW).await, Err(StoreError::KeyTaken(_))));
    let attempt = store.attempt_by_pg_order_id(&second.pg_order_id).await.unwrap().unwrap();
    assert_eq!(attempt.status, PaymentStatus::Requested, "nothing changed");
    // Keys are unique per PG: another gateway may hand out the same one.
    let elsewhere = store.create_order(NewOrder { gateway: "pg2".into(), ..order("carol", &[(1, 1)]) }).await.unwrap();
    store.mark_pending(elsewhere.attempt_id, Some("shared-key"), NOW).await.unwrap();
    let attempt = store.attempt_by_pg_order_id(&elsewhere.pg_order_id).await.unwrap().unwrap();
    assert_eq!(
        (attempt.status, attempt.transaction_key.as_ref().map(|k| k.as_str())),
        (PaymentStatus::Pending, Some("shared-key"))
    );
}

async fn events_flag_anomalies_and_the_backlog_is_counted(store: Arc<dyn Inspect>) {
    assert_eq!(store.unsettled().await.unwrap(), (0, None));
    let older = store.create_order(NewOrder { now: NOW - ms(5_000), ..order("alice", &[(1, 1)]) }).await.unwrap();
    let newer = create(&store, "alice", &[(2, 1)]).await;
    assert_eq!(store.unsettled().await.unwrap(), (2, Some(NOW - ms(5_000))));
    store.record_event(older.attempt_id, EventKind::DuplicateDelivery, "dup", NOW).await.unwrap();
    assert_eq!(store.order(older.order_id).await.unwrap().unwrap().anomaly, None, "a duplicate is not an anomaly");
    store.record_event(newer.attempt_id, EventKind::DoubleCharge, "second success", NOW).await.unwrap();
    assert_eq!(store.order(newer.order_id).await.unwrap().unwrap().anomaly.as_deref(), Some("double_charge"));
    assert_eq!(
        store.events(newer.attempt_id).await.unwrap(),
        [("double_charge".to_string(), "second success".to_string())]
    );
    store.record_checks(&[check(older.attempt_id, NOW + ms(1_000), "pending at the PG", true)], NOW).await.unwrap();
    assert!(store.order(older.order_id).await.unwrap().unwrap().attempt.stuck);
}

async fn orders_are_listed_per_buyer_newest_first(store: Arc<dyn Inspect>) {
    let mut ids = Vec::new();
    for _ in 0..3 {
        ids.push(create(&store, "alice", &[(1, 1)]).await.order_id);
    }
    create(&store, "bob", &[(1, 1)]).await;
    let alice = BuyerId::parse("alice").unwrap();
    let page: Vec<_> = store.orders_for_buyer(&alice, 0, 2).await.unwrap().iter().map(|o| o.order_id).collect();
    assert_eq!(page, [ids[2], ids[1]]);
    let rest: Vec<_> = store.orders_for_buyer(&alice, 2, 2).await.unwrap().iter().map(|o| o.order_id).collect();
    assert_eq!(rest, [ids[0]]);
    let bob = BuyerId::parse("bob").unwrap();
    assert_eq!(store.buyer_order(&alice, ids[0]).await.unwrap().map(|o| o.order_id), Some(ids[0]));
    assert_eq!(store.buyer_order(&bob, ids[0]).await.unwrap(), None, "another buyer's order is not found");
}

async fn only_a_requested_attempt_moves_to_another_gateway(store: Arc<dyn Inspect>) {
    let moved = create(&store, "alice", &[(1, 1)]).await;
    assert!(!store.reassign_gateway(moved.attempt_id, "other", "pg2", NOW).await.unwrap(), "only from its gateway");
    assert!(store.reassign_gateway(moved.attempt_id, "pg", "pg2", NOW).await.unwrap());
    let attempt = store.attempt_by_pg_order_id(&moved.pg_order_id).await.unwrap().unwrap();
    assert_eq!(attempt.gateway.as_str(), "pg2");
    // Once the PG may have it (PENDING), it stays where it is.
    store.mark_pending(moved.attempt_id, None, NOW).await.unwrap();
    assert!(!store.reassign_gateway(moved.attempt_id, "pg2", "pg3", NOW).await.unwrap());
    assert_eq!(store.attempt_by_pg_order_id(&moved.pg_order_id).await.unwrap().unwrap().gateway.as_str(), "pg2");
    // The reconciler claims per gateway.
    let stays = create(&store, "alice", &[(1, 1)]).await;
    let claim = |gateway: &'static str| {
        let store = store.clone();
        async move {
            let claimed = store
                .claim_due_attempts(Claim {
                    gateway,
                    owner: "a",
                    lease_until: NOW + ms(30_000),
                    created_before: NOW,
                    now: NOW + ms(1),
                    limit: 50,
                })
                .await
                .unwrap();
            claimed.iter().map(|a| a.id).collect::<Vec<_>>()
        }
    };
    assert_eq!((claim("pg").await, claim("pg2").await), (vec![stays.attempt_id], vec![moved.attempt_id]));
    assert_eq!(store.unsettled_by_gateway().await.unwrap(), [("pg".to_string(), 1), ("pg2".to_string(), 1)]);
}

async fn the_catalog_grows_and_restocks_around_reservations(store: Arc<dyn Inspect>) {
    let added = store.create_product("기계식 키보드", Money::won(129_000), 4).await.unwrap();
    assert!(added.product_id > 5, "ids continue after the seeded catalog: {added:?}");
    assert_eq!((added.available, added.reserved, added.sold), (4, 0, 0));
    let second = store.create_product("키캡 세트", Money::won(30_000), 0).await.unwrap();
    assert_eq!(second.product_id, added.product_id + 1);
    let id = added.product_id;
    store.create_order(order_at("alice", &[(id, 3, 129_000)])).await.unwrap();
    let renamed = store.update_product(id, Some("저소음 키보드"), Some(Money::won(99_000))).await.unwrap().unwrap();
    assert_eq!(
        (renamed.name.as_str(), renamed.price, renamed.available, renamed.reserved),
        ("저소음 키보드", 99_000, 1, 3)
    );
    assert_eq!(store.update_product(999, None, Some(Money::won(1))).await.unwrap(), None);

    let refused = store.change_stock(id, StockChange::OnHand(2)).await.unwrap_err();
    assert!(matches!(refused, StoreError::StockConflict { available: 1, reserved: 3, .. }), "{refused:?}");
    let refused = store.change_stock(id, StockChange::Add(-2)).await.unwrap_err();
    assert!(matches!(refused, StoreError::StockConflict { .. }), "{refused:?}");
    let set = store.change_stock(id, StockChange::OnHand(10)).await.unwrap().unwrap();
    assert_eq!((set.available, set.reserved), (7, 3));
    let added = store.change_stock(id, StockChange::Add(-7)).await.unwrap().unwrap();
    assert_eq!((added.available, added.reserved), (0, 3));
    assert_eq!(store.change_stock(999, StockChange::Add(1)).await.unwrap(), None);
    let listed = store.catalog().await.unwrap();
    assert_eq!(listed.len(), 7);
    assert_eq!(listed.iter().find(|p| p.product_id == id).unwrap().price, 99_000);
}
