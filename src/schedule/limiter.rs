//! The per-host call limiter: no 60-second window ever holds more calls than the quota.
//!
//! A GCRA limiter (the `governor` crate) with a burst of N would let 2N calls through in
//! the first minute (N at once, then N more as the bucket refills). In any window of length
//! W, GCRA with emission interval `T` and burst `b` lets through at most `b + W/T` calls, so
//! `T = 60 s / (N - b + 1)` keeps every 60-second window at N or fewer.
//!
//! The burst is not there to send bursts: a small one (two, plus one per thousand of
//! quota) lets a caller that wakes a fraction of a millisecond late still use its slot. With
//! a burst of one, every late wake-up pushes all later slots back, and a few per cent of
//! the quota leak away.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use governor::{DefaultDirectRateLimiter, Quota};

/// Headroom on the emission interval, in parts per thousand: 0.5% of the quota (0.3 s of
/// every minute) is given up so that network jitter between our clock and the gateway's
/// cannot put quota + 1 calls into one of its windows.
const HEADROOM_PER_MILLE: u64 = 5;

/// The burst for a quota of `n` per minute: two plus one per thousand from 200 a minute
/// (where a late slot would otherwise cost more than the burst does), none below.
pub fn burst(n: u32) -> u32 {
    if n >= 200 { 2 + n / 1000 } else { 1 }
}

/// GCRA parameters that keep every 60-second window at `per_minute` calls or fewer.
#[allow(
    clippy::expect_used,
    reason = "each expect here states an invariant of our own types, never of input"
)]
fn quota(per_minute: NonZeroU32) -> Quota {
    let n = per_minute.get();
    let b = burst(n);
    let nanos = 60_000_000_000u64 / u64::from(n - b + 1);
    let interval = Duration::from_nanos(nanos + nanos * HEADROOM_PER_MILLE / 1000);
    Quota::with_period(interval)
        .expect("interval is positive")
        .allow_burst(NonZeroU32::new(b).expect("the burst is at least one"))
}

/// A limiter for one host. Its quota can change while it runs (a replica's share of the
/// cluster's quota follows the shards it holds, SPEC §9); a quota of `None` lets nothing
/// through until one is set.
#[derive(Debug)]
pub struct RateLimiter {
    inner: std::sync::RwLock<Option<Arc<DefaultDirectRateLimiter>>>,
    per_minute: std::sync::atomic::AtomicU32,
    /// Wakes callers waiting on a quota of `None` when one is set.
    changed: tokio::sync::Notify,
}

/// A fresh limiter for `per_minute` whose burst is already spent: it cannot know the
/// calls the limiter it replaces let through, so it starts as if it had just sent its
/// burst (see `cluster::quota_share` for the rest of the reserve).
fn spent(per_minute: NonZeroU32) -> Arc<DefaultDirectRateLimiter> {
    let limiter = DefaultDirectRateLimiter::direct(quota(per_minute));
    for _ in 0..burst(per_minute.get()) {
        let _ = limiter.check();
    }
    Arc::new(limiter)
}

impl RateLimiter {
    /// A limiter allowing at most `per_minute` calls in any 60-second window.
    pub fn per_minute(per_minute: NonZeroU32) -> Self {
        Self {
            inner: std::sync::RwLock::new(Some(Arc::new(DefaultDirectRateLimiter::direct(quota(per_minute))))),
            per_minute: per_minute.get().into(),
            changed: tokio::sync::Notify::new(),
        }
    }

    /// Waits until one more call fits the quota, then counts it.
    pub async fn acquire(&self) {
        loop {
            let notified = self.changed.notified();
            let current = self
                .inner
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .clone();
            match current {
                Some(limiter) => {
                    limiter.until_ready().await;
                    return;
                }
                None => notified.await,
            }
        }
    }

    /// Sets a new quota (`None`: no calls) if it differs from the one in force. A caller
    /// already waiting on the old limiter finishes its wait there.
    pub fn set_per_minute(&self, per_minute: Option<NonZeroU32>) {
        let n = per_minute.map_or(0, NonZeroU32::get);
        if self.per_minute.swap(n, std::sync::atomic::Ordering::SeqCst) == n {
            return;
        }
        *self.inner.write().unwrap_or_else(std::sync::PoisonError::into_inner) = per_minute.map(spent);
        self.changed.notify_waiters();
    }

    /// The quota in force (0: none).
    pub fn per_minute_quota(&self) -> u32 {
        self.per_minute.load(std::sync::atomic::Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use governor::clock::FakeRelativeClock;

    #[test]
    fn no_sixty_second_window_holds_more_than_the_quota_and_little_is_wasted() {
        for per_minute in [1u32, 7, 60, 999, 1000, 1999, 6000, 60_000] {
            let clock = FakeRelativeClock::default();
            let limiter =
                governor::RateLimiter::direct_with_clock(quota(NonZeroU32::new(per_minute).unwrap()), clock.clone());
            // Demand far beyond the quota for three minutes, asked fifty times per interval:
            // each caller is up to a fiftieth of an interval late for its slot.
            let step_us = (60_000_000 / u64::from(per_minute) / 50).clamp(1, 1000);
            let mut granted = Vec::new();
            let mut now_us = 0u64;
            while now_us < 180_000_000 {
                if limiter.check().is_ok() {
                    granted.push(now_us);
                }
                clock.advance(Duration::from_micros(step_us));
                now_us += step_us;
            }
            // Every closed window [t, t + 60 s] starting at a grant, the first minute included.
            let mut end = 0;
            for (start, &t) in granted.iter().enumerate() {
                while end < granted.len() && granted[end] <= t + 60_000_000 {
                    end += 1;
                }
                let calls = end - start;
                assert!(
                    calls <= per_minute as usize,
                    "{per_minute}/min: {calls} calls in the window from {t} us"
                );
            }
            // Late callers still get their slots: at least 98.5% of the quota is used.
            let used = granted.len() as f64 / (3.0 * f64::from(per_minute));
            assert!(
                used >= 0.985 || per_minute < 200,
                "{per_minute}/min: only {:.2}% of the quota used",
                used * 100.0
            );
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]

        /// Whatever the arrival pattern (bursts, lulls, callers late by any amount), no
        /// 60-second window holds more granted calls than the quota.
        #[test]
        fn no_arrival_pattern_puts_more_than_the_quota_in_any_window(
            per_minute in 1u32..3000,
            gaps_ms in proptest::collection::vec(
                proptest::prop_oneof![0u64..5, 0u64..200, 0u64..20_000, 50_000u64..120_000],
                1..3000,
            ),
        ) {
            let clock = FakeRelativeClock::default();
            let limiter =
                governor::RateLimiter::direct_with_clock(quota(NonZeroU32::new(per_minute).unwrap()), clock.clone());
            let mut granted: Vec<u64> = Vec::new();
            let mut now_ms = 0u64;
            for gap in gaps_ms {
                clock.advance(Duration::from_millis(gap));
                now_ms += gap;
                if limiter.check().is_ok() {
                    granted.push(now_ms);
                }
            }
            let mut end = 0;
            for (start, &t) in granted.iter().enumerate() {
                while end < granted.len() && granted[end] <= t + 60_000 {
                    end += 1;
                }
                proptest::prop_assert!(end - start <= per_minute as usize, "{} calls from {} ms", end - start, t);
            }
        }
    }
}
