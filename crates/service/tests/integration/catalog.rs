//! Catalog management on the admin API: create a product, rename or reprice it, restock
//! it (never below what orders hold), list it with reserved and sold counts. Bad input is
//! a 400 with nothing written; a restock racing checkouts never oversells.

use crate::common::{TestApp, reliable, sim_config, spawn_app_with};
use gateway_sim::SimConfig;
use gateway_sim::faults::{MsRange, OutcomeSplit};
use reqwest::StatusCode;
use serde_json::{Value, json};

const TOKEN: &str = "catalog-test-admin-token";

/// Every payment approved: an accepted checkout's stock ends sold, never released.
fn approve_all() -> gateway_sim::Faults {
    gateway_sim::Faults { outcome: OutcomeSplit { limit_exceeded: 0.0, invalid_card: 0.0 }, ..reliable() }
}

async fn app_with_admin(faults: gateway_sim::Faults) -> TestApp {
    spawn_app_with(SimConfig { faults, ..sim_config() }, |s| s.admin.token = Some(TOKEN.into())).await
}

async fn admin(app: &TestApp, method: reqwest::Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
    let mut request = app
        .http
        .request(method, format!("{}/api/v1/admin{path}", app.url))
        .bearer_auth(TOKEN)
        .header("X-OPERATOR", "catalog-test");
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn create(app: &TestApp, name: &str, price: i64, stock: i64) -> Value {
    let body = json!({"name": name, "price": price, "stock": stock});
    let (status, body) = admin(app, reqwest::Method::POST, "/products", Some(body)).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    body["data"].clone()
}

async fn entry(app: &TestApp, id: i64) -> Value {
    let (status, body) = admin(app, reqwest::Method::GET, "/products", None).await;
    assert_eq!(status, StatusCode::OK);
    body["data"].as_array().unwrap().iter().find(|p| p["productId"] == id).cloned().expect("listed")
}

#[tokio::test]
async fn a_created_product_is_listed_and_sold_and_changes_are_kept() {
    let app = app_with_admin(approve_all()).await;
    let product = create(&app, "기계식 키보드", 129_000, 3).await;
    let id = product["productId"].as_i64().unwrap();
    assert!(id > 5, "after the seeded catalog: {product}");
    assert_eq!(
        (product["available"].as_i64(), product["reserved"].as_i64(), product["sold"].as_i64()),
        (Some(3), Some(0), Some(0))
    );

    let (_, public) = app.get("/api/v1/products", None).await;
    let listed = public["data"].as_array().unwrap().iter().find(|p| p["productId"] == id).cloned().unwrap();
    assert_eq!(
        (listed["name"].as_str(), listed["price"].as_i64(), listed["stock"].as_i64()),
        (Some("기계식 키보드"), Some(129_000), Some(3))
    );

    let (status, order) = app.checkout("buyer-1", &[(id, 2)]).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{order}");
    assert_eq!(order["data"]["totalAmount"], 258_000);

    // Repricing changes new orders only.
    let (status, changed) =
        admin(&app, reqwest::Method::PATCH, &format!("/products/{id}"), Some(json!({"price": 99_000}))).await;
    assert_eq!((status, changed["data"]["price"].as_i64()), (StatusCode::OK, Some(99_000)), "{changed}");
    let first = order["data"]["orderId"].as_i64().unwrap();
    let (_, kept) = app.order("buyer-1", first).await;
    assert_eq!(kept["data"]["totalAmount"], 258_000, "an order keeps the price it was placed at");
    let (status, second) = app.checkout("buyer-1", &[(id, 1)]).await;
    assert_eq!((status, second["data"]["totalAmount"].as_i64()), (StatusCode::ACCEPTED, Some(99_000)));

    // Sold out, then restocked.
    let (status, body) = app.checkout("buyer-1", &[(id, 1)]).await;
    assert_eq!((status, body["meta"]["errorCode"].as_str()), (StatusCode::CONFLICT, Some("OUT_OF_STOCK")));
    let (status, restocked) =
        admin(&app, reqwest::Method::POST, &format!("/products/{id}/stock"), Some(json!({"add": 10}))).await;
    assert_eq!((status, restocked["data"]["available"].as_i64()), (StatusCode::OK, Some(10)), "{restocked}");
    app.pg_settled().await;
    let now = entry(&app, id).await;
    assert_eq!(now["sold"].as_i64().unwrap() + now["reserved"].as_i64().unwrap(), 3, "{now}");
}

#[tokio::test]
async fn bad_catalog_input_is_refused_and_nothing_is_written() {
    let app = app_with_admin(approve_all()).await;
    let before = admin(&app, reqwest::Method::GET, "/products", None).await.1;
    for (body, field) in [
        (json!({"name": "", "price": 1000, "stock": 1}), "name"),
        (json!({"name": "x".repeat(101), "price": 1000, "stock": 1}), "name"),
        (json!({"name": "ok", "price": 0, "stock": 1}), "price"),
        (json!({"name": "ok", "price": 1000, "stock": -1}), "stock"),
    ] {
        let (status, answer) = admin(&app, reqwest::Method::POST, "/products", Some(body)).await;
        assert_eq!((status, answer["meta"]["errorCode"].as_str()), (StatusCode::BAD_REQUEST, Some("INVALID_REQUEST")));
        assert_eq!(answer["data"]["errors"][0]["field"], field, "{answer}");
    }
    for body in [json!({"name": "ok", "price": 1000}), json!({"name": "ok", "price": 1000, "stock": 1, "extra": 1})] {
        let (status, _) = admin(&app, reqwest::Method::POST, "/products", Some(body)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
    }
    for body in [json!({"onHand": 5, "add": 1}), json!({"add": 2_000_000}), json!({"onHand": -1}), json!({"add": null})]
    {
        let (status, answer) = admin(&app, reqwest::Method::POST, "/products/1/stock", Some(body)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    }
    let (status, _) = admin(&app, reqwest::Method::PATCH, "/products/1", Some(json!({"price": null}))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, answer) = admin(&app, reqwest::Method::PATCH, "/products/999", Some(json!({"price": 5}))).await;
    assert_eq!((status, answer["meta"]["errorCode"].as_str()), (StatusCode::NOT_FOUND, Some("PRODUCT_NOT_FOUND")));
    let (status, _) = admin(&app, reqwest::Method::POST, "/products/abc/stock", Some(json!({"add": 1}))).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(admin(&app, reqwest::Method::GET, "/products", None).await.1, before, "nothing was written");

    let unauthenticated = app.http.get(format!("{}/api/v1/admin/products", app.url)).send().await.unwrap();
    assert_eq!(unauthenticated.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn stock_is_never_cut_below_what_orders_hold() {
    // The PG decides after a minute: the order's stock stays reserved.
    let app =
        app_with_admin(gateway_sim::Faults { processing_delay_ms: MsRange::new(60_000, 60_000), ..approve_all() })
            .await;
    let id = create(&app, "모니터 암", 50_000, 5).await["productId"].as_i64().unwrap();
    let (status, _) = app.checkout("buyer-1", &[(id, 3)]).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let now = entry(&app, id).await;
    assert_eq!((now["available"].as_i64(), now["reserved"].as_i64()), (Some(2), Some(3)));

    let stock = format!("/products/{id}/stock");
    let (status, refused) = admin(&app, reqwest::Method::POST, &stock, Some(json!({"onHand": 2}))).await;
    assert_eq!((status, refused["meta"]["errorCode"].as_str()), (StatusCode::CONFLICT, Some("STOCK_CONFLICT")));
    assert_eq!((refused["data"]["available"].as_i64(), refused["data"]["reserved"].as_i64()), (Some(2), Some(3)));
    let (status, _) = admin(&app, reqwest::Method::POST, &stock, Some(json!({"add": -3}))).await;
    assert_eq!(status, StatusCode::CONFLICT, "available cannot go below zero");
    let (status, set) = admin(&app, reqwest::Method::POST, &stock, Some(json!({"onHand": 3}))).await;
    assert_eq!(
        (status, set["data"]["available"].as_i64(), set["data"]["reserved"].as_i64()),
        (StatusCode::OK, Some(0), Some(3))
    );

    // The ops page lists it as low.
    let (_, ops) = app.get("/ops/state", None).await;
    let low = ops["data"]["lowStock"].as_array().unwrap();
    assert!(low.iter().any(|p| p["productId"] == id), "{low:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restocks_racing_checkouts_never_oversell() {
    // 90 writers at once on one SQLite file: this test is about stock, so none may give
    // up on the write lock after the default 1 s (a 503 is another test's subject).
    let app = spawn_app_with(SimConfig { faults: approve_all(), ..sim_config() }, |s| {
        s.admin.token = Some(TOKEN.into());
        s.database_acquire_timeout_ms = 10_000;
    })
    .await;
    let app = std::sync::Arc::new(app);
    let id = create(&app, "한정판 마우스", 10_000, 20).await["productId"].as_i64().unwrap();
    let mut tasks = tokio::task::JoinSet::new();
    for n in 0..60 {
        let app = app.clone();
        tasks.spawn(async move { ("checkout", app.checkout(&format!("buyer-{n}"), &[(id, 1)]).await.0) });
    }
    for n in 0..30 {
        let app = app.clone();
        // 20 removals of one and 10 additions of one, interleaved with the checkouts.
        let add = if n % 3 == 0 { 1 } else { -1 };
        tasks.spawn(async move {
            let path = format!("/products/{id}/stock");
            let (status, _) = admin(&app, reqwest::Method::POST, &path, Some(json!({"add": add}))).await;
            (if add > 0 { "add" } else { "remove" }, status)
        });
    }
    let (mut sold, mut added, mut removed) = (0, 0, 0);
    for (what, status) in tasks.join_all().await {
        match (what, status) {
            ("checkout", StatusCode::ACCEPTED) => sold += 1,
            ("checkout", s) => assert_eq!(s, StatusCode::CONFLICT, "a checkout is taken or out of stock"),
            ("add", StatusCode::OK) => added += 1,
            ("remove", StatusCode::OK) => removed += 1,
            (_, s) => assert_eq!(s, StatusCode::CONFLICT, "a removal is applied or refused"),
        }
    }
    app.pg_settled().await;
    let now = entry(&app, id).await;
    let (available, reserved, held) =
        (now["available"].as_i64().unwrap(), now["reserved"].as_i64().unwrap(), now["sold"].as_i64().unwrap());
    assert!(available >= 0, "{now}");
    assert_eq!(reserved + held, sold, "every accepted checkout holds its one unit: {now}");
    assert_eq!(available + reserved + held, 20 + added - removed, "stock is only moved: {now}");
    assert!(sold <= 20 + added, "never oversold: {sold} sold of {} ever stocked", 20 + added);
}
