//! The webhook sink: POSTs each selected event, signed, in per-subject order, retrying with
//! backoff, dead-lettering after `max_attempts`, pausing on 410 Gone.
//!
//! The pipeline, for one sink:
//! 1. read the outbox from the sink's cursor into a bounded window (never all of it);
//! 2. dispatch every event that is the oldest undelivered one of its subject, is due, and
//!    fits the concurrency bound, oldest first across subjects (replays likewise, one per
//!    subject at a time);
//! 3. record each outcome (delivered, retry at, dead letter) durably, batched, and move the
//!    cursor past the window's finished prefix.
//!
//! A crash repeats only the deliveries that were in flight: everything delivered past the
//! cursor is recorded, and a repeat carries the same `webhook-id`.
//!
//! Nothing a receiver sends can grow without bound here: at most an excerpt of an error
//! body is read, `Retry-After` is capped at `retry_max`, and every error text is scrubbed
//! of the URL ([`UrlScrubber`]) before it is logged or stored.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::encode::{CLOUDEVENTS_JSON, chat_body, render_template, signature};
use super::selects;
use crate::config::{Secret, StateConfig, WebhookFormat, WebhookSink};
use crate::event::CloudEvent;
use crate::schedule::backoff;
use crate::store::{DeadLetter, OutboxRow, Outcome, RetryState, Store, StoreError};
use crate::text::error_chain;

/// Events held in memory per sink at most: 1,000,000 pending events are streamed through
/// this window, never loaded at once.
const WINDOW: usize = 1024;
/// The window of one shard's part of a sink on a cluster: a replica holding all 16 shards
/// holds 4,096 events (a few MB), not 16 whole windows.
const SHARD_WINDOW: usize = 256;
/// Deliveries in flight per sink and process at most (to different subjects), however
/// many shards' parts the sink runs as: a receiver sees the same concurrency from a
/// replica holding every shard as from a single SQLite daemon.
const CONCURRENCY: usize = 16;
/// How long deliveries in flight at a stop get to be answered and recorded (within the
/// daemon's 10 s stop, after the polls' share): those answered are not repeated.
const STOP_DRAIN: Duration = Duration::from_millis(2500);
/// How often the sink looks for replays, pause changes and new events when not woken.
const TICK: Duration = Duration::from_millis(500);
/// How much of a refusing receiver's body goes into the log. Only this much (plus the
/// longest scrubbed piece of the URL) is ever read: a body can be gigabytes.
const BODY_EXCERPT: usize = 200;
/// Pieces of the webhook URL shorter than this are not scrubbed on their own: a path like
/// `/x` carries no token, and scrubbing every `x` would make errors unreadable.
const MIN_SCRUBBED: usize = 6;
/// Path segments at least this long are scrubbed on their own too: that is what a token
/// looks like, and a receiver may echo just the segment it did not recognize.
const MIN_SCRUBBED_SEGMENT: usize = 16;
/// What a scrubbed piece of the URL becomes.
const REDACTED: &str = "<redacted>";

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
    /// Removes the URL from every error text this sink logs or stores.
    scrubber: UrlScrubber,
    /// On a cluster, the one shard whose events this part of the sink delivers
    /// (`None`: every event).
    pub shard: Option<u16>,
    /// What every part of the sink shares (its copies for each shard are clones).
    shared: Shared,
}

/// What the parts of one sink share in a process: one HTTP client (one connection pool to
/// the receiver) and one budget of [`CONCURRENCY`] deliveries in flight.
#[derive(Debug, Clone)]
struct Shared {
    http: reqwest::Client,
    slots: Arc<Semaphore>,
}

impl Shared {
    fn new() -> Self {
        Self {
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .user_agent(concat!("ncp-watchd/", env!("CARGO_PKG_VERSION")))
                .build()
                .unwrap_or_default(),
            slots: Arc::new(Semaphore::new(CONCURRENCY)),
        }
    }
}

/// Removes a webhook URL from text: the sink's own guarantee that a receiver echoing the
/// request (a common default for 404 pages) cannot put the URL's token into a log line,
/// the store or `dead-letters list`. It scrubs the URL as configured and as sent, its path
/// and query on their own (when longer than [`MIN_SCRUBBED`]), both also percent-decoded,
/// and every path segment of at least [`MIN_SCRUBBED_SEGMENT`] characters.
#[derive(Clone)]
pub struct UrlScrubber {
    /// What to remove, longest first, so a whole URL goes before the path inside it.
    needles: Vec<String>,
}

