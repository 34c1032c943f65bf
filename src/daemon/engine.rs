//! The engine: the items in memory, mirrored from the store; what is due next; and
//! applying poll results, which turns observations into state changes and events and
//! commits both in one transaction before anything else sees them.
//!
//! The engine does no network I/O. [`poll`] does, and only through the client.

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::target::{Interner, Target, Wanted, from_config};
use crate::config::Config;
use crate::event::CloudEvent;
use crate::ncp::{ApiError, NcpClient, Retry};
use crate::schedule::{DueQueue, backoff};
use crate::store::{DynamicWatch, ItemRow, OutboxEvent, Store, StoreError};
use crate::watch::{Observation, Seen, detect};

/// Consecutive failed polls after which `watch.failing` is emitted.
pub const FAILING_AFTER: u32 = 5;

/// Where an item came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// A watch in the config file.
    Config,
    /// Found by a project watch's discovery, or created for an analysis.
    Discovered,
    /// Added at run time by `register --watch`.
    Dynamic,
}

impl Origin {
    fn as_str(self) -> &'static str {
        match self {
            Self::Config => "config",
            Self::Discovered => "discovered",
            Self::Dynamic => "dynamic",
        }
    }

    fn parse(s: &str) -> Self {
        match s {
            "config" => Self::Config,
            "dynamic" => Self::Dynamic,
            _ => Self::Discovered,
        }
    }
}

/// One item in memory.
#[derive(Debug, Clone, PartialEq)]
pub struct Item {
    /// The unique key.
    pub key: Arc<str>,
    /// What it is and how to poll it.
    pub target: Target,
    /// The name of the watch it came through (shared).
    pub watch: Option<Arc<str>>,
    /// Where it came from.
    pub origin: Origin,
    /// Whether a current watch covers it.
    pub active: bool,
    /// The last status (shared: statuses repeat across items).
    pub status: Option<Arc<str>>,
    /// The last percent.
    pub percent: Option<f64>,
    /// Whether the last status was terminal.
    pub terminal: bool,
    /// When to poll next.
    pub next_due_ms: Option<i64>,
    /// Consecutive failures.
    pub failures: u32,
    /// Whether `watch.failing` is outstanding.
    pub failing: bool,
    /// The last failure.
    pub last_error: Option<Box<str>>,
    /// Last poll.
    pub last_polled_ms: Option<i64>,
    /// Last change.
    pub last_change_ms: Option<i64>,
}

impl Item {
    fn new(target: Target, watch: Option<Arc<str>>, origin: Origin, due: Option<i64>) -> Self {
        Self {
            key: target.key().into(),
            target,
            watch,
            origin,
            active: true,
            status: None,
            percent: None,
            terminal: false,
            next_due_ms: due,
            failures: 0,
            failing: false,
            last_error: None,
            last_polled_ms: None,
            last_change_ms: None,
        }
    }

    fn to_row(&self) -> ItemRow {
        ItemRow {
            key: self.key.to_string(),
            kind: self.target.kind().to_string(),
            subject: self.target.subject(),
            watch: self.watch.as_deref().map(str::to_string),
            params: serde_json::to_string(&self.target).expect("targets serialize"),
            origin: self.origin.as_str().to_string(),
            active: self.active,
            status: self.status.as_deref().map(str::to_string),
            percent: self.percent,
            terminal: self.terminal,
            next_due_ms: self.next_due_ms,
            failures: self.failures,
            failing: self.failing,
            last_error: self.last_error.as_deref().map(str::to_string),
            last_polled_ms: self.last_polled_ms,
            last_change_ms: self.last_change_ms,
        }
    }

    fn from_row(row: ItemRow, interner: &mut Interner) -> Option<Self> {
        let target = serde_json::from_str::<Target>(&row.params).ok()?.interned(interner);
        Some(Self {
            key: row.key.into(),
            target,
            watch: row.watch.as_deref().map(|w| interner.get(w)),
            origin: Origin::parse(&row.origin),
            active: row.active,
            status: row.status.as_deref().map(|s| interner.get(s)),
            percent: row.percent,
            terminal: row.terminal,
            next_due_ms: row.next_due_ms,
            failures: row.failures,
            failing: row.failing,
            last_error: row.last_error.map(String::into_boxed_str),
            last_polled_ms: row.last_polled_ms,
            last_change_ms: row.last_change_ms,
        })
    }

