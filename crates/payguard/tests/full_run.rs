//! The real binary, as operators run it: `payguard gateway-sim` and `payguard serve` as
//! processes with debug logging, a mix of outcomes, then SIGTERM. Afterwards no full
//! card number may appear in any log line or anywhere in the database files, every
//! `serve` log line is JSON, and both processes exit cleanly.

mod common;

use std::time::Duration;

use common::{free_port, start, terminate, wait_ready};
use serde_json::{Value, json};

const CARD: &str = "1234-5678-9814-1451";
const CARD_DIGITS: &str = "1234567898141451";

#[tokio::test]
async fn a_full_run_never_logs_or_stores_a_card_number_and_shuts_down_cleanly() {
    let dir = std::env::temp_dir().join(format!("payguard-full-run-{}-{}", std::process::id(), free_port().await));
    std::fs::create_dir_all(&dir).unwrap();
    let (pg_port, shop_port) = (free_port().await, free_port().await);
    let pg = format!("http://127.0.0.1:{pg_port}");
    let shop = format!("http://127.0.0.1:{shop_port}");

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
    for i in 0..40 {
        let card = if i % 10 == 9 { format!("{CARD}9") } else { CARD.to_string() };
        let body = json!({"items": [{"productId": 1 + i % 5, "quantity": 1}], "cardType": "HYUNDAI", "cardNo": card});
        let answer: Value = client
            .post(format!("{shop}/api/v1/orders"))
            .header("X-USER-ID", "buyer-1")
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
    for file in ["serve.log", "sim.log", "shop.db", "shop.db-wal"] {
        let Ok(bytes) = std::fs::read(dir.join(file)) else { continue };
        let text = String::from_utf8_lossy(&bytes);
        assert!(!text.contains(CARD) && !text.contains(CARD_DIGITS), "a full card number in {file}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
