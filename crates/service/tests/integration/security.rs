//! Bad input and attacks (docs/security.md): every row of the bad-input table, every
//! callback attack, idempotent checkout, the admin token. Each shows the answer and
//! that nothing was written.

use std::time::Duration;

use crate::common::*;
use gateway::signature;
use gateway_sim::faults::{CallbackFaults, MsRange};
use gateway_sim::{Faults, SimConfig};
use reqwest::StatusCode;
use serde_json::{Value, json};

fn valid() -> Value {
    checkout_body(&[(1, 1)])
}

async fn send(app: &TestApp, request: reqwest::RequestBuilder) -> (StatusCode, reqwest::header::HeaderMap, Value) {
    let _ = app;
    let response = request.send().await.unwrap();
    let (status, headers) = (response.status(), response.headers().clone());
    let text = response.text().await.unwrap();
    (status, headers, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

#[tokio::test]
async fn every_bad_checkout_input_gets_its_error_code_and_writes_nothing() {
    let app = spawn_app_with(sim_config(), |s| s.checkout.require_luhn = false).await;
    let before = (app.row_counts().await, app.stock().await);
    let url = format!("{}/api/v1/orders", app.url);
    let post = || app.http.post(&url).header("X-USER-ID", "buyer-1");
    let with = |patch: Value| {
        let mut body = valid();
        for (k, v) in patch.as_object().unwrap() {
            body[k] = v.clone();
        }
        body
    };
    let many_lines: Vec<Value> = (0..51).map(|_| json!({"productId": 1, "quantity": 1})).collect();
    let cases: Vec<(&str, reqwest::RequestBuilder, StatusCode, &str)> = vec![
        ("no X-USER-ID", app.http.post(&url).json(&valid()), StatusCode::BAD_REQUEST, "MISSING_USER_ID"),
        (
            "malformed X-USER-ID",
            app.http.post(&url).header("X-USER-ID", "buyer 1").json(&valid()),
            StatusCode::BAD_REQUEST,
            "INVALID_REQUEST",
        ),
        (
            "X-USER-ID too long",
            app.http.post(&url).header("X-USER-ID", "b".repeat(65)).json(&valid()),
            StatusCode::BAD_REQUEST,
            "INVALID_REQUEST",
        ),
        (
            "not JSON content type",
            post().header("content-type", "text/plain").body(valid().to_string()),
            StatusCode::BAD_REQUEST,
            "INVALID_REQUEST",
        ),
        (
            "malformed JSON",
            post().header("content-type", "application/json").body("{\"items\": ["),
            StatusCode::BAD_REQUEST,
            "INVALID_REQUEST",
        ),
        ("JSON but not an object", post().json(&json!([1, 2])), StatusCode::BAD_REQUEST, "INVALID_REQUEST"),
        ("unknown field", post().json(&with(json!({"coupon": "FREE"}))), StatusCode::BAD_REQUEST, "INVALID_REQUEST"),
        (
            "missing field",
            post().json(&json!({"items": [{"productId": 1, "quantity": 1}], "cardType": "KB"})),
            StatusCode::BAD_REQUEST,
            "INVALID_REQUEST",
        ),
        (
            "card type not in the enum",
            post().json(&with(json!({"cardType": "VISA"}))),
            StatusCode::BAD_REQUEST,
            "INVALID_REQUEST",
        ),
        (
            "card number format",
            post().json(&with(json!({"cardNo": "1234 5678 9814 1451"}))),
            StatusCode::BAD_REQUEST,
            "INVALID_REQUEST",
        ),
        (
            "quantity 0",
            post().json(&with(json!({"items": [{"productId": 1, "quantity": 0}]}))),
            StatusCode::BAD_REQUEST,
            "INVALID_REQUEST",
        ),
        (
            "quantity 1000",
            post().json(&with(json!({"items": [{"productId": 1, "quantity": 1000}]}))),
            StatusCode::BAD_REQUEST,
            "INVALID_REQUEST",
        ),
        (
            "quantity not an integer",
            post().json(&with(json!({"items": [{"productId": 1, "quantity": 1.5}]}))),
            StatusCode::BAD_REQUEST,
            "INVALID_REQUEST",
        ),
        ("no lines", post().json(&with(json!({"items": []}))), StatusCode::BAD_REQUEST, "INVALID_REQUEST"),
        ("51 lines", post().json(&with(json!({"items": many_lines}))), StatusCode::BAD_REQUEST, "INVALID_REQUEST"),
        (
            "product id not positive",
            post().json(&with(json!({"items": [{"productId": -3, "quantity": 1}]}))),
            StatusCode::BAD_REQUEST,
            "INVALID_REQUEST",
        ),
        (
            "product does not exist",
            post().json(&with(json!({"items": [{"productId": 77, "quantity": 1}]}))),
            StatusCode::NOT_FOUND,
            "PRODUCT_NOT_FOUND",
        ),
        (
            "more than in stock",
            post().json(&with(json!({"items": [{"productId": 3, "quantity": 501}]}))),
            StatusCode::CONFLICT,
            "OUT_OF_STOCK",
        ),
        (
            "body over 64 KiB",
            post().header("content-type", "application/json").body(format!("{{\"x\":\"{}\"}}", "a".repeat(70_000))),
            StatusCode::PAYLOAD_TOO_LARGE,
            "PAYLOAD_TOO_LARGE",
        ),
        (
            "Idempotency-Key malformed",
            post().header("Idempotency-Key", "").json(&valid()),
            StatusCode::BAD_REQUEST,
            "INVALID_REQUEST",
        ),
    ];
    for (row, request, status, code) in cases {
        let (got, _, body) = send(&app, request).await;
        assert_eq!((got, body["meta"]["errorCode"].as_str()), (status, Some(code)), "{row}: {body}");
        assert_eq!(body["meta"]["result"], "FAIL", "{row}");
    }
    for (row, path) in
        [("order id not a number", "/api/v1/orders/abc"), ("order id overflows", "/api/v1/orders/99999999999999999999")]
    {
        let (status, body) = app.get(path, Some("buyer-1")).await;
        assert_eq!(
            (status, body["meta"]["errorCode"].as_str()),
            (StatusCode::NOT_FOUND, Some("ORDER_NOT_FOUND")),
            "{row}"
        );
    }
    for query in ["?page=-1", "?size=101", "?size=x"] {
        let (status, body) = app.get(&format!("/api/v1/orders{query}"), Some("buyer-1")).await;
        assert_eq!(
            (status, body["meta"]["errorCode"].as_str()),
            (StatusCode::BAD_REQUEST, Some("INVALID_REQUEST")),
            "{query}"
        );
    }
    assert_eq!((app.row_counts().await, app.stock().await), before, "nothing written");
    assert_eq!(app.pg_requests(), 0, "nothing sent");
}

#[tokio::test]
async fn an_overflowing_total_is_refused_with_nothing_written() {
    let app = spawn_app(reliable()).await;
    let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", app.db.display())).await.unwrap();
    sqlx::query("INSERT INTO products (id, name, price, available) VALUES (9, 'gold bar', 4611686018427387904, 10)")
        .execute(&pool)
        .await
        .unwrap();
    let before = app.row_counts().await;
    let (status, body) = app.checkout("buyer-1", &[(9, 2)]).await;
    assert_eq!(
        (status, body["meta"]["errorCode"].as_str()),
        (StatusCode::BAD_REQUEST, Some("INVALID_REQUEST")),
        "{body}"
    );
    assert_eq!(app.row_counts().await, before);
    let available: i64 =
        sqlx::query_scalar("SELECT available FROM products WHERE id = 9").fetch_one(&pool).await.unwrap();
    assert_eq!(available, 10, "the reservation was rolled back");
}

#[tokio::test]
async fn luhn_is_checked_when_configured() {
    let app = spawn_app_with(sim_config(), |s| s.checkout.require_luhn = true).await;
    let (status, body) = app.checkout("buyer-1", &[(1, 1)]).await; // the sample card fails Luhn
    assert_eq!((status, body["data"]["errors"][0]["field"].as_str()), (StatusCode::BAD_REQUEST, Some("cardNo")));
    let good = json!({"items": [{"productId": 1, "quantity": 1}], "cardType": "KB", "cardNo": "4111-1111-1111-1111"});
    assert_eq!(app.post_json("/api/v1/orders", Some("buyer-1"), &good).await.0, StatusCode::ACCEPTED);
}

#[tokio::test]
async fn a_buyer_over_the_rate_limit_gets_429_with_retry_after() {
    let app = spawn_app_with(sim_config(), |s| {
        s.checkout.rate_limit_per_second = 1;
        s.checkout.rate_limit_burst = 3;
    })
    .await;
    for _ in 0..3 {
        assert_eq!(app.checkout("buyer-1", &[(1, 1)]).await.0, StatusCode::ACCEPTED);
    }
    let before = app.row_counts().await;
    let (status, headers, body) =
        send(&app, app.http.post(format!("{}/api/v1/orders", app.url)).header("X-USER-ID", "buyer-1").json(&valid()))
            .await;
    assert_eq!(
        (status, body["meta"]["errorCode"].as_str()),
        (StatusCode::TOO_MANY_REQUESTS, Some("TOO_MANY_REQUESTS"))
    );
    assert_eq!(headers["retry-after"], "1");
    assert_eq!(app.row_counts().await, before);
    assert_eq!(app.checkout("buyer-2", &[(1, 1)]).await.0, StatusCode::ACCEPTED, "limits are per buyer");
}

// Callback attacks

fn detail(key: &str, pg_order_id: &str, amount: i64, status: &str) -> Value {
    json!({"transactionKey": key, "orderId": pg_order_id, "cardType": "SAMSUNG", "cardNo": "1234-5678-9814-1451",
           "amount": amount, "status": status, "reason": if status == "SUCCESS" { "정상 승인되었습니다." } else { "한도초과입니다. 다른 카드를 선택해주세요." }})
}

/// Two buyers' orders, still PENDING at the PG, with callbacks signed with `secret`.
async fn signed_app(secret: &str) -> (TestApp, Vec<(String, String)>) {
    let pending = Faults { processing_delay_ms: MsRange::new(600_000, 600_000), ..reliable() };
    let sim = SimConfig { callback_secret: Some(secret.into()), faults: pending, ..sim_config() };
    let app = spawn_app_with(sim, |s| s.gateway.callback_secret = Some(secret.into())).await;
    let mut orders = Vec::new();
    for buyer in ["alice", "bob"] {
        let (_, body) = app.checkout(buyer, &[(1, 1)]).await;
        let id = body["data"]["orderId"].as_i64().unwrap();
        orders.push((body["data"]["payment"]["transactionKey"].as_str().unwrap().to_string(), format!("ORD{id:06}-1")));
    }
    (app, orders)
}

#[tokio::test]
async fn forged_replayed_stale_and_tampered_callbacks_change_nothing() {
    let secret = b"0123456789abcdef-0123456789abcdef-secret";
    let (app, orders) = signed_app(std::str::from_utf8(secret).unwrap()).await;
    let (alice_key, alice_order) = orders[0].clone();
    let (bob_key, _) = orders[1].clone();
    let now = chrono::Utc::now().timestamp();
    let good = detail(&alice_key, &alice_order, 39_000, "SUCCESS").to_string();
    let before = app.row_counts().await;

    let attacks: Vec<(&str, String, Option<String>, StatusCode, &str)> = vec![
        ("no signature", good.clone(), None, StatusCode::UNAUTHORIZED, "CALLBACK_UNAUTHORIZED"),
        (
            "forged signature",
            good.clone(),
            Some(signature::sign(b"guessed", now, good.as_bytes())),
            StatusCode::UNAUTHORIZED,
            "CALLBACK_UNAUTHORIZED",
        ),
        (
            "tampered body",
            good.replace("39000", "1"),
            Some(signature::sign(secret, now, good.as_bytes())),
            StatusCode::UNAUTHORIZED,
            "CALLBACK_UNAUTHORIZED",
        ),
        (
            "stale timestamp",
            good.clone(),
            Some(signature::sign(secret, now - 600, good.as_bytes())),
            StatusCode::UNAUTHORIZED,
            "CALLBACK_UNAUTHORIZED",
        ),
        (
            "future timestamp",
            good.clone(),
            Some(signature::sign(secret, now + 600, good.as_bytes())),
            StatusCode::UNAUTHORIZED,
            "CALLBACK_UNAUTHORIZED",
        ),
        (
            "garbage signature header",
            good.clone(),
            Some("t=1,v1=zz".into()),
            StatusCode::UNAUTHORIZED,
            "CALLBACK_UNAUTHORIZED",
        ),
    ];
    for (name, body, sig, status, code) in attacks {
        let (got, answer) = app.post_callback(body.as_bytes(), sig.as_deref()).await;
        assert_eq!((got, answer["meta"]["errorCode"].as_str()), (status, Some(code)), "{name}: {answer}");
    }
    assert_eq!(app.row_counts().await, before, "refused before anything was written");

    // Correctly signed, but the content does not match our records.
    let signed = |body: &Value| {
        let raw = body.to_string();
        let sig = signature::sign(secret, chrono::Utc::now().timestamp(), raw.as_bytes());
        (raw, sig)
    };
    let mismatches = [
        ("wrong amount", detail(&alice_key, &alice_order, 1, "SUCCESS"), StatusCode::BAD_REQUEST, "CALLBACK_MISMATCH"),
        (
            "unknown transaction",
            detail("20250101:TR:000000", "ORD999999-1", 39_000, "SUCCESS"),
            StatusCode::NOT_FOUND,
            "TRANSACTION_NOT_FOUND",
        ),
        // Bob's real transaction key presented as paying Alice's order: Alice's attempt has
        // another key, so the claim is a conflict at most, never a settlement of Bob's money.
        (
            "another buyer's transaction",
            detail(&bob_key, &alice_order, 39_000, "SUCCESS"),
            StatusCode::OK,
            "double_charge",
        ),
    ];
    for (name, body, status, code) in mismatches {
        let (raw, sig) = signed(&body);
        let (got, answer) = app.post_callback(raw.as_bytes(), Some(&sig)).await;
        if got == StatusCode::OK {
            // Alice's attempt knows its own key: Bob's settles nothing of hers, and a
            // SUCCESS under another key is money to give back, flagged for an operator.
            assert_eq!(answer["data"]["result"], code, "{name}");
        } else {
            assert_eq!((got, answer["meta"]["errorCode"].as_str()), (status, Some(code)), "{name}: {answer}");
        }
    }
    let (_, bob_order) = app.order("bob", 2).await;
    assert_eq!(bob_order["data"]["status"], "PENDING", "bob's order untouched");
    let (_, alice_view) = app.order("alice", 1).await;
    assert_eq!(
        (alice_view["data"]["status"].as_str(), alice_view["data"]["anomaly"].as_str()),
        (Some("PENDING"), Some("double_charge"))
    );

    // Replay: the first delivery counts, the identical second is refused.
    let (raw, sig) = signed(&detail(&alice_key, &alice_order, 39_000, "SUCCESS"));
    assert_eq!(app.post_callback(raw.as_bytes(), Some(&sig)).await.0, StatusCode::OK);
    let after_first = app.row_counts().await;
    let (got, answer) = app.post_callback(raw.as_bytes(), Some(&sig)).await;
    assert_eq!(
        (got, answer["meta"]["errorCode"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("CALLBACK_UNAUTHORIZED")),
        "replay"
    );
    assert_eq!(app.row_counts().await, after_first, "the replay wrote nothing");
}

#[tokio::test]
async fn without_a_secret_a_callback_for_another_order_is_refused() {
    let app = spawn_app(Faults { processing_delay_ms: MsRange::new(600_000, 600_000), ..reliable() }).await;
    let (_, alice) = app.checkout("alice", &[(1, 1)]).await;
    let (_, bob) = app.checkout("bob", &[(1, 1)]).await;
    let bob_key = bob["data"]["payment"]["transactionKey"].as_str().unwrap();
    let alice_order = format!("ORD{:06}-1", alice["data"]["orderId"].as_i64().unwrap());
    let before = app.row_counts().await;
    // The PG's own view of bob's key names bob's order: the body's claim is refused.
    let forged = detail(bob_key, &alice_order, 39_000, "SUCCESS").to_string();
    let (status, body) = app.post_callback(forged.as_bytes(), None).await;
    assert_eq!((status, body["meta"]["errorCode"].as_str()), (StatusCode::BAD_REQUEST, Some("CALLBACK_MISMATCH")));
    let counts = app.row_counts().await;
    assert_eq!(
        counts.iter().filter(|(t, _)| t != "payment_events").collect::<Vec<_>>(),
        before.iter().filter(|(t, _)| t != "payment_events").collect::<Vec<_>>()
    );
    assert_eq!(app.order("alice", alice["data"]["orderId"].as_i64().unwrap()).await.1["data"]["status"], "PENDING");
}

// Idempotent checkout

async fn checkout_with_key(
    app: &TestApp,
    buyer: &str,
    key: &str,
    body: &Value,
) -> (StatusCode, reqwest::header::HeaderMap, String) {
    let response = app
        .http
        .post(format!("{}/api/v1/orders", app.url))
        .header("X-USER-ID", buyer)
        .header("Idempotency-Key", key)
        .json(body)
        .send()
        .await
        .unwrap();
    (response.status(), response.headers().clone(), response.text().await.unwrap())
}

#[tokio::test]
async fn a_replayed_key_returns_the_first_response_byte_for_byte_without_a_second_payment() {
    let app = spawn_app(Faults { processing_delay_ms: MsRange::new(600_000, 600_000), ..reliable() }).await;
    let first = checkout_with_key(&app, "buyer-1", "key-1", &valid()).await;
    assert_eq!(first.0, StatusCode::ACCEPTED);
    // Reformatted but equal JSON is the same request.
    let again = app
        .http
        .post(format!("{}/api/v1/orders", app.url))
        .header("X-USER-ID", "buyer-1")
        .header("Idempotency-Key", "key-1")
        .header("content-type", "application/json")
        .body(serde_json::to_string_pretty(&valid()).unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), StatusCode::ACCEPTED);
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    assert_eq!(again.text().await.unwrap(), first.2, "byte for byte");
    assert_eq!(app.pg_requests(), 1, "one payment");
    assert_eq!(app.stock().await[0].reserved, 1);

    let (status, _, body) = checkout_with_key(&app, "buyer-1", "key-1", &checkout_body(&[(2, 1)])).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(body.contains("IDEMPOTENCY_KEY_REUSED"));
    let (status, _, _) = checkout_with_key(&app, "buyer-2", "key-1", &valid()).await;
    assert_eq!(status, StatusCode::ACCEPTED, "keys are per buyer");
    assert_eq!(app.pg_requests(), 2);
}

#[tokio::test]
async fn concurrent_duplicates_make_exactly_one_pg_request() {
    let app = std::sync::Arc::new(spawn_app(Faults { request_latency_ms: MsRange::new(100, 100), ..reliable() }).await);
    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let app = app.clone();
            tokio::spawn(async move { checkout_with_key(&app, "buyer-1", "same-key", &valid()).await })
        })
        .collect();
    let mut answers = Vec::new();
    for task in tasks {
        answers.push(task.await.unwrap());
    }
    assert_eq!(app.pg_requests(), 1, "exactly one PG request in the simulator's ledger");
    assert_eq!(app.pg_transactions(), 1);
    let accepted: Vec<_> = answers.iter().filter(|a| a.0 == StatusCode::ACCEPTED).collect();
    assert!(!accepted.is_empty());
    assert!(accepted.iter().all(|a| a.2 == accepted[0].2), "every 202 is the same response");
    assert!(
        answers.iter().all(|a| a.0 == StatusCode::ACCEPTED
            || (a.0 == StatusCode::CONFLICT && a.2.contains("IDEMPOTENCY_KEY_IN_FLIGHT")))
    );
    let (_, orders) = app.get("/api/v1/orders", Some("buyer-1")).await;
    assert_eq!(orders["data"]["orders"].as_array().unwrap().len(), 1, "one order");
}