impl std::fmt::Debug for UrlScrubber {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("UrlScrubber(<redacted>)")
    }
}

impl UrlScrubber {
    /// The scrubber for one webhook URL.
    pub fn new(url: &Secret) -> Self {
        let raw = url.expose().trim();
        let mut needles = vec![raw.to_string()];
        if let Ok(parsed) = url::Url::parse(raw) {
            needles.push(parsed.as_str().to_string());
            let path = parsed.path().trim_matches('/');
            let query = parsed.query().unwrap_or_default();
            for piece in [path, query] {
                needles.push(piece.to_string());
                if let Ok(decoded) = percent_encoding::percent_decode_str(piece).decode_utf8() {
                    needles.push(decoded.into_owned());
                }
            }
            for segment in path.split('/') {
                if segment.len() >= MIN_SCRUBBED_SEGMENT {
                    needles.push(segment.to_string());
                }
            }
        }
        needles.retain(|n| n.len() >= MIN_SCRUBBED);
        needles.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
        needles.dedup();
        Self { needles }
    }

    /// `text` with every piece of the URL replaced by `<redacted>`.
    pub fn scrub(&self, text: &str) -> String {
        let mut text = text.to_string();
        for needle in &self.needles {
            if text.contains(needle.as_str()) {
                text = text.replace(needle.as_str(), REDACTED);
            }
        }
        text
    }

    /// The longest piece scrubbed, in bytes.
    fn longest(&self) -> usize {
        self.needles.first().map_or(0, String::len)
    }

