//! Shapes that exist only to describe the wire in the OpenAPI document: the
//! `{meta, data}` envelope every JSON answer wears (built by `response::ok` and
//! `ApiError`), and bodies the handlers read as raw bytes (the PG's callback).

use utoipa::ToSchema;

/// `{"meta": {...}, "data": ...}` around a successful answer.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct Answer<T: ToSchema> {
    meta: SuccessMeta,
    data: T,
}

#[derive(ToSchema)]
#[serde(rename_all = "camelCase")]
#[allow(dead_code)]
struct SuccessMeta {
    #[schema(pattern = "^SUCCESS$")]
    result: String,
    error_code: Option<String>,
    message: Option<String>,
}

/// Every error: `meta.errorCode` is stable (listed per status on each operation),
/// `meta.message` is for people; `data` holds details for some codes (the fields of an
/// `INVALID_REQUEST`, the stock of an `OUT_OF_STOCK`) and is null otherwise.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct Failure {
    meta: FailureMeta,
    data: Option<serde_json::Value>,
}

#[derive(ToSchema)]
#[serde(rename_all = "camelCase")]
#[allow(dead_code)]
struct FailureMeta {
    #[schema(pattern = "^FAIL$")]
    result: String,
    error_code: String,
    message: String,
}

/// The body the PG POSTs to the callback URL (the PG's transaction, flat).
#[derive(ToSchema)]
#[serde(rename_all = "camelCase")]
#[allow(dead_code)]
pub struct CallbackBody {
    #[schema(max_length = 64)]
    transaction_key: String,
    #[schema(max_length = 64)]
    order_id: String,
    #[schema(pattern = "^(SAMSUNG|KB|HYUNDAI)$")]
    card_type: String,
    card_no: String,
    amount: i64,
    #[schema(pattern = "^(PENDING|SUCCESS|FAILED)$")]
    status: String,
    reason: Option<String>,
}

/// What a callback did: `settled_success`, `settled_failed`, `duplicate`, ...
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct CallbackResult {
    result: String,
}

#[derive(ToSchema)]
#[allow(dead_code)]
pub struct Health {
    status: String,
}

#[derive(ToSchema)]
#[allow(dead_code)]
pub struct BreakerState {
    name: String,
    gateway: Option<String>,
    /// closed, open, half_open, forced_open or disabled.
    state: String,
}

/// What both callback paths answer.
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)]
pub enum CallbackAnswers {
    #[response(status = 200, description = "Verified and applied (or a known duplicate)")]
    Applied(Answer<CallbackResult>),
    #[response(status = 400, description = "`CALLBACK_MALFORMED`, `CALLBACK_MISMATCH`")]
    Malformed(Failure),
    #[response(status = 401, description = "`CALLBACK_UNAUTHORIZED`: a bad or missing signature where a secret is set")]
    Unauthorized(Failure),
    #[response(status = 404, description = "`TRANSACTION_NOT_FOUND`; `NOT_FOUND` for an unknown gateway")]
    NotFound(Failure),
    #[response(status = 409, description = "`CALLBACK_WRONG_GATEWAY`")]
    WrongGateway(Failure),
    #[response(status = 413, description = "`PAYLOAD_TOO_LARGE`")]
    TooLarge(Failure),
    #[response(
        status = 503,
        description = "`CALLBACK_UNVERIFIABLE` (the PG could not be asked), `STORE_UNAVAILABLE`, `REQUEST_TIMEOUT`"
    )]
    Unavailable(Failure),
}
