//! The opt-in refund API (`SimConfig::refunds`): absent by default like the reference PG,
//! and with it whole and partial cancels under an `Idempotency-Key`, never beyond what
//! was paid, decided later and called back, with the payment API's faults.

use std::time::Duration;

use crate::common::*;
use axum::http::StatusCode;
use gateway_sim::faults::{OutcomeSplit, StoreThenTimeout, StoreThenTimeoutMode};
use gateway_sim::{Faults, RunningSim, SimConfig};
use serde_json::{Value, json};

/// Every payment approved, nothing delayed, no random failures.
fn approving() -> Faults {
    Faults { outcome: OutcomeSplit { limit_exceeded: 0.0, invalid_card: 0.0 }, ..reliable() }
}

async fn refunding_sim(faults: Faults) -> RunningSim {
    spawn_sim_with(SimConfig { faults, refunds: true, ..test_config() }).await
}

async fn post_cancel(sim: &RunningSim, key: &str, idempotency_key: Option<&str>, body: &Value) -> (StatusCode, Value) {
    let mut request =
        client().post(format!("{}/api/v1/payments/{key}/cancel", sim.base_url())).header("X-USER-ID", "merchant");
    if let Some(idempotency_key) = idempotency_key {
        request = request.header("Idempotency-Key", idempotency_key);
    }
    let response = request.json(body).send().await.expect("request answered");
    let status = response.status();
    (status, response.json().await.expect("JSON body"))
}

fn cancel_of(amount: i64, callback_url: &str) -> Value {
    json!({ "cancelAmount": amount, "cancelReason": "buyer cancelled", "callbackUrl": callback_url })
}

async fn settled(sim: &RunningSim) {
    tokio::time::timeout(Duration::from_secs(10), sim.sim().settled()).await.expect("processing settles");
}