    fn seen(&self) -> Option<Seen> {
        self.status.as_ref().map(|s| Seen {
            status: s.to_string(),
            percent: self.percent,
        })
    }

    /// Whether the scheduler should hold it in the queue.
    fn schedulable(&self) -> bool {
        self.active && self.target.polled() && self.next_due_ms.is_some()
    }
}

/// What one poll returned.
#[derive(Debug, Clone)]
pub enum Polled {
    /// One status.
    Status(Observation),
    /// A list: listings of a project, or encodes.
    List(Vec<Observation>),
}

/// The result of polling one item.
#[derive(Debug)]
pub struct PollResult {
    /// The item.
    pub key: Arc<str>,
    /// What came back.
    pub outcome: Result<Polled, ApiError>,
    /// When the poll started, epoch milliseconds.
    pub at_ms: i64,
}

/// Polls `target` once. The only network I/O of the daemon's polling path.
pub async fn poll(client: &NcpClient, target: &Target, vod_lookback: Duration) -> Result<Polled, ApiError> {
    Ok(match target {
        Target::Import {
            workspace,
            project_id,
            asset_id,
            ..
        } => Polled::Status(
            client
                .import_status(workspace, project_id, asset_id)
                .await?
                .observation(workspace, project_id, asset_id),
        ),
        Target::Analysis {
            workspace,
            project_id,
            asset_id,
        } => Polled::Status(
            client
                .analysis_status(workspace, project_id, asset_id)
                .await?
                .observation(workspace, project_id, asset_id),
        ),
        Target::SearchImage { asset_key } => {
            Polled::Status(client.search_image_status(asset_key).await?.observation(asset_key))
        }
        Target::ProjectList {
            workspace, project_id, ..
        } => Polled::List(
            client
                .list_assets(workspace, project_id)
                .await?
                .iter()
                .map(|a| a.observation(workspace, project_id))
                .collect(),
        ),
        Target::VodList => {
            let now = Utc::now();
            let from = now - chrono::Duration::from_std(vod_lookback).unwrap_or(chrono::Duration::days(1));
            Polled::List(
                client
                    .vod_statuses(from.timestamp_millis(), now.timestamp_millis())
                    .await?
                    .iter()
                    .map(|e| e.observation())
                    .collect(),
            )
        }
        Target::Listing { .. } | Target::Encode { .. } => {
            return Err(ApiError::Transport("list-fed items are not polled on their own".into()));
        }
    })
}

/// Changes staged by one apply, committed together.
#[derive(Default)]
struct Staged {
    items: HashMap<Arc<str>, Item>,
    details: Vec<(String, String)>,
    events: Vec<CloudEvent>,
}

/// The engine.
pub struct Engine {
    config: Arc<Config>,
    store: Store,
    items: HashMap<Arc<str>, Item>,
    queue: DueQueue,
    in_flight: HashSet<Arc<str>>,
    dynamic_seen: i64,
    /// Shares repeated strings among items (a RefCell: the engine is used from one task).
    interner: RefCell<Interner>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("items", &self.items.len())
            .field("queued", &self.queue.len())
            .finish()
    }
}

/// Epoch milliseconds now.
pub fn now_ms() -> i64 {
    Utc::now().timestamp_millis()
}

fn ms(d: Duration) -> i64 {
    d.as_millis().min(i64::MAX as u128) as i64
}

impl Engine {
    /// Loads every item from `store` and reconciles them with `config`'s watches and the
    /// dynamic watches. Due times are kept, so a restart does not re-poll everything at once.
    pub fn open(config: Config, store: Store) -> Result<Self, StoreError> {
        // Sized once: growing a 100,000-entry table doubles it in memory while it rehashes.
        let mut items = HashMap::with_capacity(store.item_count()? as usize);
        let mut interner = Interner::default();
        store.for_each_item(|row| {
            let key = row.key.clone();
            match Item::from_row(row, &mut interner) {
                Some(item) => {
                    items.insert(item.key.clone(), item);
                }
                None => tracing::warn!(key, "skipping a stored item whose parameters do not decode"),
            }
        })?;
        let mut engine = Self {
            config: Arc::new(config.clone()),
            store,
            items,
            queue: DueQueue::new(),
            in_flight: HashSet::new(),
            dynamic_seen: 0,
            interner: RefCell::new(interner),
        };
        engine.reconcile(config)?;
        Ok(engine)
    }

