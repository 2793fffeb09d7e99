//! The payment gateway (PG): its wire API and a resilient, typed client.
//!
//! `wire` is the exact JSON contract of the reference PG (docs/gateway-simulator.md);
//! the simulator and the client both speak it, so the two can never drift apart.
//! `GatewayClient` classifies every call by what we know about the request's fate
//! (`PaymentOutcome`), which is what the service decides on.

pub mod breaker;
mod bulkhead;
mod client;
pub mod config;
mod duration_ms;
mod evidence;
pub mod observer;
pub mod outcome;
pub mod retry;
pub mod signature;
pub mod tls;
pub mod transport;
pub mod wire;

pub use client::{ClientError, GatewayClient, GatewaySettings, Stack, stack};
pub use config::ResilienceConfig;
pub use outcome::{CallError, CancelOutcome, LookupOutcome, NotDelivered, PaymentOutcome, Rejection, Unknown};
pub use tls::TlsSettings;
