//! The simulator's behaviour knobs ("faults") and the random draws they drive.
//!
//! `Faults::default()` is the reference PG exactly; every fault is opt-in. The draws are
//! plain functions of an RNG so their statistics are tested without any HTTP or time.

use std::time::Duration;

use gateway::wire::{TransactionStatus, message};
use rand::Rng;
use serde::{Deserialize, Serialize};

/// An inclusive range of milliseconds, drawn uniformly.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct MsRange {
    pub min: u64,
    pub max: u64,
}

impl MsRange {
    pub const ZERO: MsRange = MsRange { min: 0, max: 0 };

    pub const fn new(min: u64, max: u64) -> MsRange {
        MsRange { min, max }
    }

    pub fn draw(&self, rng: &mut impl Rng) -> Duration {
        Duration::from_millis(rng.random_range(self.min..=self.max))
    }
}

impl std::str::FromStr for MsRange {
    type Err = String;

    /// `"100-500"` or a single `"250"`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let parse =
            |v: &str| v.trim().parse::<u64>().map_err(|_| format!("'{s}' is not a millisecond range like 100-500"));
        let range = match s.split_once('-') {
            Some((min, max)) => MsRange::new(parse(min)?, parse(max)?),
            None => {
                let v = parse(s)?;
                MsRange::new(v, v)
            }
        };
        if range.min > range.max {
            return Err(format!("'{s}': min is above max"));
        }
        Ok(range)
    }
}

/// How the PG is down, when it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum DownMode {
    /// The port is closed: connections are refused (the request surely never arrived).
    Refuse,
    /// Every API call is answered 503 at once, nothing stored.
    Unavailable,
    /// Every payment request is answered 503 at once, nothing stored, while lookups
    /// answer as usual: a payment back end down behind a healthy API layer.
    PaymentsUnavailable,
}

/// What happens to an accepted payment's answer under "store then time out".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum StoreThenTimeoutMode {
    /// Answer only after `delayMs`, far past any sane client timeout.
    Delay,
    /// Drop the connection without an answer.
    Drop,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StoreThenTimeout {
    pub mode: StoreThenTimeoutMode,
    /// Share of accepted payments it applies to.
    #[serde(default = "one")]
    pub rate: f64,
    #[serde(default = "store_then_timeout_delay")]
    pub delay_ms: u64,
}

fn one() -> f64 {
    1.0
}

fn store_then_timeout_delay() -> u64 {
    60_000
}

/// Shares of the final outcomes; SUCCESS takes the rest.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OutcomeSplit {
    pub limit_exceeded: f64,
    pub invalid_card: f64,
}

impl Default for OutcomeSplit {
    fn default() -> Self {
        OutcomeSplit { limit_exceeded: 0.2, invalid_card: 0.1 }
    }
}

/// Callback delivery retries; the reference PG makes one attempt (`maxAttempts: 1`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CallbackRetry {
    pub max_attempts: u32,
    pub initial_backoff_ms: u64,
}

