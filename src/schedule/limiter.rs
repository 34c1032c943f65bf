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

/// Headroom on the emission interval, in parts per thousand: 1% of the quota is given up
/// so that a few milliseconds of jitter between our clock and the gateway's cannot put
/// quota + 1 calls into one of its windows.
const HEADROOM_PER_MILLE: u64 = 10;

/// A limiter for one host.
#[derive(Debug)]
pub struct RateLimiter {
    inner: DefaultDirectRateLimiter,
    per_minute: u32,
}

impl RateLimiter {
    /// A limiter allowing at most `per_minute` calls in any 60-second window.
    pub fn per_minute(per_minute: NonZeroU32) -> Self {
        let nanos = 60_000_000_000u64 / u64::from(per_minute.get());
        let interval = Duration::from_nanos(nanos + nanos * HEADROOM_PER_MILLE / 1000);
        let quota = Quota::with_period(interval)
            .expect("interval is positive")
            .allow_burst(NonZeroU32::MIN);
        Self { inner: DefaultDirectRateLimiter::direct(quota), per_minute: per_minute.get() }
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
