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
use indexmap::IndexMap;

use super::target::{EncodeOutput, Interner, Target, Wanted, from_config};
use crate::cluster::{ShardSet, shard_of};
use crate::config::Config;
use crate::event::{CloudEvent, UNKNOWN_STATUS};
use crate::ncp::{ApiError, NcpClient, Retry};
use crate::schedule::{DueQueue, backoff};
use crate::store::{DynamicWatch, ItemRow, OutboxEvent, Store, StoreError};
use crate::watch::{Observation, Seen, detect};

/// Consecutive failed polls after which `watch.failing` is emitted.
pub const FAILING_AFTER: u32 = 5;

/// How many characters of the access key id name an account in `accounts/{prefix}`:
/// enough to tell a team's keys apart, too few to be the key.
pub const ACCOUNT_PREFIX_CHARS: usize = 8;

/// The status a list item holds once it has been read (its first read is a baseline's).
const LIST_READ: &str = "READ";

/// How an error message about a refused key starts (see [`ApiError::AuthRefused`]).
const AUTH_REFUSED_PREFIX: &str = "authentication refused";

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

/// A time that may not have come, in epoch milliseconds: 8 bytes where an `Option<i64>`
/// takes 16. An item holds four, so 100,000 items are 3 MB smaller.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct When(i64);

impl When {
    /// No time (`i64::MIN`: 292 million years before any clock reads it).
    pub const NEVER: Self = Self(i64::MIN);

    /// The time `ms`.
    pub fn at(ms: i64) -> Self {
        Self(ms.max(i64::MIN + 1))
    }

    /// The time, if there is one.
    pub fn get(self) -> Option<i64> {
        (self != Self::NEVER).then_some(self.0)
    }
}

impl From<Option<i64>> for When {
    fn from(ms: Option<i64>) -> Self {
        ms.map_or(Self::NEVER, Self::at)
    }
}

impl std::fmt::Debug for When {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.get().fmt(f)
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
    pub next_due_ms: When,
    /// Consecutive failures.
    pub failures: u32,
    /// Whether `watch.failing` is outstanding.
    pub failing: bool,
    /// The last failure.
    pub last_error: Option<Box<str>>,
    /// Last poll.
    pub last_polled_ms: When,
    /// Last change.
    pub last_change_ms: When,
    /// When the item was first watched or seen.
    pub since_ms: i64,
    /// Whether `watch.stalled` was emitted for the current status.
    pub stalled: bool,
    /// The API's own time of the status followed (a VOD job's `lastWorkTime`), so an
    /// older job of the same output is never followed again.
    pub changed_at_ms: When,
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
            next_due_ms: due.into(),
            failures: 0,
            failing: false,
            last_error: None,
            last_polled_ms: When::NEVER,
            last_change_ms: When::NEVER,
            since_ms: now_ms(),
            stalled: false,
            changed_at_ms: When::NEVER,
        }
    }

    #[allow(
        clippy::expect_used,
        reason = "each expect here states an invariant of our own types, never of input"
    )]
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
            next_due_ms: self.next_due_ms.get(),
            failures: self.failures,
            failing: self.failing,
            last_error: self.last_error.as_deref().map(str::to_string),
            last_polled_ms: self.last_polled_ms.get(),
            last_change_ms: self.last_change_ms.get(),
            since_ms: Some(self.since_ms),
            stalled: self.stalled,
            changed_at_ms: self.changed_at_ms.get(),
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
            next_due_ms: row.next_due_ms.into(),
            failures: row.failures,
            failing: row.failing,
            last_error: row.last_error.map(String::into_boxed_str),
            last_polled_ms: row.last_polled_ms.into(),
            last_change_ms: row.last_change_ms.into(),
            since_ms: row.since_ms.unwrap_or_else(now_ms),
            stalled: row.stalled,
            changed_at_ms: row.changed_at_ms.into(),
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
        self.active && self.target.polled() && self.next_due_ms.get().is_some()
    }
}

/// What one poll returned.
#[derive(Debug, Clone)]
pub enum Polled {
    /// One status.
    Status(Observation),
    /// A list: listings of a project, or encodes.
    List(Vec<Observation>),
    /// The VOD list, and the start of the window it was read over (a lower bound of the
    /// work start of every encode in it).
    VodList(Vec<Observation>, i64),
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

/// What a poll needs to know besides its target.
#[derive(Debug, Clone, Copy)]
pub struct PollWindow {
    /// The start of the VOD list window, epoch milliseconds.
    pub vod_from_ms: i64,
}

/// Polls `target` once. The only network I/O of the daemon's polling path.
pub async fn poll(client: &NcpClient, target: &Target, window: PollWindow) -> Result<Polled, ApiError> {
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
            let now = now_ms();
            let from = window.vod_from_ms.min(now);
            let encodes = client.vod_statuses(from, now).await?;
            Polled::VodList(
                crate::ncp::vod::newest_jobs(encodes)
                    .iter()
                    .map(|e| e.observation())
                    .collect(),
                from,
            )
        }
        Target::Listing { .. } | Target::Encode(_) | Target::Account { .. } => {
            return Err(ApiError::Transport("list-fed items are not polled on their own".into()));
        }
    })
}

