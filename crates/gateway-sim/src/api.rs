//! The reference PG's HTTP API: `POST /api/v1/payments`, lookups by key and by orderId,
//! with its envelope, messages and status codes. Faults shape the answers.

use std::sync::Arc;

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use gateway::wire::{
    Envelope, OrderTransactions, PaymentRequest, TransactionStatus, TransactionSummary, USER_ID_HEADER, message,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Deserialize;

use crate::callback;
use crate::faults::{DownMode, StoreThenTimeout, StoreThenTimeoutMode};
use crate::ledger::Transaction;
use crate::request::{parse_payment_request, validate};
use crate::state::{InFlight, Sim};

/// A `FAIL` envelope whose `errorCode` is the status's reason phrase, like the reference.
pub(crate) fn fail(status: StatusCode, msg: impl Into<String>) -> Response {
    let code = status.canonical_reason().unwrap_or("Error");
    (status, Json(Envelope::<()>::fail(code, msg))).into_response()
}

pub(crate) fn user_id(headers: &HeaderMap) -> Option<String> {
    let id = headers.get(USER_ID_HEADER)?.to_str().ok()?.trim();
    (!id.is_empty()).then(|| id.to_string())
}

pub(crate) fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|mime| mime.trim().to_ascii_lowercase())
        .is_some_and(|mime| mime == "application/json" || (mime.starts_with("application/") && mime.ends_with("+json")))
}

/// Counts every API call, then applies the outage faults before any handler runs.
pub(crate) async fn outage(State(sim): State<Arc<Sim>>, request: Request, next: Next) -> Response {
    {
        let mut ledger = sim.ledger();
        if request.method() == Method::POST && request.uri().path().ends_with("/cancel") {
            ledger.counts.cancel_requests += 1;
        } else if request.method() == Method::POST {
            ledger.counts.payment_requests += 1;
        } else {
            ledger.counts.status_queries += 1;
        }
    }
    let faults = sim.faults();
    // A request on a connection opened before a `refuse` outage still gets a fast refusal.
    let refused = match faults.down {
        Some(DownMode::Refuse | DownMode::Unavailable) => true,
        Some(DownMode::PaymentsUnavailable) => request.method() == Method::POST,
        None => false,
    };
    if refused {
        return fail(StatusCode::SERVICE_UNAVAILABLE, message::UNSTABLE);
    }
    if faults.hang {
        std::future::pending::<()>().await;
    }
    // Drawn only when set, so seeded runs without it keep their sequence of draws.
    if request.method() == Method::GET && faults.lookup_latency_ms != crate::faults::MsRange::ZERO {
        let delay = sim.draw(|rng| faults.lookup_latency_ms.draw(rng));
        tokio::time::sleep(delay).await;
    }
    next.run(request).await
}

pub(crate) async fn create(
    State(sim): State<Arc<Sim>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let Some(user_id) = user_id(&headers) else {
        return fail(StatusCode::BAD_REQUEST, message::USER_ID_REQUIRED);
    };
    let (true, Ok(body)) = (is_json(&headers), body) else {
        return fail(StatusCode::BAD_REQUEST, message::BODY_UNREADABLE);
    };
    let request = match parse_payment_request(&body) {
        Ok(request) => request,
        Err(msg) => return fail(StatusCode::BAD_REQUEST, msg),
    };
    if let Err(msg) = validate(&request, &sim.allow) {
        return fail(StatusCode::BAD_REQUEST, msg);
    }

    let faults = sim.faults();
    let (latency, fails) = sim.draw(|rng| faults.draw_request(rng));
    tokio::time::sleep(latency).await;
    if fails {
        return fail(StatusCode::INTERNAL_SERVER_ERROR, message::UNSTABLE);
    }
    let store_then_timeout = sim.draw(|rng| faults.draw_store_then_timeout(rng));
    let summary = store(&sim, user_id, request);
    // Processing draws from its own RNG seeded here, so the main sequence of draws depends
    // only on the order of requests, not on how background tasks interleave with them.
    let processing_rng = sim.draw(|rng| ChaCha8Rng::seed_from_u64(rng.random()));
    tokio::spawn(process(sim.clone(), summary.transaction_key.clone(), processing_rng, sim.start_processing()));

    stored(store_then_timeout, summary).await
}

