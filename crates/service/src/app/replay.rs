//! The signatures of accepted callbacks, remembered for the replay window so that each
//! is accepted once. Written here rather than taken from a cache crate: it is a set with
//! expiry by the signature's own timestamp, a few lines over std's maps, and a cache
//! crate would bring its own eviction policy, which must not decide what is forgotten.
//!
//! Every callback accepted within the window is remembered: at 3,000 a second and the
//! default 300 s that is 900,000 signatures, so each is kept small (`Remembered`).

use std::collections::{BTreeMap, HashSet};

/// What is kept of a signature: its first 16 bytes. Only verified signatures are
/// remembered, and a forger cannot choose an HMAC, so two of them sharing 16 bytes is
/// chance alone (about 1 in 10^26 with a million remembered); kept whole in `Vec`s the
/// set took some 150 bytes a signature, this some 40.
type Remembered = [u8; 16];

#[derive(Debug, Default)]
pub struct SeenSignatures {
    seen: HashSet<Remembered>,
    /// The same signatures by timestamp, so that expiry touches only what expires: a
    /// scan of the whole set on every callback grew with the callback rate.
    by_time: BTreeMap<i64, Vec<Remembered>>,
}

impl SeenSignatures {
    /// Forgets the signatures older than `window` seconds at `now`, then remembers
    /// `signature`: false if it was remembered already (a replay).
    pub fn first_time(&mut self, signature: &[u8], timestamp: i64, now: i64, window: i64) -> bool {
        while let Some(oldest) = self.by_time.first_entry()
            && *oldest.key() < now - window
        {
            for expired in oldest.remove() {
                self.seen.remove(&expired);
            }
        }
        let mut remembered = Remembered::default();
        let kept = signature.len().min(remembered.len());
        remembered[..kept].copy_from_slice(&signature[..kept]);
        if !self.seen.insert(remembered) {
            return false;
        }
        self.by_time.entry(timestamp).or_default().push(remembered);
        true
    }

    /// How many signatures are remembered.
    #[cfg(test)]
    pub fn remembered(&self) -> usize {
        self.seen.len()
    }
}

#[cfg(test)]
mod tests {
    use super::SeenSignatures;

    #[test]
    fn a_signature_is_accepted_once_within_the_window() {
        let mut seen = SeenSignatures::default();
        assert!(seen.first_time(b"a", 100, 100, 300));
        assert!(!seen.first_time(b"a", 100, 200, 300), "a replay inside the window");
        assert!(!seen.first_time(b"a", 100, 400, 300), "still inside: 400 - 100 = 300");
    }

    #[test]
    fn signatures_are_forgotten_once_their_timestamp_leaves_the_window() {
        let mut seen = SeenSignatures::default();
        assert!(seen.first_time(b"old", 100, 100, 300));
        assert!(seen.first_time(b"future", 450, 160, 300), "a clock ahead of ours, within the window");
        assert!(seen.first_time(b"new", 401, 401, 300));
        assert_eq!(seen.remembered(), 2, "old (100) expired at 401");
        assert!(!seen.first_time(b"future", 450, 700, 300), "450 is still within 300 s of 700");
        assert!(seen.first_time(b"other", 750, 750, 300));
        assert_eq!(seen.remembered(), 2, "new (401) expired; future (450) is kept up to 750");
        assert!(seen.first_time(b"later", 751, 751, 300));
        assert_eq!(seen.remembered(), 2, "future (450) expired at 751");
    }
}
