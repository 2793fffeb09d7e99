//! The reference PG's contract over real HTTP: endpoints, header rule, every validation
//! message, status codes, envelope fields, key format, lookups and the callback.

use crate::common::*;
use axum::http::StatusCode;
use gateway_sim::Faults;
use serde_json::{Value, json};

fn fail_envelope(code: &str, message: &str) -> Value {
    json!({"meta": {"result": "FAIL", "errorCode": code, "message": message}, "data": null})
}

#[tokio::test]
async fn accepted_payment_is_pending_with_a_reference_style_key() {
    let sim = spawn_sim(reliable()).await;
    let (status, body) = post_payment(&sim, "merchant", &payment_body("ORD000123-1", "http://localhost:8080/cb")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["meta"], json!({"result": "SUCCESS", "errorCode": null, "message": null}));
    assert_eq!(body["data"]["status"], "PENDING");
    assert_eq!(body["data"]["reason"], Value::Null);
    let key = body["data"]["transactionKey"].as_str().unwrap();
    let today = chrono::Utc::now().format("%Y%m%d").to_string();
    assert!(regex_lite::Regex::new(r"^\d{8}:TR:[0-9a-f]{6}$").unwrap().is_match(key), "{key}");
    assert!(key.starts_with(&today), "{key}");
    assert_eq!(sim.sim().ledger().transactions().len(), 1);
}