    /// The configuration in force.
    pub fn config(&self) -> &Arc<Config> {
        &self.config
    }

    /// The items.
    pub fn items(&self) -> impl Iterator<Item = &Item> {
        self.items.values()
    }

    /// The store (for sinks that share the process).
    pub fn store_path(&self) -> std::path::PathBuf {
        self.store.path().to_path_buf()
    }

    /// Applies a new configuration: watches added start now, watches removed stop (their
    /// state is kept, so re-adding one does not re-announce it), and everything else keeps
    /// its state and due time.
    pub fn reconcile(&mut self, config: Config) -> Result<(), StoreError> {
        self.config = Arc::new(config);
        let now = now_ms();
        // Only changed items are cloned, and dynamic watches are streamed from the store: a
        // restart with 100,000 unchanged items allocates almost nothing per item here.
        let mut changed: HashMap<Arc<str>, Item> = HashMap::new();
        let mut wanted_keys: HashSet<Arc<str>> = HashSet::with_capacity(self.items.len());
        for w in from_config(&self.config) {
            self.want(w, Origin::Config, now, &mut changed, &mut wanted_keys);
        }
        let mut dynamic_seen = self.dynamic_seen;
        self.store.for_each_dynamic_watch(|d| {
            dynamic_seen = dynamic_seen.max(d.id);
            self.want(dynamic_wanted(&d), Origin::Dynamic, now, &mut changed, &mut wanted_keys);
        })?;
        self.dynamic_seen = dynamic_seen;
        // Items no longer wanted stop, and items wanted again start, keeping their state:
        // an item is wanted when a watch names it or when what it hangs off (its project
        // list, its import, the VOD list) is wanted.
        let recheck = self.config.poll.terminal_recheck.is_some();
        let mut flips: Vec<Item> = Vec::new();
        let unchanged = self.items.iter().filter(|(k, _)| !changed.contains_key(*k));
        for (key, item) in changed.iter().chain(unchanged) {
            let keep = wanted_keys.contains(key) || self.parent_wanted(&item.target, &wanted_keys);
            if item.active != keep {
                let mut item = item.clone();
                item.active = keep;
                if keep && item.target.polled() && (!item.terminal || recheck) {
                    item.next_due_ms = Some(item.next_due_ms.unwrap_or(now).min(now));
                }
                flips.push(item);
            }
        }
        for item in flips {
            changed.insert(item.key.clone(), item);
        }
        // Written in slices, so a first start with 100,000 watches never holds them all as rows.
        let changed: Vec<Item> = changed.into_values().collect();
        for chunk in changed.chunks(5000) {
            let rows: Vec<ItemRow> = chunk.iter().map(Item::to_row).collect();
            self.store.commit(&rows, &[], &[])?;
        }
        for item in changed {
            self.items.insert(item.key.clone(), item);
        }
        self.rebuild_queue();
        Ok(())
    }

    /// Records that a watch wants `w`: new items are created, changed ones staged.
    fn want(
        &self,
        w: Wanted,
        origin: Origin,
        now: i64,
        changed: &mut HashMap<Arc<str>, Item>,
        wanted_keys: &mut HashSet<Arc<str>>,
    ) {
        let target = w.target.interned(&mut self.interner.borrow_mut());
        let watch = w.watch.as_deref().map(|n| self.interner.borrow_mut().get(n));
        let text = target.key();
        let Some((key, existing)) = self.items.get_key_value(text.as_str()) else {
            let item = Item::new(target, watch, origin, Some(now));
            wanted_keys.insert(item.key.clone());
            changed.insert(item.key.clone(), item);
            return;
        };
        wanted_keys.insert(key.clone());
        if existing.target != target || existing.watch != watch || existing.origin != origin {
            let mut item = existing.clone();
            item.target = target;
            item.watch = watch;
            item.origin = origin;
            changed.insert(key.clone(), item);
        }
    }

