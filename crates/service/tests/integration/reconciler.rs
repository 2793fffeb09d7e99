//! The reconciler: lost callbacks, unknown outcomes with and without a PG transaction,
//! a crash between the checkout transactions, two transactions for one attempt, a PG
//! outage during reconciliation; plus stock conservation and the callback/reconciler race.

use std::sync::Arc;

use crate::common::*;
use gateway::wire::{CardType, PaymentRequest};
use gateway_sim::Faults;
use gateway_sim::faults::{CallbackFaults, DownMode, MsRange, OutcomeSplit, StoreThenTimeout, StoreThenTimeoutMode};
use reqwest::StatusCode;
use service::domain::{BuyerId, CheckoutLine, PaymentStatus, ProductId, Quantity};
use service::store::NewOrder;

fn no_callbacks() -> CallbackFaults {
    CallbackFaults { drop_rate: 1.0, ..Default::default() }
}

fn approve_all() -> OutcomeSplit {
    OutcomeSplit { limit_exceeded: 0.0, invalid_card: 0.0 }
}

fn order_id(body: &serde_json::Value) -> i64 {
    body["data"]["orderId"].as_i64().unwrap()
}

#[tokio::test]
async fn a_lost_callback_is_settled_by_asking_the_pg() {
    let app = spawn_app(Faults { callback: no_callbacks(), outcome: approve_all(), ..reliable() }).await;
    let (_, body) = app.checkout("buyer-1", &[(1, 1)]).await;
    app.pg_settled().await;
    let (_, order) = app.order("buyer-1", order_id(&body)).await;
    assert_eq!(order["data"]["status"], "PENDING", "the callback never came");

    let report = app.reconcile().await;
    assert_eq!((report.examined, report.settled), (1, 1));
    let (_, order) = app.order("buyer-1", order_id(&body)).await;
    assert_eq!(order["data"]["status"], "PAID");
    assert_eq!(app.reconcile().await.examined, 0, "settled attempts are not asked about again");
}

#[tokio::test]
async fn a_timed_out_payment_the_pg_stored_is_adopted_by_order_id() {
    let stt = StoreThenTimeout { mode: StoreThenTimeoutMode::Drop, rate: 1.0, delay_ms: 0 };
    let app = spawn_app(Faults {
        store_then_timeout: Some(stt),
        callback: no_callbacks(),
        outcome: approve_all(),
        ..reliable()
    })
    .await;
    let (status, body) = app.checkout("buyer-1", &[(2, 3)]).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    app.pg_settled().await;
    app.reconcile().await;
    let (_, order) = app.order("buyer-1", order_id(&body)).await;
    assert_eq!(order["data"]["status"], "PAID");
    let pg_key = app.sim.sim().ledger().transactions()[0].key.clone();
    assert_eq!(order["data"]["payment"]["transactionKey"], pg_key.as_str(), "the PG's transaction was adopted");
    assert_eq!(app.pg_requests(), 1, "never re-sent");
    assert_eq!(app.stock().await[1].sold, 3);
}

#[tokio::test]
async fn a_timed_out_payment_the_pg_never_received_fails_after_the_acceptance_window() {
    let app = spawn_app(Faults { hang: true, ..reliable() }).await;
    let (status, body) = app.checkout("buyer-1", &[(4, 2)]).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    app.sim.sim().set_faults(reliable()).unwrap();
    assert_eq!(app.pg_transactions(), 0);

    // Inside the acceptance window the missing transaction may still be on its way.
    let report = app.reconcile().await;
    if report.not_received == 0 {
        assert_eq!(report.still_pending, 1);
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        assert_eq!(app.reconcile().await.not_received, 1);
    }
    let (_, order) = app.order("buyer-1", order_id(&body)).await;
    assert_eq!(order["data"]["status"], "FAILED");
    assert_eq!(order["data"]["payment"]["reason"], "결제 요청이 PG에 도달하지 않았습니다.");
    let stock = app.stock().await;
    assert_eq!((stock[3].available, stock[3].reserved), (1000, 0), "stock released");
}