#[tokio::test]
async fn every_call_without_user_id_header_is_400() {
    let sim = spawn_sim(reliable()).await;
    let expected = fail_envelope("Bad Request", "유저 ID 헤더는 필수입니다.");
    let response = client()
        .post(format!("{}/api/v1/payments", sim.base_url()))
        .json(&payment_body("ORD000123-1", "http://localhost:8080/cb"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert_eq!(response.json::<Value>().await.unwrap(), expected);
    for path in ["/api/v1/payments/20250816:TR:9577c5", "/api/v1/payments?orderId=ORD000123-1"] {
        let (status, body) = get_json(&format!("{}{path}", sim.base_url()), None).await;
        assert_eq!((status, body), (StatusCode::BAD_REQUEST, expected.clone()), "{path}");
    }
    assert!(sim.sim().ledger().transactions().is_empty());
}

#[tokio::test]
async fn each_validation_rule_answers_its_reference_message() {
    let sim = spawn_sim(reliable()).await;
    let cases = [
        (json!({"orderId": "12345"}), "주문 ID는 6자리 이상 문자열이어야 합니다."),
        (json!({"cardNo": "1234567898141451"}), "카드 번호는 xxxx-xxxx-xxxx-xxxx 형식이어야 합니다."),
        (json!({"amount": 0}), "결제금액은 양의 정수여야 합니다."),
        (json!({"amount": -1}), "결제금액은 양의 정수여야 합니다."),
        (
            json!({"callbackUrl": "http://evil.example/cb"}),
            "콜백 URL 은 http://localhost, http://127.0.0.1, http://[::1] 로 시작해야 합니다.",
        ),
        (
            json!({"cardType": "VISA"}),
            "필드 'cardType'의 값 'VISA'이(가) 예상 타입(CardTypeDto)과 일치하지 않습니다. 사용 가능한 값 : [SAMSUNG, KB, HYUNDAI]",
        ),
        (json!({"amount": "abc"}), "필드 'amount'의 값 'abc'이(가) 예상 타입(Long)과 일치하지 않습니다. "),
        (json!({"cardNo": null}), "필수 필드 'cardNo'이(가) 누락되었습니다."),
    ];
    for (patch, message) in cases {
        let mut body = payment_body("ORD000123-1", "http://localhost:8080/cb");
        for (k, v) in patch.as_object().unwrap() {
            body[k] = v.clone();
        }
        let (status, answer) = post_payment(&sim, "merchant", &body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{patch}");
        assert_eq!(answer, fail_envelope("Bad Request", message), "{patch}");
    }
    assert!(sim.sim().ledger().transactions().is_empty(), "nothing stored for invalid requests");
}

#[tokio::test]
async fn unreadable_bodies_get_the_400_envelope_never_a_500() {
    let sim = spawn_sim(reliable()).await;
    let url = format!("{}/api/v1/payments", sim.base_url());
    let unreadable =
        fail_envelope("Bad Request", "요청 본문을 처리하는 중 오류가 발생했습니다. JSON 메세지 규격을 확인해주세요.");
    let huge = format!("{{\"orderId\": \"{}\"}}", "x".repeat(100 * 1024));
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("application/json", b"{\"orderId\": ".to_vec()),
        ("application/json", b"[]".to_vec()),
        ("application/json", vec![0xff, 0xfe, 0x00]),
        ("text/plain", serde_json::to_vec(&payment_body("ORD000123-1", "http://localhost:8080/cb")).unwrap()),
        ("application/x-www-form-urlencoded", b"orderId=ORD000123-1".to_vec()),
        ("application/json", huge.into_bytes()),
    ];
    for (content_type, body) in cases {
        let response = client()
            .post(&url)
            .header("X-USER-ID", "merchant")
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{content_type}");
        assert_eq!(response.json::<Value>().await.unwrap(), unreadable, "{content_type}");
    }
    assert!(sim.sim().ledger().transactions().is_empty());
}

#[tokio::test]
async fn an_unstable_answer_is_500_with_nothing_stored() {
    let sim = spawn_sim(Faults { request_failure_rate: 1.0, ..Faults::instant() }).await;
    let (status, body) = post_payment(&sim, "merchant", &payment_body("ORD000123-1", "http://localhost:8080/cb")).await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(body, fail_envelope("Internal Server Error", "현재 서버가 불안정합니다. 잠시 후 다시 시도해주세요."));
    assert!(sim.sim().ledger().transactions().is_empty());
}

#[tokio::test]
async fn lookup_by_key_shows_only_the_callers_own_transaction() {
    let sim =
        spawn_sim(Faults { processing_delay_ms: gateway_sim::faults::MsRange::new(60_000, 60_000), ..reliable() })
            .await;
    let (_, body) = post_payment(&sim, "merchant", &payment_body("ORD000123-1", "http://localhost:8080/cb")).await;
    let key = body["data"]["transactionKey"].as_str().unwrap();
    let url = format!("{}/api/v1/payments/{key}", sim.base_url());

    let (status, body) = get_json(&url, Some("merchant")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["meta"]["result"], "SUCCESS");
    assert_eq!(
        body["data"],
        json!({"transactionKey": key, "orderId": "ORD000123-1", "cardType": "SAMSUNG", "cardNo": "1234-5678-9814-1451", "amount": 5000, "status": "PENDING", "reason": null})
    );

    let not_found = fail_envelope("Not Found", &format!("(transactionKey: {key}) 결제건이 존재하지 않습니다."));
    assert_eq!(get_json(&url, Some("someone-else")).await, (StatusCode::NOT_FOUND, not_found));
    let unknown = format!("{}/api/v1/payments/20000101:TR:000000", sim.base_url());
    assert_eq!(
        get_json(&unknown, Some("merchant")).await,
        (
            StatusCode::NOT_FOUND,
            fail_envelope("Not Found", "(transactionKey: 20000101:TR:000000) 결제건이 존재하지 않습니다.")
        )
    );
}

#[tokio::test]
async fn lookup_by_order_lists_duplicates_newest_first() {
    let sim = spawn_sim(reliable()).await;
    let mut keys = Vec::new();
    for _ in 0..3 {
        let (_, body) = post_payment(&sim, "merchant", &payment_body("ORD000123-1", "http://localhost:8080/cb")).await;
        keys.push(body["data"]["transactionKey"].as_str().unwrap().to_string());
    }
    post_payment(&sim, "merchant", &payment_body("ORD000999-1", "http://localhost:8080/cb")).await;
    let (status, body) =
        get_json(&format!("{}/api/v1/payments?orderId=ORD000123-1", sim.base_url()), Some("merchant")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["data"]["orderId"], "ORD000123-1");
    let listed: Vec<&str> = body["data"]["transactions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["transactionKey"].as_str().unwrap())
        .collect();
    keys.reverse();
    assert_eq!(listed, keys, "newest first: the PG is not idempotent, each POST made one");

    let other_user =
        get_json(&format!("{}/api/v1/payments?orderId=ORD000123-1", sim.base_url()), Some("intruder")).await;
    assert_eq!(
        other_user,
        (
            StatusCode::NOT_FOUND,
            fail_envelope("Not Found", "(orderId: ORD000123-1) 에 해당하는 결제건이 존재하지 않습니다.")
        )
    );
    let (status, body) = get_json(&format!("{}/api/v1/payments", sim.base_url()), Some("merchant")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["meta"]["result"], "FAIL");
}

#[tokio::test]
async fn unknown_paths_and_methods_get_the_envelope() {
    let sim = spawn_sim(reliable()).await;
    let (status, body) = get_json(&format!("{}/api/v2/nothing", sim.base_url()), Some("merchant")).await;
    assert_eq!((status, body), (StatusCode::NOT_FOUND, fail_envelope("Not Found", "존재하지 않는 요청입니다.")));
    let response =
        client().delete(format!("{}/api/v1/payments", sim.base_url())).header("X-USER-ID", "m").send().await.unwrap();
    assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(response.json::<Value>().await.unwrap()["meta"]["result"], "FAIL");
}

#[tokio::test]
async fn the_final_status_is_posted_once_as_the_flat_transaction() {
    let receiver = Receiver::start().await;
    let sim = spawn_sim(reliable()).await;
    let keys = accept_and_settle(&sim, &receiver, 20).await;

    let bodies = receiver.bodies();
    assert_eq!(bodies.len(), 20, "one delivery per transaction, never retried");
    for (key, body) in keys.iter().zip(&bodies) {
        let fields: Vec<&String> = body.as_object().unwrap().keys().collect();
        assert_eq!(fields.len(), 7, "flat object, no envelope: {body}");
        assert!(body.get("meta").is_none());
        let tx = sim.sim().ledger().get(key).unwrap().clone();
        let expected_key = bodies.iter().find(|b| b["transactionKey"] == key.as_str()).expect("each key called back");
        assert_eq!(expected_key["status"], serde_json::to_value(tx.status).unwrap());
        assert_eq!(expected_key["reason"], json!(tx.reason));
        assert_eq!(expected_key["cardNo"], "1234-5678-9814-1451");
        assert!(tx.status.is_final());
    }
    for delivery in receiver.deliveries() {
        assert!(delivery.headers.get("X-PG-Signature").is_none(), "no signature unless configured");
        assert!(delivery.headers.get("X-USER-ID").is_none());
    }
    let counts = sim.sim().ledger().counts;
    assert_eq!((counts.callbacks_delivered, counts.callbacks_failed), (20, 0));
}

#[tokio::test]
async fn a_refused_callback_is_not_retried_by_default() {
    let receiver = Receiver::start().await;
    receiver.answer_with(&[StatusCode::INTERNAL_SERVER_ERROR]);
    let sim = spawn_sim(reliable()).await;
    let keys = accept_and_settle(&sim, &receiver, 1).await;
    assert_eq!(receiver.deliveries().len(), 1);
    assert_eq!(sim.sim().ledger().counts.callbacks_failed, 1);
    assert!(sim.sim().ledger().get(&keys[0]).unwrap().status.is_final(), "the PG's status is final regardless");
}

#[tokio::test]
async fn the_outcome_split_decides_status_and_reason() {
    let receiver = Receiver::start().await;
    let limit =
        Faults { outcome: gateway_sim::faults::OutcomeSplit { limit_exceeded: 1.0, invalid_card: 0.0 }, ..reliable() };
    let sim = spawn_sim(limit).await;
    let keys = accept_and_settle(&sim, &receiver, 1).await;
    let (status, body) = get_json(&format!("{}/api/v1/payments/{}", sim.base_url(), keys[0]), Some("merchant")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["data"]["status"], "FAILED");
    assert_eq!(body["data"]["reason"], "한도초과입니다. 다른 카드를 선택해주세요.");
    assert_eq!(receiver.bodies()[0]["status"], "FAILED");

    let invalid =
        Faults { outcome: gateway_sim::faults::OutcomeSplit { limit_exceeded: 0.0, invalid_card: 1.0 }, ..reliable() };
    let sim = spawn_sim(invalid).await;
    let receiver = Receiver::start().await;
    accept_and_settle(&sim, &receiver, 1).await;
    assert_eq!(receiver.bodies()[0]["reason"], "잘못된 카드입니다. 다른 카드를 선택해주세요.");

    let approve =
        Faults { outcome: gateway_sim::faults::OutcomeSplit { limit_exceeded: 0.0, invalid_card: 0.0 }, ..reliable() };
    let sim = spawn_sim(approve).await;
    let receiver = Receiver::start().await;
    accept_and_settle(&sim, &receiver, 1).await;
    assert_eq!(receiver.bodies()[0]["status"], "SUCCESS");
    assert_eq!(receiver.bodies()[0]["reason"], "정상 승인되었습니다.");
}

#[tokio::test]
async fn request_failure_share_over_http_follows_the_default_forty_percent() {
    let sim = spawn_sim(Faults::instant()).await;
    let n = 1_000;
    let mut failed = 0;
    for i in 0..n {
        let (status, _) =
            post_payment(&sim, "merchant", &payment_body(&format!("ORDER-{i:05}"), "http://localhost:8080/cb")).await;
        match status {
            StatusCode::INTERNAL_SERVER_ERROR => failed += 1,
            StatusCode::OK => {}
            other => panic!("unexpected {other}"),
        }
    }
    let share = failed as f64 / n as f64;
    // 3 sd of a 40% share over 1,000 draws is 4.6 points; the seed is fixed.
    assert!((share - 0.4).abs() < 0.047, "failure share {share}");
    assert_eq!(sim.sim().ledger().transactions().len(), n - failed, "failed requests stored nothing");
}
