//! Checkout, row by row of the outcome table (docs/resilience.md), and reading orders.

use crate::common::*;
use gateway_sim::faults::{MsRange, OutcomeSplit, StoreThenTimeout, StoreThenTimeoutMode};
use gateway_sim::{CallbackAllowList, Faults, SimConfig};
use reqwest::StatusCode;
use serde_json::json;

#[tokio::test]
async fn accepted_payment_answers_202_pending_and_the_callback_makes_it_paid() {
    // The PG decides a second later, so the 202 is answered before the callback lands.
    let approve = OutcomeSplit { limit_exceeded: 0.0, invalid_card: 0.0 };
    let app =
        spawn_app(Faults { outcome: approve, processing_delay_ms: MsRange::new(1_000, 1_000), ..reliable() }).await;
    let (status, body) = app.checkout("buyer-1", &[(1, 2), (2, 1)]).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let order = &body["data"];
    assert_eq!(order["status"], "PENDING");
    assert_eq!(order["totalAmount"], 39_000 * 2 + 25_000);
    assert_eq!(
        order["items"][0],
        json!({"productId": 1, "name": "무선 키보드", "unitPrice": 39000, "quantity": 2, "amount": 78000})
    );
    assert_eq!(order["payment"]["status"], "PENDING");
    assert_eq!(order["payment"]["cardLast4"], "1451");
    assert!(order["payment"]["transactionKey"].is_string());

    let id = order["orderId"].as_i64().unwrap();
    let paid = app.wait_for_status("buyer-1", id, "PAID").await;
    assert_eq!(paid["payment"]["status"], "SUCCESS");
    assert_eq!(paid["payment"]["reason"], "정상 승인되었습니다.");
    let stock = app.stock().await;
    assert_eq!((stock[0].sold, stock[0].reserved, stock[0].available), (2, 0, 998));
    assert_stock_conserved(&stock);
}

#[tokio::test]
async fn the_202_is_the_order_as_stored() {
    // The checkout answers with the order it wrote, without reading it back: it must be
    // exactly what the buyer then reads.
    let app = spawn_app(Faults { processing_delay_ms: MsRange::new(60_000, 60_000), ..reliable() }).await;
    let (status, placed) = app.checkout("buyer-1", &[(1, 2), (2, 1), (1, 1)]).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{placed}");
    let id = placed["data"]["orderId"].as_i64().unwrap();
    let (status, stored) = app.order("buyer-1", id).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(placed["data"], stored["data"]);
}

#[tokio::test]
async fn a_declined_card_ends_failed_with_the_pg_reason_and_the_stock_back() {
    let app =
        spawn_app(Faults { outcome: OutcomeSplit { limit_exceeded: 1.0, invalid_card: 0.0 }, ..reliable() }).await;
    let (status, body) = app.checkout("buyer-1", &[(3, 4)]).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let failed = app.wait_for_status("buyer-1", body["data"]["orderId"].as_i64().unwrap(), "FAILED").await;
    assert_eq!(failed["payment"]["reason"], "한도초과입니다. 다른 카드를 선택해주세요.");
    assert_eq!(failed["payment"]["message"], "결제 실패");
    let stock = app.stock().await;
    assert_eq!((stock[2].available, stock[2].reserved, stock[2].sold), (500, 0, 0));
}

#[tokio::test]
async fn an_open_circuit_answers_503_at_once_with_nothing_written_or_sent() {
    let app = spawn_app(reliable()).await;
    app.gateway.payment_breaker().force_open();
    let (status, body) = app.checkout("buyer-1", &[(1, 1)]).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body["meta"]["errorCode"], "PAYMENT_GATEWAY_UNAVAILABLE");
    assert_eq!(app.pg_requests(), 0, "nothing sent");
    let (_, orders) = app.get("/api/v1/orders", Some("buyer-1")).await;
    assert_eq!(orders["data"]["orders"], json!([]), "nothing written");
    assert_eq!(app.stock().await[0].available, 1000);
}

