//! The HTTP API (docs/openapi.json): `/api/v1` with the PG's `{meta, data}` envelope.

pub mod admin;
pub mod buyer;
mod handlers;
pub mod idempotency;
pub mod json;
pub mod limits;
pub mod linger;
pub mod openapi;
pub mod ops;
pub mod orders;
pub mod response;
mod router;
pub mod schema;
pub mod server;
mod state;
pub mod views;

use axum::body::Bytes;

pub use self::router::router;
pub use self::state::{AppParts, AppState, BuyerLimiter, buyer_limiter, sweep_buyer_limiter};

/// Bodies above this are refused before they are read.
pub const BODY_LIMIT: usize = 64 * 1024;

/// A body, or why it could not be read (over `BODY_LIMIT`): handlers answer that with
/// the envelope rather than axum's plain-text rejection.
pub type BodyBytes = Result<Bytes, axum::extract::rejection::BytesRejection>;
