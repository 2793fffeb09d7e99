//! HTTPS to the PG: the simulator serves TLS with a certificate from a throwaway CA, and
//! payguard pays, looks up and verifies callbacks over it; an untrusted certificate is
//! refused before anything is sent; a PG that requires a client certificate gets one.

use crate::common::{TestApp, reliable, sim_config, spawn_app_with};
use gateway::LookupOutcome;
use gateway_sim::SimConfig;
use gateway_sim::tls::TestCa;
use reqwest::StatusCode;
use service::Settings;

/// The CA written where `gateway.tls.ca_file` can name it.
fn ca_file(ca: &TestCa, dir: &tempfile::TempDir) -> std::path::PathBuf {
    let path = dir.path().join("pg-ca.pem");
    std::fs::write(&path, ca.cert_pem()).unwrap();
    path
}

async fn app_over_tls(sim: SimConfig, tweak: impl FnOnce(&mut Settings)) -> TestApp {
    let app = spawn_app_with(sim, tweak).await;
    assert!(app.sim.base_url().starts_with("https://"), "the PG speaks HTTPS: {}", app.sim.base_url());
    app
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payment_is_made_looked_up_and_verified_over_https() {
    let (ca, dir) = (TestCa::new("test PG CA").unwrap(), tempfile::tempdir().unwrap());
    let ca_path = ca_file(&ca, &dir);
    let sim = SimConfig { tls: Some(ca.localhost().unwrap()), ..sim_config() };
    let app = app_over_tls(sim, |s| s.gateway.tls.ca_file = Some(ca_path)).await;

    let (status, body) = app.checkout("buyer-1", &[(1, 1)]).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(app.pg_requests(), 1);
    // Without a callback secret each callback is confirmed by asking the PG: over TLS.
    let order = body["data"]["orderId"].as_i64().unwrap();
    let settled = app.wait_for_status("buyer-1", order, "PAID").await;
    let key = settled["payment"]["transactionKey"].as_str().unwrap().to_string();
    match app.gateway.transaction(&key).await {
        LookupOutcome::Found(detail) => assert_eq!(detail.transaction_key, key),
        other => panic!("a lookup over HTTPS failed: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untrusted_pg_certificate_is_refused_before_anything_is_sent() {
    let ca = TestCa::new("a CA nobody trusts").unwrap();
    let sim = SimConfig { tls: Some(ca.localhost().unwrap()), ..sim_config() };
    // The system's roots only: the simulator's CA is not among them.
    let app = app_over_tls(sim, |_| {}).await;

    let (status, body) = app.checkout("buyer-1", &[(1, 1)]).await;
    assert_eq!(
        (status, body["meta"]["errorCode"].as_str()),
        (StatusCode::SERVICE_UNAVAILABLE, Some("PAYMENT_GATEWAY_UNAVAILABLE"))
    );
    assert_eq!(app.pg_requests(), 0, "the handshake failed: no request reached the PG");
    let metrics = app.http.get(format!("{}/metrics", app.url)).send().await.unwrap().text().await.unwrap();
    let connect_failures = metrics
        .lines()
        .find(|l| {
            l.starts_with("payguard_gateway_failures_total")
                && l.contains("request_payment")
                && l.contains("reason=\"connect\"")
        })
        .unwrap_or_else(|| panic!("no connect failure counted: {metrics}"));
    assert!(!connect_failures.ends_with(" 0"), "{connect_failures}");
    let breaker = app.gateway.payment_breaker().snapshot();
    assert!(breaker.metrics.buffered >= 1, "the breaker counted the failed handshakes: {breaker:?}");
    assert_eq!(app.stock().await[0].reserved, 0, "the order was rolled back");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pg_that_requires_a_client_certificate_gets_ours() {
    let (server_ca, client_ca, dir) =
        (TestCa::new("PG CA").unwrap(), TestCa::new("merchant CA").unwrap(), tempfile::tempdir().unwrap());
    let mut identity = server_ca.localhost().unwrap();
    identity.client_ca_pem = Some(client_ca.cert_pem());
    let ours = client_ca.issue(&["payguard"]).unwrap();
    let (cert, key) = (dir.path().join("client.pem"), dir.path().join("client-key.pem"));
    std::fs::write(&cert, &ours.cert_pem).unwrap();
    std::fs::write(&key, &ours.key_pem).unwrap();
    let ca_path = ca_file(&server_ca, &dir);
    let app = app_over_tls(SimConfig { tls: Some(identity), faults: reliable(), ..sim_config() }, |s| {
        s.gateway.tls.ca_file = Some(ca_path);
        s.gateway.tls.client_cert_file = Some(cert);
        s.gateway.tls.client_key_file = Some(key);
    })
    .await;
    let (status, body) = app.checkout("buyer-1", &[(1, 1)]).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(app.pg_requests(), 1);
}

fn client_with(tls: gateway::TlsSettings) -> Result<gateway::GatewayClient, gateway::ClientError> {
    let settings = gateway::GatewaySettings {
        name: "pg".into(),
        base_url: "https://127.0.0.1:1".into(),
        merchant_id: "m".into(),
        tls,
    };
    gateway::GatewayClient::new(settings, gateway::ResilienceConfig::default())
}

#[tokio::test]
async fn tls_settings_that_cannot_work_stop_the_start() {
    let only_without_a_file = client_with(gateway::TlsSettings { ca_file_only: true, ..Default::default() });
    assert!(only_without_a_file.err().unwrap().to_string().contains("ca_file_only needs tls.ca_file"));
    let missing =
        client_with(gateway::TlsSettings { ca_file: Some("/nonexistent/ca.pem".into()), ..Default::default() });
    assert!(missing.err().unwrap().to_string().contains("/nonexistent/ca.pem"));
    let half =
        client_with(gateway::TlsSettings { client_cert_file: Some("/etc/hostname".into()), ..Default::default() });
    assert!(half.err().unwrap().to_string().contains("go together"));
}
