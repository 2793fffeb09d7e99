//! Three `payguard serve` processes on one PostgreSQL database, one simulator with lost
//! callbacks and request failures, a few hundred checkouts spread over the instances,
//! and one instance killed with SIGKILL mid-run. Afterwards every attempt is settled
//! exactly once and matches the simulator's ledger, and stock is consistent.
//!
//! Needs `PAYGUARD_TEST_DATABASE_URL` (a PostgreSQL server where it may create a
//! database), so it is `#[ignore]`d: `cargo nextest run --run-ignored all` runs it.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use crate::common::{free_port, signal, start, wait_ready};
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL in PAYGUARD_TEST_DATABASE_URL: cargo nextest run --run-ignored all (bash .ci/run does)"]
async fn three_instances_one_killed_every_payment_settled_exactly_once() {
    let server = std::env::var("PAYGUARD_TEST_DATABASE_URL").expect(
        "PAYGUARD_TEST_DATABASE_URL must name a PostgreSQL server, e.g. postgres://postgres@127.0.0.1:5432/test",
    );
    let database = format!("payguard_multi_{}_{:x}", std::process::id(), rand::random::<u32>());
    let admin = sqlx::PgPool::connect(&server).await.unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {database}"))).execute(&admin).await.unwrap();
    let url = match server.rsplit_once('/') {
        Some((base, _)) => format!("{base}/{database}"),
        None => panic!("PAYGUARD_TEST_DATABASE_URL needs a database path"),
    };
    let dir = std::env::temp_dir().join(&database);
    std::fs::create_dir_all(&dir).unwrap();

    let pg_port = free_port().await;
    let pg = format!("http://127.0.0.1:{pg_port}");
    let mut sim = start(
        &[
            "gateway-sim",
            "--listen",
            &format!("127.0.0.1:{pg_port}"),
            "--instant",
            "--seed",
            "17",
            "--failure-rate",
            "0.3",
            "--callback-drop-rate",
            "0.3",
            // Lookups that take time: a reconciliation pass holds its leases for a while.
            "--lookup-latency-ms",
            "200-400",
        ],
        &[],
        &dir.join("sim.log"),
    );
    wait_ready(&format!("{pg}/sim/faults")).await;

    let mut instances = Vec::new();
    for i in 0..3 {
        let port = free_port().await;
        let shop = format!("http://127.0.0.1:{port}");
        let child = start(
            &["serve", "--listen", &format!("127.0.0.1:{port}"), "--gateway-url", &pg, "--public-url", &shop],
            &[
                ("PAYGUARD_DATABASE_URL", url.clone()),
                ("PAYGUARD_RECONCILER__INTERVAL_MS", "200".into()),
                ("PAYGUARD_RECONCILER__GRACE_MS", "500".into()),
                ("PAYGUARD_RECONCILER__ACCEPTANCE_WINDOW_MS", "5000".into()),
                ("PAYGUARD_RECONCILER__BACKOFF_INITIAL_MS", "200".into()),
                ("PAYGUARD_RECONCILER__BACKOFF_MAX_MS", "1000".into()),
                ("PAYGUARD_CHECKOUT__RATE_LIMIT_BURST", "10000".into()),
            ],
            &dir.join(format!("serve-{i}.log")),
        );
        wait_ready(&format!("{shop}/readyz")).await;
        instances.push((shop, Some(child)));
    }

    // Checkouts over the three instances, eight at a time; instance 2 dies at 120.
    let total = 300;
    let next = Arc::new(AtomicUsize::new(0));
    let shops: Vec<String> = instances.iter().map(|(s, _)| s.clone()).collect();
    let killed = Arc::new(tokio::sync::Notify::new());
    let results = Arc::new(tokio::sync::Mutex::new(Vec::new()));
    let workers: Vec<_> = (0..8)
        .map(|_| {
            let (next, shops, results, killed) = (next.clone(), shops.clone(), results.clone(), killed.clone());
            tokio::spawn(async move {
                let client = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap();
                loop {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    if n >= total {
                        break;
                    }
                    if n == 120 {
                        killed.notify_one();
                    }
                    let shop = &shops[n % 3];
                    let body = json!({"items": [{"productId": 1 + n % 5, "quantity": 1 + n % 3}], "cardType": "KB", "cardNo": "1234-5678-9814-1451"});
                    let answer = client.post(format!("{shop}/api/v1/orders")).header("X-USER-ID", format!("buyer-{}", n % 40)).json(&body).send().await;
                    let outcome = match answer {
                        Ok(response) => {
                            let status = response.status().as_u16();
                            let body: Value = response.json().await.unwrap_or(Value::Null);
                            (status, body["data"]["orderId"].as_i64())
                        }
                        Err(_) => (0, None), // the killed instance
                    };
                    results.lock().await.push(outcome);
                }
            })
        })
        .collect();
    killed.notified().await;
    let victim = instances[2].1.take().unwrap();
    let db = sqlx::PgPool::connect(&url).await.unwrap();
    // What the victim holds when it dies: its leases carry its pid.
    let pattern = format!("%-{}-%", victim.id().unwrap());
    // Killed mid-pass when it can be: while it holds leases (a few seconds at most).
    let mut held: Vec<i64> = Vec::new();
    for _ in 0..250 {
        held = sqlx::query_scalar(
            "SELECT id FROM payment_attempts WHERE lease_owner LIKE $1 AND status IN ('REQUESTED', 'PENDING')",
        )
        .bind(&pattern)
        .fetch_all(&db)
        .await
        .unwrap();
        if !held.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    signal(&victim, "-KILL").await;
    let killed_at = std::time::Instant::now();
    let taken_over = tokio::spawn({
        let db = db.clone();
        async move {
            loop {
                let open: i64 = sqlx::query_scalar(
                    "SELECT COUNT(*) FROM payment_attempts WHERE id = ANY($1) AND status IN ('REQUESTED', 'PENDING')",
                )
                .bind(&held)
                .fetch_one(&db)
                .await
                .unwrap();
                if open == 0 {
                    return (held.len(), killed_at.elapsed());
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    });
    for worker in workers {
        worker.await.unwrap();
    }
    let results = results.lock().await.clone();
    let accepted: Vec<i64> = results.iter().filter(|(s, _)| *s == 202).filter_map(|(_, id)| *id).collect();
    let unavailable = results.iter().filter(|(s, _)| *s == 503).count();
    let lost = results.iter().filter(|(s, _)| *s == 0).count();
    eprintln!(
        "checkouts: {} accepted, {unavailable} answered 503, {lost} lost with the killed instance",
        accepted.len()
    );
    assert!(
        accepted.len() >= 150,
        "most checkouts accepted: {} of {total} (503: {unavailable}, no answer: {lost})",
        accepted.len()
    );
    assert!(results.iter().all(|(s, _)| [0, 202, 503].contains(s)), "only accepted, unavailable or lost: {results:?}");

    // The survivors settle everything: lost callbacks and the victim's attempts included.
    let (held, after) = tokio::time::timeout(Duration::from_secs(60), taken_over).await.expect("taken over").unwrap();
    eprintln!(
        "the killed instance held {held} unsettled payments; the others settled them {:.1} s after the kill",
        after.as_secs_f64()
    );
    let mut unsettled: i64 = -1;
    for _ in 0..300 {
        unsettled =
            sqlx::query_scalar("SELECT COUNT(*) FROM payment_attempts WHERE status IN ('REQUESTED', 'PENDING')")
                .fetch_one(&db)
                .await
                .unwrap();
        if unsettled == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(unsettled, 0, "every attempt settled");

    // Our books against the PG's.
    let ledger: Value = reqwest::get(format!("{pg}/sim/ledger")).await.unwrap().json().await.unwrap();
    let mut pg_by_order: HashMap<String, Vec<(String, String)>> = HashMap::new();
    for tx in ledger["transactions"].as_array().unwrap() {
        pg_by_order
            .entry(tx["orderId"].as_str().unwrap().into())
            .or_default()
            .push((tx["transactionKey"].as_str().unwrap().into(), tx["status"].as_str().unwrap().into()));
    }
    let rows: Vec<(i64, String, String, Option<String>)> =
        sqlx::query_as("SELECT order_id, pg_order_id, status, transaction_key FROM payment_attempts")
            .fetch_all(&db)
            .await
            .unwrap();
    for (order_id, pg_order_id, status, key) in &rows {
        match pg_by_order.get(pg_order_id) {
            Some(transactions) => {
                assert_eq!(transactions.len(), 1, "one PG transaction per attempt: {pg_order_id}");
                let (pg_key, pg_status) = &transactions[0];
                assert_eq!(
                    (key.as_deref(), status.as_str()),
                    (Some(pg_key.as_str()), pg_status.as_str()),
                    "order {order_id} matches the PG"
                );
            }
            // Never reached the PG: failed as not received once the acceptance window passed.
            None => assert_eq!(status, "FAILED", "order {order_id} has no PG transaction"),
        }
    }
    for pg_order_id in pg_by_order.keys() {
        assert!(rows.iter().any(|r| &r.1 == pg_order_id), "every PG transaction is one of our attempts: {pg_order_id}");
    }
    for id in &accepted {
        assert!(rows.iter().any(|r| r.0 == *id), "every 202 order exists: {id}");
    }
    let by_victim: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM payment_attempts WHERE settled_by = 'reconciler'")
        .fetch_one(&db)
        .await
        .unwrap();
    eprintln!(
        "attempts: {} in the database, {by_victim} settled by reconcilers, {} PG transactions",
        rows.len(),
        ledger["transactions"].as_array().unwrap().len()
    );
    let events: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM payment_events WHERE kind IN ('double_charge', 'refund_needed', 'conflicting_delivery')",
    )
    .fetch_one(&db)
    .await
    .unwrap();
    assert_eq!(events, 0, "no double settlement or conflict");

    let stock: Vec<(i64, i64, i64, i64)> =
        sqlx::query_as("SELECT id, available, reserved, sold FROM products ORDER BY id").fetch_all(&db).await.unwrap();
    let initial = [1000, 1000, 500, 1000, 1000];
    let sold_expected: i64 =
        sqlx::query_scalar("SELECT COALESCE(SUM(i.quantity), 0)::bigint FROM order_items i JOIN payment_attempts a ON a.order_id = i.order_id WHERE a.status = 'SUCCESS'")
            .fetch_one(&db)
            .await
            .unwrap();
    for ((id, available, reserved, sold), initial) in stock.iter().zip(initial) {
        assert_eq!(available + reserved + sold, initial, "product {id}");
        assert_eq!(*reserved, 0, "product {id}: nothing left reserved");
    }
    assert_eq!(stock.iter().map(|s| s.3).sum::<i64>(), sold_expected, "sold exactly what succeeded");

    // The survivors shut down cleanly and leave no lease behind.
    for (_, child) in instances.iter_mut() {
        if let Some(child) = child.as_mut() {
            signal(child, "-TERM").await;
            let status = tokio::time::timeout(Duration::from_secs(15), child.wait()).await.expect("exits").unwrap();
            assert!(status.success(), "exit 0 on SIGTERM");
        }
    }
    let leased: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM payment_attempts WHERE lease_owner IS NOT NULL")
        .fetch_one(&db)
        .await
        .unwrap();
    assert_eq!(leased, 0);
    signal(&sim, "-TERM").await;
    let _ = sim.wait().await;
    db.close().await;
    sqlx::query(sqlx::AssertSqlSafe(format!("DROP DATABASE {database} WITH (FORCE)"))).execute(&admin).await.unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}