#[tokio::test]
async fn a_crash_between_the_checkout_transactions_is_settled() {
    let app = spawn_app(Faults { outcome: approve_all(), callback: no_callbacks(), ..reliable() }).await;
    let new_order = |card_last4: &str| NewOrder {
        buyer: BuyerId::parse("buyer-1").unwrap(),
        priced: service::domain::price([(
            CheckoutLine { product_id: ProductId(5), quantity: Quantity::parse(1).unwrap() },
            service::domain::Listing { name: "노트북 거치대".into(), price: service::domain::Money::won(19_900) },
        )])
        .unwrap(),
        gateway: "pg".into(),
        card_type: service::domain::CardType::Kb,
        card_last4: card_last4.into(),
        now: service::domain::Timestamp::now() - std::time::Duration::from_secs(1),
        idempotency_key: None,
    };
    // Crashed before the PG call: REQUESTED and nothing at the PG.
    let never_sent = app.store.create_order(new_order("1111")).await.unwrap();
    // Crashed after the PG accepted: REQUESTED here, a transaction there.
    let sent = app.store.create_order(new_order("2222")).await.unwrap();
    let client = reqwest::Client::new();
    let request = PaymentRequest {
        order_id: sent.pg_order_id.clone(),
        card_type: CardType::Kb,
        card_no: "1234-5678-9814-2222".into(),
        amount: sent.amount.get(),
        callback_url: "http://127.0.0.1:9/cb".into(),
    };
    let answer = client
        .post(format!("{}/api/v1/payments", app.sim.base_url()))
        .header("X-USER-ID", "payguard")
        .json(&request)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), StatusCode::OK);
    app.pg_settled().await;

    let report = app.reconcile().await;
    assert_eq!(report.examined, 2);
    let status = |id: service::domain::OrderId| {
        let store = app.store.clone();
        async move { store.order(id).await.unwrap().unwrap().attempt.status }
    };
    assert_eq!(status(sent.order_id).await, PaymentStatus::Success);
    assert_eq!(
        status(never_sent.order_id).await,
        PaymentStatus::Failed,
        "older than the acceptance window, unknown to the PG"
    );
    let stock = app.stock().await;
    assert_eq!((stock[4].sold, stock[4].reserved), (1, 0));
}

#[tokio::test]
async fn a_second_success_for_one_attempt_is_flagged_as_a_double_charge() {
    let stt = StoreThenTimeout { mode: StoreThenTimeoutMode::Drop, rate: 1.0, delay_ms: 0 };
    let app = spawn_app(Faults {
        store_then_timeout: Some(stt),
        callback: no_callbacks(),
        outcome: approve_all(),
        ..reliable()
    })
    .await;
    let (_, body) = app.checkout("buyer-1", &[(1, 1)]).await;
    let pg_order_id = format!("ORD{:06}-1", order_id(&body));
    // The PG is not idempotent: a second POST for the same orderId (by anyone) charges again.
    app.sim.sim().set_faults(Faults { callback: no_callbacks(), outcome: approve_all(), ..reliable() }).unwrap();
    let request = PaymentRequest {
        order_id: pg_order_id.clone(),
        card_type: CardType::Samsung,
        card_no: "1234-5678-9814-1451".into(),
        amount: 39_000,
        callback_url: "http://127.0.0.1:9/cb".into(),
    };
    reqwest::Client::new()
        .post(format!("{}/api/v1/payments", app.sim.base_url()))
        .header("X-USER-ID", "payguard")
        .json(&request)
        .send()
        .await
        .unwrap();
    app.pg_settled().await;

    let report = app.reconcile().await;
    assert_eq!(report.double_charges, 1);
    let (_, order) = app.order("buyer-1", order_id(&body)).await;
    assert_eq!(order["data"]["status"], "PAID", "one SUCCESS is kept");
    assert_eq!(order["data"]["anomaly"], "double_charge", "the other is flagged for a refund");
    let keys: Vec<String> = app.sim.sim().ledger().transactions().iter().map(|t| t.key.clone()).collect();
    assert_eq!(order["data"]["payment"]["transactionKey"], keys[0].as_str(), "the oldest success is kept");
    assert_eq!(app.stock().await[0].sold, 1, "sold once");
}

