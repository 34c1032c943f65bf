//! The webhook sink: POSTs each selected event, signed, in per-subject order, retrying with
//! backoff, dead-lettering after `max_attempts`, pausing on 410 Gone.
//!
//! The pipeline, for one sink:
//! 1. read the outbox from the sink's cursor into a bounded window (never all of it);
//! 2. dispatch every event that is the oldest undelivered one of its subject, is due, and
//!    fits the concurrency bound;
//! 3. record each outcome (delivered, retry at, dead letter) durably, batched, and move the
//!    cursor past the window's finished prefix.
//!
//! A crash repeats only the deliveries that were in flight: everything delivered past the
//! cursor is recorded, and a repeat carries the same `webhook-id`.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::encode::{CLOUDEVENTS_JSON, signature, slack_body};
use super::selects;
use crate::config::{WebhookFormat, WebhookSink};
use crate::event::CloudEvent;
use crate::schedule::backoff;
use crate::store::{DeadLetter, OutboxRow, Outcome, RetryState, Store, StoreError};
use crate::text::{error_chain, excerpt};

/// Events held in memory per sink at most: 1,000,000 pending events are streamed through
/// this window, never loaded at once.
const WINDOW: usize = 1024;
/// Deliveries in flight per sink at most (to different subjects).
const CONCURRENCY: usize = 16;
/// How often the sink looks for replays, pause changes and new events when not woken.
const TICK: Duration = Duration::from_millis(500);
/// How much of a refusing receiver's body goes into the log.
const BODY_EXCERPT: usize = 200;

/// The signing key, kept out of `Debug`.
#[derive(Clone)]
pub struct SigningKey(Vec<u8>);

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SigningKey(<redacted>)")
    }
}

/// One webhook sink, ready to run.
#[derive(Debug, Clone)]
pub struct WebhookSpec {
    /// The sink's config.
    pub sink: WebhookSink,
    /// The key from `whsec_<base64>`, when signed.
    pub key: Option<SigningKey>,
}

impl WebhookSpec {
    /// Resolves the sink's secret. Errors name the source, never the value.
    pub fn resolve(sink: &WebhookSink) -> Result<Self, String> {
        let key = match &sink.secret {
            None => None,
            Some(source) => {
                let secret = source.resolve()?;
                Some(SigningKey(
                    super::encode::signing_key(secret.expose()).ok_or("the webhook secret is not whsec_<base64>")?,
                ))
            }
        };
        Ok(Self {
            sink: sink.clone(),
            key,
        })
    }

    /// The cursor's key in the store.
    pub fn cursor_name(&self) -> String {
        crate::store::webhook_cursor(&self.sink.name)
    }
}

/// What one attempt came to.
#[derive(Debug)]
enum Attempt {
    Delivered,
    Failed {
        error: String,
        retry_after: Option<Duration>,
    },
    Gone,
}

