//! The OpenAPI document: served at /openapi.json, kept in docs/openapi.json, and
//! covering every route the router answers.

use crate::common::{reliable, spawn_app};
use serde_json::Value;

#[tokio::test]
async fn the_served_document_is_the_one_in_docs() {
    let app = spawn_app(reliable()).await;
    let response = app.http.get(format!("{}/openapi.json", app.url)).send().await.unwrap();
    assert_eq!(response.headers()["content-type"], "application/json");
    let served: Value = response.json().await.unwrap();
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/openapi.json");
    let kept: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    assert!(served == kept, "docs/openapi.json is stale: cargo run -p payguard -- openapi > docs/openapi.json");
    assert_eq!(served["openapi"], "3.1.0");
}

#[tokio::test]
async fn every_route_is_documented_with_its_method() {
    let document: Value = serde_json::from_str(&service::http::openapi::DOCUMENT).unwrap();
    let router = include_str!("../../src/http/router.rs");
    // `.route("/path", get(x).post(y))` lines of the router, read from its source.
    let mut routes = 0;
    for line in router.lines().map(str::trim).filter(|l| l.starts_with(".route(\"")) {
        let path = line.split('"').nth(1).unwrap();
        let operations = &document["paths"][path];
        assert!(operations.is_object(), "{path} is not in the document");
        for method in ["get", "post", "patch", "put", "delete"] {
            if line.contains(&format!("{method}(")) {
                assert!(operations[method].is_object(), "{method} {path} is not in the document");
                routes += 1;
            }
        }
    }
    assert!(routes >= 10, "the router's routes were not found ({routes})");
}
