//! When to call NCP. For now: the per-host rate limiter, the only door to the network.

mod limiter;

pub use limiter::RateLimiter;