/// An event in the window.
struct Entry {
    row: Arc<OutboxRow>,
    attempts: u32,
    next_attempt_ms: i64,
    last_error: Option<String>,
    done: bool,
    in_flight: bool,
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// Sends one event to the receiver.
async fn attempt(http: &reqwest::Client, spec: &WebhookSpec, row: &OutboxRow) -> Attempt {
    let s = &spec.sink;
    let (body, content_type) = match s.format {
        WebhookFormat::CloudEvents => (row.body.clone(), CLOUDEVENTS_JSON),
        WebhookFormat::Slack => match serde_json::from_str::<CloudEvent>(&row.body) {
            Ok(e) => (slack_body(&e), "application/json"),
            Err(_) => (row.body.clone(), "application/json"),
        },
    };
    let timestamp = chrono::Utc::now().timestamp();
    let mut request = http
        .post(s.url.expose())
        .timeout(s.timeout)
        .header(reqwest::header::CONTENT_TYPE, content_type)
        .header("webhook-id", &row.id)
        .header("webhook-timestamp", timestamp.to_string());
    if let Some(key) = &spec.key {
        request = request.header(
            "webhook-signature",
            signature(&key.0, &row.id, timestamp, body.as_bytes()),
        );
    }
    let response = match request.body(body).send().await {
        Ok(r) => r,
        Err(e) if e.is_timeout() => {
            return Attempt::Failed {
                error: format!("no answer within {}s", s.timeout.as_secs_f64()),
                retry_after: None,
            };
        }
        Err(e) => {
            return Attempt::Failed {
                error: error_chain(&e.without_url()),
                retry_after: None,
            };
        }
    };
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(crate::ncp::client::parse_retry_after);
    match status {
        200..=299 => Attempt::Delivered,
        410 => Attempt::Gone,
        300..=399 => Attempt::Failed {
            error: format!("HTTP {status}: redirects are not followed"),
            retry_after: None,
        },
        408 | 409 | 425 | 429 | 500..=599 => Attempt::Failed {
            error: format!("HTTP {status}"),
            retry_after,
        },
        _ => {
            // A receiver error: it counts as an attempt, and the body says why.
            let body = response.bytes().await.unwrap_or_default();
            let excerpt = excerpt(&body, BODY_EXCERPT);
            Attempt::Failed {
                error: format!("receiver refused with HTTP {status}: {excerpt:?}"),
                retry_after,
            }
        }
    }
}

/// What a bounded run (`once`) delivered.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Delivered {
    /// Deliveries that succeeded.
    pub delivered: usize,
    /// Attempts that failed (they are retried later, or became dead letters).
    pub failed: usize,
}

/// Delivers what is committed until nothing more can be sent now (every remaining event is
/// waiting for a retry), for `once`.
pub async fn deliver_pending(spec: &WebhookSpec, store_path: &std::path::Path) -> Result<Delivered, StoreError> {
    let (_tx, mut wake) = watch::channel(0u64);
    deliver(spec, store_path, &mut wake, &CancellationToken::new(), true).await
}

/// Runs the sink until `shutdown`.
pub async fn run(spec: WebhookSpec, store_path: PathBuf, mut wake: watch::Receiver<u64>, shutdown: CancellationToken) {
    let name = spec.sink.name.clone();
    let host = spec.sink.url_display.clone();
    loop {
        match deliver_until_stopped(&spec, &store_path, &mut wake, &shutdown).await {
            Ok(()) => break,
            Err(e) => {
                tracing::error!(sink = %name, receiver = %host, error = %e, "webhook sink failed; restarting it");
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            }
        }
    }
}

async fn deliver_until_stopped(
    spec: &WebhookSpec,
    store_path: &std::path::Path,
    wake: &mut watch::Receiver<u64>,
    shutdown: &CancellationToken,
) -> Result<(), String> {
    deliver(spec, store_path, wake, shutdown, false)
        .await
        .map(|_| ())
        .map_err(|e| e.to_string())
}