    /// Whether a discovered item's parent (its project list, its import, the VOD list)
    /// is still wanted.
    fn parent_wanted(&self, target: &Target, wanted: &HashSet<Arc<str>>) -> bool {
        let project = |workspace: &str, project_id: &str| {
            Target::ProjectList {
                workspace: workspace.into(),
                project_id: project_id.into(),
                analysis: false,
            }
            .key()
        };
        let import = |workspace: &str, project_id: &str, asset_id: &str| {
            Target::Import {
                workspace: workspace.into(),
                project_id: project_id.into(),
                asset_id: asset_id.into(),
                analysis: false,
            }
            .key()
        };
        match target {
            Target::Listing {
                workspace, project_id, ..
            } => wanted.contains(project(workspace, project_id).as_str()),
            Target::Import {
                workspace, project_id, ..
            } => wanted.contains(project(workspace, project_id).as_str()),
            Target::Analysis {
                workspace,
                project_id,
                asset_id,
            } => {
                wanted.contains(import(workspace, project_id, asset_id).as_str())
                    || wanted.contains(project(workspace, project_id).as_str())
            }
            Target::Encode { .. } => wanted.contains(Target::VodList.key().as_str()),
            _ => false,
        }
    }

    fn rebuild_queue(&mut self) {
        self.queue = DueQueue::new();
        self.queue = DueQueue::with_capacity(self.items.len());
        for item in self
            .items
            .values()
            .filter(|i| i.schedulable() && !self.in_flight.contains(&i.key))
        {
            self.queue.push(
                item.key.clone(),
                item.next_due_ms.expect("schedulable items have a due time"),
            );
        }
    }

    /// Picks up watches added by `register --watch` since the last look.
    pub fn load_dynamic_watches(&mut self) -> Result<usize, StoreError> {
        let new = self.store.dynamic_watches_after(self.dynamic_seen)?;
        if new.is_empty() {
            return Ok(0);
        }
        let config = (*self.config).clone();
        self.reconcile(config)?;
        Ok(new.len())
    }

    /// Makes every active polled item due now, except finished ones unless they are
    /// rechecked (for `once`).
    pub fn schedule_all_now(&mut self) {
        let now = now_ms();
        let recheck = self.config.poll.terminal_recheck.is_some();
        for item in self.items.values_mut() {
            if item.active && item.target.polled() && (!item.terminal || recheck) {
                item.next_due_ms = Some(now);
            }
        }
        self.rebuild_queue();
    }

    /// The next item due at or before `now_ms`, marked in flight.
    pub fn next_due(&mut self, now_ms: i64) -> Option<(Arc<str>, Target)> {
        while let Some((key, due)) = self.queue.pop_due(now_ms) {
            let Some(item) = self.items.get(&key) else { continue };
            // Entries left behind by a reschedule or a deactivation are skipped.
            if !item.schedulable() || item.next_due_ms != Some(due) || self.in_flight.contains(&key) {
                continue;
            }
            self.in_flight.insert(key.clone());
            return Some((key, item.target.clone()));
        }
        None
    }

    /// Gives back an item taken by [`Engine::next_due`] without polling it; it keeps its
    /// due time in memory and in the store, but leaves the queue until the next rebuild.
    pub fn release(&mut self, key: &Arc<str>) {
        self.in_flight.remove(key);
    }

    /// The keys of the active polled items due at or before `now_ms`.
    pub fn due_keys(&self, now_ms: i64) -> HashSet<Arc<str>> {
        self.items
            .iter()
            .filter(|(_, i)| i.schedulable() && i.next_due_ms.is_some_and(|d| d <= now_ms))
            .map(|(k, _)| k.clone())
            .collect()
    }

    /// When the earliest queued item is due.
    pub fn next_wakeup(&self) -> Option<i64> {
        self.queue.next_due()
    }

