//! The innermost service: one HTTP exchange with the PG under the per-attempt timeouts,
//! classified by what we know about the request's fate.
//!
//! The connect timeout is reqwest's (a connect failure means nothing was sent); the
//! response timeout bounds the whole exchange and means the outcome is unknown.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use reqwest::{StatusCode, Url};
use serde_json::Value;
use tokio::time::Instant;
use tower::Service;

use crate::observer::{GatewayEvent, GatewayObserver, Operation};
use crate::outcome::{CallError, NotDelivered, PgAnswer, Rejection, Unknown};
use crate::wire::{
    CancelDetail, CancelRequest, Envelope, IDEMPOTENCY_KEY_HEADER, OrderTransactions, PaymentRequest, ResultKind,
    TransactionCancels, TransactionDetail, TransactionSummary, USER_ID_HEADER, message,
};

/// One PG operation with its input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PgCall {
    RequestPayment(PaymentRequest),
    GetTransaction(String),
    FindByOrder(String),
    /// A refund of the payment `transaction_key`, safe to send again under its key.
    Cancel {
        transaction_key: String,
        idempotency_key: String,
        request: CancelRequest,
    },
    /// The cancels of a payment, by its transaction key.
    GetCancels(String),
}

impl PgCall {
    pub fn operation(&self) -> Operation {
        match self {
            PgCall::RequestPayment(_) => Operation::RequestPayment,
            PgCall::GetTransaction(_) => Operation::GetTransaction,
            PgCall::FindByOrder(_) => Operation::FindByOrder,
            PgCall::Cancel { .. } => Operation::RequestCancel,
            PgCall::GetCancels(_) => Operation::GetCancels,
        }
    }
}

#[derive(Clone)]
pub(crate) struct HttpTransport {
    http: reqwest::Client,
    base: Url,
    merchant_id: String,
    response_timeout: Duration,
    observer: Arc<dyn GatewayObserver>,
}

impl HttpTransport {
    pub(crate) fn new(
        base: Url,
        merchant_id: String,
        tls: &crate::tls::TlsSettings,
        connect_timeout: Duration,
        response_timeout: Duration,
        observer: Arc<dyn GatewayObserver>,
    ) -> Result<HttpTransport, crate::ClientError> {
        let http = tls.apply(reqwest::Client::builder().connect_timeout(connect_timeout))?.build()?;
        Ok(HttpTransport { http, base, merchant_id, response_timeout, observer })
    }

    async fn exchange(&self, call: &PgCall) -> Result<PgAnswer, CallError> {
        let request = match call {
            PgCall::RequestPayment(body) => self.http.post(self.url(&[])).json(body),
            PgCall::GetTransaction(key) => self.http.get(self.url(&[key])),
            PgCall::FindByOrder(order_id) => self.http.get(self.url(&[])).query(&[("orderId", order_id)]),
            PgCall::Cancel { transaction_key, idempotency_key, request } => self
                .http
                .post(self.url(&[transaction_key, "cancel"]))
                .header(IDEMPOTENCY_KEY_HEADER, idempotency_key)
                .json(request),
            PgCall::GetCancels(key) => self.http.get(self.url(&[key, "cancels"])),
        }
        .header(USER_ID_HEADER, &self.merchant_id);
        let exchange = async {
            let response = request.send().await?;
            let status = response.status();
            let body = response.bytes().await?;
            Ok::<_, reqwest::Error>((status, body))
        };
        match tokio::time::timeout(self.response_timeout, exchange).await {
            Err(_) => Err(Unknown::Timeout(self.response_timeout).into()),
            Ok(Err(error)) => Err(classify_transport_error(&error)),
            Ok(Ok((status, body))) => classify_answer(call, status, &body),
        }
    }

    fn url(&self, segments: &[&str]) -> Url {
        let mut url = self.base.clone();
        {
            let mut path = url.path_segments_mut().expect("an http(s) base URL");
            path.pop_if_empty().extend(["api", "v1", "payments"]).extend(segments);
        }
        url
    }
}

