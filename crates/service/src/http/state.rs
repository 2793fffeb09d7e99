//! What every handler shares, and the per-buyer rate limiter it holds.

use std::sync::Arc;

use crate::app::checkout::Checkout;
use crate::app::gateways::Gateways;
use crate::app::reconciler::Reconciler;
use crate::configuration::CheckoutSettings;
use crate::telemetry::Metrics;

use super::{admin, limits};

/// What every handler shares. axum clones the state into every route for every
/// connection, so it is one `Arc`: a clone is a reference count, not a copy of the
/// gateway clients (that cost ~180 KB per open connection; docs/benchmarks.md).
#[derive(Clone)]
pub struct AppState(Arc<AppParts>);

impl AppState {
    pub fn new(parts: AppParts) -> AppState {
        AppState(Arc::new(parts))
    }
}

impl std::ops::Deref for AppState {
    type Target = AppParts;

    fn deref(&self) -> &AppParts {
        &self.0
    }
}

pub struct AppParts {
    pub orders: crate::app::orders::Orders,
    pub catalog: crate::app::catalog::Catalog,
    pub health: crate::app::health::Health,
    pub checkout: Checkout,
    pub idempotency: crate::app::idempotency::Idempotency,
    pub reconciler: Reconciler,
    pub gateways: Gateways,
    pub metrics: Arc<Metrics>,
    pub checkout_settings: CheckoutSettings,
    pub limiter: Arc<BuyerLimiter>,
    pub admin_token: Option<admin::AdminToken>,
    pub request_limits: limits::RequestLimits,
}

/// Per-buyer checkout rate limit (a keyed token bucket).
pub type BuyerLimiter = governor::DefaultKeyedRateLimiter<String>;

pub fn buyer_limiter(settings: &CheckoutSettings) -> BuyerLimiter {
    let per_second = std::num::NonZeroU32::new(settings.rate_limit_per_second).expect("validated positive");
    let burst = std::num::NonZeroU32::new(settings.rate_limit_burst).expect("validated positive");
    governor::RateLimiter::keyed(governor::Quota::per_second(per_second).allow_burst(burst))
}

/// Drops the buckets of buyers idle long enough for theirs to be full again (such a
/// buyer is indistinguishable from a new one), so a flood of one-off buyer ids does not
/// stay in memory. Runs every 30 s until `stop` turns true.
pub async fn sweep_buyer_limiter(limiter: Arc<BuyerLimiter>, mut stop: tokio::sync::watch::Receiver<bool>) {
    let mut every = tokio::time::interval(std::time::Duration::from_secs(30));
    while !*stop.borrow() {
        tokio::select! {
            _ = every.tick() => forget_idle_buyers(&limiter),
            _ = stop.changed() => {}
        }
    }
}

fn forget_idle_buyers<C, MW>(
    limiter: &governor::RateLimiter<String, governor::state::keyed::DashMapStateStore<String>, C, MW>,
) where
    C: governor::clock::Clock,
    MW: governor::middleware::RateLimitingMiddleware<C::Instant>,
{
    limiter.retain_recent();
    limiter.shrink_to_fit();
}

#[cfg(test)]
mod tests {
    use governor::clock::FakeRelativeClock;
    use governor::{Quota, RateLimiter};

    #[test]
    fn idle_buyers_are_forgotten_and_active_ones_kept() {
        let clock = FakeRelativeClock::default();
        let quota = Quota::per_second(std::num::NonZeroU32::new(10).unwrap())
            .allow_burst(std::num::NonZeroU32::new(20).unwrap());
        let limiter = RateLimiter::dashmap_with_clock(quota, clock.clone());
        for buyer in 0..1_000 {
            let buyer = format!("buyer-{buyer}");
            assert!((0..20).all(|_| limiter.check_key(&buyer).is_ok()), "the burst");
        }
        // 1 s refills 10 of the 20 tokens: those buyers must still be remembered.
        clock.advance(std::time::Duration::from_secs(1));
        super::forget_idle_buyers(&limiter);
        assert_eq!(limiter.len(), 1_000, "a bucket that is not full again is kept");
        clock.advance(std::time::Duration::from_millis(1_500));
        assert!(limiter.check_key(&"buyer-7".to_string()).is_ok());
        super::forget_idle_buyers(&limiter);
        assert_eq!(limiter.len(), 1, "only the buyer who just ordered is kept");
    }
}