/// The VOD window never reaches back further than this beyond `vod_lookback`, however old
/// an unfinished encode is: an encode nobody has touched for a month is gone, not running.
pub const MAX_VOD_REACH_BACK: Duration = Duration::from_secs(30 * 24 * 3600);

/// However many callbacks arrive, the VOD list is read for them at most once per this long
/// (SPEC §10): a flood of forged or replayed callbacks costs one call a second at most.
pub const HINT_COALESCE: Duration = Duration::from_secs(1);

/// Hints from VOD Station callbacks, waiting for or riding on a VOD list read.
#[derive(Debug)]
struct VodHints {
    /// A callback came that no list read started since then has answered.
    pending: bool,
    /// The list read in flight was started while a hint was pending.
    in_flight_hinted: bool,
    /// When the last read for a hint started, epoch milliseconds.
    last_read_ms: i64,
}

impl Default for VodHints {
    fn default() -> Self {
        Self {
            pending: false,
            in_flight_hinted: false,
            last_read_ms: i64::MIN / 2,
        }
    }
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
    /// The items by key. An index map keeps them in one dense array beside a table of
    /// indices, where a hash map's table holds whole items in buckets that are an eighth
    /// to half empty: 100,000 items take a third less memory.
    items: IndexMap<Arc<str>, Item>,
    queue: DueQueue,
    in_flight: HashSet<Arc<str>>,
    dynamic_seen: i64,
    /// Shares repeated strings among items (a RefCell: the engine is used from one task).
    interner: RefCell<Interner>,
    /// The account item of the key in use, created the first time the key is refused.
    account: Option<Arc<str>>,
    /// The shard of the account item (computed once: every answer asks who holds it).
    account_shard: Option<u16>,
    /// Items waiting for the account's key to be accepted again; the first good answer
    /// (or new credentials) makes them due at once.
    auth_waiting: HashSet<Arc<str>>,
    /// Callback hints for the VOD list.
    hints: VodHints,
    /// The shards this replica works (SPEC §9); `None`: every item (SQLite, one process).
    /// Items of other shards are never held in memory, polled or changed: the engine only
    /// creates them, if absent, for the replica that holds them.
    shards: Option<ShardSet>,
    /// The newest item sequence number looked at, to find items other replicas create in
    /// this replica's shards.
    created_seen: i64,
    /// When each shard was last taken (epoch ms, this process's clock): a poll started
    /// before then belongs to an earlier hold of the shard, and another replica may have
    /// seen newer states in between, so its answer is dropped.
    gained_at: HashMap<u16, i64>,
    /// What this replica's polls last said of the key while another replica holds the
    /// account's shard (`Some(error)`: refused, `None`: accepted), for that holder.
    key_seen: RefCell<Option<Option<String>>>,
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
        Self::open_sharded(config, store, None)
    }

    /// Like [`Engine::open`], for a replica that works only `shards` (`None`: all).
    pub fn open_sharded(config: Config, store: Store, shards: Option<ShardSet>) -> Result<Self, StoreError> {
        let created_seen = store.last_item_created()?;
        // Sized once: growing a 100,000-entry table doubles it in memory while it rehashes.
        let capacity = match shards {
            None => store.item_count()? as usize,
            Some(_) => 0,
        };
        let mut items = IndexMap::with_capacity(capacity);
        let mut interner = Interner::default();
        let mut load = |row: ItemRow| {
            let key = row.key.clone();
            match Item::from_row(row, &mut interner) {
                Some(item) => {
                    items.insert(item.key.clone(), item);
                }
                None => tracing::warn!(key, "skipping a stored item whose parameters do not decode"),
            }
        };
        match shards {
            None => store.for_each_item(&mut load)?,
            Some(set) => store.for_each_item_in(set, &mut load)?,
        }
        let mut engine = Self {
            config: Arc::new(config.clone()),
            store,
            items,
            queue: DueQueue::new(),
            in_flight: HashSet::new(),
            dynamic_seen: 0,
            interner: RefCell::new(interner),
            account: None,
            account_shard: None,
            auth_waiting: HashSet::new(),
            hints: VodHints::default(),
            shards,
            created_seen,
            gained_at: HashMap::new(),
            key_seen: RefCell::new(None),
        };
        // Items that were waiting on a refused key before a restart wait on it still.
        let failing_account = engine
            .items
            .values()
            .any(|i| matches!(i.target, Target::Account { .. }) && i.failing);
        if failing_account {
            engine.auth_waiting = engine
                .items
                .values()
                .filter(|i| {
                    i.active
                        && i.target.polled()
                        && i.last_error
                            .as_deref()
                            .is_some_and(|e| e.starts_with(AUTH_REFUSED_PREFIX))
                })
                .map(|i| i.key.clone())
                .collect();
        }
        engine.reconcile(config)?;
        Ok(engine)
    }

    /// Whether this replica works the shard of `subject`.
    pub fn owns(&self, subject: &str) -> bool {
        self.shards.is_none_or(|set| set.contains(shard_of(subject)))
    }

    /// Whether a poll of `target` started at `at_ms` began before this replica last took
    /// the target's shard: its answer may be older than what another replica committed
    /// while it held the shard, and is dropped (the item is polled again).
    fn polled_in_an_earlier_hold(&self, target: &Target, at_ms: i64) -> bool {
        self.shards.is_some()
            && !self.gained_at.is_empty()
            && self
                .gained_at
                .get(&shard_of(&target.subject()))
                .is_some_and(|gained| at_ms < *gained)
    }

    /// The shards this replica works (`None`: all).
    pub fn shards(&self) -> Option<ShardSet> {
        self.shards
    }

    /// Moves this replica to `shards`: the items of shards it lost leave memory (their
    /// polls still out are dropped when they answer), the items of shards it gained are
    /// loaded from the store as their last holder left them, and the watches of the config
    /// are reconciled for them. Returns how many items were loaded.
    pub fn set_shards(&mut self, shards: ShardSet) -> Result<usize, StoreError> {
        let old = self.shards.unwrap_or_else(ShardSet::all);
        let (lost, gained) = (old.minus(shards), shards.minus(old));
        self.shards = Some(shards);
        if !lost.is_empty() {
            self.items.retain(|_, i| !lost.contains(shard_of(&i.target.subject())));
            self.auth_waiting.retain(|k| self.items.contains_key(k));
        }
        let mut loaded = 0;
        let now = now_ms();
        for s in gained.iter() {
            self.gained_at.insert(s, now);
        }
        if !gained.is_empty() {
            self.created_seen = self.created_seen.max(self.store.last_item_created()?);
            // Streamed, one row at a time: a shard of 100,000 items never sits in memory twice.
            let (store, items) = (&self.store, &mut self.items);
            let mut interner = self.interner.borrow_mut();
            store.for_each_item_in(gained, &mut |row| {
                if let Some(item) = Item::from_row(row, &mut interner) {
                    loaded += 1;
                    items.insert(item.key.clone(), item);
                }
            })?;
            drop(interner);
            let config = (*self.config).clone();
            self.reconcile(config)?;
        } else {
            self.rebuild_queue();
        }
        Ok(loaded)
    }

    /// Picks up items that other replicas created in this replica's shards (an asset one
    /// of their project lists found). Returns how many.
    pub fn pick_up_created(&mut self) -> Result<usize, StoreError> {
        let Some(shards) = self.shards.filter(|s| !s.is_empty()) else {
            return Ok(0);
        };
        let (newest, rows) = self.store.items_created_after(self.created_seen, shards)?;
        self.created_seen = newest;
        let mut added = 0;
        let mut interner = self.interner.borrow_mut();
        for row in rows {
            if self.items.contains_key(row.key.as_str()) {
                continue;
            }
            if let Some(item) = Item::from_row(row, &mut interner) {
                if item.schedulable() {
                    self.queue
                        .push(item.key.clone(), item.next_due_ms.get().unwrap_or_else(now_ms));
                }
                self.items.insert(item.key.clone(), item);
                added += 1;
            }
        }
        Ok(added)
    }

    /// The configuration in force.
    pub fn config(&self) -> &Arc<Config> {
        &self.config
    }

    /// The items.
    pub fn items(&self) -> impl Iterator<Item = &Item> {
        self.items.values()
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
        self.store.for_each_dynamic_watch(&mut |d| {
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
                    item.next_due_ms = When::at(item.next_due_ms.get().unwrap_or(now).min(now));
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
            self.store.commit(&rows, &[], &[], &[])?;
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
        // A watch of another replica's shard is that replica's to make: every replica runs
        // the same config and reconciles the shards it takes.
        if !self.owns(&w.target.subject()) {
            return;
        }
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
            Target::Encode(_) => wanted.contains(Target::VodList.key().as_str()),
            _ => false,
        }
    }

    #[allow(
        clippy::expect_used,
        reason = "each expect here states an invariant of our own types, never of input"
    )]
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
                item.next_due_ms.get().expect("schedulable items have a due time"),
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
                item.next_due_ms = When::at(now);
            }
        }
        self.rebuild_queue();
    }

    /// The next item due at or before `now_ms`, marked in flight.
    pub fn next_due(&mut self, now_ms: i64) -> Option<(Arc<str>, Target)> {
        while let Some((key, due)) = self.queue.pop_due(now_ms) {
            let Some(item) = self.items.get(&key) else { continue };
            // Entries left behind by a reschedule or a deactivation are skipped.
            if !item.schedulable() || item.next_due_ms.get() != Some(due) || self.in_flight.contains(&key) {
                continue;
            }
            self.in_flight.insert(key.clone());
            if matches!(item.target, Target::VodList) {
                // Whatever made it due, this read answers every hint raised so far.
                self.hints.in_flight_hinted = std::mem::take(&mut self.hints.pending);
                if self.hints.in_flight_hinted {
                    self.hints.last_read_ms = now_ms;
                }
            }
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
            .filter(|(_, i)| i.schedulable() && i.next_due_ms.get().is_some_and(|d| d <= now_ms))
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

    /// Names the account whose key signs the calls (by its access key id).
    pub fn set_account(&mut self, access_key: &str) {
        let prefix: String = access_key.chars().take(ACCOUNT_PREFIX_CHARS).collect();
        let key: Arc<str> = Target::Account {
            key_prefix: prefix.as_str().into(),
        }
        .key()
        .into();
        self.account_shard = key.split_once(':').map(|(_, subject)| shard_of(subject));
        self.account = Some(key);
    }

    /// New credentials (a SIGHUP after a key rotation): every item waiting on a refused key
    /// is due now, rather than at the end of its long wait.
    pub fn retry_refused_now(&mut self) {
        let now = now_ms();
        for waiting in std::mem::take(&mut self.auth_waiting) {
            if let Some(item) = self.items.get_mut(&waiting).filter(|i| i.schedulable()) {
                item.next_due_ms = When::at(now);
                self.queue.push(waiting, now);
            }
        }
    }

    /// A VOD Station callback for a watched category came (SPEC §10): the VOD list is due
    /// now, or one [`HINT_COALESCE`] after the last read for a hint, whichever is later. A
    /// read in flight is followed by another once it answers (it may have started before
    /// the change). A failing list keeps its backoff. Returns whether there is a VOD list.
    pub fn hint_vod_list(&mut self, now: i64) -> bool {
        let key = Target::VodList.key();
        let in_flight = self.in_flight.contains(key.as_str());
        let Some((key, item)) = self.items.get_key_value(key.as_str()).filter(|(_, i)| i.schedulable()) else {
            return false;
        };
        self.hints.pending = true;
        if in_flight || item.failures > 0 || self.auth_waiting.contains(key) {
            return true;
        }
        let due = now.max(self.hints.last_read_ms.saturating_add(ms(HINT_COALESCE)));
        if item.next_due_ms.get().is_some_and(|d| d > due) {
            let key = key.clone();
            if let Some(item) = self.items.get_mut(&key) {
                item.next_due_ms = When::at(due);
            }
            self.queue.push(key, due);
        }
        true
    }

    /// The start of the VOD list window: `vod_lookback` ago, or earlier, so that every
    /// unfinished watched encode stays in it (an encode's `since_ms` is the start of the
    /// window it was first listed in, so it started no earlier), but never more than
    /// [`MAX_VOD_REACH_BACK`] further.
    pub fn vod_window_from(&self, now: i64) -> i64 {
        let usual = now.saturating_sub(ms(self.config.poll.vod_lookback));
        let oldest = self
            .items
            .values()
            .filter(|i| i.active && !i.terminal && matches!(i.target, Target::Encode(_)))
            .map(|i| i.since_ms)
            .min()
            .unwrap_or(usual);
        oldest.min(usual).max(usual.saturating_sub(ms(MAX_VOD_REACH_BACK)))
    }

    /// What polls need besides their target, now.
    pub fn poll_window(&self) -> PollWindow {
        PollWindow {
            vod_from_ms: self.vod_window_from(now_ms()),
        }
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
            if self.polled_in_an_earlier_hold(&base.target, r.at_ms) {
                // Loaded while this poll was out, the item left the queue: back on its due time.
                if let Some(due) = base.next_due_ms.get().filter(|_| base.schedulable()) {
                    self.queue.push(r.key.clone(), due);
                }
                continue;
            }
            let mut item = staged.items.get(&r.key).cloned().unwrap_or_else(|| base.clone());
            item.last_polled_ms = When::at(r.at_ms);
            let hinted = matches!(item.target, Target::VodList) && std::mem::take(&mut self.hints.in_flight_hinted);
            match r.outcome {
                Ok(polled) => {
                    self.account_accepted(now, time, &mut staged);
                    if item.failing {
                        let event = self.item_event(&item, "watch.recovered", None, time);
                        staged.events.push(event);
                    }
                    item.failures = 0;
                    item.failing = false;
                    item.last_error = None;
                    let polled_window = match &polled {
                        Polled::VodList(_, from) => Some(*from),
                        _ => None,
                    };
                    match polled {
                        Polled::Status(o) => {
                            if self.upload_not_landed(&item, &o, now) {
                                // Not final while the watch is young: the file may be on its way.
                                item.next_due_ms = When::at(now + ms(self.config.poll.interval));
                            } else {
                                self.observe(&mut item, &o, 0, now, time, &mut staged);
                                self.after_status(&item, now, &mut staged);
                                self.check_stall(&mut item, now, time, &mut staged);
                                item.next_due_ms = self.due_after_status(&item, now).into();
                            }
                        }
                        Polled::List(observations) | Polled::VodList(observations, _) => {
                            let first_read = item.status.is_none();
                            let window_from = match &polled_window {
                                Some(from) => *from,
                                None => now,
                            };
                            let first_event = staged.events.len();
                            let running =
                                self.apply_list(&item, &observations, first_read, window_from, now, time, &mut staged);
                            if hinted {
                                for e in &mut staged.events[first_event..] {
                                    if e.event_type.starts_with("vod.encode.") {
                                        e.data.hint = Some(crate::event::HINT_CALLBACK.to_string());
                                    }
                                }
                            }
                            item.status = Some(self.interner.borrow_mut().get(LIST_READ));
                            let p = &self.config.poll;
                            // With callbacks on, a running encode's changes come through
                            // them; the list is read at the fallback rate in case one is lost.
                            let running_every = match &self.config.callbacks {
                                Some(c) => c.fallback_interval,
                                None => p.interval,
                            };
                            let every = if matches!(item.target, Target::VodList) && running {
                                running_every.min(p.discovery_interval)
                            } else {
                                p.discovery_interval
                            };
                            item.next_due_ms = When::at(now + ms(every));
                            if matches!(item.target, Target::VodList) && self.hints.pending {
                                // A callback came while this read was out: read again soon.
                                let soon = now.max(self.hints.last_read_ms.saturating_add(ms(HINT_COALESCE)));
                                item.next_due_ms = item.next_due_ms.get().map(|d| d.min(soon)).into();
                            }
                        }
                    }
                }
                Err(e) if e.is_account_failure() => {
                    // The key, not this watch: one `account.failing`, and the watch waits.
                    item.last_error = Some(crate::text::scrub(&e.to_string()).into());
                    tracing::warn!(subject = %item.target.subject(), kind = item.target.kind(), error = %e, "poll refused: the account's key was not accepted; the watch waits for it");
                    self.account_refused(&e, now, time, &mut staged);
                    self.auth_waiting.insert(item.key.clone());
                    let p = &self.config.poll;
                    let base = if item.target.is_list() {
                        p.discovery_interval
                    } else {
                        p.interval
                    };
                    item.next_due_ms = When::at(now + ms(backoff(FAILING_AFTER + 2, base, p.max_backoff)).max(1));
                }
                Err(e) => {
                    item.failures = item.failures.saturating_add(1);
                    item.last_error = Some(crate::text::scrub(&e.to_string()).into());
                    tracing::warn!(subject = %item.target.subject(), kind = item.target.kind(), failures = item.failures, error = %e, "poll failed");
                    if !item.failing && (item.failures >= FAILING_AFTER || e.fails_watch_at_once()) {
                        item.failing = true;
                        let event = self.item_event(&item, "watch.failing", Some(e.to_string()), time);
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
                        Retry::After(d) => d.min(p.max_backoff).max(backoff(item.failures, base, p.max_backoff)),
                        Retry::Backoff => backoff(item.failures, base, p.max_backoff),
                    };
                    item.next_due_ms = When::at(now + ms(delay).max(1));
                }
            }
            staged.items.insert(item.key.clone(), item);
        }
        self.commit(staged)
    }

    /// `watch.failing`, `watch.recovered` or `watch.stalled` about `item`.
    fn item_event(&self, item: &Item, event_type: &str, error: Option<String>, time: DateTime<Utc>) -> CloudEvent {
        CloudEvent::watch_health(
            event_type,
            &item.target.subject(),
            item.target.resource_json(),
            item.watch.as_deref(),
            item.status.as_deref(),
            error,
            &self.config.instance,
            time,
        )
    }

    /// The account item of the key in use, as staged so far.
    fn account_item(&self, staged: &Staged) -> Option<Item> {
        let key = self.account.as_ref()?;
        // The account's state belongs to the replica holding its shard: the others let
        // their watches wait, and leave the one event to it.
        if !self.owns_account() {
            return None;
        }
        staged
            .items
            .get(key)
            .or_else(|| self.items.get(key))
            .cloned()
            .or_else(|| {
                let prefix = key.strip_prefix("account:accounts/").unwrap_or(key);
                Some(Item::new(
                    Target::Account {
                        key_prefix: prefix.into(),
                    },
                    None,
                    Origin::Discovered,
                    None,
                ))
            })
    }

    /// The gateway refused the key: `account.failing` once, however many watches it hit.
    fn account_refused(&self, e: &ApiError, now: i64, time: DateTime<Utc>, staged: &mut Staged) {
        self.account_refused_with(&crate::text::scrub(&e.to_string()), now, time, staged);
    }

    /// [`Engine::account_refused`], from the error's text. A replica without the account's
    /// shard hands what it saw to the one holding it instead (through the store): that one
    /// may have no watch of its own to be refused on.
    fn account_refused_with(&self, e: &str, now: i64, time: DateTime<Utc>, staged: &mut Staged) {
        let Some(mut account) = self.account_item(staged) else {
            if self.account.is_some() {
                *self.key_seen.borrow_mut() = Some(Some(e.to_string()));
            }
            return;
        };
        account.last_polled_ms = When::at(now);
        account.last_error = Some(e.into());
        account.failures = account.failures.saturating_add(1);
        if !account.failing {
            account.failing = true;
            account.last_change_ms = When::at(now);
            tracing::error!(account = %account.target.subject(), error = %e, "the API gateway refuses the account's key: every watch waits until it is accepted (fix the key and send SIGHUP)");
            staged.events.push(CloudEvent::watch_health(
                "account.failing",
                &account.target.subject(),
                account.target.resource_json(),
                None,
                None,
                Some(e.to_string()),
                &self.config.instance,
                time,
            ));
        }
        staged.items.insert(account.key.clone(), account);
    }

    /// A good answer: every refused account recovers, and the watches waiting on it are
    /// due now.
    fn account_accepted(&mut self, now: i64, time: DateTime<Utc>, staged: &mut Staged) {
        if !self.owns_account() {
            *self.key_seen.get_mut() = Some(None);
        }
        if self.auth_waiting.is_empty() && !self.any_account_failing(staged) {
            return;
        }
        let failing: Vec<Item> = self
            .items
            .values()
            .filter(|i| matches!(i.target, Target::Account { .. }))
            .map(|i| staged.items.get(&i.key).unwrap_or(i).clone())
            .chain(
                staged
                    .items
                    .values()
                    .filter(|i| matches!(i.target, Target::Account { .. }) && !self.items.contains_key(&i.key))
                    .cloned(),
            )
            .filter(|i| i.failing)
            .collect();
        for mut account in failing {
            account.failing = false;
            account.failures = 0;
            account.last_error = None;
            account.last_change_ms = When::at(now);
            tracing::info!(account = %account.target.subject(), "the API gateway accepts the account's key again");
            staged.events.push(CloudEvent::watch_health(
                "account.recovered",
                &account.target.subject(),
                account.target.resource_json(),
                None,
                None,
                None,
                &self.config.instance,
                time,
            ));
            staged.items.insert(account.key.clone(), account);
        }
        for key in std::mem::take(&mut self.auth_waiting) {
            if let Some(mut item) = staged.items.get(&key).or_else(|| self.items.get(&key)).cloned()
                && item.schedulable()
            {
                item.next_due_ms = When::at(now);
                staged.items.insert(key, item);
            }
        }
    }

    /// Whether this replica holds the shard of the key's account item.
    pub fn owns_account(&self) -> bool {
        self.shards
            .zip(self.account_shard)
            .is_none_or(|(set, shard)| set.contains(shard))
    }

    /// What this replica's polls last said of the key, when another replica holds the
    /// account's shard: `Some(Some(error))` refused, `Some(None)` accepted.
    pub fn key_seen(&self) -> Option<Option<String>> {
        if self.owns_account() {
            return None;
        }
        self.key_seen.borrow().clone()
    }

    /// On the replica holding the account's shard: another replica's polls found the key
    /// refused (`Some(error)`) or accepted (`None`) at `at_ms`. It counts when it is newer
    /// than the account's last change and says something else: the account's event comes
    /// from here, once.
    pub fn apply_relayed_account(&mut self, refused: Option<&str>, at_ms: i64) -> Result<Vec<CloudEvent>, StoreError> {
        let Some(key) = self.account.clone().filter(|_| self.owns_account()) else {
            return Ok(Vec::new());
        };
        let (failing, changed) = self
            .items
            .get(&key)
            .map_or((false, None), |a| (a.failing, a.last_change_ms.get()));
        if refused.is_some() == failing || changed.is_some_and(|t| at_ms <= t) {
            return Ok(Vec::new());
        }
        let (now, time) = (now_ms(), Utc::now());
        let mut staged = Staged::default();
        match refused {
            Some(error) => self.account_refused_with(error, now, time, &mut staged),
            None => self.account_accepted(now, time, &mut staged),
        }
        if staged.items.is_empty() && staged.events.is_empty() {
            return Ok(Vec::new());
        }
        self.commit(staged)
    }

    fn any_account_failing(&self, staged: &Staged) -> bool {
        let failing = |i: &Item| matches!(i.target, Target::Account { .. }) && i.failing;
        staged.items.values().any(failing)
            || self
                .account
                .as_ref()
                .and_then(|k| self.items.get(k))
                .is_some_and(failing)
    }

    /// Whether `o` says a search image's file is not in Object Storage yet while the watch
    /// is younger than `upload_grace`: then it is not final (SPEC §8).
    fn upload_not_landed(&self, item: &Item, o: &Observation, now: i64) -> bool {
        o.awaiting_file && item.status.is_none() && now - item.since_ms < ms(self.config.poll.upload_grace)
    }

    /// Emits `watch.stalled` once when an unfinished item has gone `stall_after` without a change.
    fn check_stall(&self, item: &mut Item, now: i64, time: DateTime<Utc>, staged: &mut Staged) {
        if item.terminal || item.stalled {
            return;
        }
        let unchanged_since = item.last_change_ms.get().unwrap_or(item.since_ms);
        let stall_after = ms(self.config.poll.stall_after);
        if now - unchanged_since < stall_after {
            return;
        }
        item.stalled = true;
        let p = &self.config.poll;
        tracing::info!(subject = %item.target.subject(), kind = item.target.kind(), status = item.status.as_deref().unwrap_or(UNKNOWN_STATUS), "no change for {}: stalled, polled every {} from now on", humantime::format_duration(p.stall_after), humantime::format_duration(p.stalled_interval));
        let mut event = self.item_event(item, "watch.stalled", None, time);
        event.data.previous = None;
        event.data.detail = serde_json::json!({
            "unchanged_since": DateTime::<Utc>::from_timestamp_millis(unchanged_since)
                .unwrap_or_default()
                .to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            "stall_after": humantime::format_duration(p.stall_after).to_string(),
            "polled_every": humantime::format_duration(p.stalled_interval).to_string(),
        });
        staged.events.push(event);
    }

    /// Detects the changes between `item` and `o` and stages their events; with `quiet`
    /// (a baseline), records the state without events.
    #[allow(clippy::too_many_arguments)]
    fn observe_as(
        &self,
        item: &mut Item,
        o: &Observation,
        step: u8,
        quiet: bool,
        now: i64,
        time: DateTime<Utc>,
        staged: &mut Staged,
    ) {
        let changes = detect(item.seen().as_ref(), o, step);
        let status_changed = item.status.as_deref() != Some(o.status.as_str());
        let moved = status_changed || item.percent != o.percent;
        if !quiet {
            for change in &changes {
                staged.events.push(CloudEvent::from_change(
                    change,
                    &self.config.instance,
                    item.watch.as_deref(),
                    time,
                ));
            }
        }
        if moved || !changes.is_empty() {
            // Any movement, progress included, is a sign of life: a stalled item wakes up.
            item.last_change_ms = When::at(now);
            item.stalled = false;
            staged.details.push((
                item.key.to_string(),
                crate::event::bounded_detail(&o.detail).to_string(),
            ));
        }
        item.status = Some(self.interner.borrow_mut().get(&o.status));
        item.percent = o.percent;
        item.terminal = o.terminal();
        if o.changed_at_ms.is_some() {
            item.changed_at_ms = o.changed_at_ms.into();
        }
    }

    /// Detects the changes between `item` and `o` and stages their events.
    fn observe(&self, item: &mut Item, o: &Observation, step: u8, now: i64, time: DateTime<Utc>, staged: &mut Staged) {
        self.observe_as(item, o, step, false, now, time, staged);
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
        let p = &self.config.poll;
        if item.terminal {
            p.terminal_recheck.map(|d| now + ms(d))
        } else if item.stalled {
            Some(now + ms(p.stalled_interval))
        } else {
            Some(now + ms(p.interval))
        }
    }

    /// Applies a list: new assets are discovered (and their import watched), encodes are
    /// compared one by one. On the list's `first_read`, a watch with `baseline` records what
    /// is listed without events (and a project's old assets without status polls). Returns
    /// whether any watched encode is still running (and not stalled).
    #[allow(clippy::too_many_arguments)]
    fn apply_list(
        &self,
        list: &Item,
        observations: &[Observation],
        first_read: bool,
        window_from: i64,
        now: i64,
        time: DateTime<Utc>,
        staged: &mut Staged,
    ) -> bool {
        let mut running = false;
        for o in observations {
            let (target, watch, step, baseline) = {
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
                        let baseline = first_read && self.project_baseline(&workspace, &project_id);
                        let listing = Target::Listing {
                            workspace: workspace.clone(),
                            project_id: project_id.clone(),
                            asset_id: asset_id.clone(),
                        };
                        let known = self.items.contains_key(listing.key().as_str());
                        let import = Target::Import {
                            workspace,
                            project_id,
                            asset_id,
                            analysis: *analysis,
                        };
                        let import_key = import.key();
                        // A baseline's old assets are recorded as listed, not polled: one call
                        // each for 50,000 finished assets is what a baseline avoids.
                        if !baseline
                            && !known
                            && !self.items.contains_key(import_key.as_str())
                            && !staged.items.contains_key(import_key.as_str())
                        {
                            let item = Item::new(import, list.watch.clone(), Origin::Discovered, Some(now));
                            staged.items.insert(item.key.clone(), item);
                        }
                        (listing, list.watch.clone(), 0, baseline)
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
                        let target = Target::Encode(Box::new(EncodeOutput {
                            category_id: i.get(category_id),
                            category_name: category_name.as_deref().map(|n| i.get(n)),
                            file_path: file_path.as_str().into(),
                            output_type: i.get(output_type),
                        }));
                        (
                            target,
                            watch.name.as_deref().map(|n| i.get(n)),
                            watch.progress_step,
                            first_read && watch.baseline,
                        )
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
                .unwrap_or_else(|| {
                    let mut item = Item::new(target, watch.clone(), Origin::Discovered, None);
                    // An encode started no earlier than the window it was first listed in:
                    // the VOD window reaches back to there while it is unfinished.
                    if matches!(item.target, Target::Encode(_)) {
                        item.since_ms = window_from.min(now);
                    }
                    item
                });
            // An older job of an output already followed (the list has no job id) is never
            // followed again: that is what flipped items between two rows in every poll.
            if let (Some(followed), Some(seen)) = (item.changed_at_ms.get(), o.changed_at_ms)
                && seen < followed
            {
                running |= !item.terminal && !item.stalled;
                continue;
            }
            item.watch = watch;
            item.active = true;
            item.last_polled_ms = When::at(now);
            let quiet = baseline && item.status.is_none();
            self.observe_as(&mut item, o, step, quiet, now, time, staged);
            if matches!(item.target, Target::Encode(_)) {
                self.check_stall(&mut item, now, time, staged);
            }
            running |= !item.terminal && !item.stalled;
            staged.items.insert(item.key.clone(), item);
        }
        running
    }

    fn project_baseline(&self, workspace: &str, project_id: &str) -> bool {
        self.config
            .watches
            .projects
            .iter()
            .any(|p| p.baseline && p.workspace == workspace && p.project_id == project_id)
    }

    #[allow(
        clippy::expect_used,
        reason = "each expect here states an invariant of our own types, never of input"
    )]
    fn commit(&mut self, mut staged: Staged) -> Result<Vec<CloudEvent>, StoreError> {
        // Items found for another replica's shards (an asset a project list found) are
        // created for it; they never enter this replica's memory.
        let (mine, foreign): (HashMap<_, _>, HashMap<_, _>) = std::mem::take(&mut staged.items)
            .into_iter()
            .partition(|(_, i)| self.owns(&i.target.subject()));
        staged.items = mine;
        let creates: Vec<ItemRow> = foreign.values().map(Item::to_row).collect();
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
        if let Err(e) = self.store.commit(&rows, &staged.details, &events, &creates) {
            // Nothing advanced: poll these items again soon and compare against the old state.
            let retry = now_ms() + 1000;
            for key in staged.items.keys() {
                if let Some(item) = self.items.get_mut(key).filter(|i| i.schedulable()) {
                    item.next_due_ms = When::at(retry);
                    self.queue.push(key.clone(), retry);
                }
            }
            return Err(e);
        }
        for (key, item) in staged.items {
            if item.schedulable() {
                self.queue.push(
                    key.clone(),
                    item.next_due_ms.get().expect("schedulable items have a due time"),
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

#[cfg(test)]
mod tests {
    use super::When;

    #[test]
    fn a_when_holds_every_time_and_tells_none_apart() {
        for t in [0, 1, -1, 1_764_892_800_000, i64::MAX, i64::MIN + 1] {
            assert_eq!(When::from(Some(t)).get(), Some(t));
        }
        assert_eq!(When::from(None).get(), None);
        // The one value that stands for none is never mistaken for a time.
        assert_eq!(When::at(i64::MIN).get(), Some(i64::MIN + 1));
    }
}
