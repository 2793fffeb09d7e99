//! Each fault mode, observed from the outside: a client with a short timeout, the
//! ledger, and a callback receiver that counts drops, duplicates and order.

use std::time::Duration;

use crate::common::*;
use axum::http::StatusCode;
use gateway::signature::SignatureHeader;
use gateway_sim::faults::{CallbackFaults, CallbackRetry, DownMode, MsRange, StoreThenTimeout, StoreThenTimeoutMode};
use gateway_sim::{Faults, SimConfig};
use serde_json::{Value, json};

fn short_client(timeout_ms: u64) -> reqwest::Client {
    reqwest::Client::builder().timeout(Duration::from_millis(timeout_ms)).build().unwrap()
}

async fn try_post(
    sim: &gateway_sim::RunningSim,
    client: &reqwest::Client,
) -> Result<reqwest::Response, reqwest::Error> {
    client
        .post(format!("{}/api/v1/payments", sim.base_url()))
        .header("X-USER-ID", "merchant")
        .json(&payment_body("ORD000123-1", "http://localhost:8080/cb"))
        .send()
        .await
}

async fn put_faults(control_url: &str, patch: Value) -> (StatusCode, Value) {
    let response = client().put(format!("{control_url}/sim/faults")).json(&patch).send().await.unwrap();
    let status = response.status();
    (status, response.json().await.unwrap())
}

#[tokio::test]
async fn down_refuse_closes_the_port_and_reopens_it_on_the_same_address() {
    let sim = spawn_sim_with(SimConfig {
        control_listen: Some("127.0.0.1:0".parse().unwrap()),
        faults: reliable(),
        ..test_config()
    })
    .await;
    let (status, _) = put_faults(&sim.control_url(), json!({"down": "refuse"})).await;
    assert_eq!(status, StatusCode::OK);

    // The listener closes asynchronously after the switch; wait for the refusal explicitly.
    let fresh = || reqwest::Client::builder().pool_max_idle_per_host(0).build().unwrap();
    let refused = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match try_post(&sim, &fresh()).await {
                Err(e) if e.is_connect() => return e,
                _ => tokio::time::sleep(Duration::from_millis(5)).await,
            }
        }
    })
    .await
    .expect("port closes");
    assert!(refused.is_connect());
    let before = sim.sim().ledger().counts.payment_requests;
    assert!(try_post(&sim, &fresh()).await.unwrap_err().is_connect());
    assert_eq!(sim.sim().ledger().counts.payment_requests, before, "a refused connection reaches nothing");

    put_faults(&sim.control_url(), json!({"down": null})).await;
    let back = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            if let Ok(response) = try_post(&sim, &fresh()).await {
                return response;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("port reopens");
    assert_eq!(back.status(), StatusCode::OK);
}

#[tokio::test]
async fn down_unavailable_answers_503_at_once_and_stores_nothing() {
    let sim = spawn_sim(Faults {
        down: Some(DownMode::Unavailable),
        request_latency_ms: MsRange::new(5_000, 5_000),
        ..reliable()
    })
    .await;
    let response = try_post(&sim, &short_client(1_000)).await.expect("answered before the latency fault could apply");
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["meta"]["errorCode"], "Service Unavailable");
    let lookup = get_json(&format!("{}/api/v1/payments?orderId=ORD000123-1", sim.base_url()), Some("merchant")).await;
    assert_eq!(lookup.0, StatusCode::SERVICE_UNAVAILABLE, "the status API is down too");
    assert!(sim.sim().ledger().transactions().is_empty());
    assert_eq!(sim.sim().ledger().counts.payment_requests, 1);
}

#[tokio::test]
async fn payments_unavailable_answers_payments_503_while_lookups_answer() {
    let sim = spawn_sim(reliable()).await;
    let accepted = try_post(&sim, &short_client(1_000)).await.unwrap();
    assert_eq!(accepted.status(), StatusCode::OK);
    sim.sim().set_faults(Faults { down: Some(DownMode::PaymentsUnavailable), ..reliable() }).unwrap();
    let refused = try_post(&sim, &short_client(1_000)).await.unwrap();
    assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
    let lookup = get_json(&format!("{}/api/v1/payments?orderId=ORD000123-1", sim.base_url()), Some("merchant")).await;
    assert_eq!(lookup.0, StatusCode::OK, "the status API answers");
    assert_eq!(lookup.1["data"]["transactions"].as_array().unwrap().len(), 1, "only the payment taken before");
    assert_eq!(sim.sim().ledger().counts.payment_requests, 2);
}

#[tokio::test]
async fn hang_accepts_and_never_answers() {
    let sim = spawn_sim(Faults { hang: true, ..reliable() }).await;
    let error = try_post(&sim, &short_client(200)).await.unwrap_err();
    assert!(error.is_timeout(), "{error}");
    assert_eq!(sim.sim().ledger().counts.payment_requests, 1, "the request arrived");
    assert!(sim.sim().ledger().transactions().is_empty());
}

