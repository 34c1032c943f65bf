//! What the daemon is doing, as one report: watches by kind and state, the items
//! (problems first), the last events, each sink, API calls against the quota per host,
//! and the replicas of a PostgreSQL store.
//!
//! [`build`] is the one place that makes a [`StatusReport`]: `status --json` prints its
//! items, `GET /api/status` serves it whole, and [`html::render`] turns it into the
//! status page. Everything here only reads: the store through a read-only handle, the call
//! history from memory.

pub mod html;

use std::sync::{Arc, Mutex, RwLock};

use serde::Serialize;

use crate::config::{Config, StateConfig};
use crate::ncp::{CallHistory, Host};
use crate::store::{ItemRow, Store, StoreError};

/// How many items the status page and `/api/status` list at most (problems first); the
/// rest are counted, not listed, so a store of 100,000 items makes a page of bounded size.
pub const PAGE_ITEMS: usize = 1000;

/// How many of the newest events the report lists.
pub const LAST_EVENTS: usize = 100;

/// The whole report.
#[derive(Debug, Clone, Serialize)]
pub struct StatusReport {
    /// The ncp-watchd version that made it.
    pub version: &'static str,
    /// The daemon's `instance` (the `source` of its events).
    pub instance: String,
    /// The state store, as an operator names it (never with a password).
    pub store: String,
    /// When the report was made (RFC 3339).
    pub generated_at: String,
    /// When the report was made, epoch milliseconds (the renderer's "now").
    #[serde(skip)]
    pub generated_at_ms: i64,
    /// Items per kind and state.
    pub counts: Vec<KindCounts>,
    /// How many items the store holds.
    pub items_total: usize,
    /// How many were left out of `items` by the cap ([`PAGE_ITEMS`] on the page).
    pub items_omitted: usize,
    /// The items, failing, stalled and retrying first, then by subject.
    pub items: Vec<ItemStatus>,
    /// The newest events, newest first (at most [`LAST_EVENTS`]).
    pub events: Vec<EventSummary>,
    /// Every sink with progress in the store, paused and troubled ones first.
    pub sinks: Vec<SinkStatus>,
    /// API calls per minute against the quota, per host; empty outside the daemon.
    pub api: Vec<HostCalls>,
    /// The replicas sharing a PostgreSQL store; empty on SQLite.
    pub replicas: Vec<ReplicaStatus>,
    /// Whether VOD Station callbacks are configured.
    pub callbacks: bool,
    /// When the last VOD Station callback came (RFC 3339), if one did.
    pub last_callback: Option<String>,
}

/// How many items of one kind are in each state.
#[derive(Debug, Clone, Default, Serialize)]
pub struct KindCounts {
    /// The item kind (`import`, `analysis`, `upload`, `listing`, `encode`, …).
    pub kind: String,
    /// All of them.
    pub total: usize,
    /// `watch.failing` was emitted and the item has not recovered.
    pub failing: usize,
    /// `watch.stalled` was emitted for its current status.
    pub stalled: usize,
    /// Being polled normally (including items retrying after a failed poll).
    pub watching: usize,
    /// Reached a terminal status.
    pub r#final: usize,
    /// No current watch covers it (its state is kept).
    pub removed: usize,
}

/// One item. The fields up to `last_error` are what `status --json` has always printed;
/// `state` and `stalled` were added later.
#[derive(Debug, Clone, Serialize)]
pub struct ItemStatus {
    /// What it is: `import`, `analysis`, `upload`, `listing`, `encode`, `project_list`, `vod_list`.
    pub kind: String,
    /// The event subject.
    pub subject: String,
    /// The name of the watch it came through.
    pub watch: Option<String>,
    /// Whether a current watch still covers it.
    pub active: bool,
    /// The last status seen.
    pub status: Option<String>,
    /// The last percent seen (encodes).
    pub percent: Option<f64>,
    /// Whether the last status was terminal.
    pub terminal: bool,
    /// Last poll (RFC 3339).
    pub last_polled: Option<String>,
    /// Last status change (RFC 3339).
    pub last_change: Option<String>,
    /// Next poll (RFC 3339).
    pub next_due: Option<String>,
    /// Consecutive failed polls.
    pub failures: u32,
    /// Whether `watch.failing` was emitted and `watch.recovered` not yet.
    pub failing: bool,
    /// The last failure (secrets scrubbed).
    pub last_error: Option<String>,
    /// One word: `failing`, `stalled`, `retrying`, `watching`, `final` or `removed`.
    pub state: &'static str,
    /// Whether `watch.stalled` was emitted for the current status.
    pub stalled: bool,
    /// Last poll, epoch ms (for relative times on the page).
    #[serde(skip)]
    pub last_polled_ms: Option<i64>,
    /// Last change, epoch ms.
    #[serde(skip)]
    pub last_change_ms: Option<i64>,
    /// Next poll, epoch ms; `None` for removed items.
    #[serde(skip)]
    pub next_due_ms: Option<i64>,
}

