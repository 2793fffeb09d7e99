//! Sliding windows of call outcomes with running totals, so every read is O(1) for the
//! count window and O(window seconds) for the time window.

use std::collections::VecDeque;

use super::config::SlidingWindow;

/// Totals over the outcomes in a window.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    pub calls: u32,
    pub failed: u32,
    pub slow: u32,
}

impl Totals {
    fn add(&mut self, o: Totals) {
        self.calls += o.calls;
        self.failed += o.failed;
        self.slow += o.slow;
    }

    fn sub(&mut self, o: Totals) {
        self.calls -= o.calls;
        self.failed -= o.failed;
        self.slow -= o.slow;
    }

    fn one(failed: bool, slow: bool) -> Totals {
        Totals { calls: 1, failed: failed as u32, slow: slow as u32 }
    }
}

#[derive(Debug, Clone)]
pub enum Window {
    Count {
        size: usize,
        outcomes: VecDeque<Totals>,
        totals: Totals,
    },
    /// Buckets keyed by whole second since the breaker's origin, oldest first.
    Time {
        seconds: u64,
        buckets: VecDeque<(u64, Totals)>,
        totals: Totals,
    },
}

impl Window {
    pub fn new(kind: SlidingWindow) -> Window {
        match kind {
            SlidingWindow::Count(n) => {
                Window::Count { size: n as usize, outcomes: VecDeque::new(), totals: Totals::default() }
            }
            SlidingWindow::Time(n) => {
                Window::Time { seconds: n as u64, buckets: VecDeque::new(), totals: Totals::default() }
            }
        }
    }

    /// Records one outcome at second `now_s`.
    pub fn record(&mut self, now_s: u64, failed: bool, slow: bool) {
        let one = Totals::one(failed, slow);
        match self {
            Window::Count { size, outcomes, totals } => {
                if outcomes.len() == *size
                    && let Some(old) = outcomes.pop_front()
                {
                    totals.sub(old);
                }
                outcomes.push_back(one);
                totals.add(one);
            }
            Window::Time { buckets, totals, .. } => {
                match buckets.back_mut() {
                    Some((s, bucket)) if *s == now_s => bucket.add(one),
                    _ => buckets.push_back((now_s, one)),
                }
                totals.add(one);
                self.evict(now_s);
            }
        }
    }

    /// Totals as of second `now_s` (time windows drop what has aged out).
    pub fn totals(&mut self, now_s: u64) -> Totals {
        self.evict(now_s);
        match self {
            Window::Count { totals, .. } | Window::Time { totals, .. } => *totals,
        }
    }

    /// An outcome of second s leaves once the current second is >= s + N.
    fn evict(&mut self, now_s: u64) {
        if let Window::Time { seconds, buckets, totals } = self {
            while let Some(&(s, bucket)) = buckets.front() {
                if now_s < s + *seconds {
                    break;
                }
                totals.sub(bucket);
                buckets.pop_front();
            }
        }
    }

    /// The fewest buffered calls before a rate is judged: a count window caps the
    /// minimum at its size, a time window does not.
    pub fn effective_minimum(&self, minimum_calls: u32) -> u32 {
        match self {
            Window::Count { size, .. } => minimum_calls.min(*size as u32),
            Window::Time { .. } => minimum_calls,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_count_window_keeps_the_last_n() {
        let mut w = Window::new(SlidingWindow::Count(3));
        for failed in [true, true, false, false] {
            w.record(0, failed, false);
        }
        assert_eq!(w.totals(0), Totals { calls: 3, failed: 1, slow: 0 });
    }

    #[test]
    fn a_time_window_drops_whole_seconds() {
        let mut w = Window::new(SlidingWindow::Time(2));
        w.record(0, true, true);
        w.record(1, false, false);
        assert_eq!(w.totals(1).calls, 2);
        assert_eq!(w.totals(2), Totals { calls: 1, failed: 0, slow: 0 });
        assert_eq!(w.totals(9).calls, 0);
    }
}
