//! What webhook delivery records: retries, dead letters, outcomes, summaries.

/// A delivery waiting for its next attempt.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryState {
    /// Attempts made.
    pub attempts: u32,
    /// When to try again, epoch milliseconds.
    pub next_attempt_ms: i64,
    /// Why the last attempt failed.
    pub last_error: Option<String>,
}

/// A delivery that ran out of attempts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    /// The sink.
    pub sink: String,
    /// The outbox position.
    pub seq: i64,
    /// The event id.
    pub event_id: String,
    /// The subject.
    pub subject: String,
    /// The event type.
    pub event_type: String,
    /// Attempts made.
    pub attempts: u32,
    /// The last failure.
    pub last_error: Option<String>,
    /// When it was given up, epoch milliseconds.
    pub created_ms: i64,
}

/// What happened to one delivery, to record.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Delivered (or replayed successfully).
    Delivered {
        /// Outbox position.
        seq: i64,
        /// Whether it was a replay.
        replay: bool,
    },
    /// Failed; will be retried.
    Retry {
        /// Outbox position.
        seq: i64,
        /// The retry state.
        state: RetryState,
    },
    /// Gave up.
    Dead {
        /// The dead letter.
        letter: DeadLetter,
        /// Whether it was a replay.
        replay: bool,
    },
}

/// The key of a webhook sink's cursor.
pub fn webhook_cursor(sink: &str) -> String {
    format!("webhook:{sink}")
}

/// The store's name of one shard's part of a sink (`NAME#3`): on a cluster, each shard's
/// events are delivered by the replica holding the shard, with a cursor of their own.
pub fn shard_sink(sink: &str, shard: Option<u16>) -> String {
    match shard {
        Some(shard) => format!("{sink}#{shard}"),
        None => sink.to_string(),
    }
}

/// The shard of a sink name made by [`shard_sink`], and the name without it.
pub fn split_shard_sink(sink: &str) -> (&str, Option<u16>) {
    match sink.rsplit_once('#') {
        Some((base, shard)) => match shard.parse::<u16>() {
            Ok(shard) => (base, Some(shard)),
            Err(_) => (sink, None),
        },
        None => (sink, None),
    }
}

/// What `status` shows of a sink.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SinkSummary {
    /// `log:NAME` or `webhook:NAME`.
    pub cursor_name: String,
    /// Outbox events past the cursor.
    pub behind: i64,
    /// Deliveries waiting to retry.
    pub retrying: i64,
    /// Dead letters.
    pub dead_letters: i64,
    /// Why it is paused.
    pub paused: Option<String>,
    /// When the oldest event past the cursor was committed.
    pub oldest_pending_ms: Option<i64>,
}