/// Log lines written by a `fmt` subscriber, kept for the test to read.
#[derive(Clone, Default)]
struct Lines(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Lines {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Lines {
    type Writer = Lines;

    fn make_writer(&'a self) -> Lines {
        self.clone()
    }
}

impl Lines {
    /// Captures this thread's events (the test's runtime and the app it spawns) until
    /// the guard is dropped.
    fn capture() -> (Lines, tracing::subscriber::DefaultGuard) {
        let lines = Lines::default();
        let subscriber = tracing_subscriber::fmt().with_writer(lines.clone()).with_ansi(false).finish();
        (lines, tracing::subscriber::set_default(subscriber))
    }

    /// The first line logged with `message`, and the event's own part of it (after its spans).
    fn with(&self, message: &str) -> (String, String) {
        let logged = String::from_utf8(self.0.lock().unwrap().clone()).unwrap();
        let line = logged.lines().find(|l| l.contains(message)).unwrap_or_else(|| panic!("{message}: {logged}"));
        let event = line[line.find("}:").unwrap_or_else(|| panic!("no span: {line}"))..].to_string();
        (line.to_string(), event)
    }
}

#[tokio::test]
async fn a_checkout_s_events_carry_the_order_pg_order_id_and_gateway_from_its_payment_span() {
    let (lines, _guard) = Lines::capture();
    let app = spawn_app(Faults { request_failure_rate: 1.0, ..Faults::instant() }).await;
    let (status, body) = app.checkout("buyer-1", &[(1, 1)]).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    let (rolled_back, event) = lines.with("payment not delivered: order rolled back");
    assert!(
        rolled_back.contains("payment{order=1 pg_order_id=ORD000001-1 gateway=pg}"),
        "the span names the payment: {rolled_back}"
    );
    assert!(!event.contains("order="), "the event does not repeat what its span says: {rolled_back}");
}

#[tokio::test]
async fn a_callback_s_events_carry_the_attempt_it_settles_from_its_span() {
    let (lines, _guard) = Lines::capture();
    let approve = OutcomeSplit { limit_exceeded: 0.0, invalid_card: 0.0 };
    let app = spawn_app(Faults { outcome: approve, ..reliable() }).await;
    let (status, body) = app.checkout("buyer-1", &[(1, 1)]).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    app.wait_for_status("buyer-1", body["data"]["orderId"].as_i64().unwrap(), "PAID").await;
    let (settled, event) = lines.with("payment settled");
    assert!(
        settled.contains("callback{attempt=1 gateway=pg pg_order_id=ORD000001-1 transaction_key="),
        "the span names the attempt: {settled}"
    );
    assert!(!event.contains("pg_order_id="), "the event does not repeat what its span says: {settled}");
}

#[tokio::test]
async fn not_delivered_after_retries_rolls_the_order_back_with_503() {
    let app = spawn_app(Faults { request_failure_rate: 1.0, ..Faults::instant() }).await;
    let (status, body) = app.checkout("buyer-1", &[(1, 3)]).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["meta"]["errorCode"], "PAYMENT_GATEWAY_UNAVAILABLE");
    assert_eq!(app.pg_requests(), 6, "retried to max attempts");
    assert_eq!(app.pg_transactions(), 0, "the PG holds nothing");
    let (_, orders) = app.get("/api/v1/orders", Some("buyer-1")).await;
    assert_eq!(orders["data"]["orders"], json!([]), "order rolled back");
    let stock = app.stock().await;
    assert_eq!((stock[0].available, stock[0].reserved), (1000, 0), "reservation undone");
}

#[tokio::test]
async fn an_unknown_outcome_answers_202_pending_and_is_never_resent() {
    let stt = StoreThenTimeout { mode: StoreThenTimeoutMode::Delay, rate: 1.0, delay_ms: 60_000 };
    // A slow PG decision, so no callback settles it while we look.
    let slow = MsRange::new(60_000, 60_000);
    let app = spawn_app(Faults { store_then_timeout: Some(stt), processing_delay_ms: slow, ..reliable() }).await;
    let (status, body) = app.checkout("buyer-1", &[(1, 1)]).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(body["data"]["payment"]["status"], "PENDING");
    assert_eq!(body["data"]["payment"]["transactionKey"], serde_json::Value::Null, "no key: the answer never came");
    assert_eq!((app.pg_requests(), app.pg_transactions()), (1, 1));
    assert_eq!(app.stock().await[0].reserved, 1, "still reserved while unknown");
}

#[tokio::test]
async fn a_pg_rejection_fails_the_order_with_the_reason_and_releases_the_stock() {
    // The PG refuses our callback URL (a misconfiguration): a 4xx, never retried.
    let sim = SimConfig {
        callback_allow: CallbackAllowList::Prefixes(vec!["https://elsewhere.example".into()]),
        ..sim_config()
    };
    let app = spawn_app_with(sim, |_| {}).await;
    let (status, body) = app.checkout("buyer-1", &[(2, 2)]).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["meta"]["errorCode"], "PAYMENT_REJECTED");
    assert_eq!(body["meta"]["message"], "콜백 URL 은 https://elsewhere.example 로 시작해야 합니다.");
    assert_eq!(app.pg_requests(), 1, "a rejection is never retried");
    let id = body["data"]["orderId"].as_i64().unwrap();
    let (_, order) = app.order("buyer-1", id).await;
    assert_eq!(order["data"]["status"], "FAILED");
    assert_eq!(order["data"]["payment"]["reason"], "콜백 URL 은 https://elsewhere.example 로 시작해야 합니다.");
    let stock = app.stock().await;
    assert_eq!((stock[1].available, stock[1].reserved), (1000, 0));
}