#[tokio::test]
async fn an_expired_key_starts_a_new_checkout() {
    let app = spawn_app_with(sim_config(), |s| s.checkout.idempotency_ttl_secs = 0).await;
    assert_eq!(checkout_with_key(&app, "buyer-1", "k", &valid()).await.0, StatusCode::ACCEPTED);
    tokio::time::sleep(Duration::from_millis(5)).await;
    let (status, headers, _) = checkout_with_key(&app, "buyer-1", "k", &valid()).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert!(headers.get("idempotent-replayed").is_none(), "a new checkout, not a replay");
    assert_eq!(app.pg_requests(), 2);
}

#[tokio::test]
async fn a_key_survives_a_restart() {
    let first = spawn_app(Faults { processing_delay_ms: MsRange::new(600_000, 600_000), ..reliable() }).await;
    let original = checkout_with_key(&first, "buyer-1", "restart-key", &valid()).await;
    let db = first.db.clone();
    let restarted = spawn_app_with(sim_config(), |s| s.database_url = format!("sqlite://{}", db.display())).await;
    let replay = checkout_with_key(&restarted, "buyer-1", "restart-key", &valid()).await;
    assert_eq!((replay.0, &replay.2), (original.0, &original.2));
    assert_eq!(restarted.pg_requests(), 0, "the new instance sent nothing");
}

