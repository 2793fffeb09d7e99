//! End to end with a real Prometheus and Alertmanager on loopback: the service is
//! scraped, the PG goes down, PaymentGatewayCircuitOpen fires in Prometheus and reaches
//! a webhook through Alertmanager, then resolves when the PG is back. Every PromQL
//! expression of the Grafana dashboard is evaluated against that Prometheus.
//!
//! Needs `prometheus` and `prometheus-alertmanager` (Debian packages). Without them the
//! test prints why and returns, except under CI (`CI` set), where it fails.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::common::*;
use axum::Json;
use axum::routing::post;
use gateway_sim::Faults;
use gateway_sim::faults::DownMode;
use serde_json::Value;

const DEADLINE: Duration = Duration::from_secs(90);

async fn free_port() -> u16 {
    tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap().port()
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().unwrap()
}

fn spawn(bin: &Path, args: &[String], log: &Path) -> Proc {
    let log = std::fs::File::create(log).unwrap();
    let child = Command::new(bin)
        .args(args)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
    Proc(child)
}

async fn try_query(prometheus: &str, expr: &str) -> Option<Value> {
    let client = reqwest::Client::new();
    let response = client.get(format!("{prometheus}/api/v1/query")).query(&[("query", expr)]).send().await.ok()?;
    response.json().await.ok()
}

async fn query(prometheus: &str, expr: &str) -> Value {
    try_query(prometheus, expr).await.expect("Prometheus answers")
}

