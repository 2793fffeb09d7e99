//! Test helpers: a simulator on a random port with instant timings and a fixed seed,
//! a client, and a callback receiver that records every delivery.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use gateway_sim::{Faults, RunningSim, SimConfig};
use serde_json::{Value, json};

pub async fn spawn_sim(faults: Faults) -> RunningSim {
    spawn_sim_with(SimConfig { faults, ..test_config() }).await
}

pub fn test_config() -> SimConfig {
    SimConfig {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        seed: Some(7),
        faults: Faults::instant(),
        ..SimConfig::default()
    }
}

pub async fn spawn_sim_with(config: SimConfig) -> RunningSim {
    gateway_sim::spawn(config).await.expect("simulator starts")
}

/// The reference PG with no delays and no random request failures.
pub fn reliable() -> Faults {
    Faults { request_failure_rate: 0.0, ..Faults::instant() }
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap()
}

pub fn payment_body(order_id: &str, callback_url: &str) -> Value {
    json!({
        "orderId": order_id,
        "cardType": "SAMSUNG",
        "cardNo": "1234-5678-9814-1451",
        "amount": 5000,
        "callbackUrl": callback_url,
    })
}

pub async fn post_payment(sim: &RunningSim, user: &str, body: &Value) -> (StatusCode, Value) {
    let response = client()
        .post(format!("{}/api/v1/payments", sim.base_url()))
        .header("X-USER-ID", user)
        .json(body)
        .send()
        .await
        .expect("request answered");
    let status = response.status();
    (status, response.json().await.expect("JSON body"))
}

pub async fn get_json(url: &str, user: Option<&str>) -> (StatusCode, Value) {
    let mut request = client().get(url);
    if let Some(user) = user {
        request = request.header("X-USER-ID", user);
    }
    let response = request.send().await.expect("request answered");
    let status = response.status();
    (status, response.json().await.expect("JSON body"))
}

#[derive(Debug, Clone)]
pub struct Delivery {
    pub headers: HeaderMap,
    pub raw: Bytes,
    pub body: Value,
    pub at: Instant,
}

/// Records every callback POST; answers with the queued statuses first, then 200.
#[derive(Clone, Default)]
pub struct Receiver {
    deliveries: Arc<Mutex<Vec<Delivery>>>,
    answers: Arc<Mutex<Vec<StatusCode>>>,
    pub url: String,
}

impl Receiver {
    pub async fn start() -> Receiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/api/v1/payments/callback", listener.local_addr().unwrap());
        let receiver = Receiver { url, ..Receiver::default() };
        let app = Router::new().route("/api/v1/payments/callback", post(record)).with_state(receiver.clone());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        receiver
    }

    /// The next deliveries are answered with these statuses, in order.
    pub fn answer_with(&self, statuses: &[StatusCode]) {
        self.answers.lock().unwrap().extend(statuses.iter().rev());
    }

    pub fn deliveries(&self) -> Vec<Delivery> {
        self.deliveries.lock().unwrap().clone()
    }

    pub fn bodies(&self) -> Vec<Value> {
        self.deliveries().into_iter().map(|d| d.body).collect()
    }
}

async fn record(State(receiver): State<Receiver>, headers: HeaderMap, raw: Bytes) -> StatusCode {
    let body = serde_json::from_slice(&raw).unwrap_or(Value::Null);
    receiver.deliveries.lock().unwrap().push(Delivery { headers, raw, body, at: Instant::now() });
    receiver.answers.lock().unwrap().pop().unwrap_or(StatusCode::OK)
}

/// Accepts `n` payments for user "merchant" and waits until all are processed and called back.
pub async fn accept_and_settle(sim: &RunningSim, receiver: &Receiver, n: usize) -> Vec<String> {
    let mut keys = Vec::new();
    for i in 0..n {
        let (status, body) =
            post_payment(sim, "merchant", &payment_body(&format!("ORDER-{i:04}"), &receiver.url)).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        keys.push(body["data"]["transactionKey"].as_str().unwrap().to_string());
    }
    tokio::time::timeout(Duration::from_secs(10), sim.sim().settled()).await.expect("processing settles");
    keys
}
