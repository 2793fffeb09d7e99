//! Wall-clock time as the database keeps it: whole milliseconds since the Unix epoch.
//! One type for every stored instant, so that a time is never passed where an amount,
//! an id or a count is expected, and the arithmetic on times is in durations.

use std::ops::{Add, Sub};
use std::time::Duration;

/// An instant in whole milliseconds since the Unix epoch (UTC).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(i64);

impl Timestamp {
    pub const fn from_millis(millis: i64) -> Timestamp {
        Timestamp(millis)
    }

    pub fn now() -> Timestamp {
        Timestamp(chrono::Utc::now().timestamp_millis())
    }

    pub const fn as_millis(self) -> i64 {
        self.0
    }

    /// How long after `earlier` this is; zero when it is not after it (clocks step back).
    pub fn since(self, earlier: Timestamp) -> Duration {
        Duration::from_millis(self.0.saturating_sub(earlier.0).max(0) as u64)
    }

    /// RFC 3339 with milliseconds, as the API shows times.
    pub fn to_rfc3339(self) -> String {
        chrono::DateTime::from_timestamp_millis(self.0)
            .unwrap_or_default()
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
    }
}

fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

impl Add<Duration> for Timestamp {
    type Output = Timestamp;

    fn add(self, duration: Duration) -> Timestamp {
        Timestamp(self.0.saturating_add(millis(duration)))
    }
}

impl Sub<Duration> for Timestamp {
    type Output = Timestamp;

    fn sub(self, duration: Duration) -> Timestamp {
        Timestamp(self.0.saturating_sub(millis(duration)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instants_move_by_durations_and_never_measure_a_negative_gap() {
        let t = Timestamp::from_millis(1_800_000_000_000);
        assert_eq!((t + Duration::from_millis(1_500)).as_millis(), 1_800_000_001_500);
        assert_eq!((t - Duration::from_secs(2)).as_millis(), 1_799_999_998_000);
        assert_eq!((t + Duration::from_millis(250)).since(t), Duration::from_millis(250));
        assert_eq!(t.since(t + Duration::from_secs(1)), Duration::ZERO, "a clock that stepped back");
        assert_eq!(Timestamp::from_millis(i64::MAX) + Duration::MAX, Timestamp::from_millis(i64::MAX));
    }

    #[test]
    fn times_show_as_rfc3339_with_milliseconds() {
        assert_eq!(Timestamp::from_millis(1_795_000_000_123).to_rfc3339(), "2026-11-18T11:06:40.123Z");
    }
}