#[tokio::test]
async fn store_then_delay_times_the_client_out_but_the_transaction_exists() {
    let stt = StoreThenTimeout { mode: StoreThenTimeoutMode::Delay, rate: 1.0, delay_ms: 60_000 };
    let sim = spawn_sim(Faults { store_then_timeout: Some(stt), ..reliable() }).await;
    let error = try_post(&sim, &short_client(300)).await.unwrap_err();
    assert!(error.is_timeout(), "{error}");
    let ledger = get_json(&format!("{}/sim/ledger", sim.control_url()), None).await.1;
    let txs = ledger["transactions"].as_array().unwrap();
    assert_eq!(txs.len(), 1, "stored although the caller saw a timeout");
    assert_eq!(txs[0]["orderId"], "ORD000123-1");
}

#[tokio::test]
async fn store_then_drop_breaks_the_connection_but_the_transaction_exists() {
    let stt = StoreThenTimeout { mode: StoreThenTimeoutMode::Drop, rate: 1.0, delay_ms: 0 };
    let sim = spawn_sim(Faults { store_then_timeout: Some(stt), ..reliable() }).await;
    let outcome = async {
        let response = try_post(&sim, &short_client(5_000)).await?;
        response.bytes().await
    }
    .await;
    let error = outcome.expect_err("no complete answer");
    assert!(!error.is_timeout() && !error.is_connect(), "dropped after the request was sent: {error}");
    assert_eq!(sim.sim().ledger().transactions().len(), 1);
}

#[tokio::test]
async fn store_then_timeout_rate_applies_to_a_share_of_payments() {
    let stt = StoreThenTimeout { mode: StoreThenTimeoutMode::Drop, rate: 0.5, delay_ms: 0 };
    let sim = spawn_sim(Faults { store_then_timeout: Some(stt), ..reliable() }).await;
    let mut answered = 0;
    for _ in 0..200 {
        if let Ok(r) = try_post(&sim, &short_client(5_000)).await
            && r.bytes().await.is_ok()
        {
            answered += 1;
        }
    }
    assert_eq!(sim.sim().ledger().transactions().len(), 200, "every one stored");
    assert!((70..=130).contains(&answered), "about half answered: {answered}");
}

#[tokio::test]
async fn dropped_callbacks_are_never_sent_but_the_status_is_final() {
    let receiver = Receiver::start().await;
    let sim =
        spawn_sim(Faults { callback: CallbackFaults { drop_rate: 1.0, ..Default::default() }, ..reliable() }).await;
    let keys = accept_and_settle(&sim, &receiver, 10).await;
    assert!(receiver.deliveries().is_empty());
    assert_eq!(sim.sim().ledger().counts.callbacks_dropped, 10);
    let (_, body) = get_json(&format!("{}/api/v1/payments/{}", sim.base_url(), keys[0]), Some("merchant")).await;
    assert_ne!(body["data"]["status"], "PENDING", "the status API knows the result");
}

#[tokio::test]
async fn duplicate_callbacks_arrive_twice_identically() {
    let receiver = Receiver::start().await;
    let sim =
        spawn_sim(Faults { callback: CallbackFaults { duplicate_rate: 1.0, ..Default::default() }, ..reliable() })
            .await;
    accept_and_settle(&sim, &receiver, 5).await;
    let deliveries = receiver.deliveries();
    assert_eq!(deliveries.len(), 10);
    for key in deliveries.iter().map(|d| d.body["transactionKey"].clone()) {
        let same: Vec<_> = deliveries.iter().filter(|d| d.body["transactionKey"] == key).collect();
        assert_eq!(same.len(), 2);
        assert_eq!(same[0].raw, same[1].raw);
    }
}

#[tokio::test]
async fn stale_and_contradictory_deliveries_follow_the_final_one() {
    let receiver = Receiver::start().await;
    let faults = Faults {
        callback: CallbackFaults { stale_rate: 1.0, contradictory_rate: 1.0, ..Default::default() },
        ..reliable()
    };
    let sim = spawn_sim(faults).await;
    accept_and_settle(&sim, &receiver, 1).await;
    let bodies = receiver.bodies();
    assert_eq!(bodies.len(), 3, "final, stale PENDING, contradictory");
    let statuses: Vec<&str> = bodies.iter().map(|b| b["status"].as_str().unwrap()).collect();
    assert_ne!(statuses[0], "PENDING");
    assert_eq!(statuses[1], "PENDING");
    assert_eq!(bodies[1]["reason"], Value::Null);
    assert_ne!(statuses[2], statuses[0], "contradicts the real outcome");
    assert_ne!(statuses[2], "PENDING");
    let truth = sim.sim().ledger().transactions()[0].status;
    assert_eq!(serde_json::to_value(truth).unwrap(), json!(statuses[0]), "the ledger keeps the real outcome");
}

#[tokio::test]
async fn callback_delay_holds_the_delivery_back() {
    let receiver = Receiver::start().await;
    let sim = spawn_sim(Faults {
        callback: CallbackFaults { delay_ms: MsRange::new(150, 150), ..Default::default() },
        ..reliable()
    })
    .await;
    let accepted_at = std::time::Instant::now();
    accept_and_settle(&sim, &receiver, 1).await;
    let delivered_after = receiver.deliveries()[0].at - accepted_at;
    assert!(delivered_after >= Duration::from_millis(150), "{delivered_after:?}");
}

