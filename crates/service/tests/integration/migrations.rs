//! Upgrading a database that holds payments: the schema before transaction keys became
//! unique per gateway (SQLite rebuilds the table for it) is migrated with its data kept,
//! idempotency fingerprints that covered the card number are overwritten, and
//! PostgreSQL's times become milliseconds without moving.

use std::str::FromStr;
use std::sync::Arc;

use service::domain::{OrderId, Timestamp};

/// A time after every row the old schemas hold.
const LATER: Timestamp = Timestamp::from_millis(1_800_000_000_000);
use service::store::{Inspect, OrderStore, PgStore, PoolSettings, ReconciliationStore, SqliteStore, StoreError};

/// The migrations of `backend` before `first_new`, copied to a directory of their own.
fn migrations_before(backend: &str, first_new: &str) -> tempfile::TempDir {
    let from = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations").join(backend);
    let dir = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(from).unwrap().flatten() {
        let name = entry.file_name().to_string_lossy().to_string();
        if name.as_str() < first_new {
            std::fs::copy(entry.path(), dir.path().join(&name)).unwrap();
        }
    }
    dir
}

/// A schema of its own on the PostgreSQL server of PAYGUARD_TEST_DATABASE_URL: a pool
/// on the server, the schema's name, and options that connect into it.
async fn postgres_schema() -> (sqlx::PgPool, String, sqlx::postgres::PgConnectOptions) {
    let url = std::env::var("PAYGUARD_TEST_DATABASE_URL").expect(
        "PAYGUARD_TEST_DATABASE_URL must name a PostgreSQL server, e.g. postgres://postgres@127.0.0.1:5432/test",
    );
    let schema = format!("payguard_migrate_{}_{:x}", std::process::id(), rand::random::<u32>());
    let admin = sqlx::PgPool::connect(&url).await.unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}"))).execute(&admin).await.unwrap();
    let options = sqlx::postgres::PgConnectOptions::from_str(&url).unwrap().options([("search_path", schema.as_str())]);
    (admin, schema, options)
}

/// What every backend must show after the upgrade.
async fn the_old_payment_is_intact_and_keys_are_per_gateway(store: Arc<dyn Inspect>) {
    let attempt = store.attempt_by_pg_order_id("ORD000001-1").await.unwrap().expect("the old attempt survived");
    assert_eq!(
        (attempt.gateway.as_str(), attempt.transaction_key.as_ref().map(|k| k.as_str())),
        ("pg", Some("20261124:TR:aaaaaa"))
    );
    assert_eq!(attempt.amount.get(), 39_000);
    let events = store.events(attempt.id).await.unwrap();
    assert_eq!(events, [("duplicate_delivery".to_string(), "kept".to_string())]);
    let order = store.order(OrderId(1)).await.unwrap().expect("the order survived");
    // The old card-covering fingerprint is gone; the key still replays rather than pay twice.
    let buyer = service::domain::BuyerId::parse("buyer-1").unwrap();
    assert_eq!(
        store
            .begin_idempotent(service::store::KeyClaim {
                buyer: &buyer,
                key: "k-old",
                request_hash: "a-new-fingerprint",
                now: LATER,
                expires_before: Timestamp::from_millis(0)
            })
            .await
            .unwrap(),
        service::store::IdempotencyStart::Saved { status: 202, body: b"{}".to_vec() }
    );
    assert_eq!((order.items.len(), order.total_amount), (1, 39_000));

    // New orders get new ids; another gateway may reuse the key, the same gateway may not.
    let elsewhere = new_order(&store, "pg2").await;
    assert!(elsewhere.order_id > OrderId(1) && elsewhere.attempt_id > attempt.id);
    store.mark_pending(elsewhere.attempt_id, Some("20261124:TR:aaaaaa"), LATER).await.unwrap();
    let same = new_order(&store, "pg").await;
    let taken = store.mark_pending(same.attempt_id, Some("20261124:TR:aaaaaa"), LATER).await;
    assert!(matches!(taken, Err(StoreError::KeyTaken(_))), "{taken:?}");
}

async fn new_order(store: &Arc<dyn Inspect>, gateway: &str) -> service::store::CreatedOrder {
    store
        .create_order(service::store::NewOrder {
            buyer: service::domain::BuyerId::parse("buyer-2").unwrap(),
            priced: service::domain::price([(
                service::domain::CheckoutLine {
                    product_id: service::domain::ProductId(1),
                    quantity: service::domain::Quantity::parse(1).unwrap(),
                },
                service::domain::Listing {
                    name: "무선 키보드".into(), price: service::domain::Money::won(39_000)
                },
            )])
            .unwrap(),
            gateway: gateway.into(),
            card_type: service::domain::CardType::Kb,
            card_last4: "1451".into(),
            now: LATER,
            idempotency_key: None,
        })
        .await
        .unwrap()
}

