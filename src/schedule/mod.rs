//! When to call NCP: the earliest-due queue, the backoff policy, and the per-host rate
//! limiter that is the only door to the network.

mod limiter;
mod queue;

pub use limiter::{RateLimiter, burst};
pub use queue::{DueQueue, backoff};