impl Service<PgCall> for HttpTransport {
    type Response = PgAnswer;
    type Error = CallError;
    type Future = Pin<Box<dyn Future<Output = Result<PgAnswer, CallError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), CallError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, call: PgCall) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            let started = Instant::now();
            let result = this.exchange(&call).await;
            let outcome = match &result {
                Ok(PgAnswer::Rejected(_)) => "rejected",
                Ok(PgAnswer::NotFound) => "not_found",
                Ok(_) => "ok",
                Err(e) => e.reason(),
            };
            this.observer.on_event(&GatewayEvent::Attempt {
                operation: call.operation(),
                outcome,
                elapsed: started.elapsed(),
            });
            result
        })
    }
}

/// Only a failure to connect proves the request was never sent.
fn classify_transport_error(error: &reqwest::Error) -> CallError {
    if error.is_connect() {
        NotDelivered::Connect(root_cause(error)).into()
    } else {
        Unknown::ConnectionLost(root_cause(error)).into()
    }
}

fn root_cause(error: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = error;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}

fn classify_answer(call: &PgCall, status: StatusCode, body: &[u8]) -> Result<PgAnswer, CallError> {
    let envelope: Option<Envelope<Value>> = serde_json::from_slice(body).ok();
    let meta_message = envelope.as_ref().and_then(|e| e.meta.message.clone());
    let unexpected = |detail: String| Err(Unknown::UnexpectedAnswer { status: status.as_u16(), detail }.into());

    if status.is_success() {
        let Some(Envelope { meta, data: Some(data) }) = envelope else {
            return unexpected(String::from_utf8_lossy(body).chars().take(200).collect());
        };
        if meta.result != ResultKind::Success {
            return unexpected(format!("2xx with meta.result {:?}", meta.result));
        }
        let parsed = match call {
            PgCall::RequestPayment(_) => serde_json::from_value::<TransactionSummary>(data)
                .map(|s| PgAnswer::Accepted { transaction_key: s.transaction_key }),
            PgCall::GetTransaction(_) => serde_json::from_value::<TransactionDetail>(data).map(PgAnswer::Transaction),
            PgCall::FindByOrder(_) => serde_json::from_value::<OrderTransactions>(data).map(PgAnswer::Transactions),
            PgCall::Cancel { .. } => serde_json::from_value::<CancelDetail>(data).map(PgAnswer::Cancel),
            PgCall::GetCancels(_) => serde_json::from_value::<TransactionCancels>(data).map(PgAnswer::Cancels),
        };
        return parsed.or_else(|e| unexpected(format!("unreadable data: {e}")));
    }
    match status {
        StatusCode::TOO_MANY_REQUESTS => Err(NotDelivered::RateLimited.into()),
        StatusCode::SERVICE_UNAVAILABLE => {
            Err(NotDelivered::Unavailable { status: status.as_u16(), message: meta_message.unwrap_or_default() }.into())
        }
        // The reference PG's "unstable" 500 is answered before anything is stored.
        StatusCode::INTERNAL_SERVER_ERROR if meta_message.as_deref() == Some(message::UNSTABLE) => {
            Err(NotDelivered::Unavailable { status: 500, message: message::UNSTABLE.to_string() }.into())
        }
        StatusCode::NOT_FOUND if !matches!(call, PgCall::RequestPayment(_)) => Ok(PgAnswer::NotFound),
        s if s.is_client_error() => Ok(PgAnswer::Rejected(Rejection {
            status: s.as_u16(),
            code: envelope
                .as_ref()
                .and_then(|e| e.meta.error_code.clone())
                .unwrap_or_else(|| s.canonical_reason().unwrap_or("Client Error").to_string()),
            reason: meta_message.unwrap_or_else(|| String::from_utf8_lossy(body).chars().take(200).collect()),
        })),
        // Any other 5xx (a proxy's 502/504, the PG's generic 500) may come after the PG
        // stored the payment: unknown, to be settled by asking.
        _ => unexpected(meta_message.unwrap_or_else(|| String::from_utf8_lossy(body).chars().take(200).collect())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{CardType, Envelope, error_code};

    fn pay() -> PgCall {
        PgCall::RequestPayment(PaymentRequest {
            order_id: "ORD000123-1".into(),
            card_type: CardType::Samsung,
            card_no: "1234-5678-9814-1451".into(),
            amount: 5000,
            callback_url: "http://localhost:8080/cb".into(),
        })
    }

    fn body<T: serde::Serialize>(v: &T) -> Vec<u8> {
        serde_json::to_vec(v).unwrap()
    }

    #[test]
    fn the_unstable_500_is_not_delivered_but_other_5xx_are_unknown() {
        let unstable = body(&Envelope::<()>::fail(error_code::INTERNAL_SERVER_ERROR, message::UNSTABLE));
        assert!(matches!(
            classify_answer(&pay(), StatusCode::INTERNAL_SERVER_ERROR, &unstable),
            Err(CallError::NotDelivered(NotDelivered::Unavailable { status: 500, .. }))
        ));
        let generic = body(&Envelope::<()>::fail(error_code::INTERNAL_SERVER_ERROR, message::UNEXPECTED));
        assert!(matches!(
            classify_answer(&pay(), StatusCode::INTERNAL_SERVER_ERROR, &generic),
            Err(CallError::Unknown(Unknown::UnexpectedAnswer { status: 500, .. }))
        ));
        assert!(matches!(
            classify_answer(&pay(), StatusCode::BAD_GATEWAY, b"<html>"),
            Err(CallError::Unknown(Unknown::UnexpectedAnswer { status: 502, .. }))
        ));
        assert_eq!(
            classify_answer(&pay(), StatusCode::TOO_MANY_REQUESTS, b""),
            Err(CallError::NotDelivered(NotDelivered::RateLimited))
        );
    }

    #[test]
    fn a_4xx_is_a_rejection_with_the_pg_reason() {
        let bad = body(&Envelope::<()>::fail(error_code::BAD_REQUEST, message::AMOUNT_INVALID));
        assert_eq!(
            classify_answer(&pay(), StatusCode::BAD_REQUEST, &bad),
            Ok(PgAnswer::Rejected(Rejection {
                status: 400,
                code: "Bad Request".into(),
                reason: message::AMOUNT_INVALID.into()
            }))
        );
    }

    #[test]
    fn a_404_is_not_found_for_lookups_only() {
        let nf = body(&Envelope::<()>::fail(error_code::NOT_FOUND, message::transaction_not_found("k")));
        assert_eq!(
            classify_answer(&PgCall::GetTransaction("k".into()), StatusCode::NOT_FOUND, &nf),
            Ok(PgAnswer::NotFound)
        );
        assert!(matches!(classify_answer(&pay(), StatusCode::NOT_FOUND, &nf), Ok(PgAnswer::Rejected(_))));
    }

    #[test]
    fn an_accepted_answer_is_read_from_meta_and_data() {
        let ok = body(&Envelope::success(TransactionSummary {
            transaction_key: "20250816:TR:9577c5".into(),
            status: crate::wire::TransactionStatus::Pending,
            reason: None,
        }));
        assert_eq!(
            classify_answer(&pay(), StatusCode::OK, &ok),
            Ok(PgAnswer::Accepted { transaction_key: "20250816:TR:9577c5".into() })
        );
        // A 200 that is not the envelope: the PG may have stored it, so unknown.
        assert!(matches!(
            classify_answer(&pay(), StatusCode::OK, b"{\"result\":\"SUCCESS\"}"),
            Err(CallError::Unknown(_))
        ));
    }
}