#[tokio::test]
async fn a_sqlite_database_with_payments_upgrades_in_place() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("shop.db").display());
    let options =
        sqlx::sqlite::SqliteConnectOptions::from_str(&url).unwrap().create_if_missing(true).foreign_keys(true);
    let pool = sqlx::SqlitePool::connect_with(options).await.unwrap();
    let old = migrations_before("sqlite", "0004");
    sqlx::migrate::Migrator::new(old.path()).await.unwrap().run(&pool).await.unwrap();
    sqlx::raw_sql(
        "INSERT INTO orders (id, buyer_id, total_amount, created_at) VALUES (1, 'buyer-1', 39000, 1);
         INSERT INTO order_items (order_id, line, product_id, name, unit_price, quantity, amount)
           VALUES (1, 1, 1, '무선 키보드', 39000, 1, 39000);
         INSERT INTO payment_attempts (id, order_id, pg_order_id, gateway, card_type, card_last4, amount, status,
             transaction_key, created_at, updated_at, next_check_at, lease_owner, lease_until)
           VALUES (7, 1, 'ORD000001-1', 'pg', 'KB', '1451', 39000, 'PENDING', '20261124:TR:aaaaaa', 1, 1, 1, 'x', 5);
         INSERT INTO payment_events (attempt_id, kind, detail, created_at) VALUES (7, 'duplicate_delivery', 'kept', 1);
         INSERT INTO idempotency_keys (buyer_id, key, request_hash, response_status, response_body, created_at)
           VALUES ('buyer-1', 'k-old', 'sha256-of-a-body-with-the-card-number', 202, x'7b7d', 1);",
    )
    .execute(&pool)
    .await
    .unwrap();
    pool.close().await;

    let store = SqliteStore::connect(&url, std::time::Duration::from_secs(5))
        .await
        .expect("the new migrations apply over the old ones");
    the_old_payment_is_intact_and_keys_are_per_gateway(Arc::new(store)).await;
}

#[tokio::test]
#[ignore = "needs PostgreSQL in PAYGUARD_TEST_DATABASE_URL: cargo nextest run --run-ignored all (bash .ci/run does)"]
async fn a_postgres_database_with_payments_upgrades_in_place() {
    let (admin, schema, options) = postgres_schema().await;
    let pool = sqlx::PgPool::connect_with(options.clone()).await.unwrap();
    let old = migrations_before("postgres", "0002");
    sqlx::migrate::Migrator::new(old.path()).await.unwrap().run(&pool).await.unwrap();
    sqlx::raw_sql(
        "INSERT INTO orders (id, buyer_id, total_amount, created_at) VALUES (1, 'buyer-1', 39000, '2026-11-24 12:00:00.123+00');
         SELECT setval('orders_id_seq', 1);
         INSERT INTO order_items (order_id, line, product_id, name, unit_price, quantity, amount)
           VALUES (1, 1, 1, '무선 키보드', 39000, 1, 39000);
         INSERT INTO payment_attempts (id, order_id, pg_order_id, gateway, card_type, card_last4, amount, status,
             transaction_key, created_at, updated_at, next_check_at)
           VALUES (7, 1, 'ORD000001-1', 'pg', 'KB', '1451', 39000, 'PENDING', '20261124:TR:aaaaaa', '2026-11-24 12:00:00.123+00', '2026-11-24 12:00:00.123+00', '2026-11-24 12:00:00.123+00');
         SELECT setval('payment_attempts_id_seq', 7);
         INSERT INTO payment_events (attempt_id, kind, detail, created_at) VALUES (7, 'duplicate_delivery', 'kept', '2026-11-24 12:00:00.123+00');
         INSERT INTO idempotency_keys (buyer_id, key, request_hash, response_status, response_body, created_at)
           VALUES ('buyer-1', 'k-old', 'sha256-of-a-body-with-the-card-number', 202, '\\x7b7d'::bytea, '2026-11-24 12:00:00.123+00');",
    )
    .execute(&pool)
    .await
    .unwrap();
    pool.close().await;

    let settings = PoolSettings { max_connections: 4, acquire_timeout: std::time::Duration::from_secs(10) };
    let store = PgStore::connect_with(options, settings).await.expect("the new migrations apply over the old ones");
    // Times became milliseconds (migration 0005), each the same instant as before.
    let then = chrono::DateTime::parse_from_rfc3339("2026-11-24T12:00:00.123Z").unwrap().timestamp_millis();
    assert_eq!(store.order(OrderId(1)).await.unwrap().expect("the old order").created_at.as_millis(), then);
    assert_eq!(store.unsettled().await.unwrap(), (1, Some(Timestamp::from_millis(then))));
    the_old_payment_is_intact_and_keys_are_per_gateway(Arc::new(store)).await;
    let _ = sqlx::query(sqlx::AssertSqlSafe(format!("DROP SCHEMA {schema} CASCADE"))).execute(&admin).await;
}

