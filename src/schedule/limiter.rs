//! The per-host call limiter: no 60-second window ever holds more calls than the quota.
//!
//! A GCRA limiter (the `governor` crate) with a burst of N would let 2N calls through in
//! the first minute (N at once, then N more as the bucket refills). With a burst of one,
//! consecutive calls are at least one emission interval `T` apart, so N+1 calls span at
//! least `N·T`; choosing `T` a little over `60 s / N` makes `N·T` exceed 60 s, so no
//! 60-second window can hold N+1 calls even when network jitter shifts arrivals slightly.

use std::num::NonZeroU32;
use std::time::Duration;

use governor::{DefaultDirectRateLimiter, Quota};

/// Headroom on the emission interval, in parts per thousand: 0.5% of the quota (0.3 s of
/// every minute) is given up so that network jitter between our clock and the gateway's
/// cannot put quota + 1 calls into one of its windows.
const HEADROOM_PER_MILLE: u64 = 5;

/// One call per emission interval, no burst.
fn quota(per_minute: NonZeroU32) -> Quota {
    let nanos = 60_000_000_000u64 / u64::from(per_minute.get());
    let interval = Duration::from_nanos(nanos + nanos * HEADROOM_PER_MILLE / 1000);
    Quota::with_period(interval)
        .expect("interval is positive")
        .allow_burst(NonZeroU32::MIN)
}

/// A limiter for one host.
#[derive(Debug)]
pub struct RateLimiter {
    inner: DefaultDirectRateLimiter,
    per_minute: u32,
}

impl RateLimiter {
    /// A limiter allowing at most `per_minute` calls in any 60-second window.
    pub fn per_minute(per_minute: NonZeroU32) -> Self {
        Self {
            inner: DefaultDirectRateLimiter::direct(quota(per_minute)),
            per_minute: per_minute.get(),
        }
    }

    /// Waits until one more call fits the quota, then counts it.
    pub async fn acquire(&self) {
        self.inner.until_ready().await;
    }

    /// The configured quota.
    pub fn per_minute_quota(&self) -> u32 {
        self.per_minute
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use governor::clock::FakeRelativeClock;

    #[test]
    fn no_sixty_second_window_holds_more_than_the_quota_and_little_is_wasted() {
        for per_minute in [1u32, 7, 60, 1000, 6000] {
            let clock = FakeRelativeClock::default();
            let limiter =
                governor::RateLimiter::direct_with_clock(quota(NonZeroU32::new(per_minute).unwrap()), clock.clone());
            // Demand far beyond the quota for three minutes: ask fifty times per interval.
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
                assert!(
                    end - start <= per_minute as usize,
                    "{per_minute}/min: {} calls in the window from {t} us",
                    end - start
                );
            }
            let used = granted.len() as f64 / (3.0 * f64::from(per_minute));
            assert!(
                used >= 0.97 || per_minute < 10,
                "{per_minute}/min: only {:.1}% of the quota used",
                used * 100.0
            );
        }
    }
}
