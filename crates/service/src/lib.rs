//! The shop: orders, payments, callback intake and the reconciler.

pub mod app;
pub mod configuration;
pub mod domain;
pub mod http;
pub mod metrics;
pub mod ops;
pub mod startup;
pub mod store;

pub use configuration::Settings;
pub use startup::Application;