#[tokio::test]
async fn without_refunds_the_cancel_paths_are_unknown_like_the_reference_pg() {
    let sim = spawn_sim(approving()).await;
    let receiver = Receiver::start().await;
    let keys = accept_and_settle(&sim, &receiver, 1).await;
    let (status, body) = post_cancel(&sim, &keys[0], Some("k1"), &cancel_of(1_000, &receiver.url)).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert_eq!(body["meta"]["message"], gateway::wire::message::UNKNOWN_PATH);
    let (status, _) =
        get_json(&format!("{}/api/v1/payments/{}/cancels", sim.base_url(), keys[0]), Some("merchant")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(sim.sim().ledger().transactions()[0].refunded(), 0);
}

#[tokio::test]
async fn a_paid_payment_is_refunded_in_parts_and_never_beyond_its_amount() {
    let sim = refunding_sim(approving()).await;
    let receiver = Receiver::start().await;
    let key = accept_and_settle(&sim, &receiver, 1).await.remove(0);

    let (status, first) = post_cancel(&sim, &key, Some("part-1"), &cancel_of(2_000, &receiver.url)).await;
    assert_eq!(status, StatusCode::OK, "{first}");
    assert_eq!(
        (first["data"]["status"].as_str(), first["data"]["cancelAmount"].as_i64()),
        (Some("PENDING"), Some(2_000))
    );
    // 5,000 paid, 2,000 cancelled or being cancelled: 3,000 is what is left.
    let (status, over) = post_cancel(&sim, &key, Some("part-2"), &cancel_of(3_001, &receiver.url)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{over}");
    assert_eq!(over["meta"]["message"], gateway::wire::message::CANCEL_AMOUNT_EXCEEDED);
    let (status, rest) = post_cancel(&sim, &key, Some("part-2"), &cancel_of(3_000, &receiver.url)).await;
    assert_eq!(status, StatusCode::OK, "{rest}");
    settled(&sim).await;

    let (status, list) = get_json(&format!("{}/api/v1/payments/{key}/cancels", sim.base_url()), Some("merchant")).await;
    assert_eq!(status, StatusCode::OK, "{list}");
    let statuses: Vec<_> = list["data"]["cancels"].as_array().unwrap().iter().map(|c| c["status"].clone()).collect();
    assert_eq!(statuses, [json!("SUCCESS"), json!("SUCCESS")]);
    assert_eq!(sim.sim().ledger().transactions()[0].refunded(), 5_000);
    let (status, _) = post_cancel(&sim, &key, Some("part-3"), &cancel_of(1, &receiver.url)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "nothing is left to cancel");

    let called_back: Vec<_> = receiver
        .bodies()
        .into_iter()
        .filter(|b| b.get("cancelKey").is_some())
        .map(|b| (b["cancelKey"].as_str().unwrap().to_string(), b["status"].clone()))
        .collect();
    let mut expected = vec![
        (first["data"]["cancelKey"].as_str().unwrap().to_string(), json!("SUCCESS")),
        (rest["data"]["cancelKey"].as_str().unwrap().to_string(), json!("SUCCESS")),
    ];
    let mut called_back_sorted = called_back.clone();
    called_back_sorted.sort_by(|a, b| a.0.cmp(&b.0));
    expected.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(called_back_sorted, expected, "each cancel called back once with its result");
}

#[tokio::test]
async fn the_same_idempotency_key_answers_the_cancel_it_made_and_never_refunds_twice() {
    let sim = refunding_sim(approving()).await;
    let receiver = Receiver::start().await;
    let key = accept_and_settle(&sim, &receiver, 1).await.remove(0);
    let (_, first) = post_cancel(&sim, &key, Some("k1"), &cancel_of(1_000, &receiver.url)).await;
    settled(&sim).await;
    let (status, again) = post_cancel(&sim, &key, Some("k1"), &cancel_of(1_000, &receiver.url)).await;
    assert_eq!(status, StatusCode::OK, "{again}");
    assert_eq!(again["data"]["cancelKey"], first["data"]["cancelKey"]);
    assert_eq!(again["data"]["status"], "SUCCESS", "the cancel as it stands now");
    let (status, reused) = post_cancel(&sim, &key, Some("k1"), &cancel_of(2_000, &receiver.url)).await;
    assert_eq!(
        (status, reused["meta"]["message"].clone()),
        (StatusCode::CONFLICT, json!(gateway::wire::message::IDEMPOTENCY_KEY_REUSED))
    );
    for missing in [None, Some(""), Some(&*"k".repeat(301))] {
        let (status, body) = post_cancel(&sim, &key, missing, &cancel_of(1_000, &receiver.url)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{missing:?}: {body}");
    }
    settled(&sim).await;
    let ledger = sim.sim().ledger();
    assert_eq!((ledger.transactions()[0].cancels.len(), ledger.transactions()[0].refunded()), (1, 1_000));
}

#[tokio::test]
async fn only_a_paid_payment_of_this_merchant_can_be_cancelled() {
    let declining = Faults { outcome: OutcomeSplit { limit_exceeded: 1.0, invalid_card: 0.0 }, ..reliable() };
    let sim = refunding_sim(declining).await;
    let receiver = Receiver::start().await;
    let key = accept_and_settle(&sim, &receiver, 1).await.remove(0);
    let (status, body) = post_cancel(&sim, &key, Some("k1"), &cancel_of(1_000, &receiver.url)).await;
    assert_eq!(
        (status, body["meta"]["message"].clone()),
        (StatusCode::BAD_REQUEST, json!(gateway::wire::message::CANCEL_NOT_PAID))
    );
    let (status, _) = post_cancel(&sim, "20261208:TR:000000", Some("k1"), &cancel_of(1_000, &receiver.url)).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    for bad in [json!({ "cancelAmount": 0, "cancelReason": "x" }), json!({ "cancelAmount": 10.5, "cancelReason": "x" })]
    {
        let (status, body) = post_cancel(&sim, &key, Some("k2"), &bad).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {body}");
    }
    assert!(sim.sim().ledger().transactions()[0].cancels.is_empty());
}

#[tokio::test]
async fn a_declined_cancel_gives_its_amount_back() {
    let sim = refunding_sim(Faults { cancel_decline_rate: 1.0, ..approving() }).await;
    let receiver = Receiver::start().await;
    let key = accept_and_settle(&sim, &receiver, 1).await.remove(0);
    let (status, _) = post_cancel(&sim, &key, Some("k1"), &cancel_of(5_000, &receiver.url)).await;
    assert_eq!(status, StatusCode::OK);
    settled(&sim).await;
    let (_, list) = get_json(&format!("{}/api/v1/payments/{key}/cancels", sim.base_url()), Some("merchant")).await;
    assert_eq!(list["data"]["cancels"][0]["status"], "FAILED");
    assert_eq!(list["data"]["cancels"][0]["reason"], gateway::wire::message::CANCEL_DECLINED);
    let (status, body) = post_cancel(&sim, &key, Some("k2"), &cancel_of(5_000, &receiver.url)).await;
    assert_eq!(status, StatusCode::OK, "the whole amount is cancellable again: {body}");
}

#[tokio::test]
async fn concurrent_cancels_never_take_more_than_was_paid() {
    let sim = refunding_sim(approving()).await;
    let receiver = Receiver::start().await;
    let key = accept_and_settle(&sim, &receiver, 1).await.remove(0);
    let sim = std::sync::Arc::new(sim);
    let attempts = (0..12).map(|i| {
        let (sim, key, url) = (sim.clone(), key.clone(), receiver.url.clone());
        tokio::spawn(async move { post_cancel(&sim, &key, Some(&format!("k{i}")), &cancel_of(1_000, &url)).await.0 })
    });
    let answers: Vec<StatusCode> =
        futures_util::future::join_all(attempts).await.into_iter().map(Result::unwrap).collect();
    assert_eq!(answers.iter().filter(|s| **s == StatusCode::OK).count(), 5, "{answers:?}");
    assert_eq!(answers.iter().filter(|s| **s == StatusCode::BAD_REQUEST).count(), 7, "{answers:?}");
    settled(&sim).await;
    assert_eq!(sim.sim().ledger().transactions()[0].refunded(), 5_000);
}

#[tokio::test]
async fn a_cancel_whose_answer_was_lost_is_stored_and_answered_again_under_its_key() {
    let stt = StoreThenTimeout { mode: StoreThenTimeoutMode::Drop, rate: 1.0, delay_ms: 0 };
    let sim = refunding_sim(approving()).await;
    let receiver = Receiver::start().await;
    let key = accept_and_settle(&sim, &receiver, 1).await.remove(0);
    sim.sim().set_faults(Faults { store_then_timeout: Some(stt), ..approving() }).unwrap();
    let lost = client()
        .post(format!("{}/api/v1/payments/{key}/cancel", sim.base_url()))
        .header("X-USER-ID", "merchant")
        .header("Idempotency-Key", "k1")
        .json(&cancel_of(1_000, &receiver.url))
        .send()
        .await
        .and_then(|r| r.error_for_status());
    let read = match lost {
        Ok(response) => response.bytes().await.map(|_| ()),
        Err(error) => Err(error),
    };
    assert!(read.is_err(), "the answer never arrives");
    sim.sim().set_faults(approving()).unwrap();
    let (status, again) = post_cancel(&sim, &key, Some("k1"), &cancel_of(1_000, &receiver.url)).await;
    assert_eq!(status, StatusCode::OK, "{again}");
    settled(&sim).await;
    let ledger = sim.sim().ledger();
    assert_eq!((ledger.transactions()[0].cancels.len(), ledger.counts.cancel_requests), (1, 2));
}

#[tokio::test]
async fn a_pg_failing_with_500_stores_no_cancel() {
    let sim = refunding_sim(approving()).await;
    let receiver = Receiver::start().await;
    let key = accept_and_settle(&sim, &receiver, 1).await.remove(0);
    sim.sim().set_faults(Faults { request_failure_rate: 1.0, ..approving() }).unwrap();
    let (status, body) = post_cancel(&sim, &key, Some("k1"), &cancel_of(1_000, &receiver.url)).await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR, "{body}");
    assert_eq!(body["meta"]["message"], gateway::wire::message::UNSTABLE);
    assert!(sim.sim().ledger().transactions()[0].cancels.is_empty(), "nothing stored: safe to send again");
}
