//! Use cases. Every payment state change goes through `Settlement` (callbacks and the
//! reconciler) or `Checkout` (the first two steps), so the rules live in one place.

pub mod callbacks;
pub mod catalog;
pub mod checkout;
pub mod gateways;
pub mod health;
pub mod idempotency;
pub mod listings;
pub mod orders;
pub mod reconciler;
pub mod replay;
pub mod settlement;
