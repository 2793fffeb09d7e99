//! Property test: random bytes and random JSON thrown at checkout and callback intake
//! never get a 500, never crash the service, and never persist anything.

use crate::common::*;
use gateway_sim::Faults;
use gateway_sim::faults::MsRange;
use proptest::prelude::*;
use reqwest::StatusCode;
use serde_json::{Value, json};

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(|f| json!(f)),
        ".{0,24}".prop_map(Value::String),
        prop_oneof![Just("SAMSUNG"), Just("KB"), Just("1234-5678-9814-1451"), Just("PENDING"), Just("SUCCESS")]
            .prop_map(|s| json!(s)),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(
                prop_oneof![
                    Just("items".to_string()),
                    Just("productId".to_string()),
                    Just("quantity".to_string()),
                    Just("cardType".to_string()),
                    Just("cardNo".to_string()),
                    Just("transactionKey".to_string()),
                    Just("orderId".to_string()),
                    Just("amount".to_string()),
                    Just("status".to_string()),
                    "[a-zA-Z]{1,8}",
                ],
                inner,
                0..6,
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A body: raw random bytes, or random JSON (shaped or not like the real one).
fn body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..512),
        json_value().prop_map(|v| serde_json::to_vec(&v).unwrap()),
        (json_value(), json_value(), json_value()).prop_map(|(items, card_type, card_no)| {
            serde_json::to_vec(&json!({"items": items, "cardType": card_type, "cardNo": card_no})).unwrap()
        }),
    ]
}

#[test]
fn random_input_never_breaks_checkout_or_callback_intake() {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    // The PG would accept anything valid; nothing random should ever get that far.
    let app = runtime.block_on(spawn_app(Faults { processing_delay_ms: MsRange::new(600_000, 600_000), ..reliable() }));
    let before = runtime.block_on(app.row_counts());
    let config = ProptestConfig { cases: 300, failure_persistence: None, ..ProptestConfig::default() };
    proptest!(config, |(checkout in body(), callback in body())| {
        runtime.block_on(async {
            let response = app.http.post(format!("{}/api/v1/orders", app.url))
                .header("X-USER-ID", "fuzzer")
                .header("content-type", "application/json")
                .body(checkout.clone())
                .send().await.unwrap();
            let status = response.status();
            let body: Value = response.json().await.expect("always the JSON envelope");
            prop_assert!(status.is_client_error(), "checkout answered {status} to {:?}", String::from_utf8_lossy(&checkout));
            prop_assert_eq!(&body["meta"]["result"], "FAIL");

            let (status, body) = app.post_callback(&callback, None).await;
            prop_assert!(status.is_client_error() && status != StatusCode::INTERNAL_SERVER_ERROR, "callback answered {status}: {body}");
            prop_assert_eq!(&body["meta"]["result"], "FAIL");
            Ok(())
        })?;
    });
    runtime.block_on(async {
        assert_eq!(app.row_counts().await, before, "nothing persisted");
        assert_eq!(app.pg_requests(), 0, "nothing sent to the PG");
        let (status, _) = app.get("/healthz", None).await;
        assert_eq!(status, StatusCode::OK, "still serving");
    });
}