async fn eventually<T>(what: &str, mut probe: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs prometheus and prometheus-alertmanager on PATH: cargo nextest run --run-ignored all (bash .ci/run does)"]
async fn circuit_open_alert_fires_reaches_the_webhook_and_resolves() {
    let install = "apt-get install prometheus prometheus-alertmanager";
    let prometheus_bin = required_binary(&["prometheus"], install);
    let alertmanager_bin = required_binary(&["prometheus-alertmanager", "alertmanager"], install);
    let dir = std::env::temp_dir().join(format!("payguard-e2e-{}-{}", std::process::id(), free_port().await));
    std::fs::create_dir_all(&dir).unwrap();

    // The shop, with a reconciler that runs, against the reference PG minus its delays,
    // and a second such PG to fail over to (so the failover panels have data too).
    let pg = || gateway_sim::SimConfig { faults: Faults::instant(), ..sim_config() };
    let app = Arc::new(
        spawn_app_on(pg(), Some(pg()), |s| {
            s.reconciler.interval_ms = 500;
            s.reconciler.grace_ms = 1_000;
            s.gateway.resilience.payment_breaker.wait_in_open = Duration::from_secs(2);
        })
        .await,
    );
    let app_addr = app.url.trim_start_matches("http://").to_string();

    // A webhook receiver, as an on-call bridge would be.
    let received: Arc<Mutex<Vec<Value>>> = Arc::default();
    let sink = received.clone();
    let hook = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hook_url = format!("http://{}/alerts", hook.local_addr().unwrap());
    let router = axum::Router::new().route(
        "/alerts",
        post(move |Json(body): Json<Value>| {
            let sink = sink.clone();
            async move { sink.lock().unwrap().push(body) }
        }),
    );
    tokio::spawn(async move { axum::serve(hook, router).await.unwrap() });

    // Alertmanager: the deploy routing, with test-speed timers and the test's webhook.
    let am_port = free_port().await;
    let deploy_am = std::fs::read_to_string(repo().join("deploy/alertmanager/alertmanager.yml")).unwrap();
    let am_config = deploy_am
        .replace("http://alert-webhook:9099/alerts", &hook_url)
        .replace("group_wait: 10s", "group_wait: 1s")
        .replace("group_interval: 1m", "group_interval: 1s");
    assert!(am_config.contains(&hook_url) && am_config.contains("group_wait: 1s"), "deploy config changed shape");
    std::fs::write(dir.join("alertmanager.yml"), am_config).unwrap();
    let _alertmanager = spawn(
        &alertmanager_bin,
        &[
            format!("--config.file={}", dir.join("alertmanager.yml").display()),
            format!("--storage.path={}", dir.join("am-data").display()),
            format!("--web.listen-address=127.0.0.1:{am_port}"),
            "--cluster.listen-address=".into(),
        ],
        &dir.join("alertmanager.log"),
    );

    // Prometheus: the real alert rules, scraping the service every second.
    let prom_port = free_port().await;
    let prom_config = format!(
        "global: {{scrape_interval: 1s, evaluation_interval: 1s}}\n\
         rule_files: [\"{}\"]\n\
         alerting: {{alertmanagers: [{{static_configs: [{{targets: [\"127.0.0.1:{am_port}\"]}}]}}]}}\n\
         scrape_configs: [{{job_name: payguard, static_configs: [{{targets: [\"{app_addr}\"]}}]}}]\n",
        repo().join("deploy/prometheus/alerts.yml").display()
    );
    std::fs::write(dir.join("prometheus.yml"), prom_config).unwrap();
    let _prometheus = spawn(
        &prometheus_bin,
        &[
            format!("--config.file={}", dir.join("prometheus.yml").display()),
            format!("--storage.tsdb.path={}", dir.join("prom-data").display()),
            format!("--web.listen-address=127.0.0.1:{prom_port}"),
            "--rules.alert.resend-delay=1s".into(),
        ],
        &dir.join("prometheus.log"),
    );
    let prometheus = format!("http://127.0.0.1:{prom_port}");

    // Steady checkout traffic for the whole test.
    let traffic = {
        let app = app.clone();
        tokio::spawn(async move {
            loop {
                app.checkout("buyer-1", &[(1, 1)]).await;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };

    eventually("Prometheus scrapes the service", async || {
        let up = try_query(&prometheus, r#"up{job="payguard"}"#).await?;
        (up["data"]["result"][0]["value"][1] == "1").then_some(())
    })
    .await;

    app.sim.sim().set_faults(Faults { down: Some(DownMode::Unavailable), ..Faults::instant() }).unwrap();
    let firing = eventually("PaymentGatewayCircuitOpen firing in Prometheus", async || {
        let alerts: Value = reqwest::get(format!("{prometheus}/api/v1/alerts")).await.ok()?.json().await.ok()?;
        alerts["data"]["alerts"]
            .as_array()?
            .iter()
            .find(|a| a["labels"]["alertname"] == "PaymentGatewayCircuitOpen" && a["state"] == "firing")
            .cloned()
    })
    .await;
    assert_eq!(firing["labels"]["breaker"], "pg.payments");
    assert_eq!(firing["labels"]["gateway"], "pg");
    assert_eq!(firing["labels"]["severity"], "critical");

    let notified = eventually("the webhook receives the firing alert", async || {
        let received = received.lock().unwrap();
        received
            .iter()
            .find(|n| n["status"] == "firing" && n["commonLabels"]["alertname"] == "PaymentGatewayCircuitOpen")
            .cloned()
    })
    .await;
    assert_eq!(notified["alerts"][0]["labels"]["breaker"], "pg.payments");
    assert!(notified["alerts"][0]["annotations"]["summary"].as_str().unwrap().contains("pg.payments"));

    // Every dashboard expression parses and has data now.
    let dashboard: Value =
        serde_json::from_str(&std::fs::read_to_string(repo().join("deploy/grafana/dashboards/payguard.json")).unwrap())
            .unwrap();
    let mut checked = 0;
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            // Grafana's own variables, as Grafana fills them (`$gateway`: All).
            let expr = target["expr"].as_str().unwrap().replace("$__rate_interval", "1m").replace("$gateway", ".*");
            let answer = query(&prometheus, &expr).await;
            assert_eq!(answer["status"], "success", "panel '{}': {expr}: {answer}", panel["title"]);
            let empty = answer["data"]["result"].as_array().is_none_or(|r| r.is_empty());
            assert!(!empty, "panel '{}' has no data: {expr}", panel["title"]);
            checked += 1;
        }
    }
    assert!(checked >= 20, "{checked} expressions");

    app.sim.sim().set_faults(Faults::instant()).unwrap();
    eventually("the alert resolves in Prometheus", async || {
        let alerts: Value = reqwest::get(format!("{prometheus}/api/v1/alerts")).await.ok()?.json().await.ok()?;
        let still = alerts["data"]["alerts"]
            .as_array()?
            .iter()
            .any(|a| a["labels"]["alertname"] == "PaymentGatewayCircuitOpen");
        (!still).then_some(())
    })
    .await;
    eventually("the webhook receives the resolution", async || {
        let received = received.lock().unwrap();
        received
            .iter()
            .any(|n| n["status"] == "resolved" && n["commonLabels"]["alertname"] == "PaymentGatewayCircuitOpen")
            .then_some(())
    })
    .await;
    traffic.abort();
    let _ = std::fs::remove_dir_all(&dir);
}
