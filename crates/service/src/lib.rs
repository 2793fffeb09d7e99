//! The shop: orders, payments, callback intake and the reconciler.
//!
//! Layout, imports running one way, top to bottom:
//! - `startup`: builds everything from `configuration` and runs it.
//! - `http`: the API, the ops page and the accept loop; parses, calls the use cases, maps results.
//! - `app`: the use cases (checkout, callbacks, settlement, the reconciler, order and
//!   catalog reads, health).
//! - `store`: persistence, one file per aggregate with its trait, records and SQL, written
//!   once for both databases (`SqlStore<D: Dialect>`); only what differs per database in
//!   its own file.
//! - `domain`: the shop's types and the payment rules.
//! - `telemetry` and `configuration`: below everything that uses them.

pub mod app;
pub mod configuration;
pub mod domain;
pub mod http;
pub mod startup;
pub mod store;
pub mod telemetry;

pub use configuration::Settings;
pub use startup::Application;