#[tokio::test]
async fn a_key_is_released_when_the_pg_was_unavailable() {
    let app = spawn_app(Faults { request_failure_rate: 1.0, ..Faults::instant() }).await;
    assert_eq!(checkout_with_key(&app, "buyer-1", "retry-me", &valid()).await.0, StatusCode::SERVICE_UNAVAILABLE);
    app.sim.sim().set_faults(reliable()).unwrap();
    assert_eq!(
        checkout_with_key(&app, "buyer-1", "retry-me", &valid()).await.0,
        StatusCode::ACCEPTED,
        "the same key may try again"
    );
}

// Admin controls

#[tokio::test]
async fn admin_calls_need_the_token_and_are_off_without_one() {
    let token = "an-operator-token-of-some-length";
    let app = spawn_app_with(sim_config(), |s| s.admin.token = Some(token.into())).await;
    let admin = |path: &str, bearer: Option<&str>| {
        let mut request = app.http.post(format!("{}/api/v1/admin{path}", app.url)).header("X-OPERATOR", "alice-ops");
        if let Some(bearer) = bearer {
            request = request.header("Authorization", format!("Bearer {bearer}"));
        }
        request
    };
    for bearer in [None, Some("wrong"), Some("an-operator-token-of-some-lengtX")] {
        let (status, _, body) = send(&app, admin("/breakers/pg.payments/force-open", bearer)).await;
        assert_eq!((status, body["meta"]["errorCode"].as_str()), (StatusCode::UNAUTHORIZED, Some("UNAUTHORIZED")));
    }
    assert_eq!(app.gateway.payment_breaker().state(), gateway::breaker::State::Closed, "refused calls change nothing");

    let (status, _, body) = send(&app, admin("/breakers/pg.payments/force-open", Some(token))).await;
    assert_eq!((status, body["data"]["state"].as_str()), (StatusCode::OK, Some("forced_open")));
    assert_eq!(app.checkout("buyer-1", &[(1, 1)]).await.0, StatusCode::SERVICE_UNAVAILABLE);
    let (_, _, body) = send(&app, admin("/breakers/pg.payments/disable", Some(token))).await;
    assert_eq!(body["data"]["state"], "disabled");
    let (_, _, body) = send(&app, admin("/breakers/pg.payments/reset", Some(token))).await;
    assert_eq!(body["data"]["state"], "closed");
    let (status, _, body) = send(&app, admin("/breakers/pg.payments/explode", Some(token))).await;
    assert_eq!((status, body["meta"]["errorCode"].as_str()), (StatusCode::BAD_REQUEST, Some("INVALID_REQUEST")));
    let (status, _, body) = send(&app, admin("/breakers/nope/reset", Some(token))).await;
    assert_eq!(
        (status, body["meta"]["errorCode"].as_str()),
        (StatusCode::NOT_FOUND, Some("NOT_FOUND")),
        "no such breaker"
    );
    let (status, _, body) = send(&app, admin("/reconcile", Some(token))).await;
    assert_eq!((status, &body["data"]["paused"]), (StatusCode::OK, &json!([])));
    let (status, _, body) = send(
        &app,
        app.http.get(format!("{}/api/v1/admin/breakers", app.url)).header("Authorization", format!("Bearer {token}")),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["data"][0]["name"], "pg.payments");

    let off = spawn_app(reliable()).await;
    let (status, _, _) = send(
        &off,
        off.http.post(format!("{}/api/v1/admin/reconcile", off.url)).header("Authorization", format!("Bearer {token}")),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "no token configured: no admin API");
}

