//! The real binary, as operators run it: `payguard gateway-sim` and `payguard serve` as
//! processes with debug logging, a mix of outcomes, then SIGTERM. Afterwards no full
//! card number may appear in any log line or anywhere in the database files, every
//! `serve` log line is JSON, and both processes exit cleanly. Also here: a keyed checkout
//! whose process is SIGKILLed mid-request still gets its answer under its key.

use std::time::Duration;

use crate::common::{Scene, scene, start, terminate, wait_ready};
use serde_json::{Value, json};

const CARD: &str = "1234-5678-9814-1451";
const CARD_DIGITS: &str = "1234567898141451";

#[tokio::test]
async fn a_full_run_never_logs_or_stores_a_card_number_and_shuts_down_cleanly() {
    let Scene { dir, pg_port, shop_port, pg, shop } = scene("full-run").await;

    let mut sim = start(
        &[
            "gateway-sim",
            "--listen",
            &format!("127.0.0.1:{pg_port}"),
            "--instant",
            "--seed",
            "3",
            "--callback-drop-rate",
            "0.3",
        ],
        &[("RUST_LOG", "debug".into())],
        &dir.join("sim.log"),
    );
    wait_ready(&format!("{pg}/sim/faults")).await;
    let mut service = start(
        &["serve", "--listen", &format!("127.0.0.1:{shop_port}"), "--gateway-url", &pg, "--public-url", &shop],
        &[
            ("PAYGUARD_DATABASE_URL", format!("sqlite://{}", dir.join("shop.db").display())),
            ("PAYGUARD_RECONCILER__INTERVAL_MS", "100".into()),
            ("PAYGUARD_RECONCILER__GRACE_MS", "200".into()),
            ("PAYGUARD_CHECKOUT__RATE_LIMIT_BURST", "1000".into()),
            ("RUST_LOG", "debug".into()),
        ],
        &dir.join("serve.log"),
    );
    wait_ready(&format!("{shop}/readyz")).await;

    let client = reqwest::Client::new();
    let mut accepted = Vec::new();
    let mut bodies = Vec::new();
    for i in 0..40 {
        let card = if i % 10 == 9 { format!("{CARD}9") } else { CARD.to_string() };
        let body = json!({"items": [{"productId": 1 + i % 5, "quantity": 1}], "cardType": "HYUNDAI", "cardNo": card});
        bodies.push(body.clone());
        let answer: Value = client
            .post(format!("{shop}/api/v1/orders"))
            .header("X-USER-ID", "buyer-1")
            .header("Idempotency-Key", format!("full-run-{i}"))
            .json(&body)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if let Some(id) = answer["data"]["orderId"].as_i64() {
            accepted.push(id);
        }
    }
    // A forged callback carrying a card number in its body.
    let forged = json!({"transactionKey": "20250101:TR:000000", "orderId": "ORD000001-1", "cardType": "KB", "cardNo": CARD, "amount": 1, "status": "SUCCESS", "reason": null});
    client.post(format!("{shop}/api/v1/payments/callback")).json(&forged).send().await.unwrap();
    assert!(accepted.len() >= 30, "most checkouts were accepted: {}", accepted.len());

    // Lost callbacks are settled by the reconciler; wait until nothing is pending.
    let mut settled = false;
    for _ in 0..200 {
        let metrics = client.get(format!("{shop}/metrics")).send().await.unwrap().text().await.unwrap();
        if metrics.lines().any(|l| l == "payguard_payments_pending 0") {
            settled = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(settled, "every payment settled");

    assert!(terminate(&mut service).await.success(), "serve exits 0 on SIGTERM");
    assert!(terminate(&mut sim).await.success(), "gateway-sim exits 0 on SIGTERM");

    let serve_log = std::fs::read_to_string(dir.join("serve.log")).unwrap();
    assert!(serve_log.lines().count() > 40, "debug logging was on");
    for line in serve_log.lines() {
        assert!(serde_json::from_str::<Value>(line).is_ok(), "serve logs JSON lines: {line}");
    }
    assert!(serve_log.contains("payment settled"));
    // Hashes of the card number, alone or in the request body, can be reversed by trying
    // the 10^6 unknown middle digits: none may be stored either.
    let sha256 = |bytes: &[u8]| {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(bytes))
    };
    let mut hashes: Vec<String> = bodies.iter().map(|b| sha256(&serde_json::to_vec(b).unwrap())).collect();
    hashes.extend([sha256(CARD.as_bytes()), sha256(CARD_DIGITS.as_bytes())]);
    for file in ["serve.log", "sim.log", "shop.db", "shop.db-wal"] {
        let Ok(bytes) = std::fs::read(dir.join(file)) else { continue };
        let text = String::from_utf8_lossy(&bytes);
        assert!(!text.contains(CARD) && !text.contains(CARD_DIGITS), "a full card number in {file}");
        for hash in &hashes {
            assert!(!text.contains(hash.as_str()), "a hash of the card number in {file}");
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_keyed_checkout_killed_mid_request_answers_under_its_key_after_restart() {
    let Scene { dir, pg_port, shop_port, pg, shop } = scene("killed-key").await;
    // The PG takes the payment, then holds its answer back: the checkout is mid-request.
    let mut sim = start(
        &[
            "gateway-sim",
            "--listen",
            &format!("127.0.0.1:{pg_port}"),
            "--instant",
            "--failure-rate",
            "0",
            "--store-then-timeout",
            "delay",
        ],
        &[],
        &dir.join("sim.log"),
    );
    wait_ready(&format!("{pg}/sim/faults")).await;
    let serve = || {
        start(
            &["serve", "--listen", &format!("127.0.0.1:{shop_port}"), "--gateway-url", &pg, "--public-url", &shop],
            &[
                ("PAYGUARD_DATABASE_URL", format!("sqlite://{}", dir.join("shop.db").display())),
                ("PAYGUARD_RECONCILER__INTERVAL_MS", "100".into()),
                ("PAYGUARD_RECONCILER__GRACE_MS", "200".into()),
                ("PAYGUARD_CHECKOUT__IDEMPOTENCY_IN_FLIGHT_SECS", "1".into()),
                ("PAYGUARD_GATEWAY__RESILIENCE__RESPONSE_TIMEOUT", "30000".into()),
                ("PAYGUARD_GATEWAY__RESILIENCE__DEADLINE", "30000".into()),
                ("PAYGUARD_HTTP__REQUEST_TIMEOUT_MS", "60000".into()),
            ],
            &dir.join("serve.log"),
        )
    };
    let mut service = serve();
    wait_ready(&format!("{shop}/readyz")).await;

    let client = reqwest::Client::new();
    let body = json!({"items": [{"productId": 2, "quantity": 1}], "cardType": "KB", "cardNo": CARD});
    let keyed = || {
        client
            .post(format!("{shop}/api/v1/orders"))
            .header("X-USER-ID", "buyer-9")
            .header("Idempotency-Key", "crash-1")
            .json(&body)
            .send()
    };
    let first = tokio::spawn(keyed());
    let ledger =
        || async { client.get(format!("{pg}/sim/ledger")).send().await.unwrap().json::<Value>().await.unwrap() };
    let mut reached = false;
    for _ in 0..200 {
        if ledger().await["counts"]["paymentRequests"].as_u64() == Some(1) {
            reached = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(reached, "the payment reached the PG");
    crate::common::signal(&service, "-KILL").await;
    let _ = service.wait().await;
    assert!(first.await.unwrap().is_err(), "the first request died with its process");

    client.put(format!("{pg}/sim/faults")).json(&json!({"storeThenTimeout": null})).send().await.unwrap();
    service = serve();
    wait_ready(&format!("{shop}/readyz")).await;
    // Past the in-flight bound the key answers with the order the dead request created.
    let mut answer = None;
    for _ in 0..100 {
        let response = keyed().await.unwrap();
        if response.status() == reqwest::StatusCode::ACCEPTED {
            assert_eq!(response.headers().get("Idempotent-Replayed").unwrap(), "true");
            answer = Some(response.json::<Value>().await.unwrap());
            break;
        }
        assert_eq!(response.status(), reqwest::StatusCode::CONFLICT, "in flight until the bound");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let answer = answer.expect("the key answered 202 with the order");
    let order_id = answer["data"]["orderId"].as_i64().unwrap();
    // The reconciler settles it by asking the PG; one transaction only, never a second.
    let mut status = String::new();
    for _ in 0..200 {
        let order: Value = client
            .get(format!("{shop}/api/v1/orders/{order_id}"))
            .header("X-USER-ID", "buyer-9")
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        status = order["data"]["status"].as_str().unwrap().to_string();
        if status != "PENDING" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(status == "PAID" || status == "FAILED", "settled by the reconciler: {status}");
    let again = keyed().await.unwrap();
    assert_eq!(again.status(), reqwest::StatusCode::ACCEPTED);
    assert_eq!(again.json::<Value>().await.unwrap()["data"]["orderId"], order_id, "the same order, replayed");
    let ledger = ledger().await;
    assert_eq!(ledger["counts"]["paymentRequests"], 1, "no second payment: {ledger}");
    assert!(terminate(&mut service).await.success());
    assert!(terminate(&mut sim).await.success());
    let _ = std::fs::remove_dir_all(&dir);
}
