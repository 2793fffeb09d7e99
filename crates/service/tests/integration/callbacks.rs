//! Callback intake: normal, duplicate, stale, contradictory, spoofed and unknown
//! deliveries; verified by fetching back from the PG, or by HMAC signature.

use crate::common::*;
use gateway::signature;
use gateway_sim::faults::{CallbackFaults, MsRange, OutcomeSplit};
use gateway_sim::{Faults, SimConfig};
use reqwest::StatusCode;
use serde_json::{Value, json};

fn approve_all() -> Faults {
    Faults { outcome: OutcomeSplit { limit_exceeded: 0.0, invalid_card: 0.0 }, ..reliable() }
}

async fn events(app: &TestApp, order_id: i64) -> Vec<String> {
    let attempt = app.store.attempt_by_pg_order_id(&format!("ORD{order_id:06}-1")).await.unwrap().unwrap();
    app.store.events(attempt.id).await.unwrap().into_iter().map(|(kind, _)| kind).collect()
}

fn order_id(body: &Value) -> i64 {
    body["data"]["orderId"].as_i64().unwrap()
}

#[tokio::test]
async fn duplicate_callbacks_apply_once() {
    let app =
        spawn_app(Faults { callback: CallbackFaults { duplicate_rate: 1.0, ..Default::default() }, ..approve_all() })
            .await;
    let (_, body) = app.checkout("buyer-1", &[(1, 2)]).await;
    app.pg_settled().await;
    app.wait_for_status("buyer-1", order_id(&body), "PAID").await;
    assert_eq!(app.sim.sim().ledger().counts.callbacks_delivered, 2, "both deliveries answered 200");
    assert_eq!(events(&app, order_id(&body)).await, ["duplicate_delivery"]);
    let stock = app.stock().await;
    assert_eq!((stock[0].sold, stock[0].reserved), (2, 0), "sold once");
}

#[tokio::test]
async fn stale_and_contradictory_deliveries_never_undo_the_final_status() {
    let messy = CallbackFaults { stale_rate: 1.0, contradictory_rate: 1.0, ..Default::default() };
    let app = spawn_app(Faults { callback: messy, ..approve_all() }).await;
    let (_, body) = app.checkout("buyer-1", &[(1, 1)]).await;
    app.pg_settled().await;
    let order = app.wait_for_status("buyer-1", order_id(&body), "PAID").await;
    assert_eq!(order["payment"]["status"], "SUCCESS");
    // Fetched back from the PG, the stale and the contradictory deliveries both read as
    // the PG's real status again: duplicates.
    assert_eq!(events(&app, order_id(&body)).await, ["duplicate_delivery", "duplicate_delivery"]);
    assert_eq!(app.stock().await[0].sold, 1);
}

