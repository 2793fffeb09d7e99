//! The shop API's OpenAPI 3.1 document, generated from the handlers' annotations and
//! the DTOs' own types. Served at `/openapi.json`; `payguard openapi` prints it, and
//! docs/openapi.json holds a copy a test keeps equal to what is served.
//!
//! The types here exist only to describe the wire: the `{meta, data}` envelope every
//! JSON answer wears (built by `response::ok` and `ApiError`), and bodies the handlers
//! read as raw bytes (the PG's callback).

use std::sync::LazyLock;

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};

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

struct AdminToken;

impl Modify for AdminToken {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "admin_token",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "payguard",
        description = "Orders and card payments through an asynchronous PG. Every JSON answer is `{meta, data}`; \
            errors carry a stable `meta.errorCode`.",
    ),
    paths(
        super::products,
        super::orders::checkout,
        super::orders::detail,
        super::orders::list,
        super::primary_callback,
        super::callback,
        super::admin::breakers,
        super::admin::breaker_action,
        super::admin::reconcile_now,
        super::admin::catalog,
        super::admin::create_product,
        super::admin::update_product,
        super::admin::change_stock,
        super::health,
        super::ready,
        super::metrics,
        super::openapi_document,
        crate::ops::page,
        crate::ops::state,
    ),
    modifiers(&AdminToken),
    tags(
        (name = "shop", description = "Buyers: the catalog, checkout and their orders"),
        (name = "pg", description = "The PG's callbacks"),
        (name = "admin", description = "Operators, with the admin token"),
        (name = "operations", description = "Probes"),
    )
)]
pub struct ApiDoc;

/// The document as served, built once.
pub static DOCUMENT: LazyLock<String> =
    LazyLock::new(|| ApiDoc::openapi().to_pretty_json().expect("the OpenAPI document serialises"));