async fn deliver(
    spec: &WebhookSpec,
    store_path: &std::path::Path,
    wake: &mut watch::Receiver<u64>,
    shutdown: &CancellationToken,
    until_idle: bool,
) -> Result<Delivered, StoreError> {
    let s = &spec.sink;
    let sink = s.name.as_str();
    let mut store = Store::open_for_progress(store_path)?;
    let cursor_name = spec.cursor_name();
    let mut cursor = store.cursor(&cursor_name)?;
    let (mut done_past_cursor, mut retries) = store.webhook_progress(sink, cursor)?;
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("ncp-watchd/", env!("CARGO_PKG_VERSION")))
        .build()
        .unwrap_or_default();
    let spec = Arc::new(spec.clone());

    let mut window: BTreeMap<i64, Entry> = BTreeMap::new();
    // Undelivered events of each subject in the window, oldest first: only the oldest may go.
    let mut by_subject: HashMap<String, BTreeSet<i64>> = HashMap::new();
    let mut read_to = cursor;
    // Replays asked for by `dead-letters replay`: event, attempts, next attempt.
    let mut replays: HashMap<i64, (Arc<OutboxRow>, u32, i64)> = HashMap::new();
    let mut replays_in_flight: HashSet<i64> = HashSet::new();
    let mut running: JoinSet<(i64, bool, Attempt)> = JoinSet::new();
    let mut paused = store.sink_pause(sink)?;
    let mut outcomes: Vec<Outcome> = Vec::new();
    let mut tick = tokio::time::interval(TICK);
    let mut report = Delivered::default();
    if let Some(reason) = &paused {
        tracing::warn!(sink, receiver = %s.url_display, reason, "webhook sink is paused; a reload or `dead-letters replay` resumes it");
    }

    loop {
        // 1. Fill the window.
        while window.len() < WINDOW {
            let rows = store.outbox_after(read_to, WINDOW - window.len())?;
            if rows.is_empty() {
                break;
            }
            for row in rows {
                read_to = row.seq;
                let selected = selects(&s.events, &row.event_type) && !done_past_cursor.remove(&row.seq);
                let retry = retries.remove(&row.seq);
                if selected {
                    by_subject.entry(row.subject.clone()).or_default().insert(row.seq);
                }
                window.insert(
                    row.seq,
                    Entry {
                        attempts: retry.as_ref().map_or(0, |r| r.attempts),
                        // A cron run is itself the retry schedule: what failed before is due now.
                        next_attempt_ms: if until_idle {
                            0
                        } else {
                            retry.as_ref().map_or(0, |r| r.next_attempt_ms)
                        },
                        last_error: retry.and_then(|r| r.last_error),
                        row: Arc::new(row),
                        done: !selected,
                        in_flight: false,
                    },
                );
            }
        }

        // 2. Dispatch: the oldest undelivered event of each subject, when due.
        let now = now_ms();
        let mut next_due: Option<i64> = None;
        if paused.is_none() {
            for seqs in by_subject.values() {
                if running.len() >= CONCURRENCY {
                    break;
                }
                let Some(&seq) = seqs.first() else { continue };
                let entry = window.get_mut(&seq).expect("indexed events are in the window");
                if entry.in_flight {
                    continue;
                }
                if entry.next_attempt_ms > now {
                    next_due = Some(next_due.map_or(entry.next_attempt_ms, |d| d.min(entry.next_attempt_ms)));
                    continue;
                }
                entry.in_flight = true;
                let (http, spec, row) = (http.clone(), spec.clone(), entry.row.clone());
                running.spawn(async move { (row.seq, false, attempt(&http, &spec, &row).await) });
            }
            for (seq, (row, _, due)) in &replays {
                if running.len() >= CONCURRENCY {
                    break;
                }
                if *due <= now && replays_in_flight.insert(*seq) {
                    let (http, spec, row) = (http.clone(), spec.clone(), row.clone());
                    running.spawn(async move { (row.seq, true, attempt(&http, &spec, &row).await) });
                }
            }
        }

        if until_idle && running.is_empty() && (paused.is_some() || next_due.is_some() || by_subject.is_empty()) {
            // Nothing can be sent now: everything left waits for a retry (or the sink is paused).
            let mut ahead = store.outbox_after(read_to, 1)?;
            if ahead.pop().is_none() || paused.is_some() {
                while let Some(entry) = window.first_entry() {
                    if !entry.get().done {
                        break;
                    }
                    cursor = *entry.key();
                    entry.remove();
                }
                store.record_deliveries(sink, &outcomes, cursor)?;
                return Ok(report);
            }
        }

        // 3. Wait for something to happen.
        let sleep = next_due
            .map_or(TICK, |d| Duration::from_millis((d - now).max(1) as u64))
            .min(TICK);
        tokio::select! {
            _ = shutdown.cancelled() => {
                // In-flight deliveries are dropped: they will be repeated, with the same id.
                store.record_deliveries(sink, &outcomes, cursor)?;
                return Ok(report);
            }
            Some(done) = running.join_next() => {
                let Ok((seq, replay, result)) = done else { continue };
                let mut finished = vec![(seq, replay, result)];
                while let Some(Ok(more)) = running.try_join_next() {
                    finished.push(more);
                }
                for (seq, replay, result) in finished {
                    let outcome = if replay {
                        replays_in_flight.remove(&seq);
                        settle_replay(spec.as_ref(), &mut replays, seq, result, &mut paused)
                    } else {
                        settle(spec.as_ref(), &mut window, &mut by_subject, seq, result, &mut paused)
                    };
                                        let label = match &outcome {
                        Some(Outcome::Delivered { .. }) => "delivered",
                        Some(Outcome::Retry { .. }) => "failed",
                        Some(Outcome::Dead { .. }) => "dead_letter",
                        None if paused.is_some() => "gone",
                        None => "failed",
                    };
                    metrics::counter!("ncp_watchd_deliveries_total", "sink" => spec.sink.name.clone(), "outcome" => label)
                        .increment(1);
                    match &outcome {
                        Some(Outcome::Delivered { .. }) => report.delivered += 1,
                        Some(_) | None => report.failed += 1,
                    }
                    if let Some(o) = outcome {
                        outcomes.push(o);
                    }
                }
                if let Some(reason) = &paused {
                    store.pause_sink(sink, reason)?;
                }
            }
            _ = wake.changed() => {}
            _ = tick.tick() => {
                paused = store.sink_pause(sink)?;
                for row in store.pending_replays(sink)? {
                    replays.entry(row.seq).or_insert_with(|| (Arc::new(row), 0, 0));
                }
            }
            _ = tokio::time::sleep(sleep) => {}
        }

        // 4. Move the cursor past the finished prefix and record everything in one go.
        while let Some(entry) = window.first_entry() {
            if !entry.get().done {
                break;
            }
            cursor = *entry.key();
            entry.remove();
        }
        if !outcomes.is_empty() {
            store.record_deliveries(sink, &outcomes, cursor)?;
            outcomes.clear();
        }
    }
}