#[tokio::test]
async fn opt_in_callback_retries_back_off_until_delivered() {
    let receiver = Receiver::start().await;
    receiver.answer_with(&[StatusCode::INTERNAL_SERVER_ERROR, StatusCode::SERVICE_UNAVAILABLE]);
    let retry = CallbackRetry { max_attempts: 4, initial_backoff_ms: 20 };
    let sim = spawn_sim(Faults { callback: CallbackFaults { retry, ..Default::default() }, ..reliable() }).await;
    accept_and_settle(&sim, &receiver, 1).await;
    let deliveries = receiver.deliveries();
    assert_eq!(deliveries.len(), 3, "two refusals, then delivered, then no more");
    assert!(deliveries[1].at - deliveries[0].at >= Duration::from_millis(20));
    assert!(deliveries[2].at - deliveries[1].at >= Duration::from_millis(40), "exponential backoff");
    let counts = sim.sim().ledger().counts;
    assert_eq!((counts.callbacks_failed, counts.callbacks_delivered), (2, 1));
}

#[tokio::test]
async fn callbacks_are_signed_with_hmac_when_a_secret_is_set() {
    let receiver = Receiver::start().await;
    let sim = spawn_sim_with(SimConfig {
        callback_secret: Some("shared-secret".into()),
        faults: reliable(),
        ..test_config()
    })
    .await;
    accept_and_settle(&sim, &receiver, 1).await;
    let delivery = &receiver.deliveries()[0];
    let header = delivery.headers.get("X-PG-Signature").expect("signed").to_str().unwrap();
    let signature = SignatureHeader::parse(header).unwrap();
    assert!(signature.verify(b"shared-secret", &delivery.raw));
    assert!(!signature.verify(b"wrong-secret", &delivery.raw));
    let now = chrono::Utc::now().timestamp();
    assert!((now - signature.timestamp).abs() <= 5, "timestamp is the sending time");
}

#[tokio::test]
async fn the_same_seed_reproduces_answers_and_keys() {
    async fn run() -> Vec<(u16, Value)> {
        let sim = spawn_sim(Faults::instant()).await;
        let mut seen = Vec::new();
        for i in 0..40 {
            let (status, body) =
                post_payment(&sim, "merchant", &payment_body(&format!("ORDER-{i:04}"), "http://localhost:8080/cb"))
                    .await;
            seen.push((status.as_u16(), body["data"]["transactionKey"].clone()));
        }
        seen
    }
    let first = run().await;
    assert!(first.iter().any(|(s, _)| *s == 500) && first.iter().any(|(s, _)| *s == 200));
    assert_eq!(first, run().await);
}

#[tokio::test]
async fn faults_are_read_and_patched_over_http() {
    let sim = spawn_sim(Faults::default()).await;
    let (status, current) = get_json(&format!("{}/sim/faults", sim.control_url()), None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(current, serde_json::to_value(Faults::default()).unwrap());

    let (status, patched) =
        put_faults(&sim.control_url(), json!({"requestFailureRate": 0.9, "callback": {"dropRate": 0.5}})).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(patched["requestFailureRate"], 0.9);
    assert_eq!(patched["callback"]["dropRate"], 0.5);
    assert_eq!(patched["requestLatencyMs"], json!({"min": 100, "max": 500}), "untouched knobs keep their value");
    assert_eq!(sim.sim().faults().request_failure_rate, 0.9);

    for bad in [json!({"requestFailureRate": 2}), json!({"noSuchKnob": 1}), json!({"down": "sideways"}), json!([1])] {
        let (status, body) = put_faults(&sim.control_url(), bad.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}");
        assert!(body["error"].is_string());
    }
    assert_eq!(sim.sim().faults().request_failure_rate, 0.9, "refused patches change nothing");
}

#[tokio::test]
async fn the_ledger_lists_transactions_with_masked_cards_and_counts() {
    let receiver = Receiver::start().await;
    let sim = spawn_sim(reliable()).await;
    let keys = accept_and_settle(&sim, &receiver, 2).await;
    let response = client().get(format!("{}/sim/ledger", sim.control_url())).send().await.unwrap();
    let text = response.text().await.unwrap();
    assert!(!text.contains("1234-5678-9814-1451"), "no full card number in the ledger view");
    let ledger: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(ledger["counts"]["paymentRequests"], 2);
    assert_eq!(ledger["counts"]["callbacksDelivered"], 2);
    let txs = ledger["transactions"].as_array().unwrap();
    assert_eq!(txs.iter().map(|t| t["transactionKey"].as_str().unwrap()).collect::<Vec<_>>(), keys);
    for tx in txs {
        assert_eq!(tx["cardLast4"], "1451");
        assert_ne!(tx["status"], "PENDING");
        assert_eq!(tx["callbacksDelivered"], 1);
        assert!(tx["finalizedAt"].is_string());
    }
}