#[tokio::test]
async fn callbacks_with_random_retries_never_double_settle() {
    let messy = CallbackFaults { duplicate_rate: 0.5, stale_rate: 0.3, contradictory_rate: 0.3, ..Default::default() };
    let app = spawn_app(Faults { callback: messy, ..reliable() }).await;
    for _ in 0..20 {
        app.checkout("buyer-1", &[(1, 1)]).await;
    }
    app.pg_settled().await;
    let stock = app.stock().await;
    assert_stock_conserved(&stock);
    assert_eq!(stock[0].reserved, 0);
    let successes = app
        .sim
        .sim()
        .ledger()
        .transactions()
        .iter()
        .filter(|t| t.status == gateway::wire::TransactionStatus::Success)
        .count();
    assert_eq!(stock[0].sold as usize, successes);
}

// Defects found by the adversarial probe (docs/security.md, "Probe findings")

#[tokio::test]
async fn startup_refuses_an_empty_or_short_callback_secret() {
    for secret in ["", "short-secret"] {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut settings = service::Settings { database_url: "sqlite::memory:".into(), ..Default::default() };
        settings.gateway.callback_secret = Some(secret.into());
        let refused = service::Application::build_on(settings, listener).await.err().expect("refused");
        assert!(refused.to_string().contains("callback_secret must be at least 32 bytes"), "{refused}");
    }
}