/// The wait before retry number `attempts`: full jitter between `initial` and an
/// exponentially growing ceiling (`initial · 2^(attempts-1)`, capped at `max`).
pub fn retry_delay(attempts: u32, initial: Duration, max: Duration) -> Duration {
    let max = max.max(initial);
    let ceiling = initial
        .saturating_mul(1u32.checked_shl(attempts.saturating_sub(1).min(30)).unwrap_or(u32::MAX))
        .min(max);
    let spread = ceiling - initial;
    if spread.is_zero() {
        initial
    } else {
        initial + backoff(1, spread, spread)
    }
}

/// Applies one attempt's result to the window; returns what to record.
fn settle(
    spec: &WebhookSpec,
    window: &mut BTreeMap<i64, Entry>,
    by_subject: &mut HashMap<String, BTreeSet<i64>>,
    seq: i64,
    result: Attempt,
    paused: &mut Option<String>,
) -> Option<Outcome> {
    let s = &spec.sink;
    let entry = window.get_mut(&seq)?;
    entry.in_flight = false;
    let row = entry.row.clone();
    let finish = |window: &mut BTreeMap<i64, Entry>, by_subject: &mut HashMap<String, BTreeSet<i64>>| {
        if let Some(e) = window.get_mut(&seq) {
            e.done = true;
        }
        if let Some(seqs) = by_subject.get_mut(&row.subject) {
            seqs.remove(&seq);
            if seqs.is_empty() {
                by_subject.remove(&row.subject);
            }
        }
    };
    match result {
        Attempt::Delivered => {
            tracing::info!(sink = %s.name, receiver = %s.url_display, event_id = %row.id, subject = %row.subject, attempts = entry.attempts + 1, "delivered");
            finish(window, by_subject);
            Some(Outcome::Delivered { seq, replay: false })
        }
        Attempt::Gone => {
            let reason = format!("the receiver answered 410 Gone for event {}", row.id);
            tracing::warn!(sink = %s.name, receiver = %s.url_display, event_id = %row.id, "receiver is gone (410): pausing this sink; its events stay in the outbox; a reload or `dead-letters replay` resumes it");
            *paused = Some(reason);
            None
        }
        Attempt::Failed { error, retry_after } => {
            entry.attempts += 1;
            entry.last_error = Some(error.clone());
            if entry.attempts >= s.max_attempts {
                tracing::error!(sink = %s.name, receiver = %s.url_display, event_id = %row.id, subject = %row.subject, attempts = entry.attempts, error = %error, "delivery failed for the last time: dead letter");
                let letter = DeadLetter {
                    sink: s.name.clone(),
                    seq,
                    event_id: row.id.clone(),
                    subject: row.subject.clone(),
                    event_type: row.event_type.clone(),
                    attempts: entry.attempts,
                    last_error: Some(error),
                    created_ms: now_ms(),
                };
                finish(window, by_subject);
                return Some(Outcome::Dead { letter, replay: false });
            }
            // A receiver's Retry-After is honoured even past retry_max: it knows best.
            let delay = retry_delay(entry.attempts, s.retry_initial, s.retry_max);
            let delay = retry_after.map_or(delay, |r| r.max(delay));
            entry.next_attempt_ms = now_ms() + delay.as_millis() as i64;
            tracing::warn!(sink = %s.name, receiver = %s.url_display, event_id = %row.id, subject = %row.subject, attempts = entry.attempts, retry_in_ms = delay.as_millis() as u64, error = %error, "delivery failed; will retry");
            Some(Outcome::Retry {
                seq,
                state: RetryState {
                    attempts: entry.attempts,
                    next_attempt_ms: entry.next_attempt_ms,
                    last_error: entry.last_error.clone(),
                },
            })
        }
    }
}

