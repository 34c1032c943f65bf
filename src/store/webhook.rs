//! Webhook delivery progress: what each sink has done past its cursor, what is retrying,
//! dead letters, replays and pauses. All of it lives on the sink's own connection.

use std::collections::{HashMap, HashSet};

use rusqlite::{OptionalExtension, params};

use super::{OutboxRow, Store, StoreError};

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

impl Store {
    /// The deliveries done past `cursor` and the retries in progress, to resume after a restart.
    pub fn webhook_progress(
        &self,
        sink: &str,
        cursor: i64,
    ) -> Result<(HashSet<i64>, HashMap<i64, RetryState>), StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT seq FROM webhook_done WHERE sink = ?1 AND seq > ?2")?;
        let done = stmt
            .query_map(params![sink, cursor], |r| r.get(0))?
            .collect::<Result<HashSet<i64>, _>>()?;
        let mut stmt = self
            .conn
            .prepare_cached("SELECT seq, attempts, next_attempt_ms, last_error FROM webhook_retry WHERE sink = ?1")?;
        let retries = stmt
            .query_map([sink], |r| {
                Ok((
                    r.get(0)?,
                    RetryState {
                        attempts: r.get(1)?,
                        next_attempt_ms: r.get(2)?,
                        last_error: r.get(3)?,
                    },
                ))
            })?
            .collect::<Result<HashMap<i64, RetryState>, _>>()?;
        Ok((done, retries))
    }

    /// Records outcomes and moves the cursor to `cursor`, in one transaction.
    pub fn record_deliveries(&mut self, sink: &str, outcomes: &[Outcome], cursor: i64) -> Result<(), StoreError> {
        let tx = self.conn.transaction()?;
        {
            let mut done = tx.prepare_cached("INSERT OR IGNORE INTO webhook_done (sink, seq) VALUES (?1, ?2)")?;
            let mut unretry = tx.prepare_cached("DELETE FROM webhook_retry WHERE sink = ?1 AND seq = ?2")?;
            let mut unreplay = tx.prepare_cached("DELETE FROM webhook_replay WHERE sink = ?1 AND seq = ?2")?;
            let mut retry = tx.prepare_cached(
                "INSERT OR REPLACE INTO webhook_retry (sink, seq, attempts, next_attempt_ms, last_error) VALUES (?1, ?2, ?3, ?4, ?5)",
            )?;
            let mut dead = tx.prepare_cached(
                "INSERT OR REPLACE INTO dead_letters (sink, seq, event_id, subject, type, attempts, last_error, created_ms) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            )?;
            for o in outcomes {
                match o {
                    Outcome::Delivered { seq, replay: false } => {
                        done.execute(params![sink, seq])?;
                        unretry.execute(params![sink, seq])?;
                    }
                    Outcome::Delivered { seq, replay: true } => {
                        unreplay.execute(params![sink, seq])?;
                    }
                    Outcome::Retry { seq, state } => {
                        retry.execute(params![
                            sink,
                            seq,
                            state.attempts,
                            state.next_attempt_ms,
                            state.last_error
                        ])?;
                    }
                    Outcome::Dead { letter, replay } => {
                        dead.execute(params![
                            sink,
                            letter.seq,
                            letter.event_id,
                            letter.subject,
                            letter.event_type,
                            letter.attempts,
                            letter.last_error,
                            letter.created_ms
                        ])?;
                        if *replay {
                            unreplay.execute(params![sink, letter.seq])?;
                        } else {
                            done.execute(params![sink, letter.seq])?;
                            unretry.execute(params![sink, letter.seq])?;
                        }
                    }
                }
            }
            tx.prepare_cached("UPDATE sink_cursors SET last_seq = ?2 WHERE sink = ?1")?
                .execute(params![webhook_cursor(sink), cursor])?;
            tx.prepare_cached("DELETE FROM webhook_done WHERE sink = ?1 AND seq <= ?2")?
                .execute(params![sink, cursor])?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Dead letters, of one sink or all.
    pub fn dead_letters(&self, sink: Option<&str>) -> Result<Vec<DeadLetter>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT sink, seq, event_id, subject, type, attempts, last_error, created_ms FROM dead_letters \
             WHERE ?1 IS NULL OR sink = ?1 ORDER BY created_ms, seq",
        )?;
        let rows = stmt
            .query_map([sink], |r| {
                Ok(DeadLetter {
                    sink: r.get(0)?,
                    seq: r.get(1)?,
                    event_id: r.get(2)?,
                    subject: r.get(3)?,
                    event_type: r.get(4)?,
                    attempts: r.get(5)?,
                    last_error: r.get(6)?,
                    created_ms: r.get(7)?,
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    /// Re-queues dead letters (one event id, or all) and lifts the pauses of their sinks.
    /// Returns how many were re-queued.
    pub fn replay_dead_letters(&mut self, event_id: Option<&str>) -> Result<usize, StoreError> {
        let tx = self.conn.transaction()?;
        let n = tx.execute(
            "INSERT OR IGNORE INTO webhook_replay (sink, seq) SELECT sink, seq FROM dead_letters WHERE ?1 IS NULL OR event_id = ?1",
            [event_id],
        )?;
        tx.execute(
            "DELETE FROM sink_pauses WHERE sink IN (SELECT sink FROM dead_letters WHERE ?1 IS NULL OR event_id = ?1) OR ?1 IS NULL",
            [event_id],
        )?;
        tx.execute("DELETE FROM dead_letters WHERE ?1 IS NULL OR event_id = ?1", [event_id])?;
        tx.commit()?;
        Ok(n)
    }

    /// Replays waiting for `sink`, with their events.
    pub fn pending_replays(&self, sink: &str) -> Result<Vec<OutboxRow>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT o.seq, o.id, o.type, o.subject, o.body, o.created_ms FROM webhook_replay r JOIN outbox o ON o.seq = r.seq \
             WHERE r.sink = ?1 ORDER BY o.seq",
        )?;
        let rows = stmt
            .query_map([sink], super::outbox_from_row)?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    /// Pauses `sink` (410 Gone) until a reload or a replay lifts it.
    pub fn pause_sink(&mut self, sink: &str, reason: &str) -> Result<(), StoreError> {
        self.conn.execute(
            "INSERT OR REPLACE INTO sink_pauses (sink, reason, since_ms) VALUES (?1, ?2, ?3)",
            params![sink, reason, chrono::Utc::now().timestamp_millis()],
        )?;
        Ok(())
    }

    /// Why `sink` is paused, if it is.
    pub fn sink_pause(&self, sink: &str) -> Result<Option<String>, StoreError> {
        Ok(self
            .conn
            .query_row("SELECT reason FROM sink_pauses WHERE sink = ?1", [sink], |r| r.get(0))
            .optional()?)
    }

    /// Lifts every pause (a reload does this).
    pub fn clear_sink_pauses(&mut self) -> Result<(), StoreError> {
        self.conn.execute("DELETE FROM sink_pauses", [])?;
        Ok(())
    }

    /// Per sink: cursor, retrying count, dead letters, pause.
    pub fn sink_summaries(&self) -> Result<Vec<SinkSummary>, StoreError> {
        let last = self.last_seq()?;
        let mut stmt = self.conn.prepare(
            "SELECT c.sink, c.last_seq, \
               (SELECT COUNT(*) FROM webhook_retry r WHERE r.sink = substr(c.sink, 9)), \
               (SELECT COUNT(*) FROM dead_letters d WHERE d.sink = substr(c.sink, 9)), \
               (SELECT reason FROM sink_pauses p WHERE p.sink = substr(c.sink, 9)), \
               (SELECT MIN(o.created_ms) FROM outbox o WHERE o.seq > c.last_seq) \
             FROM sink_cursors c ORDER BY c.sink",
        )?;
        let rows = stmt
            .query_map([], |r| {
                let cursor: i64 = r.get(1)?;
                Ok(SinkSummary {
                    cursor_name: r.get(0)?,
                    behind: last - cursor,
                    retrying: r.get(2)?,
                    dead_letters: r.get(3)?,
                    paused: r.get(4)?,
                    oldest_pending_ms: r.get(5)?,
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }
}

/// The key of a webhook sink's cursor.
pub fn webhook_cursor(sink: &str) -> String {
    format!("webhook:{sink}")
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