#[tokio::test]
async fn an_oversized_callback_is_refused_and_stores_nothing() {
    let app = spawn_app(Faults { processing_delay_ms: MsRange::new(600_000, 600_000), ..reliable() }).await;
    let (_, order) = app.checkout("alice", &[(1, 1)]).await;
    let key = order["data"]["payment"]["transactionKey"].as_str().unwrap().to_string();
    let before = app.row_counts().await;
    // A buyer knows their own key; a 65,000-character orderId used to be stored whole.
    let huge = detail(&key, &"X".repeat(65_000), 39_000, "SUCCESS").to_string();
    for _ in 0..3 {
        let (status, body) = app.post_callback(huge.as_bytes(), None).await;
        assert_eq!((status, body["meta"]["errorCode"].as_str()), (StatusCode::BAD_REQUEST, Some("CALLBACK_MALFORMED")));
    }
    let queries = app.sim.sim().ledger().counts.status_queries;
    assert_eq!(app.row_counts().await, before, "no event stored");
    assert_eq!(queries, 0, "and the PG was not asked");
}

#[tokio::test]
async fn a_mismatch_answer_names_none_of_our_values() {
    let app = spawn_app(Faults { processing_delay_ms: MsRange::new(600_000, 600_000), ..reliable() }).await;
    let (_, order) = app.checkout("alice", &[(3, 1)]).await;
    let key = order["data"]["payment"]["transactionKey"].as_str().unwrap();
    let pg_order_id = format!("ORD{:06}-1", order["data"]["orderId"].as_i64().unwrap());
    let (status, body) = app.post_callback(detail(key, &pg_order_id, 1, "SUCCESS").to_string().as_bytes(), None).await;
    assert_eq!((status, body["meta"]["errorCode"].as_str()), (StatusCode::BAD_REQUEST, Some("CALLBACK_MISMATCH")));
    let message = body["meta"]["message"].as_str().unwrap();
    assert!(!message.contains("289000") && !message.contains(&pg_order_id), "{message}");
}

