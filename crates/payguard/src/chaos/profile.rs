//! Fault profiles: what the simulated PG does while the checkouts run, as a schedule of
//! fault patches (`PUT /sim/faults`) keyed to the share of checkouts started.

use serde_json::{Value, json};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Profile {
    /// The reference PG as it is (40% request failures).
    Normal,
    /// The PG answers 503 for the middle 40% of the run, then comes back.
    Outage,
    /// The PG accepts connections and never answers, for the middle 40%.
    Hang,
    /// Answers take 600-900 ms (slow calls) for the middle 40%.
    Slow,
    /// The request failure rate swings: 10%, 70%, 20%.
    Flaky,
    /// Half the callbacks never arrive.
    LostCallbacks,
    /// Callbacks duplicated, delayed, followed by stale and contradictory deliveries.
    MessyCallbacks,
    /// 30% of accepted payments are stored, then the connection drops.
    StoreThenTimeout,
    /// The service is SIGKILLed three times mid-run and restarted.
    Crash,
    /// Every profile above, one after the other.
    All,
}

impl Profile {
    pub const EACH: [Profile; 9] = [
        Profile::Normal,
        Profile::Outage,
        Profile::Hang,
        Profile::Slow,
        Profile::Flaky,
        Profile::LostCallbacks,
        Profile::MessyCallbacks,
        Profile::StoreThenTimeout,
        Profile::Crash,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Profile::Normal => "normal",
            Profile::Outage => "outage",
            Profile::Hang => "hang",
            Profile::Slow => "slow",
            Profile::Flaky => "flaky",
            Profile::LostCallbacks => "lost-callbacks",
            Profile::MessyCallbacks => "messy-callbacks",
            Profile::StoreThenTimeout => "store-then-timeout",
            Profile::Crash => "crash",
            Profile::All => "all",
        }
    }

    /// (share of checkouts started, fault patch). The first entry applies from the start.
    pub fn schedule(self) -> Vec<(f64, Value)> {
        let reset = json!({"down": null, "hang": null, "requestLatencyMs": null, "requestFailureRate": null});
        match self {
            Profile::Normal | Profile::Crash | Profile::All => vec![(0.0, json!({}))],
            Profile::Outage => vec![(0.0, json!({})), (0.3, json!({"down": "unavailable"})), (0.7, reset)],
            Profile::Hang => vec![(0.0, json!({})), (0.3, json!({"hang": true})), (0.7, reset)],
            Profile::Slow => {
                vec![(0.0, json!({})), (0.3, json!({"requestLatencyMs": {"min": 600, "max": 900}})), (0.7, reset)]
            }
            Profile::Flaky => vec![
                (0.0, json!({"requestFailureRate": 0.1})),
                (0.33, json!({"requestFailureRate": 0.7})),
                (0.66, json!({"requestFailureRate": 0.2})),
            ],
            Profile::LostCallbacks => vec![(0.0, json!({"callback": {"dropRate": 0.5}}))],
            Profile::MessyCallbacks => vec![(
                0.0,
                json!({"callback": {"duplicateRate": 0.5, "staleRate": 0.3, "contradictoryRate": 0.3, "delayMs": {"min": 0, "max": 200}}}),
            )],
            Profile::StoreThenTimeout => vec![(0.0, json!({"storeThenTimeout": {"mode": "drop", "rate": 0.3}}))],
        }
    }

    /// Shares of the run at which the service is killed and restarted.
    pub fn crashes(self) -> &'static [f64] {
        match self {
            Profile::Crash => &[0.25, 0.5, 0.75],
            _ => &[],
        }
    }

    /// Whether a PG outage starts in this profile (for time-to-open).
    /// The share of checkouts started during which the primary PG is faulty (the middle
    /// 40% of the outage, hang and slow profiles).
    pub fn outage_window(self) -> Option<(f64, f64)> {
        match self {
            Profile::Outage | Profile::Hang | Profile::Slow => Some((0.3, 0.7)),
            _ => None,
        }
    }

    pub fn outage_starts_at(self) -> Option<f64> {
        match self {
            Profile::Outage | Profile::Hang => Some(0.3),
            _ => None,
        }
    }
}