impl Default for CallbackRetry {
    fn default() -> Self {
        CallbackRetry { max_attempts: 1, initial_backoff_ms: 500 }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct CallbackFaults {
    /// Share of callbacks never sent.
    pub drop_rate: f64,
    /// Share of callbacks sent twice.
    pub duplicate_rate: f64,
    /// Extra delay before the callback is sent.
    pub delay_ms: MsRange,
    /// Share of transactions that get a stale PENDING delivery after the final one.
    pub stale_rate: f64,
    /// Share of transactions that get a contradictory final delivery after the real one.
    pub contradictory_rate: f64,
    pub retry: CallbackRetry,
}

/// Everything that shapes the simulator's behaviour. Serialised camelCase for
/// `GET/PUT /sim/faults`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct Faults {
    /// Share of valid payment requests answered 500 "현재 서버가 불안정합니다..." with nothing stored.
    pub request_failure_rate: f64,
    /// Delay before a valid payment request is answered.
    pub request_latency_ms: MsRange,
    /// Delay before a lookup is answered. The reference answers lookups at once (0);
    /// a real PG's status API takes time, which is what a reconciler's backlog meets.
    pub lookup_latency_ms: MsRange,
    /// Delay between acceptance and the final status.
    pub processing_delay_ms: MsRange,
    pub outcome: OutcomeSplit,
    pub down: Option<DownMode>,
    /// Accept API calls and never answer them.
    pub hang: bool,
    pub store_then_timeout: Option<StoreThenTimeout>,
    pub callback: CallbackFaults,
    /// Share of accepted cancels (`--refunds`) the PG declines when it decides them.
    pub cancel_decline_rate: f64,
}

impl Default for Faults {
    /// The reference PG, exactly.
    fn default() -> Self {
        Faults {
            request_failure_rate: 0.4,
            request_latency_ms: MsRange::new(100, 500),
            lookup_latency_ms: MsRange::ZERO,
            processing_delay_ms: MsRange::new(1_000, 5_000),
            outcome: OutcomeSplit::default(),
            down: None,
            hang: false,
            store_then_timeout: None,
            callback: CallbackFaults::default(),
            cancel_decline_rate: 0.0,
        }
    }
}

/// The final result of processing one transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Approved,
    LimitExceeded,
    InvalidCard,
}

impl Outcome {
    pub fn status(self) -> TransactionStatus {
        match self {
            Outcome::Approved => TransactionStatus::Success,
            Outcome::LimitExceeded | Outcome::InvalidCard => TransactionStatus::Failed,
        }
    }

    pub fn reason(self) -> &'static str {
        match self {
            Outcome::Approved => message::APPROVED,
            Outcome::LimitExceeded => message::LIMIT_EXCEEDED,
            Outcome::InvalidCard => message::INVALID_CARD,
        }
    }
}

/// What one callback delivery will suffer, drawn once per transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CallbackPlan {
    pub drop: bool,
    pub delay: Duration,
    pub duplicate: bool,
    pub stale_after: bool,
    pub contradictory_after: bool,
}

impl Faults {
    /// The reference PG with every delay at zero: fast tests and load runs.
    pub fn instant() -> Faults {
        Faults { request_latency_ms: MsRange::ZERO, processing_delay_ms: MsRange::ZERO, ..Faults::default() }
    }

    pub fn validate(&self) -> Result<(), String> {
        let rates = [
            ("requestFailureRate", self.request_failure_rate),
            ("outcome.limitExceeded", self.outcome.limit_exceeded),
            ("outcome.invalidCard", self.outcome.invalid_card),
            ("callback.dropRate", self.callback.drop_rate),
            ("callback.duplicateRate", self.callback.duplicate_rate),
            ("callback.staleRate", self.callback.stale_rate),
            ("callback.contradictoryRate", self.callback.contradictory_rate),
            ("storeThenTimeout.rate", self.store_then_timeout.map_or(0.0, |s| s.rate)),
            ("cancelDeclineRate", self.cancel_decline_rate),
        ];
        for (name, rate) in rates {
            if !(0.0..=1.0).contains(&rate) {
                return Err(format!("{name} must be between 0 and 1, got {rate}"));
            }
        }
        if self.outcome.limit_exceeded + self.outcome.invalid_card > 1.0 {
            return Err("outcome.limitExceeded + outcome.invalidCard must not exceed 1".into());
        }
        let ranges = [
            ("requestLatencyMs", self.request_latency_ms),
            ("lookupLatencyMs", self.lookup_latency_ms),
            ("processingDelayMs", self.processing_delay_ms),
            ("callback.delayMs", self.callback.delay_ms),
        ];
        for (name, range) in ranges {
            if range.min > range.max {
                return Err(format!("{name}: min is above max"));
            }
        }
        if self.callback.retry.max_attempts == 0 {
            return Err("callback.retry.maxAttempts must be at least 1".into());
        }
        Ok(())
    }

    /// Latency, then whether the request fails: the reference's order (sleep, then draw).
    pub fn draw_request(&self, rng: &mut impl Rng) -> (Duration, bool) {
        let latency = self.request_latency_ms.draw(rng);
        (latency, rng.random_bool(self.request_failure_rate))
    }