#[tokio::test]
async fn forged_callbacks_cost_the_pg_no_more_than_the_fetch_back_limit() {
    let app = spawn_app_with(
        SimConfig {
            faults: Faults { processing_delay_ms: MsRange::new(600_000, 600_000), ..reliable() },
            ..sim_config()
        },
        |s| s.gateway.callback_fetch_backs_per_second = 5,
    )
    .await;
    let (_, order) = app.checkout("alice", &[(1, 1)]).await;
    let pg_order_id = format!("ORD{:06}-1", order["data"]["orderId"].as_i64().unwrap());
    // Random keys for orderIds we never issued: answered from our records, no PG query.
    for i in 0..200 {
        let forged = detail(&format!("20261125:TR:{i:06x}"), &format!("ORD{:06}-1", 500_000 + i), 1_000, "SUCCESS");
        let (status, _) = app.post_callback(forged.to_string().as_bytes(), None).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
    }
    assert_eq!(app.sim.sim().ledger().counts.status_queries, 0);
    // Random keys for a real orderId: each needs the PG, and the limit caps them.
    let mut limited = 0;
    for i in 0..200 {
        let forged = detail(&format!("20261125:TR:{i:06x}"), &pg_order_id, 39_000, "SUCCESS");
        let (status, body) = app.post_callback(forged.to_string().as_bytes(), None).await;
        match status {
            StatusCode::NOT_FOUND => {}
            StatusCode::SERVICE_UNAVAILABLE => {
                assert_eq!(body["meta"]["errorCode"], "CALLBACK_UNVERIFIABLE");
                limited += 1;
            }
            other => panic!("unexpected {other}: {body}"),
        }
    }
    let queries = app.sim.sim().ledger().counts.status_queries;
    assert!(queries < 200 && queries + limited == 200, "{queries} queries, {limited} limited");
    assert!(queries <= 20, "5/s for the seconds this took, not one per callback: {queries}");
    assert_eq!(app.order("alice", order["data"]["orderId"].as_i64().unwrap()).await.1["data"]["status"], "PENDING");
}

#[tokio::test]
async fn small_input_defects_get_their_precise_answers() {
    let app = spawn_app(reliable()).await;
    // One product on two lines: the stock it had, not what the first line left.
    let (status, body) = app.post_json("/api/v1/orders", Some("alice"), &checkout_body(&[(1, 999), (1, 2)])).await;
    assert_eq!((status, body["meta"]["errorCode"].as_str()), (StatusCode::CONFLICT, Some("OUT_OF_STOCK")));
    assert_eq!(body["data"]["available"], 1000, "{body}");
    // A callback over the body limit gets the envelope.
    let (status, body) = app.post_callback(&vec![b' '; 70 * 1024], None).await;
    assert_eq!(
        (status, body["meta"]["errorCode"].as_str()),
        (StatusCode::PAYLOAD_TOO_LARGE, Some("PAYLOAD_TOO_LARGE"))
    );
    // Each paging parameter is reported against its own field.
    for (query, field) in [("page=-1", "page"), ("size=abc", "size"), ("page=x", "page"), ("size=0", "size")] {
        let (status, body) = app.get(&format!("/api/v1/orders?{query}"), Some("alice")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query}");
        assert_eq!(body["data"]["errors"][0]["field"], field, "{query}: {body}");
    }
    // Two identities in one request are refused, not resolved in favour of the first.
    let response = app
        .http
        .get(format!("{}/api/v1/orders", app.url))
        .header("X-USER-ID", "alice")
        .header("X-USER-ID", "mallory")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert_eq!(app.row_counts().await.iter().map(|(_, n)| n).sum::<i64>(), 0, "nothing persisted");
}

