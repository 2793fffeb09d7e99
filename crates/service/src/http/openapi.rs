//! The shop API's OpenAPI 3.1 document, generated from the handlers' annotations and
//! the DTOs' own types. Served at `/openapi.json`; `payguard openapi` prints it, and
//! docs/openapi.json holds a copy a test keeps equal to what is served.
//!
//! The handlers carry their own annotations; the shapes only the document needs are in
//! `schema`.

use std::sync::LazyLock;

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

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
        super::handlers::products,
        super::orders::checkout,
        super::orders::detail,
        super::orders::list,
        super::handlers::primary_callback,
        super::handlers::callback,
        super::admin::breakers,
        super::admin::breaker_action,
        super::admin::reconcile_now,
        super::admin::catalog,
        super::admin::create_product,
        super::admin::update_product,
        super::admin::change_stock,
        super::handlers::health,
        super::handlers::ready,
        super::handlers::metrics,
        super::handlers::openapi_document,
        super::ops::page,
        super::ops::state,
    ),
    // The callbacks' answers come from an `IntoResponses` type, which names its schemas
    // without registering them.
    components(schemas(super::schema::CallbackResult, super::schema::Answer<super::schema::CallbackResult>)),
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