/// One event of the outbox.
#[derive(Debug, Clone, Serialize)]
pub struct EventSummary {
    /// Its outbox position.
    pub seq: i64,
    /// The event id.
    pub id: String,
    /// The event type.
    pub r#type: String,
    /// The subject.
    pub subject: String,
    /// When it was committed (RFC 3339).
    pub time: Option<String>,
    /// `data.watch`.
    pub watch: Option<String>,
    /// `data.previous`.
    pub previous: Option<String>,
    /// `data.current`.
    pub current: Option<String>,
    /// When it was committed, epoch ms.
    #[serde(skip)]
    pub created_ms: i64,
}

/// One sink's progress.
#[derive(Debug, Clone, Serialize)]
pub struct SinkStatus {
    /// Its progress key in the store: `log:NAME` or `webhook:NAME`.
    pub cursor: String,
    /// Its name.
    pub name: String,
    /// `log` or `webhook`.
    pub kind: String,
    /// Where it writes: a webhook's scheme and host only, a log sink's file or `stdout`;
    /// `None` for a sink no longer configured.
    pub receiver: Option<String>,
    /// Whether the current config has it.
    pub configured: bool,
    /// Outbox events past its cursor.
    pub pending: i64,
    /// Age of the oldest pending event, seconds.
    pub oldest_pending_seconds: Option<i64>,
    /// Deliveries waiting to retry.
    pub retrying: i64,
    /// Dead letters.
    pub dead_letters: i64,
    /// Why it is paused (a 410 Gone), if it is.
    pub paused: Option<String>,
}

/// Calls to one NCP host over the last hour.
#[derive(Debug, Clone, Serialize)]
pub struct HostCalls {
    /// `media` or `vod`.
    pub host: &'static str,
    /// The host's scheme and host.
    pub url: String,
    /// `rate_limit_per_minute`.
    pub quota_per_minute: u32,
    /// Calls in each of the last 60 minutes, oldest first; the last is the minute in progress.
    pub per_minute: Vec<u32>,
}

/// One replica of a PostgreSQL store.
#[derive(Debug, Clone, Serialize)]
pub struct ReplicaStatus {
    /// Its instance name.
    pub instance: String,
    /// Its host.
    pub host: String,
    /// Its pid.
    pub pid: i64,
    /// The shards it holds.
    pub shards: Vec<u16>,
    /// Milliseconds until its leases expire; `None` for a standby.
    pub lease_expires_in_ms: Option<i64>,
    /// When it was last seen (RFC 3339).
    pub last_seen: Option<String>,
}

