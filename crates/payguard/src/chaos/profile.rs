//! Fault profiles: what the simulated PG does while the checkouts run, as a schedule of
//! fault patches (`PUT /sim/faults`) keyed to the run's progress: the share of
//! checkouts started, or in a paced run the share of its duration. Profiles with a
//! fault window are healthy before it and healthy again, at once, after it.

use serde_json::{Value, json};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Profile {
    /// The reference PG as it is (40% request failures).
    Normal,
    /// The PG answers 503 to every payment in the fault window, then is healthy at once.
    Outage,
    /// In the fault window the PG answers 503 to every payment while its status API keeps
    /// answering (a payment back end down behind a healthy API layer), then is healthy.
    PaymentsDown,
    /// The PG accepts connections and never answers, in the fault window.
    Hang,
    /// Answers take 600-900 ms (slow calls) in the fault window.
    Slow,
    /// In the fault window the PG takes every payment but answers `--late-ms` late, above
    /// the service's response timeout; its callbacks come as usual.
    LateAnswers,
    /// The request failure rate swings: 10% before the window, 70% in it, 20% after.
    Flaky,
    /// 70% of payment requests fail (the "unstable" 500) in the fault window: a PG that
    /// still takes 30%.
    Brownout,
    /// Half the callbacks never arrive.
    LostCallbacks,
    /// Callbacks duplicated, delayed, followed by stale and contradictory deliveries.
    MessyCallbacks,
    /// 30% of accepted payments are stored, then the connection drops.
    StoreThenTimeout,
    /// The service is SIGKILLed three times mid-run and restarted.
    Crash,
    /// The service's connection to its PostgreSQL database is cut in the fault window
    /// (every open connection closed, new ones refused), then mended. Needs
    /// `--database-url`; not part of `all`, which runs on SQLite by default.
    DbOutage,
    /// Every profile above, one after the other.
    All,
}

impl Profile {
    pub const EACH: [Profile; 12] = [
        Profile::Normal,
        Profile::Outage,
        Profile::PaymentsDown,
        Profile::Hang,
        Profile::Slow,
        Profile::LateAnswers,
        Profile::Flaky,
        Profile::Brownout,
        Profile::LostCallbacks,
        Profile::MessyCallbacks,
        Profile::StoreThenTimeout,
        Profile::Crash,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Profile::Normal => "normal",
            Profile::Outage => "outage",
            Profile::PaymentsDown => "payments-down",
            Profile::Hang => "hang",
            Profile::Slow => "slow",
            Profile::LateAnswers => "late-answers",
            Profile::Flaky => "flaky",
            Profile::Brownout => "brownout",
            Profile::LostCallbacks => "lost-callbacks",
            Profile::MessyCallbacks => "messy-callbacks",
            Profile::StoreThenTimeout => "store-then-timeout",
            Profile::Crash => "crash",
            Profile::DbOutage => "db-outage",
            Profile::All => "all",
        }
    }

    /// (progress, fault patch). The first entry applies from the start. `window` is the
    /// fault window in progress units; `baseline` the PG's request failure rate outside it;
    /// `late_ms` how late a `late-answers` PG answers; `latency` the PG's request latency
    /// outside the window, which healthy-again restores (a `null` there would be the
    /// reference's 100-500 ms, slower than a fast run's PG before the window).
    pub fn schedule(self, window: (f64, f64), baseline: f64, late_ms: u64, latency: &Value) -> Vec<(f64, Value)> {
        let (from, to) = window;
        let healthy = json!({"down": null, "hang": null, "requestLatencyMs": latency, "storeThenTimeout": null, "requestFailureRate": baseline});
        let start = json!({"requestFailureRate": baseline});
        match self {
            Profile::Normal | Profile::Crash | Profile::All => vec![(0.0, start)],
            Profile::Outage => vec![(0.0, start), (from, json!({"down": "unavailable"})), (to, healthy)],
            Profile::PaymentsDown => {
                vec![(0.0, start), (from, json!({"down": "paymentsUnavailable"})), (to, healthy)]
            }
            Profile::LateAnswers => vec![
                (0.0, start),
                (from, json!({"storeThenTimeout": {"mode": "delay", "rate": 1.0, "delayMs": late_ms}})),
                (to, healthy),
            ],
            Profile::Hang => vec![(0.0, start), (from, json!({"hang": true})), (to, healthy)],
            Profile::Slow => {
                vec![(0.0, start), (from, json!({"requestLatencyMs": {"min": 600, "max": 900}})), (to, healthy)]
            }
            Profile::Brownout => vec![(0.0, start), (from, json!({"requestFailureRate": 0.7})), (to, healthy)],
            Profile::Flaky => vec![
                (0.0, json!({"requestFailureRate": 0.1})),
                (from, json!({"requestFailureRate": 0.7})),
                (to, json!({"requestFailureRate": 0.2})),
            ],
            Profile::LostCallbacks => {
                vec![(0.0, json!({"requestFailureRate": baseline, "callback": {"dropRate": 0.5}}))]
            }
            Profile::MessyCallbacks => vec![(
                0.0,
                json!({"requestFailureRate": baseline, "callback": {"duplicateRate": 0.5, "staleRate": 0.3, "contradictoryRate": 0.3, "delayMs": {"min": 0, "max": 200}}}),
            )],
            Profile::StoreThenTimeout => {
                vec![(0.0, json!({"requestFailureRate": baseline, "storeThenTimeout": {"mode": "drop", "rate": 0.3}}))]
            }
            // `database` is the harness's own fault (see `Stack::set_faults`), not the PG's.
            Profile::DbOutage => {
                vec![(0.0, start), (from, json!({"database": "down"})), (to, json!({"database": "up"}))]
            }
        }
    }

    /// Shares of the run at which the service is killed and restarted.
    pub fn crashes(self) -> &'static [f64] {
        match self {
            Profile::Crash => &[0.25, 0.5, 0.75],
            _ => &[],
        }
    }

    /// Whether the PG is faulty in the fault window (the profiles the window figures and
    /// the timeline's shading are about).
    pub fn has_window(self) -> bool {
        matches!(
            self,
            Profile::Outage
                | Profile::PaymentsDown
                | Profile::Hang
                | Profile::Slow
                | Profile::LateAnswers
                | Profile::Flaky
                | Profile::Brownout
                | Profile::DbOutage
        )
    }

    /// Whether the window takes the PG down (for the time to open and the share of
    /// checkouts that still reach it).
    pub fn is_outage(self) -> bool {
        matches!(self, Profile::Outage | Profile::PaymentsDown | Profile::Hang)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn healthy_again_restores_the_latency_the_run_started_with() {
        let fast = json!({"min": 0, "max": 5});
        for profile in [Profile::Outage, Profile::PaymentsDown, Profile::LateAnswers, Profile::Hang, Profile::Slow] {
            let schedule = profile.schedule((0.3, 0.6), 0.1, 1_500, &fast);
            let (at, healthy) = schedule.last().expect("a schedule");
            assert_eq!(*at, 0.6, "{profile:?} ends its fault at the window's end");
            assert_eq!(healthy["requestLatencyMs"], fast, "{profile:?} is as fast after the window as before");
            assert_eq!(healthy["requestFailureRate"], 0.1);
        }
    }
}