#[tokio::test]
async fn a_pg_outage_during_reconciliation_postpones_and_later_settles() {
    let app = spawn_app(Faults { callback: no_callbacks(), outcome: approve_all(), ..reliable() }).await;
    let (_, body) = app.checkout("buyer-1", &[(3, 1)]).await;
    app.pg_settled().await;
    app.sim.sim().set_faults(Faults { down: Some(DownMode::Unavailable), ..reliable() }).unwrap();
    let report = app.reconcile().await;
    assert_eq!((report.examined, report.errors, report.settled), (1, 1, 0));
    let (_, order) = app.order("buyer-1", order_id(&body)).await;
    assert_eq!(order["data"]["status"], "PENDING", "nothing decided without the PG");

    app.gateway.status_breaker().force_open();
    assert_eq!(app.reconcile().await.paused, ["pg"], "an open status breaker pauses reconciliation");
    app.gateway.status_breaker().reset();
    app.sim.sim().set_faults(reliable()).unwrap();
    assert_eq!(app.reconcile().await.settled, 1);
    assert_eq!(app.order("buyer-1", order_id(&body)).await.1["data"]["status"], "PAID");
}

#[tokio::test]
async fn an_attempt_that_cannot_be_settled_for_long_is_flagged_stuck() {
    let app = spawn_app_with(
        gateway_sim::SimConfig {
            faults: Faults { processing_delay_ms: MsRange::new(600_000, 600_000), ..reliable() },
            ..sim_config()
        },
        |s| s.reconciler.stuck_after_checks = 3,
    )
    .await;
    let (_, body) = app.checkout("buyer-1", &[(1, 1)]).await;
    for _ in 0..3 {
        assert_eq!(app.reconcile().await.still_pending, 1);
    }
    let (_, order) = app.order("buyer-1", order_id(&body)).await;
    assert_eq!(order["data"]["payment"]["stuck"], true, "visible in the API");
    assert_eq!(order["data"]["status"], "PENDING");
}

#[tokio::test]
async fn stock_is_conserved_across_every_outcome() {
    let app =
        spawn_app(Faults { request_failure_rate: 0.4, processing_delay_ms: MsRange::new(0, 5), ..Faults::instant() })
            .await;
    let mut statuses = std::collections::HashMap::new();
    for i in 0..60 {
        let product = 1 + i % 5;
        if i == 20 {
            app.gateway.payment_breaker().force_open();
        }
        if i == 30 {
            app.gateway.payment_breaker().reset();
            app.sim.sim().set_faults(Faults { request_failure_rate: 1.0, ..Faults::instant() }).unwrap();
        }
        if i == 40 {
            app.sim
                .sim()
                .set_faults(Faults {
                    request_failure_rate: 0.4,
                    processing_delay_ms: MsRange::new(0, 5),
                    ..Faults::instant()
                })
                .unwrap();
        }
        let (status, _) = app.checkout("buyer-1", &[(product, 1 + i % 3)]).await;
        *statuses.entry(status.as_u16()).or_insert(0) += 1;
        assert_stock_conserved(&app.stock().await);
    }
    assert!(statuses.contains_key(&202) && statuses.contains_key(&503), "{statuses:?}");
    app.pg_settled().await;
    app.reconcile().await;
    let stock = app.stock().await;
    assert_stock_conserved(&stock);
    assert!(stock.iter().all(|s| s.reserved == 0), "everything settled, nothing left reserved: {stock:?}");
    let (unsettled, _) = app.store.unsettled().await.unwrap();
    assert_eq!(unsettled, 0);
}