#[tokio::test]
#[ignore = "needs PostgreSQL in PAYGUARD_TEST_DATABASE_URL: cargo nextest run --run-ignored all (bash .ci/run does)"]
async fn a_postgres_database_whose_due_index_was_built_beforehand_upgrades() {
    let (admin, schema, options) = postgres_schema().await;
    let pool = sqlx::PgPool::connect_with(options.clone()).await.unwrap();
    let old = migrations_before("postgres", "0006");
    sqlx::migrate::Migrator::new(old.path()).await.unwrap().run(&pool).await.unwrap();
    // What docs/operations.md ("Upgrading") tells the operator of a large table to run first.
    sqlx::raw_sql(
        "CREATE INDEX CONCURRENTLY IF NOT EXISTS attempts_due ON payment_attempts (gateway, next_check_at)
           WHERE finalized_at IS NULL",
    )
    .execute(&pool)
    .await
    .unwrap();
    pool.close().await;

    let settings = PoolSettings { max_connections: 4, acquire_timeout: std::time::Duration::from_secs(10) };
    PgStore::connect_with(options, settings).await.expect("migration 0006 applies over the index built beforehand");
    let indexes: Vec<String> = sqlx::query_scalar(
        "SELECT indexname::text FROM pg_indexes WHERE schemaname = $1 AND tablename = 'payment_attempts'",
    )
    .bind(&schema)
    .fetch_all(&admin)
    .await
    .unwrap();
    assert!(indexes.iter().any(|i| i == "attempts_due"), "{indexes:?}");
    assert!(!indexes.iter().any(|i| i == "attempts_unsettled"), "the old index is dropped: {indexes:?}");
    let _ = sqlx::query(sqlx::AssertSqlSafe(format!("DROP SCHEMA {schema} CASCADE"))).execute(&admin).await;
}

/// The last migration each backend numbered on its own. Their histories differ up to
/// here (SQLite added idempotency and leases as migrations of their own, PostgreSQL
/// later moved its times to milliseconds); renumbering applied migrations would fail
/// sqlx's check on every existing database, so the shared numbering starts after them.
const LAST_SEPARATE: &str = "0006";

/// A backend's migration files after `LAST_SEPARATE`, by name.
fn shared_migrations(backend: &str) -> Vec<String> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations").join(backend);
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|entry| entry.file_name().to_string_lossy().to_string())
        .filter(|name| name.as_str() > LAST_SEPARATE && !name.starts_with(LAST_SEPARATE))
        .collect();
    names.sort();
    names
}

#[test]
fn every_new_migration_has_the_same_number_and_name_on_both_backends() {
    let (sqlite, postgres) = (shared_migrations("sqlite"), shared_migrations("postgres"));
    assert_eq!(sqlite, postgres, "a schema change is one migration per backend, numbered and named alike");
}

#[tokio::test]
#[ignore = "needs PostgreSQL in PAYGUARD_TEST_DATABASE_URL: cargo nextest run --run-ignored all (bash .ci/run does)"]
async fn both_backends_migrate_to_the_same_tables_and_columns() {
    use std::collections::BTreeSet;
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("shop.db").display());
    drop(SqliteStore::connect(&url, std::time::Duration::from_secs(5)).await.unwrap());
    let sqlite = sqlx::SqlitePool::connect(&url).await.unwrap();
    let sqlite_columns: BTreeSet<(String, String)> = sqlx::query_as(
        "SELECT m.name, p.name FROM sqlite_master m JOIN pragma_table_info(m.name) p
         WHERE m.type = 'table' AND m.name NOT LIKE 'sqlite_%' AND m.name NOT LIKE '_sqlx_%'",
    )
    .fetch_all(&sqlite)
    .await
    .unwrap()
    .into_iter()
    .collect();

    let (admin, schema, options) = postgres_schema().await;
    let settings = PoolSettings { max_connections: 2, acquire_timeout: std::time::Duration::from_secs(10) };
    drop(PgStore::connect_with(options, settings).await.unwrap());
    let postgres_columns: BTreeSet<(String, String)> = sqlx::query_as(
        "SELECT table_name::text, column_name::text FROM information_schema.columns
         WHERE table_schema = $1 AND table_name NOT LIKE '\\_sqlx\\_%'",
    )
    .bind(&schema)
    .fetch_all(&admin)
    .await
    .unwrap()
    .into_iter()
    .collect();
    let _ = sqlx::query(sqlx::AssertSqlSafe(format!("DROP SCHEMA {schema} CASCADE"))).execute(&admin).await;

    assert!(sqlite_columns.iter().any(|(table, _)| table == "payment_attempts"), "the schema was read");
    let only_sqlite: Vec<_> = sqlite_columns.difference(&postgres_columns).collect();
    let only_postgres: Vec<_> = postgres_columns.difference(&sqlite_columns).collect();
    assert!(
        only_sqlite.is_empty() && only_postgres.is_empty(),
        "the backends' schemas differ: only in SQLite {only_sqlite:?}, only in PostgreSQL {only_postgres:?}"
    );
}
