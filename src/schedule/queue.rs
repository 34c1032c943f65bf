//! The earliest-due queue and the backoff policy.
//!
//! One heap entry per scheduled item, not one sleeping task per item: 100,000 watches cost
//! 100,000 small entries. Rescheduling pushes a new entry and leaves the old one to be
//! skipped when popped (the caller checks it against the item's current due time), which
//! keeps every operation O(log n).

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::Arc;
use std::time::Duration;

/// Items ordered by due time, then by insertion.
#[derive(Debug, Default)]
pub struct DueQueue {
    heap: BinaryHeap<Reverse<(i64, u64, Arc<str>)>>,
    seq: u64,
}

impl DueQueue {
    /// An empty queue.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty queue with room for `n` entries.
    pub fn with_capacity(n: usize) -> Self {
        Self {
            heap: BinaryHeap::with_capacity(n),
            seq: 0,
        }
    }

    /// Schedules `key` at `due_ms`.
    pub fn push(&mut self, key: Arc<str>, due_ms: i64) {
        self.seq += 1;
        self.heap.push(Reverse((due_ms, self.seq, key)));
    }

    /// The earliest entry due at or before `now_ms`, removed.
    pub fn pop_due(&mut self, now_ms: i64) -> Option<(Arc<str>, i64)> {
        match self.heap.peek() {
            Some(Reverse((due, _, _))) if *due <= now_ms => self.heap.pop().map(|Reverse((due, _, key))| (key, due)),
            _ => None,
        }
    }

    /// When the earliest entry is due.
    pub fn next_due(&self) -> Option<i64> {
        self.heap.peek().map(|Reverse((due, _, _))| *due)
    }

    /// Entries, stale ones included.
    pub fn len(&self) -> usize {
        self.heap.len()
    }

    /// Whether there is no entry.
    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }
}

/// The delay before retrying after the `failures`-th consecutive failure: exponential from
/// `base`, capped at `cap`, with full jitter ("to avoid accidental DoS": retries of many
/// items that failed together spread out instead of arriving together).
pub fn backoff(failures: u32, base: Duration, cap: Duration) -> Duration {
    let exp = base.saturating_mul(1u32.checked_shl(failures.saturating_sub(1).min(30)).unwrap_or(u32::MAX));
    let ceiling = exp.min(cap).max(Duration::from_millis(1));
    Duration::from_millis(fastrand::u64(0..=ceiling.as_millis() as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pops_in_due_order_and_only_when_due() {
        let mut q = DueQueue::new();
        q.push("b".into(), 20);
        q.push("a".into(), 10);
        q.push("c".into(), 10);
        assert_eq!(q.pop_due(5), None);
        assert_eq!(q.pop_due(15).map(|(k, _)| k.to_string()), Some("a".into()));
        assert_eq!(
            q.pop_due(15).map(|(k, _)| k.to_string()),
            Some("c".into()),
            "ties keep insertion order"
        );
        assert_eq!(q.pop_due(15), None);
        assert_eq!(q.next_due(), Some(20));
    }

    #[test]
    fn backoff_grows_exponentially_up_to_the_cap_with_full_jitter() {
        let base = Duration::from_secs(1);
        let cap = Duration::from_secs(60);
        for failures in 1..40 {
            let ceiling = (base * 2u32.pow((failures - 1).min(20))).min(cap);
            for _ in 0..50 {
                assert!(backoff(failures, base, cap) <= ceiling);
            }
        }
        let samples: Vec<Duration> = (0..200).map(|_| backoff(10, base, cap)).collect();
        assert!(
            samples.iter().any(|d| *d < Duration::from_secs(20)),
            "jitter spreads low"
        );
        assert!(
            samples.iter().any(|d| *d > Duration::from_secs(40)),
            "jitter spreads high"
        );
    }

    proptest::proptest! {
        /// Pops come out in (due, insertion) order, never before they are due, and every
        /// entry pushed comes out exactly once once its time has come.
        #[test]
        fn pops_are_ordered_never_early_and_lose_nothing(
            pushes in proptest::collection::vec((0i64..1000, 0u8..20), 0..300),
            nows in proptest::collection::vec(0i64..1200, 1..50),
        ) {
            let mut q = DueQueue::new();
            for (i, (due, key)) in pushes.iter().enumerate() {
                q.push(format!("{key}-{i}").into(), *due);
            }
            let mut nows = nows;
            nows.sort_unstable();
            nows.push(i64::MAX);
            let mut popped: Vec<(i64, usize)> = Vec::new();
            for now in nows {
                while let Some((key, due)) = q.pop_due(now) {
                    proptest::prop_assert!(due <= now);
                    let i: usize = key.rsplit('-').next().unwrap().parse().unwrap();
                    proptest::prop_assert_eq!(pushes[i].0, due);
                    popped.push((due, i));
                }
                proptest::prop_assert!(q.next_due().is_none_or(|d| d > now));
            }
            let mut expected: Vec<(i64, usize)> = pushes.iter().enumerate().map(|(i, (d, _))| (*d, i)).collect();
            expected.sort_unstable();
            proptest::prop_assert_eq!(popped, expected);
        }

        /// Backoff never exceeds its ceiling nor the cap, for any count, base and cap.
        #[test]
        fn backoff_stays_within_the_cap(failures in 0u32..u32::MAX, base_ms in 1u64..10_000_000, cap_ms in 1u64..100_000_000) {
            let (base, cap) = (Duration::from_millis(base_ms), Duration::from_millis(cap_ms));
            proptest::prop_assert!(backoff(failures, base, cap) <= cap.max(Duration::from_millis(1)));
        }
    }
}