#[tokio::test]
async fn callback_and_reconciler_racing_never_apply_twice() {
    let app = Arc::new(spawn_app(Faults { callback: no_callbacks(), ..reliable() }).await);
    let mut keys = Vec::new();
    for i in 0..40 {
        let (_, body) = app.checkout("buyer-1", &[(1 + i % 5, 1)]).await;
        keys.push(body["data"]["payment"]["transactionKey"].as_str().unwrap().to_string());
    }
    app.pg_settled().await;
    // Every PG transaction is final; now deliver each callback while passes run.
    let mut tasks = Vec::new();
    for tx in app.sim.sim().ledger().transactions().to_vec() {
        let app = app.clone();
        tasks.push(tokio::spawn(async move {
            let body = serde_json::to_vec(&tx.detail()).unwrap();
            app.post_callback(&body, None).await.0
        }));
    }
    for _ in 0..4 {
        let app = app.clone();
        tasks.push(tokio::spawn(async move {
            app.reconcile().await;
            StatusCode::OK
        }));
    }
    for task in tasks {
        assert_eq!(task.await.unwrap(), StatusCode::OK);
    }
    let stock = app.stock().await;
    assert_stock_conserved(&stock);
    assert_eq!(stock.iter().map(|s| s.reserved).sum::<i64>(), 0);
    let pg_successes = app
        .sim
        .sim()
        .ledger()
        .transactions()
        .iter()
        .filter(|t| t.status == gateway::wire::TransactionStatus::Success)
        .count() as i64;
    assert_eq!(stock.iter().map(|s| s.sold).sum::<i64>(), pg_successes, "each success sold exactly once");
    for key in keys {
        let pg_status = app.sim.sim().ledger().get(&key).unwrap().status;
        let tx = app.sim.sim().ledger().get(&key).unwrap().clone();
        let ours = app.store.attempt_by_pg_order_id(&tx.order_id).await.unwrap().unwrap().status;
        assert_eq!(
            ours.as_str(),
            serde_json::to_value(pg_status).unwrap().as_str().unwrap(),
            "our status equals the PG's"
        );
    }
}

#[tokio::test]
async fn a_full_batch_asks_for_the_next_pass_at_once_and_lookups_keep_to_their_rate() {
    let faults = Faults { callback: no_callbacks(), outcome: approve_all(), ..reliable() };
    let app = spawn_app_with(gateway_sim::SimConfig { faults, ..sim_config() }, |s| {
        s.reconciler.batch_size = 5;
        s.reconciler.max_lookups_per_second = 20;
    })
    .await;
    for _ in 0..12 {
        assert_eq!(app.checkout("buyer-1", &[(1, 1)]).await.0, StatusCode::ACCEPTED);
    }
    app.pg_settled().await;
    let started = std::time::Instant::now();
    let mut passes = Vec::new();
    loop {
        let report = app.reconcile().await;
        passes.push((report.examined, report.more_due));
        if !report.more_due {
            break;
        }
    }
    assert_eq!(passes, [(5, true), (5, true), (2, false)], "full batches say more is waiting");
    assert_eq!(app.sim.sim().ledger().counts.status_queries, 12);
    // 12 lookups at 20 per second with no burst cannot take less than 11/20 s.
    assert!(started.elapsed() >= std::time::Duration::from_millis(550), "{:?}", started.elapsed());
    let (pending, _) = app.store.unsettled().await.unwrap();
    assert_eq!(pending, 0);
}

#[tokio::test]
async fn leases_are_renewed_while_a_slow_pass_works_so_no_one_else_takes_them() {
    let faults = Faults { callback: no_callbacks(), outcome: approve_all(), ..reliable() };
    let app = spawn_app_with(gateway_sim::SimConfig { faults, ..sim_config() }, |s| {
        s.reconciler.lease_ms = 300;
        s.gateway.resilience.response_timeout = std::time::Duration::from_millis(1_500);
    })
    .await;
    for _ in 0..3 {
        assert_eq!(app.checkout("buyer-1", &[(1, 1)]).await.0, StatusCode::ACCEPTED);
    }
    app.pg_settled().await;
    // Lookups now hang until their 1.5 s timeout: the pass outlives its 300 ms leases.
    app.sim.sim().set_faults(Faults { hang: true, ..reliable() }).unwrap();
    let slow = tokio::spawn({
        let reconciler = app.state.reconciler.clone();
        async move { reconciler.run_once().await.unwrap() }
    });
    tokio::time::sleep(std::time::Duration::from_millis(700)).await;
    let other = service::app::reconciler::Reconciler::new(
        app.store.clone(),
        app.store.clone(),
        app.gateways.clone(),
        Arc::new(service::telemetry::Metrics::new()),
        app.state.reconciler.settings().clone(),
    );
    assert_eq!(other.run_once().await.unwrap().examined, 0, "two lease lengths in, the leases still hold");
    assert_eq!(slow.await.unwrap().examined, 3);
}