/// The answer for something the PG has just stored (a payment, a cancel), as a drawn
/// store-then-timeout fault shapes it: dropped, held back, or at once.
pub(crate) async fn stored(fault: Option<StoreThenTimeout>, data: impl serde::Serialize) -> Response {
    match fault.map(|s| (s.mode, s.delay_ms)) {
        Some((StoreThenTimeoutMode::Drop, _)) => dropped_connection(),
        Some((StoreThenTimeoutMode::Delay, delay_ms)) => {
            tokio::time::sleep(std::time::Duration::from_millis(delay_ms)).await;
            Json(Envelope::success(data)).into_response()
        }
        None => Json(Envelope::success(data)).into_response(),
    }
}

fn store(sim: &Sim, user_id: String, request: PaymentRequest) -> TransactionSummary {
    let date = Utc::now().format("%Y%m%d");
    let mut ledger = sim.ledger();
    // 6 hex digits collide after a few thousand keys a day; the reference ignores that,
    // but a duplicate key would corrupt our audits, so draw again.
    let key = loop {
        let key = format!("{date}:TR:{:06x}", sim.random_hex6());
        if !ledger.contains_key(&key) {
            break key;
        }
    };
    let tx = Transaction {
        key,
        user_id,
        order_id: request.order_id,
        card_type: request.card_type,
        card_no: request.card_no,
        amount: request.amount,
        callback_url: request.callback_url,
        status: TransactionStatus::Pending,
        reason: None,
        created_at: Utc::now(),
        finalized_at: None,
        callbacks_delivered: 0,
        cancels: Vec::new(),
    };
    let summary = tx.summary();
    ledger.insert(tx);
    summary
}

/// After the processing delay, decides the outcome and sends the callback.
async fn process(sim: Arc<Sim>, key: String, mut rng: ChaCha8Rng, _in_flight: InFlight) {
    let delay = sim.faults().draw_processing_delay(&mut rng);
    tokio::time::sleep(delay).await;
    let outcome = sim.faults().draw_outcome(&mut rng);
    let (detail, url) = {
        let mut ledger = sim.ledger();
        let tx = ledger.get_mut(&key).expect("stored transactions are never removed");
        tx.status = outcome.status();
        tx.reason = Some(outcome.reason().to_string());
        tx.finalized_at = Some(Utc::now());
        (tx.detail(), tx.callback_url.clone())
    };
    callback::deliver(&sim, detail, &url, &mut rng).await;
}

/// A response whose body fails at once: hyper aborts the connection, so the caller sees
/// the connection drop with no answer although the transaction was stored.
fn dropped_connection() -> Response {
    let broken = futures_util::stream::once(async {
        Err::<Bytes, std::io::Error>(std::io::Error::other("store-then-timeout fault: connection dropped"))
    });
    Response::new(Body::from_stream(broken))
}

pub(crate) async fn detail(State(sim): State<Arc<Sim>>, headers: HeaderMap, Path(key): Path<String>) -> Response {
    let Some(user_id) = user_id(&headers) else {
        return fail(StatusCode::BAD_REQUEST, message::USER_ID_REQUIRED);
    };
    let ledger = sim.ledger();
    match ledger.get(&key).filter(|t| t.user_id == user_id) {
        Some(tx) => Json(Envelope::success(tx.detail())).into_response(),
        None => fail(StatusCode::NOT_FOUND, message::transaction_not_found(&key)),
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct OrderQuery {
    order_id: Option<String>,
}

pub(crate) async fn by_order(
    State(sim): State<Arc<Sim>>,
    headers: HeaderMap,
    query: Result<Query<OrderQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Some(user_id) = user_id(&headers) else {
        return fail(StatusCode::BAD_REQUEST, message::USER_ID_REQUIRED);
    };
    let Some(order_id) = query.ok().and_then(|q| q.0.order_id) else {
        return fail(StatusCode::BAD_REQUEST, "필수 요청 파라미터 'orderId'가 누락되었습니다.");
    };
    let ledger = sim.ledger();
    let transactions: Vec<TransactionSummary> =
        ledger.by_order(&user_id, &order_id).into_iter().map(Transaction::summary).collect();
    if transactions.is_empty() {
        return fail(StatusCode::NOT_FOUND, message::order_not_found(&order_id));
    }
    Json(Envelope::success(OrderTransactions { order_id, transactions })).into_response()
}

pub(crate) async fn unknown_path() -> Response {
    fail(StatusCode::NOT_FOUND, message::UNKNOWN_PATH)
}

pub(crate) async fn method_not_allowed() -> Response {
    fail(StatusCode::METHOD_NOT_ALLOWED, message::UNKNOWN_PATH)
}

/// Whether the faults ask for the port to be closed.
pub(crate) fn refusing(faults: &crate::faults::Faults) -> bool {
    faults.down == Some(DownMode::Refuse)
}