    /// How many polls are out.
    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// Applies poll results: detects changes, commits state and events in one transaction,
    /// then updates memory and the queue. Returns the events committed. When the commit
    /// fails, memory is untouched and the items are retried after a short pause.
    pub fn apply(&mut self, results: Vec<PollResult>) -> Result<Vec<CloudEvent>, StoreError> {
        let now = now_ms();
        let time = DateTime::<Utc>::from_timestamp_millis(now).unwrap_or_default();
        let mut staged = Staged::default();
        for r in &results {
            self.in_flight.remove(&r.key);
        }
        for r in results {
            let Some(base) = self.items.get(&r.key) else { continue };
            if !base.active {
                continue;
            }
            let mut item = staged.items.get(&r.key).cloned().unwrap_or_else(|| base.clone());
            item.last_polled_ms = Some(r.at_ms);
            match r.outcome {
                Ok(polled) => {
                    if item.failing {
                        let event = CloudEvent::watch_health(
                            "watch.recovered",
                            &item.target.subject(),
                            item.target.resource_json(),
                            item.watch.as_deref(),
                            item.status.as_deref(),
                            None,
                            &self.config.instance,
                            time,
                        );
                        staged.events.push(event);
                    }
                    item.failures = 0;
                    item.failing = false;
                    item.last_error = None;
                    match polled {
                        Polled::Status(o) => {
                            self.observe(&mut item, &o, 0, now, time, &mut staged);
                            self.after_status(&item, now, &mut staged);
                            item.next_due_ms = self.due_after_status(&item, now);
                        }
                        Polled::List(observations) => {
                            let running = self.apply_list(&item, &observations, now, time, &mut staged);
                            let every = if matches!(item.target, Target::VodList) && running {
                                self.config.poll.interval.min(self.config.poll.discovery_interval)
                            } else {
                                self.config.poll.discovery_interval
                            };
                            item.next_due_ms = Some(now + ms(every));
                        }
                    }
                }
                Err(e) => {
                    item.failures = item.failures.saturating_add(1);
                    item.last_error = Some(e.to_string().into_boxed_str());
                    tracing::warn!(subject = %item.target.subject(), kind = item.target.kind(), failures = item.failures, error = %e, "poll failed");
                    if !item.failing && (item.failures >= FAILING_AFTER || e.fails_watch_at_once()) {
                        item.failing = true;
                        let event = CloudEvent::watch_health(
                            "watch.failing",
                            &item.target.subject(),
                            item.target.resource_json(),
                            item.watch.as_deref(),
                            item.status.as_deref(),
                            Some(e.to_string()),
                            &self.config.instance,
                            time,
                        );
                        staged.events.push(event);
                    }
                    let p = &self.config.poll;
                    let base = if item.target.is_list() {
                        p.discovery_interval
                    } else {
                        p.interval
                    };
                    let delay = match e.retry() {
                        Retry::NotSoon => p.max_backoff,
                        Retry::After(d) => d.max(backoff(item.failures, base, p.max_backoff)),
                        Retry::Backoff => backoff(item.failures, base, p.max_backoff),
                    };
                    item.next_due_ms = Some(now + ms(delay).max(1));
                }
            }
            staged.items.insert(item.key.clone(), item);
        }
        self.commit(staged)
    }

    /// Detects the changes between `item` and `o` and stages their events.
    fn observe(&self, item: &mut Item, o: &Observation, step: u8, now: i64, time: DateTime<Utc>, staged: &mut Staged) {
        let changes = detect(item.seen().as_ref(), o, step);
        let status_changed = item.status.as_deref() != Some(o.status.as_str());
        for change in &changes {
            staged.events.push(CloudEvent::from_change(
                change,
                &self.config.instance,
                item.watch.as_deref(),
                time,
            ));
        }
        if status_changed || !changes.is_empty() {
            item.last_change_ms = Some(now);
            staged.details.push((item.key.to_string(), o.detail.to_string()));
        }
        item.status = Some(self.interner.borrow_mut().get(&o.status));
        item.percent = o.percent;
        item.terminal = o.terminal();
    }

    /// An import that completed starts its analysis, when asked for.
    fn after_status(&self, item: &Item, now: i64, staged: &mut Staged) {
        if let Target::Import {
            workspace,
            project_id,
            asset_id,
            analysis: true,
        } = &item.target
            && item.status.as_deref() == Some("COMPLETED")
        {
            let target = Target::Analysis {
                workspace: workspace.clone(),
                project_id: project_id.clone(),
                asset_id: asset_id.clone(),
            };
            let key: Arc<str> = target.key().into();
            if !self.items.contains_key(&key) && !staged.items.contains_key(&key) {
                staged.items.insert(
                    key,
                    Item::new(target, item.watch.clone(), Origin::Discovered, Some(now)),
                );
            }
        }
    }

    fn due_after_status(&self, item: &Item, now: i64) -> Option<i64> {
        if item.terminal {
            self.config.poll.terminal_recheck.map(|d| now + ms(d))
        } else {
            Some(now + ms(self.config.poll.interval))
        }
    }