    /// The first `max` bytes of `body` as scrubbed text. A piece of the URL that starts
    /// inside the excerpt and runs past its end is kept whole, so that it is scrubbed rather
    /// than cut into a prefix that would survive scrubbing. `body` must hold at least
    /// `max + self.longest()` bytes when the receiver sent that many.
    fn excerpt(&self, body: &[u8], max: usize) -> String {
        let mut cut = body.len().min(max);
        for needle in &self.needles {
            let n = needle.as_bytes();
            let from = cut.saturating_sub(n.len() - 1);
            let straddling = body
                .get(from..)
                .unwrap_or_default()
                .windows(n.len())
                .enumerate()
                .filter(|(i, w)| from + i < cut && *w == n)
                .map(|(i, _)| from + i + n.len())
                .max();
            cut = cut.max(straddling.unwrap_or(0));
        }
        self.scrub(&crate::text::excerpt(&body[..cut], cut))
    }
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
            scrubber: UrlScrubber::new(&sink.url),
            shard: None,
            shared: Shared::new(),
        })
    }

    /// The cursor's key in the store.
    pub fn cursor_name(&self) -> String {
        crate::store::webhook_cursor(&self.store_key())
    }

    /// The sink's name in the store's delivery records: `NAME`, or `NAME#3` for one
    /// shard's part of it on a cluster.
    pub fn store_key(&self) -> String {
        crate::store::shard_sink(&self.sink.name, self.shard)
    }

    /// Takes `other`'s client and in-flight bound: the same sink, running on.
    pub fn share_with(&mut self, other: &WebhookSpec) {
        self.shared = other.shared.clone();
    }

    /// This sink's part for one shard (a cluster delivers each shard's events from the
    /// replica holding it).
    pub fn for_shard(&self, shard: u16) -> Self {
        Self {
            shard: Some(shard),
            ..self.clone()
        }
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

/// A dead letter re-queued by `dead-letters replay`.
struct Replay {
    row: Arc<OutboxRow>,
    attempts: u32,
    next_attempt_ms: i64,
    in_flight: bool,
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

/// Sends one event to the receiver. Every error text leaves here scrubbed of the URL: this
/// is the one place attempts are made, so nothing later can log or store an unscrubbed one.
async fn attempt(http: &reqwest::Client, spec: &WebhookSpec, row: &OutboxRow) -> Attempt {
    match send(http, spec, row).await {
        Attempt::Failed { error, retry_after } => Attempt::Failed {
            error: spec.scrubber.scrub(&error),
            retry_after,
        },
        other => other,
    }
}

/// One POST and what its answer means.
async fn send(http: &reqwest::Client, spec: &WebhookSpec, row: &OutboxRow) -> Attempt {
    let s = &spec.sink;
    let (body, content_type) = match (&s.template, s.format) {
        // A template makes the body; one that fails on this event is a failed attempt
        // (retried, then a dead letter), never a body sent half made.
        (Some(template), _) => {
            let rendered = serde_json::from_str::<CloudEvent>(&row.body)
                .map_err(|e| e.to_string())
                .and_then(|e| render_template(template, &e));
            match rendered {
                Ok(body) => (body, "application/json"),
                Err(error) => {
                    return Attempt::Failed {
                        error: crate::text::scrub(&error).into_owned(),
                        retry_after: None,
                    };
                }
            }
        }
        (None, WebhookFormat::CloudEvents) => (row.body.clone(), CLOUDEVENTS_JSON),
        (None, chat) => match serde_json::from_str::<CloudEvent>(&row.body) {
            Ok(e) => (chat_body(chat, &e), "application/json"),
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
        .and_then(|v| parse_retry_after(v, SystemTime::now(), s.retry_max));
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
            // A receiver error: it counts as an attempt, and the body says why. Only the
            // start of the body is read; the rest is dropped with the connection.
            let body = read_at_most(response, BODY_EXCERPT + spec.scrubber.longest()).await;
            let excerpt = spec.scrubber.excerpt(&body, BODY_EXCERPT);
            Attempt::Failed {
                error: format!("receiver refused with HTTP {status}: {excerpt:?}"),
                retry_after,
            }
        }
    }
}

/// The first `max` bytes of a response body (fewer when it is shorter or breaks off), read
/// chunk by chunk; the response is dropped once they are in, unread beyond them.
async fn read_at_most(mut response: reqwest::Response, max: usize) -> Vec<u8> {
    let mut kept = Vec::with_capacity(max.min(64 * 1024));
    while kept.len() < max {
        match response.chunk().await {
            Ok(Some(chunk)) => kept.extend_from_slice(&chunk[..chunk.len().min(max - kept.len())]),
            // A body that breaks off still explains the refusal as far as it got.
            Ok(None) | Err(_) => break,
        }
    }
    kept
}

/// How long a receiver's `Retry-After` (delay seconds or an HTTP date) asks to wait, at most
/// `cap`: a huge number or a far-future date is read as `cap`, a date in the past as zero,
/// and anything else (a negative number, garbage) as no header at all.
pub fn parse_retry_after(value: &str, now: SystemTime, cap: Duration) -> Option<Duration> {
    let value = value.trim();
    let wait = if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        // More digits than a u64 holds is just a very long wait.
        value.parse::<u64>().map_or(cap, Duration::from_secs)
    } else {
        let at = httpdate::parse_http_date(value).ok()?;
        at.duration_since(now).unwrap_or(Duration::ZERO)
    };
    Some(wait.min(cap))
}

/// The wait before retry number `attempts`: the backoff, or longer when the receiver's
/// `Retry-After` asks for longer, but never past `retry_max`. A receiver cannot park a
/// delivery for longer than the operator allowed, nor (by overflowing a deadline) make it
/// retry in a tight loop.
fn next_delay(attempts: u32, retry_after: Option<Duration>, sink: &WebhookSink) -> Duration {
    let backoff = retry_delay(attempts, sink.retry_initial, sink.retry_max);
    retry_after
        .map_or(backoff, |r| r.max(backoff))
        .min(sink.retry_max.max(sink.retry_initial))
}

/// `now_ms() + delay`, saturating.
fn after(delay: Duration) -> i64 {
    now_ms().saturating_add(i64::try_from(delay.as_millis()).unwrap_or(i64::MAX))
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
pub async fn deliver_pending(spec: &WebhookSpec, state: &StateConfig) -> Result<Delivered, StoreError> {
    let (_tx, mut wake) = watch::channel(0u64);
    deliver(spec, state, &mut wake, &CancellationToken::new(), true).await
}

/// Runs the sink until `shutdown`.
pub async fn run(spec: WebhookSpec, state: StateConfig, mut wake: watch::Receiver<u64>, shutdown: CancellationToken) {
    let name = spec.sink.name.clone();
    // Each outcome's series exists from the start, at zero, so a rate over it is defined.
    for outcome in ["delivered", "failed", "dead_letter", "gone"] {
        metrics::counter!("ncp_watchd_deliveries_total", "sink" => name.clone(), "outcome" => outcome).increment(0);
    }
    let host = spec.sink.url_display.clone();
    loop {
        match deliver_until_stopped(&spec, &state, &mut wake, &shutdown).await {
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
    state: &StateConfig,
    wake: &mut watch::Receiver<u64>,
    shutdown: &CancellationToken,
) -> Result<(), String> {
    deliver(spec, state, wake, shutdown, false)
        .await
        .map(|_| ())
        .map_err(|e| e.to_string())
}

#[allow(
    clippy::expect_used,
    reason = "each expect here states an invariant of our own types, never of input"
)]
async fn deliver(
    spec: &WebhookSpec,
    state: &StateConfig,
    wake: &mut watch::Receiver<u64>,
    shutdown: &CancellationToken,
    until_idle: bool,
) -> Result<Delivered, StoreError> {
    let s = &spec.sink;
    let store_key = spec.store_key();
    let sink = store_key.as_str();
    let mut store = Store::open_for_progress(state)?;
    let cursor_name = spec.cursor_name();
    let mut cursor = store.cursor(&cursor_name)?;
    let (mut done_past_cursor, mut retries) = store.webhook_progress(sink, cursor)?;
    let http = spec.shared.http.clone();
    let slots = spec.shared.slots.clone();
    let window_size = if spec.shard.is_some() { SHARD_WINDOW } else { WINDOW };
    let spec = Arc::new(spec.clone());
    // A delivery slot this part waited for and holds until it dispatches.
    let mut spare: Option<OwnedSemaphorePermit> = None;
    // Set at the stop: nothing new is sent, and what is in flight gets until then.
    let mut stopping: Option<tokio::time::Instant> = None;

    let mut window: BTreeMap<i64, Entry> = BTreeMap::new();
    // Undelivered events of each subject in the window, oldest first: only the oldest may go.
    let mut by_subject: HashMap<String, BTreeSet<i64>> = HashMap::new();
    let mut read_to = cursor;
    // Replays asked for by `dead-letters replay`, by outbox position: per subject, only the
    // oldest goes, as in normal delivery.
    let mut replays: BTreeMap<i64, Replay> = BTreeMap::new();
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
        while window.len() < window_size {
            let rows = store.outbox_after_in(read_to, window_size - window.len(), spec.shard)?;
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

        // 2. Dispatch: the oldest undelivered event of each subject, when due, oldest subject
        // first (by outbox position), so that when more are due than may go at once, the
        // one waiting longest goes next and none is starved.
        let now = now_ms();
        let mut next_due: Option<i64> = None;
        // Whether this part found an event to send and no slot free (then it waits for one).
        let mut starved = false;
        let mut take_slot = |spare: &mut Option<OwnedSemaphorePermit>| {
            let slot = spare.take().or_else(|| slots.clone().try_acquire_owned().ok());
            starved |= slot.is_none();
            slot
        };
        if paused.is_none() && stopping.is_none() {
            let mut heads: Vec<i64> = by_subject.values().filter_map(|seqs| seqs.first().copied()).collect();
            heads.sort_unstable();
            for seq in heads {
                let entry = window.get_mut(&seq).expect("indexed events are in the window");
                if entry.in_flight {
                    continue;
                }
                if entry.next_attempt_ms > now {
                    next_due = Some(next_due.map_or(entry.next_attempt_ms, |d| d.min(entry.next_attempt_ms)));
                    continue;
                }
                let Some(slot) = take_slot(&mut spare) else { break };
                entry.in_flight = true;
                let (http, spec, row) = (http.clone(), spec.clone(), entry.row.clone());
                running.spawn(async move {
                    let _slot = slot;
                    (row.seq, false, attempt(&http, &spec, &row).await)
                });
            }
            // Replays in outbox order; a subject's later replays wait while its oldest one is
            // in flight or waiting for a retry.
            let mut subjects_taken: HashSet<&str> = HashSet::new();
            for replay in replays.values_mut() {
                if !subjects_taken.insert(replay.row.subject.as_str()) || replay.in_flight {
                    continue;
                }
                if replay.next_attempt_ms > now {
                    next_due = Some(next_due.map_or(replay.next_attempt_ms, |d| d.min(replay.next_attempt_ms)));
                    continue;
                }
                let Some(slot) = take_slot(&mut spare) else { break };
                replay.in_flight = true;
                let (http, spec, row) = (http.clone(), spec.clone(), replay.row.clone());
                running.spawn(async move {
                    let _slot = slot;
                    (row.seq, true, attempt(&http, &spec, &row).await)
                });
            }
        }
        // A slot waited for and not used goes back to the other parts of the sink.
        spare = None;

        if until_idle && running.is_empty() && (paused.is_some() || next_due.is_some() || by_subject.is_empty()) {
            // Nothing can be sent now: everything left waits for a retry (or the sink is paused).
            let mut ahead = store.outbox_after_in(read_to, 1, spec.shard)?;
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
            _ = shutdown.cancelled(), if stopping.is_none() => {
                stopping = Some(tokio::time::Instant::now() + STOP_DRAIN);
            }
            _ = tokio::time::sleep_until(stopping.unwrap_or_else(tokio::time::Instant::now)), if stopping.is_some() => {}
            Some(done) = running.join_next() => {
                let Ok((seq, replay, result)) = done else { continue };
                let mut finished = vec![(seq, replay, result)];
                while let Some(Ok(more)) = running.try_join_next() {
                    finished.push(more);
                }
                for (seq, replay, result) in finished {
                    let outcome = if replay {
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
            Ok(slot) = slots.clone().acquire_owned(), if starved => spare = Some(slot),
            _ = tick.tick() => {
                paused = store.sink_pause(sink)?;
                for row in store.pending_replays(sink)? {
                    replays.entry(row.seq).or_insert_with(|| Replay {
                        row: Arc::new(row),
                        attempts: 0,
                        next_attempt_ms: 0,
                        in_flight: false,
                    });
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
        if let Some(deadline) = stopping
            && (running.is_empty() || tokio::time::Instant::now() >= deadline)
        {
            // Deliveries still out are dropped: they will be repeated, with the same id.
            store.record_deliveries(sink, &outcomes, cursor)?;
            if !running.is_empty() {
                tracing::warn!(
                    sink,
                    in_flight = running.len(),
                    "deliveries still unanswered at the stop will be repeated, with the same ids"
                );
            }
            return Ok(report);
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
            let delay = next_delay(entry.attempts, retry_after, s);
            entry.next_attempt_ms = after(delay);
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
    replays: &mut BTreeMap<i64, Replay>,
    seq: i64,
    result: Attempt,
    paused: &mut Option<String>,
) -> Option<Outcome> {
    let s = &spec.sink;
    let replay = replays.get_mut(&seq)?;
    replay.in_flight = false;
    let row = replay.row.clone();
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
        Attempt::Failed { error, retry_after } => {
            replay.attempts += 1;
            if replay.attempts < s.max_attempts {
                let delay = next_delay(replay.attempts, retry_after, s);
                replay.next_attempt_ms = after(delay);
                tracing::warn!(sink = %s.name, receiver = %s.url_display, event_id = %row.id, subject = %row.subject, attempts = replay.attempts, retry_in_ms = delay.as_millis() as u64, error = %error, "replayed delivery failed; will retry");
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
    use super::{UrlScrubber, next_delay, parse_retry_after, retry_delay};
    use crate::config::{Secret, WebhookFormat, WebhookSink};
    use std::time::{Duration, SystemTime};

    fn sink(retry_initial: Duration, retry_max: Duration) -> WebhookSink {
        WebhookSink {
            name: "ops".into(),
            url: Secret::new("http://127.0.0.1:1/hook"),
            url_display: "http://127.0.0.1:1".into(),
            secret: None,
            events: vec![],
            format: WebhookFormat::CloudEvents,
            template: None,
            timeout: Duration::from_secs(5),
            max_attempts: 10,
            retry_initial,
            retry_max,
        }
    }

    #[test]
    fn retry_after_is_read_without_overflow_and_capped() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let cap = Duration::from_secs(60);
        for huge in [
            "18446744073709551615",
            "18446744073709551616",
            "99999999999",
            "99999999999999999999999999999",
            "Fri, 31 Dec 9999 23:59:59 GMT",
        ] {
            assert_eq!(parse_retry_after(huge, now, cap), Some(cap), "{huge}");
        }
        assert_eq!(parse_retry_after(" 7 ", now, cap), Some(Duration::from_secs(7)));
        assert_eq!(parse_retry_after("0", now, cap), Some(Duration::ZERO));
        let soon = httpdate::fmt_http_date(now + Duration::from_secs(30));
        assert_eq!(parse_retry_after(&soon, now, cap), Some(Duration::from_secs(30)));
        let past = httpdate::fmt_http_date(now - Duration::from_secs(30));
        assert_eq!(
            parse_retry_after(&past, now, cap),
            Some(Duration::ZERO),
            "a date in the past is no wait, not a negative one"
        );
        for junk in ["-5", "", "soon", "1.5", "+3"] {
            assert_eq!(parse_retry_after(junk, now, cap), None, "{junk:?}");
        }
    }

    #[test]
    fn a_receivers_retry_after_lengthens_the_wait_but_never_past_retry_max() {
        let s = sink(Duration::from_millis(100), Duration::from_secs(2));
        for attempts in [1, 2, 5, 40] {
            assert_eq!(next_delay(attempts, Some(Duration::MAX), &s), Duration::from_secs(2));
            assert_eq!(
                next_delay(attempts, Some(Duration::from_secs(1800)), &s),
                Duration::from_secs(2)
            );
            let d = next_delay(attempts, Some(Duration::ZERO), &s);
            assert!(d >= Duration::from_millis(100) && d <= Duration::from_secs(2), "{d:?}");
        }
        assert_eq!(
            next_delay(1, Some(Duration::from_millis(1500)), &s),
            Duration::from_millis(1500)
        );
        assert_eq!(next_delay(1, None, &s), Duration::from_millis(100));
    }

    #[test]
    fn the_scrubber_removes_the_url_its_path_its_query_and_token_segments() {
        let url = "https://hooks.example.com/services/T0/B0/TOKEN-SENTINEL-1234?key=QUERY-SENTINEL";
        let scrubber = UrlScrubber::new(&Secret::new(url));
        for text in [
            format!("error sending request for url ({url})"),
            "no route for POST /services/T0/B0/TOKEN-SENTINEL-1234?key=QUERY-SENTINEL".to_string(),
            "unknown path services/T0/B0/TOKEN-SENTINEL-1234".to_string(),
            "unknown webhook TOKEN-SENTINEL-1234".to_string(),
            "bad query key=QUERY-SENTINEL".to_string(),
        ] {
            let scrubbed = scrubber.scrub(&text);
            assert!(
                !scrubbed.contains("SENTINEL") && scrubbed.contains("<redacted>"),
                "{text} → {scrubbed}"
            );
        }
        let decoded = UrlScrubber::new(&Secret::new("http://h/a%20b/c%2Fsecret-path"));
        assert!(!decoded.scrub("no route a b/c/secret-path").contains("secret"));
        // Short paths carry no token; scrubbing them would wreck the message.
        let short = UrlScrubber::new(&Secret::new("http://127.0.0.1:9/x"));
        assert_eq!(short.scrub("x marks the spot"), "x marks the spot");
        assert_eq!(short.scrub("http://127.0.0.1:9/x failed"), "<redacted> failed");
    }

    #[test]
    fn an_excerpt_never_keeps_a_cut_off_piece_of_the_url() {
        let scrubber = UrlScrubber::new(&Secret::new("http://h/services/T0/B0/TOKEN-SENTINEL-1234"));
        for pad in 170..200 {
            let body = format!("{}/services/T0/B0/TOKEN-SENTINEL-1234 and more text", "x".repeat(pad));
            let kept = scrubber.excerpt(body.as_bytes(), 200);
            assert!(
                !kept.contains("TOKEN") && !kept.contains("services/T0"),
                "{pad}: {kept}"
            );
            assert!(kept.len() <= 200 + "<redacted>".len(), "{pad}: {}", kept.len());
        }
        assert_eq!(scrubber.excerpt(b"short body", 200), "short body");
        assert_eq!(scrubber.excerpt("é".repeat(150).as_bytes(), 201).len(), 200);
    }

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
