//! What the service reports about itself: Prometheus metrics and the recent activity the
//! ops page draws. Below the use cases, which report into it; imports nothing of ours.

pub mod activity;
pub mod metrics;

pub use activity::{Activity, Tee};
pub use metrics::Metrics;