    /// Applies a list: new assets are discovered (and their import watched), encodes are
    /// compared one by one. Returns whether any watched encode is still running.
    fn apply_list(
        &self,
        list: &Item,
        observations: &[Observation],
        now: i64,
        time: DateTime<Utc>,
        staged: &mut Staged,
    ) -> bool {
        let mut running = false;
        for o in observations {
            let (target, watch, step) = {
                let mut i = self.interner.borrow_mut();
                match (&list.target, &o.resource) {
                    (
                        Target::ProjectList { analysis, .. },
                        crate::watch::Resource::ProjectAsset {
                            workspace,
                            project_id,
                            asset_id,
                        },
                    ) => {
                        let (workspace, project_id, asset_id) =
                            (i.get(workspace), i.get(project_id), Arc::<str>::from(asset_id.as_str()));
                        let import = Target::Import {
                            workspace: workspace.clone(),
                            project_id: project_id.clone(),
                            asset_id: asset_id.clone(),
                            analysis: *analysis,
                        };
                        let import_key = import.key();
                        if !self.items.contains_key(import_key.as_str())
                            && !staged.items.contains_key(import_key.as_str())
                        {
                            let item = Item::new(import, list.watch.clone(), Origin::Discovered, Some(now));
                            staged.items.insert(item.key.clone(), item);
                        }
                        (
                            Target::Listing {
                                workspace,
                                project_id,
                                asset_id,
                            },
                            list.watch.clone(),
                            0,
                        )
                    }
                    (
                        Target::VodList,
                        crate::watch::Resource::VodEncode {
                            category_id,
                            category_name,
                            file_path,
                            output_type,
                        },
                    ) => {
                        let Some(watch) = self
                            .config
                            .watches
                            .vods
                            .iter()
                            .find(|v| v.matches(category_id, category_name.as_deref()))
                        else {
                            continue;
                        };
                        let target = Target::Encode {
                            category_id: i.get(category_id),
                            category_name: category_name.as_deref().map(|n| i.get(n)),
                            file_path: file_path.as_str().into(),
                            output_type: i.get(output_type),
                        };
                        (target, watch.name.as_deref().map(|n| i.get(n)), watch.progress_step)
                    }
                    _ => continue,
                }
            };
            let text = target.key();
            let mut item = staged
                .items
                .get(text.as_str())
                .or_else(|| self.items.get(text.as_str()))
                .cloned()
                .unwrap_or_else(|| Item::new(target, watch.clone(), Origin::Discovered, None));
            item.watch = watch;
            item.active = true;
            item.last_polled_ms = Some(now);
            self.observe(&mut item, o, step, now, time, staged);
            running |= !item.terminal;
            staged.items.insert(item.key.clone(), item);
        }
        running
    }

    fn commit(&mut self, staged: Staged) -> Result<Vec<CloudEvent>, StoreError> {
        let rows: Vec<ItemRow> = staged.items.values().map(Item::to_row).collect();
        let events: Vec<OutboxEvent> = staged
            .events
            .iter()
            .map(|e| OutboxEvent {
                id: e.id.clone(),
                event_type: e.event_type.clone(),
                subject: e.subject.clone(),
                body: serde_json::to_string(e).expect("events serialize"),
            })
            .collect();
        if let Err(e) = self.store.commit(&rows, &staged.details, &events) {
            // Nothing advanced: poll these items again soon and compare against the old state.
            let retry = now_ms() + 1000;
            for key in staged.items.keys() {
                if let Some(item) = self.items.get_mut(key).filter(|i| i.schedulable()) {
                    item.next_due_ms = Some(retry);
                    self.queue.push(key.clone(), retry);
                }
            }
            return Err(e);
        }
        for (key, item) in staged.items {
            if item.schedulable() {
                self.queue.push(
                    key.clone(),
                    item.next_due_ms.expect("schedulable items have a due time"),
                );
            }
            self.items.insert(key, item);
        }
        Ok(staged.events)
    }
}

fn dynamic_wanted(d: &DynamicWatch) -> Wanted {
    Wanted {
        target: Target::Import {
            workspace: d.workspace.as_str().into(),
            project_id: d.project_id.as_str().into(),
            asset_id: d.asset_id.as_str().into(),
            analysis: d.analysis,
        },
        watch: d.name.clone(),
    }
}