#[tokio::test]
async fn a_spoofed_body_with_the_wrong_amount_changes_nothing() {
    let app = spawn_app(Faults { processing_delay_ms: MsRange::new(60_000, 60_000), ..approve_all() }).await;
    let (_, body) = app.checkout("buyer-1", &[(1, 1)]).await;
    let key = body["data"]["payment"]["transactionKey"].as_str().unwrap();
    let forged = json!({"transactionKey": key, "orderId": format!("ORD{:06}-1", order_id(&body)), "cardType": "SAMSUNG",
        "cardNo": "1234-5678-9814-1451", "amount": 1, "status": "SUCCESS", "reason": "정상 승인되었습니다."});
    let (status, answer) = app.post_callback(forged.to_string().as_bytes(), None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    assert_eq!(answer["meta"]["errorCode"], "CALLBACK_MISMATCH");
    let (_, order) = app.order("buyer-1", order_id(&body)).await;
    assert_eq!(order["data"]["status"], "PENDING", "the PG has not decided; the forgery did nothing");
    assert_eq!(events(&app, order_id(&body)).await, ["mismatched_callback"]);
}

#[tokio::test]
async fn a_forged_success_is_overruled_by_the_pgs_own_answer() {
    // Without a secret the PG's view decides: a body claiming SUCCESS for a transaction
    // the PG still has PENDING settles nothing.
    let app = spawn_app(Faults { processing_delay_ms: MsRange::new(60_000, 60_000), ..approve_all() }).await;
    let (_, body) = app.checkout("buyer-1", &[(1, 1)]).await;
    let key = body["data"]["payment"]["transactionKey"].as_str().unwrap();
    let forged = json!({"transactionKey": key, "orderId": format!("ORD{:06}-1", order_id(&body)), "cardType": "SAMSUNG",
        "cardNo": "1234-5678-9814-1451", "amount": 39000, "status": "SUCCESS", "reason": "정상 승인되었습니다."});
    let (status, answer) = app.post_callback(forged.to_string().as_bytes(), None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(answer["data"]["result"], "still_pending");
    let (_, order) = app.order("buyer-1", order_id(&body)).await;
    assert_eq!(order["data"]["status"], "PENDING");
}

#[tokio::test]
async fn an_unknown_transaction_or_a_malformed_body_is_refused() {
    let app = spawn_app(approve_all()).await;
    let unknown = json!({"transactionKey": "20250101:TR:abcdef", "orderId": "ORD999999-1", "cardType": "KB",
        "cardNo": "1234-5678-9814-1451", "amount": 1000, "status": "SUCCESS", "reason": null});
    let (status, answer) = app.post_callback(unknown.to_string().as_bytes(), None).await;
    assert_eq!((status, answer["meta"]["errorCode"].as_str()), (StatusCode::NOT_FOUND, Some("TRANSACTION_NOT_FOUND")));
    let (status, answer) = app.post_callback(b"{not json", None).await;
    assert_eq!((status, answer["meta"]["errorCode"].as_str()), (StatusCode::BAD_REQUEST, Some("CALLBACK_MALFORMED")));
}

#[tokio::test]
async fn with_a_secret_only_signed_callbacks_count() {
    let secret = "shared-secret-shared-secret-shared";
    let sim = SimConfig { callback_secret: Some(secret.into()), faults: approve_all(), ..sim_config() };
    let app = spawn_app_with(sim, |s| s.gateway.callback_secret = Some(secret.into())).await;
    let (_, body) = app.checkout("buyer-1", &[(4, 1)]).await;
    app.wait_for_status("buyer-1", order_id(&body), "PAID").await;

    // A contradictory delivery, correctly signed: recorded as a conflict, not applied.
    let key = app.sim.sim().ledger().transactions()[0].key.clone();
    let contradiction = json!({"transactionKey": key, "orderId": format!("ORD{:06}-1", order_id(&body)), "cardType": "SAMSUNG",
        "cardNo": "1234-5678-9814-1451", "amount": 45000, "status": "FAILED", "reason": "한도초과입니다. 다른 카드를 선택해주세요."});
    let raw = contradiction.to_string();
    let now = chrono::Utc::now().timestamp();
    let (status, answer) =
        app.post_callback(raw.as_bytes(), Some(&signature::sign(secret.as_bytes(), now, raw.as_bytes()))).await;
    assert_eq!((status, answer["data"]["result"].as_str()), (StatusCode::OK, Some("conflict")));
    assert_eq!(app.wait_for_status("buyer-1", order_id(&body), "PAID").await["payment"]["status"], "SUCCESS");

    for signature_header in [
        None,
        Some(signature::sign(b"wrong", now, raw.as_bytes())),
        Some(signature::sign(secret.as_bytes(), now - 3_600, raw.as_bytes())),
    ] {
        let (status, answer) = app.post_callback(raw.as_bytes(), signature_header.as_deref()).await;
        assert_eq!(
            (status, answer["meta"]["errorCode"].as_str()),
            (StatusCode::UNAUTHORIZED, Some("CALLBACK_UNAUTHORIZED"))
        );
    }
    assert_eq!(app.stock().await[3].sold, 1);
}
