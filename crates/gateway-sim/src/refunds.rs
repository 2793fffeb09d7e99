//! The opt-in refund API (`SimConfig::refunds`, `--refunds`), modelled on Toss Payments'
//! cancel: `POST /api/v1/payments/{transactionKey}/cancel` refunds all or part of a
//! SUCCESS payment under an `Idempotency-Key`, answers PENDING, decides later and posts
//! the result to the cancel's callback URL; `GET .../cancels` lists a payment's cancels.
//! The reference PG has no such API: without `refunds` these paths answer 404 like any
//! unknown path. Cancels meet the same faults as payments (latency, 500 before storing,
//! store-then-timeout, outages, callback faults) and go into the same ledger.
//!
//! A cancel never takes more than is left: a pending cancel holds its amount until it is
//! decided, and a declined one gives it back. The same `Idempotency-Key` for the same
//! payment answers the cancel it made (whatever its status now), never a second refund;
//! the same key with another amount is refused 409.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use gateway::wire::{
    CancelDetail, CancelRequest, Envelope, IDEMPOTENCY_KEY_HEADER, MAX_IDEMPOTENCY_KEY_CHARS, TransactionCancels,
    TransactionStatus, message,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::api::{fail, is_json, user_id};
use crate::callback;
use crate::ledger::Cancel;
use crate::state::{InFlight, Sim};

fn idempotency_key(headers: &HeaderMap) -> Option<String> {
    let key = headers.get(IDEMPOTENCY_KEY_HEADER)?.to_str().ok()?.trim();
    (1..=MAX_IDEMPOTENCY_KEY_CHARS).contains(&key.chars().count()).then(|| key.to_string())
}

/// What the ledger said about a cancel request.
enum Taken {
    /// A new cancel, PENDING: to be decided and called back.
    New(CancelDetail, Option<String>),
    /// The cancel this idempotency key made before, as it stands now.
    Again(CancelDetail),
}

pub(crate) async fn cancel(
    State(sim): State<Arc<Sim>>,
    headers: HeaderMap,
    Path(transaction_key): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let Some(user_id) = user_id(&headers) else {
        return fail(StatusCode::BAD_REQUEST, message::USER_ID_REQUIRED);
    };
    let Some(idempotency_key) = idempotency_key(&headers) else {
        return fail(StatusCode::BAD_REQUEST, message::IDEMPOTENCY_KEY_REQUIRED);
    };
    let (true, Ok(body)) = (is_json(&headers), body) else {
        return fail(StatusCode::BAD_REQUEST, message::BODY_UNREADABLE);
    };
    let Ok(request) = serde_json::from_slice::<CancelRequest>(&body) else {
        return fail(StatusCode::BAD_REQUEST, message::BODY_UNREADABLE);
    };
    if request.cancel_amount <= 0 {
        return fail(StatusCode::BAD_REQUEST, message::CANCEL_AMOUNT_INVALID);
    }
    if let Some(url) = &request.callback_url
        && !sim.allow.allows(url)
    {
        return fail(StatusCode::BAD_REQUEST, message::callback_url_invalid(&sim.allow.describe()));
    }

    let faults = sim.faults();
    let (latency, fails) = sim.draw(|rng| faults.draw_request(rng));
    tokio::time::sleep(latency).await;
    if fails {
        return fail(StatusCode::INTERNAL_SERVER_ERROR, message::UNSTABLE);
    }
    let taken = match take(&sim, &user_id, &transaction_key, &idempotency_key, &request) {
        Ok(taken) => taken,
        Err((status, text)) => return fail(status, text),
    };
    let detail = match taken {
        Taken::Again(detail) => return Json(Envelope::success(detail)).into_response(),
        Taken::New(detail, url) => {
            let rng = sim.draw(|rng| ChaCha8Rng::seed_from_u64(rng.random()));
            tokio::spawn(decide(sim.clone(), detail.clone(), url, rng, sim.start_processing()));
            detail
        }
    };
    crate::api::stored(sim.draw(|rng| faults.draw_store_then_timeout(rng)), detail).await
}