/// What the report needs from the config: names, receivers and quotas, never a secret.
#[derive(Debug, Clone, PartialEq)]
pub struct View {
    /// `instance`.
    pub instance: String,
    /// The configured sinks: cursor key, name, kind, receiver.
    pub sinks: Vec<(String, String, &'static str, String)>,
    /// Each host, its scheme and host, and its quota.
    pub hosts: Vec<(Host, String, u32)>,
    /// Whether `[callbacks]` is set.
    pub callbacks: bool,
}

impl View {
    /// What `config` says runs.
    pub fn of(config: &Config) -> Self {
        let mut sinks: Vec<_> = config
            .sinks
            .logs
            .iter()
            .map(|l| {
                (
                    crate::sink::log::cursor_name(&l.name),
                    l.name.clone(),
                    "log",
                    l.path
                        .as_ref()
                        .map_or("stdout".to_string(), |p| p.display().to_string()),
                )
            })
            .collect();
        sinks.extend(config.sinks.webhooks.iter().map(|w| {
            (
                crate::store::webhook_cursor(&w.name),
                w.name.clone(),
                "webhook",
                w.url_display.clone(),
            )
        }));
        let origin = |u: &url::Url| match u.port() {
            Some(p) => format!("{}://{}:{p}", u.scheme(), u.host_str().unwrap_or_default()),
            None => format!("{}://{}", u.scheme(), u.host_str().unwrap_or_default()),
        };
        let quota = config.api.rate_limit_per_minute;
        Self {
            instance: config.instance.clone(),
            sinks,
            hosts: vec![
                (Host::Media, origin(&config.api.media_url), quota),
                (Host::Vod, origin(&config.api.vod_url), quota),
            ],
            callbacks: config.callbacks.is_some(),
        }
    }
}

/// Where the last VOD Station callback time is kept (see [`crate::callbacks`]).
use crate::callbacks::LAST_CALLBACK_FACT;

fn time(ms: Option<i64>) -> Option<String> {
    ms.and_then(chrono::DateTime::from_timestamp_millis)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
}

/// Text from outside (the store holds what APIs and receivers said) with every secret
/// this process knows taken out, again: the report leaves the process.
fn outside(text: &str) -> String {
    crate::text::scrub(text).into_owned()
}

/// The state word of an item and its rank (lower is shown first).
fn state_of(i: &ItemRow) -> (&'static str, u8) {
    if !i.active {
        ("removed", 5)
    } else if i.failing {
        ("failing", 0)
    } else if i.stalled && !i.terminal {
        ("stalled", 1)
    } else if i.failures > 0 {
        ("retrying", 2)
    } else if i.terminal {
        ("final", 4)
    } else {
        ("watching", 3)
    }
}

fn item_status(i: ItemRow) -> ItemStatus {
    let (state, _) = state_of(&i);
    ItemStatus {
        last_polled: time(i.last_polled_ms),
        last_change: time(i.last_change_ms),
        next_due: time(i.next_due_ms),
        last_polled_ms: i.last_polled_ms,
        last_change_ms: i.last_change_ms,
        next_due_ms: i.next_due_ms.filter(|_| i.active),
        kind: i.kind,
        subject: outside(&i.subject),
        watch: i.watch.as_deref().map(outside),
        active: i.active,
        status: i.status.as_deref().map(outside),
        percent: i.percent,
        terminal: i.terminal,
        failures: i.failures,
        failing: i.failing,
        last_error: i.last_error.as_deref().map(outside),
        state,
        stalled: i.stalled,
    }
}

/// Makes the report from `store`, what `view` says runs, and (in the daemon) the call
/// history. `max_items` caps the listed items (problems first); `None` lists all.
pub fn build(
    store: &Store,
    view: &View,
    calls: Option<&CallHistory>,
    now_ms: i64,
    max_items: Option<usize>,
) -> Result<StatusReport, StoreError> {
    // Items stream past once: counted, and the most urgent kept, so memory stays bounded
    // by the cap (a selection trimmed whenever it doubles), not by the store.
    let mut counts: std::collections::BTreeMap<String, KindCounts> = std::collections::BTreeMap::new();
    let mut kept: Vec<ItemRow> = Vec::new();
    let mut total = 0usize;
    let rank = |i: &ItemRow| (state_of(i).1, i.subject.clone(), i.kind.clone());
    let trim = |kept: &mut Vec<ItemRow>, cap: usize| {
        kept.sort_by_cached_key(rank);
        kept.truncate(cap);
    };
    store.for_each_item(&mut |row| {
        total += 1;
        let c = counts.entry(row.kind.clone()).or_insert_with(|| KindCounts {
            kind: row.kind.clone(),
            ..KindCounts::default()
        });
        c.total += 1;
        match state_of(&row).0 {
            "removed" => c.removed += 1,
            "failing" => c.failing += 1,
            "stalled" => c.stalled += 1,
            "final" => c.r#final += 1,
            _ => c.watching += 1,
        }
        kept.push(row);
        if let Some(cap) = max_items
            && kept.len() >= cap.saturating_mul(2).max(64)
        {
            trim(&mut kept, cap);
        }
    })?;
    trim(&mut kept, max_items.unwrap_or(usize::MAX));
    let items: Vec<ItemStatus> = kept.into_iter().map(item_status).collect();

    let events = last_events(store, LAST_EVENTS)?;

    let mut sinks: Vec<SinkStatus> = store
        .sink_summaries()?
        .into_iter()
        .map(|s| {
            let configured = view.sinks.iter().find(|(cursor, ..)| *cursor == s.cursor_name);
            let (kind, name) = s
                .cursor_name
                .split_once(':')
                .map_or(("log", s.cursor_name.as_str()), |(k, n)| (k, n));
            SinkStatus {
                name: configured.map_or_else(|| outside(name), |(_, n, ..)| n.clone()),
                kind: configured.map_or(kind, |(_, _, k, _)| k).to_string(),
                receiver: configured.map(|(.., r)| r.clone()),
                configured: configured.is_some(),
                cursor: outside(&s.cursor_name),
                pending: s.behind.max(0),
                oldest_pending_seconds: s.oldest_pending_ms.map(|t| ((now_ms - t).max(0)) / 1000),
                retrying: s.retrying,
                dead_letters: s.dead_letters,
                paused: s.paused.as_deref().map(outside),
            }
        })
        .collect();
    sinks.sort_by_key(|s| (s.paused.is_none(), s.dead_letters == 0, !s.configured, s.cursor.clone()));

    let api = calls.map_or_else(Vec::new, |calls| {
        view.hosts
            .iter()
            .map(|(host, url, quota)| HostCalls {
                host: host.as_str(),
                url: url.clone(),
                quota_per_minute: *quota,
                per_minute: calls.per_minute(*host, now_ms),
            })
            .collect()
    });

    let replicas = store
        .replicas()?
        .into_iter()
        .map(|r| ReplicaStatus {
            instance: outside(&r.instance),
            host: outside(&r.host),
            pid: r.pid,
            shards: r.shards,
            lease_expires_in_ms: r.lease_expires_in_ms,
            last_seen: time(Some(r.last_seen_ms)),
        })
        .collect();

    let last_callback = store
        .fact(LAST_CALLBACK_FACT)?
        .and_then(|v| v.parse::<i64>().ok())
        .and_then(|ms| time(Some(ms)));

    Ok(StatusReport {
        version: env!("CARGO_PKG_VERSION"),
        instance: outside(&view.instance),
        store: store.describe(),
        generated_at: time(Some(now_ms)).unwrap_or_default(),
        generated_at_ms: now_ms,
        counts: counts.into_values().collect(),
        items_total: total,
        items_omitted: total.saturating_sub(items.len()),
        items,
        events,
        sinks,
        api,
        replicas,
        callbacks: view.callbacks,
        last_callback,
    })
}

/// The newest `n` events, newest first. Outbox positions can have gaps (pruning, and
/// PostgreSQL sequences), so the look back widens until `n` are found or the start is.
fn last_events(store: &Store, n: usize) -> Result<Vec<EventSummary>, StoreError> {
    let last = store.last_seq()?;
    let mut rows = Vec::new();
    for back in [n as i64, 10 * n as i64, 100 * n as i64] {
        let from = (last - back).max(0);
        rows = store.outbox_after(from, back as usize)?;
        if rows.len() >= n || from == 0 {
            break;
        }
    }
    let start = rows.len().saturating_sub(n);
    Ok(rows[start..]
        .iter()
        .rev()
        .map(|r| {
            let body: serde_json::Value = serde_json::from_str(&r.body).unwrap_or_default();
            let field = |name: &str| body["data"][name].as_str().map(outside);
            EventSummary {
                seq: r.seq,
                id: outside(&r.id),
                r#type: outside(&r.event_type),
                subject: outside(&r.subject),
                time: time(Some(r.created_ms)),
                watch: field("watch"),
                previous: field("previous"),
                current: field("current"),
                created_ms: r.created_ms,
            }
        })
        .collect())
}

/// The report for the daemon's HTTP routes: a read-only store handle opened on first use
/// (and again after an error), what the config says runs (replaced on reload), and the
/// client's call history.
pub struct Source {
    /// Where the store is.
    state: StateConfig,
    /// The read-only handle; `Store` is `Send` but not `Sync`, hence the mutex, which also
    /// keeps at most one report being made at a time.
    store: Mutex<Option<Store>>,
    /// What runs, from the current config.
    view: RwLock<View>,
    /// The client's calls per host and minute.
    calls: Arc<CallHistory>,
}

impl std::fmt::Debug for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Source")
            .field("state", &self.state.to_string())
            .finish()
    }
}