#[tokio::test]
async fn the_ops_page_may_not_be_framed_or_run_foreign_scripts() {
    let app = spawn_app(reliable()).await;
    let response = app.http.get(format!("{}/ops", app.url)).send().await.unwrap();
    let header = |name: &str| response.headers().get(name).and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    assert_eq!(header("x-frame-options"), "DENY");
    let csp = header("content-security-policy");
    assert!(csp.contains("frame-ancestors 'none'") && csp.contains("script-src 'sha256-"), "{csp}");
    assert!(!csp.contains("script-src 'unsafe-inline'"), "{csp}");
}

#[tokio::test]
async fn another_buyers_order_is_read_with_the_same_single_lookup_as_an_unknown_one() {
    let app = spawn_app(reliable()).await;
    let (_, order) = app.checkout("alice", &[(1, 1)]).await;
    let id = order["data"]["orderId"].as_i64().unwrap();
    let bob = service::domain::BuyerId::parse("bob").unwrap();
    // The query itself filters by buyer: nothing of alice's order is loaded for bob.
    assert_eq!(app.store.buyer_order(&bob, service::domain::OrderId(id)).await.unwrap(), None);
    assert_eq!(app.order("bob", id).await.0, StatusCode::NOT_FOUND);
    assert_eq!(app.order("bob", id + 1_000).await.0, StatusCode::NOT_FOUND);
}

// Slow clients (docs/security.md): the head, the body and idle keep-alive are bounded,
// and so is the number of open connections.

#[derive(Clone, Copy, Debug)]
enum Slow {
    /// Connects and sends nothing.
    Silent,
    /// A request line, then one more header line every 100 ms, never the blank line.
    TrickledHead,
    /// Whole headers announcing 1,000 bytes of body, then one byte every 100 ms.
    TrickledBody,
}

/// Holds a connection the slow way until the server closes it: how long that took,
/// and what the server sent before closing.
async fn hold(addr: std::net::SocketAddr, slow: Slow) -> (Duration, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let started = std::time::Instant::now();
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    match slow {
        Slow::Silent => {}
        Slow::TrickledHead => stream.write_all(b"POST /api/v1/orders HTTP/1.1\r\nHost: shop\r\n").await.unwrap(),
        Slow::TrickledBody => stream
            .write_all(b"POST /api/v1/orders HTTP/1.1\r\nHost: shop\r\nX-USER-ID: slow\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{")
            .await
            .unwrap(),
    }
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    let (mut received, mut buf) = (Vec::new(), [0u8; 1024]);
    loop {
        tokio::select! {
            read = stream.read(&mut buf) => match read {
                Ok(0) | Err(_) => break,
                Ok(n) => received.extend_from_slice(&buf[..n]),
            },
            _ = tick.tick() => {
                let more: &[u8] = match slow { Slow::Silent => b"", Slow::TrickledHead => b"X-Slow: 1\r\n", Slow::TrickledBody => b" " };
                if stream.write_all(more).await.is_err() {
                    break;
                }
            }
        }
        assert!(started.elapsed() < Duration::from_secs(10), "{slow:?} was never closed");
    }
    (started.elapsed(), String::from_utf8_lossy(&received).into_owned())
}

#[tokio::test]
async fn slow_clients_are_closed_within_their_timeouts_while_buyers_are_served() {
    let app = spawn_app_with(sim_config(), |s| {
        s.http.header_read_timeout_ms = 500;
        s.http.body_read_timeout_ms = 500;
    })
    .await;
    let addr: std::net::SocketAddr = app.url.trim_start_matches("http://").parse().unwrap();
    let mut slow = Vec::new();
    for i in 0..90 {
        let kind = [Slow::Silent, Slow::TrickledHead, Slow::TrickledBody][i % 3];
        slow.push((kind, tokio::spawn(hold(addr, kind))));
    }
    // A buyer at the same time is answered as usual.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (status, _) = app.checkout("buyer-1", &[(1, 1)]).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert!(slow.iter().all(|(_, held)| !held.is_finished()), "served while every slow client was still held");
    for (kind, held) in slow {
        let (took, received) = held.await.unwrap();
        assert!(took >= Duration::from_millis(450), "{kind:?} closed early: {took:?}");
        assert!(took < Duration::from_millis(2_500), "{kind:?} held for {took:?}");
        match kind {
            // The head never came whole: closed without an answer.
            Slow::Silent | Slow::TrickledHead => assert_eq!(received, "", "{kind:?}"),
            Slow::TrickledBody => {
                assert!(received.starts_with("HTTP/1.1 408"), "{received}");
                assert!(received.contains("REQUEST_TIMEOUT"), "{received}");
            }
        }
    }
    assert_eq!(app.row_counts().await.iter().find(|(t, _)| t == "orders").unwrap().1, 1, "only the buyer's order");
}

#[tokio::test]
async fn an_idle_kept_alive_connection_is_closed_after_the_header_timeout() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let app = spawn_app_with(sim_config(), |s| s.http.header_read_timeout_ms = 500).await;
    let mut stream = tokio::net::TcpStream::connect(app.url.trim_start_matches("http://")).await.unwrap();
    stream.write_all(b"GET /healthz HTTP/1.1\r\nHost: shop\r\n\r\n").await.unwrap();
    let started = std::time::Instant::now();
    let (mut received, mut buf) = (Vec::new(), [0u8; 1024]);
    loop {
        let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf)).await.expect("closed").unwrap_or(0);
        if n == 0 {
            break;
        }
        received.extend_from_slice(&buf[..n]);
    }
    assert!(String::from_utf8_lossy(&received).starts_with("HTTP/1.1 200"), "answered first");
    let idle = started.elapsed();
    assert!(idle >= Duration::from_millis(450) && idle < Duration::from_millis(2_000), "closed after {idle:?}");
}