/// Books the cancel under the ledger's lock, so that two cancels racing for the last of a
/// payment's amount cannot both take it.
fn take(
    sim: &Sim,
    user_id: &str,
    transaction_key: &str,
    idempotency_key: &str,
    request: &CancelRequest,
) -> Result<Taken, (StatusCode, String)> {
    let mut ledger = sim.ledger();
    let Some(tx) = ledger.get_mut(transaction_key).filter(|t| t.user_id == user_id) else {
        return Err((StatusCode::NOT_FOUND, message::transaction_not_found(transaction_key)));
    };
    if let Some(earlier) = tx.cancels.iter().find(|c| c.idempotency_key == idempotency_key) {
        if earlier.amount != request.cancel_amount {
            return Err((StatusCode::CONFLICT, message::IDEMPOTENCY_KEY_REUSED.into()));
        }
        return Ok(Taken::Again(tx.cancel_detail(earlier)));
    }
    if tx.status != TransactionStatus::Success {
        return Err((StatusCode::BAD_REQUEST, message::CANCEL_NOT_PAID.into()));
    }
    if request.cancel_amount > tx.cancellable() {
        return Err((StatusCode::BAD_REQUEST, message::CANCEL_AMOUNT_EXCEEDED.into()));
    }
    let cancel = Cancel {
        key: format!("{}:CX:{:06x}", Utc::now().format("%Y%m%d"), sim.random_hex6()),
        idempotency_key: idempotency_key.to_string(),
        amount: request.cancel_amount,
        status: TransactionStatus::Pending,
        reason: None,
        callback_url: request.callback_url.clone(),
        created_at: Utc::now(),
        finalized_at: None,
    };
    let detail = tx.cancel_detail(&cancel);
    tx.cancels.push(cancel);
    Ok(Taken::New(detail, request.callback_url.clone()))
}

/// After the processing delay, decides the cancel and posts the result.
async fn decide(sim: Arc<Sim>, pending: CancelDetail, url: Option<String>, mut rng: ChaCha8Rng, _in_flight: InFlight) {
    let delay = sim.faults().draw_processing_delay(&mut rng);
    tokio::time::sleep(delay).await;
    let declined = sim.faults().draw_cancel_declined(&mut rng);
    let detail = {
        let mut ledger = sim.ledger();
        let tx = ledger.get_mut(&pending.transaction_key).expect("stored transactions are never removed");
        let cancel =
            tx.cancels.iter_mut().find(|c| c.key == pending.cancel_key).expect("stored cancels are never removed");
        (cancel.status, cancel.reason) = match declined {
            true => (TransactionStatus::Failed, Some(message::CANCEL_DECLINED.to_string())),
            false => (TransactionStatus::Success, Some(message::CANCELED.to_string())),
        };
        cancel.finalized_at = Some(Utc::now());
        let cancel = cancel.clone();
        tx.cancel_detail(&cancel)
    };
    if let Some(url) = url {
        callback::deliver_cancel(&sim, detail, &url, &mut rng).await;
    }
}

pub(crate) async fn cancels(
    State(sim): State<Arc<Sim>>,
    headers: HeaderMap,
    Path(transaction_key): Path<String>,
) -> Response {
    let Some(user_id) = user_id(&headers) else {
        return fail(StatusCode::BAD_REQUEST, message::USER_ID_REQUIRED);
    };
    let ledger = sim.ledger();
    match ledger.get(&transaction_key).filter(|t| t.user_id == user_id) {
        Some(tx) => Json(Envelope::success(TransactionCancels {
            transaction_key: tx.key.clone(),
            amount: tx.amount,
            cancels: tx.cancels.iter().map(|c| tx.cancel_detail(c)).collect(),
        }))
        .into_response(),
        None => fail(StatusCode::NOT_FOUND, message::transaction_not_found(&transaction_key)),
    }
}
