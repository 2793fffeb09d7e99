//! The service's integration tests: the real app on a random port against the real simulator, both stores, the tools it runs beside.
//! One test binary for the crate: each module below was its own binary before,
//! each compiling and linking the shared helpers again.

mod alerting_e2e;
mod callbacks;
mod catalog;
mod checkout;
mod common;
mod failover;
mod fuzz_inputs;
mod https;
mod layers;
mod metrics;
mod migrations;
mod openapi;
mod ops_browser;
mod reconciler;
mod security;
mod store_outage;
mod store_suite;