#[tokio::test]
async fn connections_over_the_cap_are_closed_at_once_and_open_ones_still_served() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let app = spawn_app_with(sim_config(), |s| {
        s.http.max_connections = 3;
        s.http.header_read_timeout_ms = 60_000;
    })
    .await;
    let addr = app.url.trim_start_matches("http://").to_string();
    let mut open = Vec::new();
    for _ in 0..3 {
        let mut stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
        stream.write_all(b"GET /healthz HTTP/1.1\r\nHost: shop\r\n\r\n").await.unwrap();
        let mut buf = [0u8; 1024];
        let n = stream.read(&mut buf).await.unwrap();
        assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
        open.push(stream);
    }
    // The fourth is closed before it is read.
    let mut extra = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let _ = extra.write_all(b"GET /healthz HTTP/1.1\r\nHost: shop\r\n\r\n").await;
    let mut buf = [0u8; 1024];
    let read = tokio::time::timeout(Duration::from_secs(2), extra.read(&mut buf)).await.expect("closed at once");
    assert!(matches!(read, Ok(0) | Err(_)), "refused without an answer: {read:?}");
    // The open ones keep being served.
    open[0].write_all(b"GET /healthz HTTP/1.1\r\nHost: shop\r\n\r\n").await.unwrap();
    let n = open[0].read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    // A place frees up when one closes.
    drop(open.pop());
    let mut later = None;
    for _ in 0..50 {
        let mut stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
        stream.write_all(b"GET /healthz HTTP/1.1\r\nHost: shop\r\n\r\n").await.unwrap();
        if matches!(stream.read(&mut buf).await, Ok(n) if n > 0) {
            later = Some(String::from_utf8_lossy(&buf[..12]).into_owned());
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(later.as_deref(), Some("HTTP/1.1 200"));
}

/// A checkout whose head announces `body` bytes, as a client that writes the whole
/// request before it reads the answer (Python's urllib, many Java clients).
fn oversized_head(body: usize) -> String {
    format!(
        "POST /api/v1/orders HTTP/1.1\r\nHost: shop\r\nX-USER-ID: big\r\nContent-Type: application/json\r\nContent-Length: {body}\r\n\r\n"
    )
}

#[tokio::test]
async fn a_client_that_writes_a_2_mb_body_before_reading_reads_its_413() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let app = spawn_app_with(sim_config(), |_| {}).await;
    let body = vec![b' '; 2_000_000];
    let mut stream = tokio::net::TcpStream::connect(app.url.trim_start_matches("http://")).await.unwrap();
    stream.write_all(oversized_head(body.len()).as_bytes()).await.unwrap();
    // As over a real network, the body is still arriving when the 413 is answered (at
    // 64 KiB): closing then, with bytes unread, would reset the connection.
    for chunk in body.chunks(64 * 1024) {
        stream.write_all(chunk).await.expect("the whole body is taken, though refused");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer))
        .await
        .expect("closed after the answer")
        .expect("read to our FIN, never a reset");
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    let envelope: Value = serde_json::from_str(answer.split("\r\n\r\n").nth(1).unwrap()).unwrap();
    assert_eq!(envelope["meta"]["errorCode"], "PAYLOAD_TOO_LARGE");
    assert_eq!(app.row_counts().await.iter().find(|(t, _)| t == "orders").unwrap().1, 0);
}

#[tokio::test]
async fn a_body_beyond_the_drain_bound_is_cut() {
    use tokio::io::AsyncWriteExt;
    let app = spawn_app_with(sim_config(), |s| {
        s.http.linger_max_bytes = 256 * 1024;
        s.http.linger_ms = 30_000;
    })
    .await;
    let body = vec![b' '; 64 * 1024 * 1024];
    let mut stream = tokio::net::TcpStream::connect(app.url.trim_start_matches("http://")).await.unwrap();
    stream.write_all(oversized_head(body.len()).as_bytes()).await.unwrap();
    let started = std::time::Instant::now();
    let written = tokio::time::timeout(Duration::from_secs(10), stream.write_all(&body)).await.expect("cut, not held");
    assert!(written.is_err(), "64 MiB are far past the drain bound and the kernel's buffers");
    assert!(started.elapsed() < Duration::from_secs(10), "cut by bytes, long before the 30 s drain time");
}

#[tokio::test]
async fn a_client_that_keeps_sending_is_cut_after_the_drain_time() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let app = spawn_app_with(sim_config(), |s| s.http.linger_ms = 300).await;
    let mut stream = tokio::net::TcpStream::connect(app.url.trim_start_matches("http://")).await.unwrap();
    stream.write_all(oversized_head(100_000_000).as_bytes()).await.unwrap();
    stream.write_all(&[b' '; 100 * 1024]).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer)).await.unwrap().unwrap();
    assert!(String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 413"));
    // Answered and our side shut: what it sends now is drained until the 300 ms are over.
    let answered = std::time::Instant::now();
    loop {
        if stream.write_all(&[b' '; 1024]).await.is_err() {
            break;
        }
        assert!(answered.elapsed() < Duration::from_secs(3), "never cut");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let cut = answered.elapsed();
    assert!(cut >= Duration::from_millis(250), "drained before it was cut: {cut:?}");
    assert!(cut < Duration::from_millis(1_500), "cut at the drain time: {cut:?}");
}