#[tokio::test]
async fn a_stock_shortage_answers_409_before_any_pg_call() {
    let app = spawn_app(reliable()).await;
    let (status, body) = app.checkout("buyer-1", &[(1, 1), (3, 501)]).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(body["meta"]["errorCode"], "OUT_OF_STOCK");
    assert_eq!(body["data"], json!({"productId": 3, "available": 500}));
    assert_eq!(app.pg_requests(), 0);
    let stock = app.stock().await;
    assert_eq!((stock[0].available, stock[0].reserved), (1000, 0), "the first line's reservation was undone too");
}

#[tokio::test]
async fn invalid_input_answers_400_with_every_field_and_persists_nothing() {
    let app = spawn_app(reliable()).await;
    let body = json!({"items": [{"productId": 1, "quantity": 0}], "cardType": "VISA", "cardNo": "1234"});
    let (status, answer) = app.post_json("/api/v1/orders", Some("buyer-1"), &body).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(answer["meta"]["errorCode"], "INVALID_REQUEST");
    let fields: Vec<&str> =
        answer["data"]["errors"].as_array().unwrap().iter().map(|e| e["field"].as_str().unwrap()).collect();
    assert_eq!(fields, ["quantity", "cardType", "cardNo"]);

    for (body, why) in [
        (json!({"items": [], "cardType": "KB", "cardNo": "1234-5678-9814-1451"}), "no items"),
        (json!({"items": [{"productId": 1, "quantity": 1}], "cardType": "KB"}), "missing card number"),
        (
            json!({"items": [{"productId": 1, "quantity": 1, "color": "red"}], "cardType": "KB", "cardNo": "1234-5678-9814-1451"}),
            "unknown field",
        ),
        (
            json!({"items": [{"productId": 1, "quantity": 1000}], "cardType": "KB", "cardNo": "1234-5678-9814-1451"}),
            "quantity over 999",
        ),
    ] {
        let (status, answer) = app.post_json("/api/v1/orders", Some("buyer-1"), &body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{why}: {answer}");
        assert_eq!(answer["meta"]["errorCode"], "INVALID_REQUEST", "{why}");
    }
    let (status, answer) = app.post_json("/api/v1/orders", None, &checkout_body(&[(1, 1)])).await;
    assert_eq!((status, answer["meta"]["errorCode"].as_str()), (StatusCode::BAD_REQUEST, Some("MISSING_USER_ID")));
    let (status, answer) = app.checkout("buyer-1", &[(99, 1)]).await;
    assert_eq!((status, answer["meta"]["errorCode"].as_str()), (StatusCode::NOT_FOUND, Some("PRODUCT_NOT_FOUND")));
    assert_eq!(app.pg_requests(), 0);
    assert_stock_conserved(&app.stock().await);
    assert_eq!(app.stock().await[0].available, 1000);
}

#[tokio::test]
async fn buyers_read_only_their_own_orders_newest_first() {
    let app = spawn_app(Faults { processing_delay_ms: MsRange::new(60_000, 60_000), ..reliable() }).await;
    let mut ids = Vec::new();
    for _ in 0..3 {
        let (_, body) = app.checkout("alice", &[(5, 1)]).await;
        ids.push(body["data"]["orderId"].as_i64().unwrap());
    }
    let (_, bob) = app.checkout("bob", &[(5, 1)]).await;
    let bob_id = bob["data"]["orderId"].as_i64().unwrap();

    let (status, order) = app.order("alice", ids[0]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(order["data"]["items"][0]["name"], "노트북 거치대");
    let (status, foreign) = app.order("alice", bob_id).await;
    let (_, unknown) = app.order("alice", 999_999).await;
    let (_, malformed) = app.get("/api/v1/orders/abc", Some("alice")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(foreign, unknown, "another buyer's order looks exactly like an unknown one");
    assert_eq!(foreign, malformed);
    assert_eq!(foreign["meta"]["errorCode"], "ORDER_NOT_FOUND");

    let (_, page) = app.get("/api/v1/orders?page=0&size=2", Some("alice")).await;
    let listed: Vec<i64> =
        page["data"]["orders"].as_array().unwrap().iter().map(|o| o["orderId"].as_i64().unwrap()).collect();
    assert_eq!(listed, [ids[2], ids[1]]);
    assert_eq!(page["data"]["hasNext"], true);
    let (_, page) = app.get("/api/v1/orders?page=1&size=2", Some("alice")).await;
    assert_eq!(page["data"]["orders"][0]["orderId"], ids[0]);
    assert_eq!(page["data"]["hasNext"], false);
    let (status, _) = app.get("/api/v1/orders?size=0", Some("alice")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn products_list_the_catalog_with_stock() {
    let app = spawn_app(reliable()).await;
    let (status, body) = app.get("/api/v1/products", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["data"][0], json!({"productId": 1, "name": "무선 키보드", "price": 39000, "stock": 1000}));
    assert_eq!(body["data"].as_array().unwrap().len(), 5);
    let (status, _) = app.get("/readyz", None).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn checkouts_admitted_beyond_a_waiting_bulkhead_queue_for_the_pg_instead_of_being_refused() {
    // Admission lets six in; the PG is given two at a time and answers in 200 ms. With a
    // wait the other four queue for a place and are all accepted; refusing at once, those
    // that find both places taken are rolled back and answered 503, nothing sent.
    let slow =
        SimConfig { faults: Faults { request_latency_ms: MsRange::new(200, 200), ..reliable() }, ..sim_config() };
    for max_wait in [std::time::Duration::from_secs(2), std::time::Duration::ZERO] {
        let app = std::sync::Arc::new(
            spawn_app_with(slow.clone(), |s| {
                s.checkout.max_in_flight = 6;
                s.gateway.resilience.bulkhead.max_concurrent_calls = 2;
                s.gateway.resilience.bulkhead.max_wait = max_wait;
            })
            .await,
        );
        let checkouts: Vec<_> = (0..6)
            .map(|i| {
                let app = app.clone();
                tokio::spawn(async move { app.checkout(&format!("buyer-{i}"), &[(1, 1)]).await })
            })
            .collect();
        let mut accepted = 0;
        for checkout in checkouts {
            let (status, body) = checkout.await.unwrap();
            match status {
                StatusCode::ACCEPTED => accepted += 1,
                StatusCode::SERVICE_UNAVAILABLE => {
                    assert!(max_wait.is_zero(), "refused although it could wait: {body}");
                    assert_eq!(body["meta"]["errorCode"], "PAYMENT_GATEWAY_UNAVAILABLE", "{body}");
                }
                other => panic!("{other}: {body}"),
            }
        }
        if max_wait.is_zero() {
            assert!(accepted < 6, "two places cannot take six payments of 200 ms at once");
        } else {
            assert_eq!(accepted, 6, "every admitted checkout waited for a place");
        }
        assert_eq!(app.pg_requests(), accepted, "only the accepted payments reached the PG");
    }
}