    pub fn draw_store_then_timeout(&self, rng: &mut impl Rng) -> Option<StoreThenTimeout> {
        self.store_then_timeout.filter(|s| rng.random_bool(s.rate))
    }

    pub fn draw_processing_delay(&self, rng: &mut impl Rng) -> Duration {
        self.processing_delay_ms.draw(rng)
    }

    /// Whether the PG declines an accepted cancel when it decides it.
    pub fn draw_cancel_declined(&self, rng: &mut impl Rng) -> bool {
        rng.random_bool(self.cancel_decline_rate)
    }

    pub fn draw_outcome(&self, rng: &mut impl Rng) -> Outcome {
        let r: f64 = rng.random();
        if r < self.outcome.limit_exceeded {
            Outcome::LimitExceeded
        } else if r < self.outcome.limit_exceeded + self.outcome.invalid_card {
            Outcome::InvalidCard
        } else {
            Outcome::Approved
        }
    }

    pub fn draw_callback_plan(&self, rng: &mut impl Rng) -> CallbackPlan {
        let c = &self.callback;
        CallbackPlan {
            drop: rng.random_bool(c.drop_rate),
            delay: c.delay_ms.draw(rng),
            duplicate: rng.random_bool(c.duplicate_rate),
            stale_after: rng.random_bool(c.stale_rate),
            contradictory_after: rng.random_bool(c.contradictory_rate),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    const DRAWS: usize = 20_000;

    fn rng() -> ChaCha8Rng {
        ChaCha8Rng::seed_from_u64(42)
    }

    /// Three standard deviations of a share's estimate over `DRAWS` draws: a correct
    /// implementation fails this about 0.3% of seeds; the seed is fixed, so never flaky.
    fn tolerance(p: f64) -> f64 {
        3.0 * (p * (1.0 - p) / DRAWS as f64).sqrt()
    }

    #[test]
    fn default_is_the_reference_pg() {
        let f = Faults::default();
        assert_eq!(f.request_failure_rate, 0.4);
        assert_eq!(f.request_latency_ms, MsRange::new(100, 500));
        assert_eq!(f.processing_delay_ms, MsRange::new(1_000, 5_000));
        assert_eq!(f.outcome, OutcomeSplit { limit_exceeded: 0.2, invalid_card: 0.1 });
        assert_eq!(f.down, None);
        assert!(!f.hang);
        assert_eq!(f.store_then_timeout, None);
        assert_eq!(
            f.callback,
            CallbackFaults { retry: CallbackRetry { max_attempts: 1, initial_backoff_ms: 500 }, ..Default::default() }
        );
        assert_eq!(f.validate(), Ok(()));
    }

    #[test]
    fn request_failure_share_is_forty_percent() {
        let (f, mut rng) = (Faults::default(), rng());
        let failed = (0..DRAWS).filter(|_| f.draw_request(&mut rng).1).count();
        let share = failed as f64 / DRAWS as f64;
        assert!((share - 0.4).abs() < tolerance(0.4), "failure share {share}");
    }

    #[test]
    fn request_latency_is_uniform_over_100_to_500_ms() {
        let (f, mut rng) = (Faults::default(), rng());
        let draws: Vec<u64> = (0..DRAWS).map(|_| f.draw_request(&mut rng).0.as_millis() as u64).collect();
        assert_eq!(*draws.iter().min().unwrap(), 100);
        assert_eq!(*draws.iter().max().unwrap(), 500);
        let mean = draws.iter().sum::<u64>() as f64 / DRAWS as f64;
        // Uniform 100..=500: mean 300, sd ~115.8; the mean's sd over DRAWS is ~0.82 ms.
        assert!((mean - 300.0).abs() < 3.0, "mean latency {mean}");
        let below_200 = draws.iter().filter(|&&d| d < 200).count() as f64 / DRAWS as f64;
        assert!((below_200 - 100.0 / 401.0).abs() < tolerance(0.25), "share below 200 ms {below_200}");
    }

    #[test]
    fn processing_delay_is_uniform_over_1_to_5_seconds() {
        let (f, mut rng) = (Faults::default(), rng());
        let draws: Vec<Duration> = (0..DRAWS).map(|_| f.draw_processing_delay(&mut rng)).collect();
        assert_eq!(draws.iter().min().unwrap().as_millis(), 1_000);
        assert_eq!(draws.iter().max().unwrap().as_millis(), 5_000);
        let mean = draws.iter().map(|d| d.as_millis() as f64).sum::<f64>() / DRAWS as f64;
        assert!((mean - 3_000.0).abs() < 25.0, "mean processing delay {mean}");
    }

    #[test]
    fn outcome_split_is_70_20_10_with_the_reference_reasons() {
        let (f, mut rng) = (Faults::default(), rng());
        let outcomes: Vec<Outcome> = (0..DRAWS).map(|_| f.draw_outcome(&mut rng)).collect();
        let share = |o: Outcome| outcomes.iter().filter(|&&x| x == o).count() as f64 / DRAWS as f64;
        assert!((share(Outcome::Approved) - 0.7).abs() < tolerance(0.7));
        assert!((share(Outcome::LimitExceeded) - 0.2).abs() < tolerance(0.2));
        assert!((share(Outcome::InvalidCard) - 0.1).abs() < tolerance(0.1));
        assert_eq!(Outcome::Approved.reason(), "정상 승인되었습니다.");
        assert_eq!(Outcome::LimitExceeded.reason(), "한도초과입니다. 다른 카드를 선택해주세요.");
        assert_eq!(Outcome::InvalidCard.reason(), "잘못된 카드입니다. 다른 카드를 선택해주세요.");
        assert_eq!(Outcome::InvalidCard.status(), TransactionStatus::Failed);
    }

    #[test]
    fn the_same_seed_gives_the_same_draws() {
        let f = Faults::default();
        let run = || {
            let mut rng = rng();
            (0..100).map(|_| (f.draw_request(&mut rng), f.draw_outcome(&mut rng))).collect::<Vec<_>>()
        };
        assert_eq!(run(), run());
    }

    #[test]
    fn callback_fault_shares_follow_their_rates() {
        let f = Faults {
            callback: CallbackFaults {
                drop_rate: 0.3,
                duplicate_rate: 0.5,
                stale_rate: 0.1,
                contradictory_rate: 0.05,
                ..Default::default()
            },
            ..Faults::default()
        };
        let mut rng = rng();
        let plans: Vec<CallbackPlan> = (0..DRAWS).map(|_| f.draw_callback_plan(&mut rng)).collect();
        let share = |pred: fn(&CallbackPlan) -> bool| plans.iter().filter(|p| pred(p)).count() as f64 / DRAWS as f64;
        assert!((share(|p| p.drop) - 0.3).abs() < tolerance(0.3));
        assert!((share(|p| p.duplicate) - 0.5).abs() < tolerance(0.5));
        assert!((share(|p| p.stale_after) - 0.1).abs() < tolerance(0.1));
        assert!((share(|p| p.contradictory_after) - 0.05).abs() < tolerance(0.05));
    }

    #[test]
    fn ranges_parse_from_flags() {
        assert_eq!("100-500".parse::<MsRange>(), Ok(MsRange::new(100, 500)));
        assert_eq!("0".parse::<MsRange>(), Ok(MsRange::ZERO));
        assert!("500-100".parse::<MsRange>().is_err());
        assert!("fast".parse::<MsRange>().is_err());
    }

    #[test]
    fn invalid_faults_are_refused() {
        let bad_rate = Faults { request_failure_rate: 1.5, ..Faults::default() };
        assert!(bad_rate.validate().unwrap_err().contains("requestFailureRate"));
        let bad_split =
            Faults { outcome: OutcomeSplit { limit_exceeded: 0.8, invalid_card: 0.3 }, ..Faults::default() };
        assert!(bad_split.validate().is_err());
        let bad_range = Faults { request_latency_ms: MsRange { min: 5, max: 1 }, ..Faults::default() };
        assert!(bad_range.validate().is_err());
    }
}