/// Applies a replay attempt's result; a replay that fails `max_attempts` times goes back to
/// the dead letters.
fn settle_replay(
    spec: &WebhookSpec,
    replays: &mut HashMap<i64, (Arc<OutboxRow>, u32, i64)>,
    seq: i64,
    result: Attempt,
    paused: &mut Option<String>,
) -> Option<Outcome> {
    let s = &spec.sink;
    let (row, attempts, due) = replays.get_mut(&seq)?;
    let row = row.clone();
    match result {
        Attempt::Delivered => {
            tracing::info!(sink = %s.name, receiver = %s.url_display, event_id = %row.id, subject = %row.subject, "replayed dead letter delivered");
            replays.remove(&seq);
            Some(Outcome::Delivered { seq, replay: true })
        }
        Attempt::Gone => {
            *paused = Some(format!("the receiver answered 410 Gone for event {}", row.id));
            None
        }
        Attempt::Failed { error, .. } => {
            *attempts += 1;
            if *attempts < s.max_attempts {
                *due = now_ms() + retry_delay(*attempts, s.retry_initial, s.retry_max).as_millis() as i64;
                return None;
            }
            replays.remove(&seq);
            Some(Outcome::Dead {
                letter: DeadLetter {
                    sink: s.name.clone(),
                    seq,
                    event_id: row.id.clone(),
                    subject: row.subject.clone(),
                    event_type: row.event_type.clone(),
                    attempts: s.max_attempts,
                    last_error: Some(error),
                    created_ms: now_ms(),
                },
                replay: true,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::retry_delay;
    use std::time::Duration;

    #[test]
    fn retries_wait_between_initial_and_a_growing_capped_ceiling() {
        let (initial, max) = (Duration::from_secs(5), Duration::from_secs(3600));
        for attempts in 1..40 {
            let ceiling = (initial * 2u32.pow((attempts - 1).min(20))).min(max);
            for _ in 0..20 {
                let d = retry_delay(attempts, initial, max);
                assert!(
                    d >= initial && d <= ceiling,
                    "attempt {attempts}: {d:?} outside [{initial:?}, {ceiling:?}]"
                );
            }
        }
        assert_eq!(
            retry_delay(1, initial, max),
            initial,
            "the first retry waits exactly retry_initial"
        );
        let late: Vec<Duration> = (0..100).map(|_| retry_delay(20, initial, max)).collect();
        assert!(
            late.iter().any(|d| *d > Duration::from_secs(1800)) && late.iter().any(|d| *d < Duration::from_secs(1800))
        );
    }
}