impl Source {
    /// A source for the store at `state`.
    pub fn new(state: StateConfig, view: View, calls: Arc<CallHistory>) -> Self {
        Self {
            state,
            store: Mutex::new(None),
            view: RwLock::new(view),
            calls,
        }
    }

    /// Takes what a reloaded config says runs.
    pub fn set_view(&self, view: View) {
        *self.view.write().unwrap_or_else(|e| e.into_inner()) = view;
    }

    /// Makes the report now, capped at [`PAGE_ITEMS`] items. Blocks on the store: call it
    /// from `spawn_blocking`.
    pub fn report(&self) -> Result<StatusReport, StoreError> {
        let view = self.view.read().unwrap_or_else(|e| e.into_inner()).clone();
        let mut slot = self.store.lock().unwrap_or_else(|e| e.into_inner());
        let store = match slot.take() {
            Some(store) => store,
            None => Store::open_read_only(&self.state)?,
        };
        let now = chrono::Utc::now().timestamp_millis();
        let report = build(&store, &view, Some(&self.calls), now, Some(PAGE_ITEMS));
        // A handle that failed is dropped, so the next request opens a fresh one.
        if report.is_ok() {
            *slot = Some(store);
        }
        report
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::OutboxEvent;

    fn item(n: usize) -> ItemRow {
        ItemRow {
            key: format!("import:s/{n:05}"),
            kind: "import".into(),
            subject: format!("s/{n:05}"),
            watch: Some(format!("w{n}")),
            params: "{}".into(),
            origin: "config".into(),
            active: true,
            status: Some("IN_PROGRESS".into()),
            percent: None,
            terminal: false,
            next_due_ms: Some(1),
            failures: 0,
            failing: false,
            last_error: None,
            last_polled_ms: Some(1),
            last_change_ms: Some(1),
            since_ms: Some(1),
            stalled: false,
            changed_at_ms: None,
        }
    }

    fn view() -> View {
        View {
            instance: "test".into(),
            sinks: Vec::new(),
            hosts: vec![(Host::Media, "https://mi.example".into(), 100)],
            callbacks: false,
        }
    }

    #[test]
    fn the_report_lists_problems_first_within_the_cap_and_counts_everything() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::from(crate::store::sqlite::SqliteStore::open(&dir.path().join("s.db")).unwrap());
        let mut items: Vec<ItemRow> = (0..2500).map(item).collect();
        for n in [2400, 7, 1300] {
            items[n].failing = true;
            items[n].failures = 5;
        }
        items[2000].stalled = true;
        items[100].terminal = true;
        items[101].active = false;
        let events: Vec<OutboxEvent> = (0..150)
            .map(|n| OutboxEvent {
                id: format!("e{n}"),
                event_type: "video_asset.import.in_progress".into(),
                subject: format!("s/{n:05}"),
                body: format!(r#"{{"data":{{"watch":"w{n}","previous":null,"current":"IN_PROGRESS"}}}}"#),
            })
            .collect();
        store.commit(&items, &[], &events, &[]).unwrap();

        let r = build(&store, &view(), None, 10_000, Some(PAGE_ITEMS)).unwrap();
        assert_eq!((r.items_total, r.items.len(), r.items_omitted), (2500, 1000, 1500));
        let states: Vec<&str> = r.items.iter().take(5).map(|i| i.state).collect();
        assert_eq!(states, ["failing", "failing", "failing", "stalled", "watching"]);
        assert_eq!(r.items[0].subject, "s/00007", "then by subject");
        let c = &r.counts[0];
        assert_eq!(
            (c.total, c.failing, c.stalled, c.watching, c.r#final, c.removed),
            (2500, 3, 1, 2494, 1, 1)
        );
        assert_eq!(r.events.len(), LAST_EVENTS);
        assert_eq!(r.events[0].id, "e149", "newest first");
        assert_eq!(r.events[0].watch.as_deref(), Some("w149"));
        assert!(r.api.is_empty() && r.replicas.is_empty());

        let all = build(&store, &view(), Some(&CallHistory::default()), 10_000, None).unwrap();
        assert_eq!((all.items.len(), all.items_omitted), (2500, 0));
        assert_eq!(all.api[0].per_minute.len(), crate::ncp::calls::MINUTES);
    }
}
