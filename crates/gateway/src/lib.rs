//! The payment gateway (PG): its wire API and a resilient, typed client.
//!
//! `wire` is the exact JSON contract of the reference PG (see shared/reference-pg.md);
//! the simulator and the client both speak it, so the two can never drift apart.

pub mod breaker;
mod duration_ms;
pub mod signature;
pub mod wire;
