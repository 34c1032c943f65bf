//! The state store: what each item last showed, when it is due, the outbox of events, the
//! sinks' progress, dead letters and the dynamic watches.
//!
//! Two backends sit behind one narrow interface, [`Backend`]: an SQLite file (the default,
//! [`sqlite`]) and a PostgreSQL database shared by replicas (SPEC §9, [`postgres`]). The
//! engine, the sinks and the commands only ever hold a [`Store`]; none of them knows which
//! backend it is. Both keep the same promise: a state change and the event it produced are
//! written by one [`Backend::commit`], in one transaction, before any sink sees the event.

mod delivery;
pub mod postgres;
pub mod sqlite;

pub use delivery::{DeadLetter, Outcome, RetryState, SinkSummary, shard_sink, split_shard_sink, webhook_cursor};
pub use sqlite::{LockError, StoreLock, lock_path};

use std::collections::{HashMap, HashSet};

use crate::cluster::{ShardSet, shard_of};
use crate::config::StateConfig;

/// Why the store failed. Every variant is fatal for the operation; the caller decides
/// whether that is fatal for the process.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The SQLite file could not be opened or created.
    #[error("cannot open the state store {}: {source}; check [state] path and its directory's permissions", path.display())]
    Open {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        source: rusqlite::Error,
    },
    /// The PostgreSQL server could not be reached or refused us.
    #[error("cannot connect to the state store {store}: {reason}")]
    Connect {
        /// The server, as `postgres://user@host:port/db` (never the password).
        store: String,
        /// Why, and what to check.
        reason: String,
    },
    /// The store was written by a newer ncp-watchd.
    #[error(
        "the state store {store} has schema version {found}, newer than this ncp-watchd understands ({supported}); upgrade ncp-watchd"
    )]
    TooNew {
        /// The store.
        store: String,
        /// Its version.
        found: i64,
        /// Ours.
        supported: i64,
    },
    /// The store was written by an older ncp-watchd and a read-only reader cannot upgrade it.
    #[error(
        "the state store {store} has schema version {found}, older than this ncp-watchd's ({supported}); start the daemon (or run `ncp-watchd once`) to upgrade it"
    )]
    TooOld {
        /// The store.
        store: String,
        /// Its version.
        found: i64,
        /// Ours.
        supported: i64,
    },
    /// Another process is the store's writer.
    #[error(transparent)]
    Locked(#[from] LockError),
    /// An SQLite statement failed.
    #[error("state store error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// A PostgreSQL statement failed (the connection is recycled; the caller retries).
    #[error("state store error: {0}")]
    Postgres(String),
    /// This replica no longer holds a shard the commit touches (its lease expired or
    /// changed hands): nothing was written. The shard's new holder polls it again.
    #[error(
        "commit refused: this replica no longer holds shards {shards} (its lease expired or was taken over); nothing was written"
    )]
    Fenced {
        /// The shards refused, as `[1,5]`.
        shards: String,
    },
    /// The directory could not be created.
    #[error("cannot create the state directory {}: {source}", path.display())]
    Directory {
        /// The directory.
        path: std::path::PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// One item as stored: a polled target, or a state fed by a list.
#[derive(Debug, Clone, PartialEq)]
pub struct ItemRow {
    /// Unique key: `{aspect}:{subject}` for states, `list:{subject}` for list targets.
    pub key: String,
    /// What it is: `import`, `analysis`, `upload`, `listing`, `encode`, `project_list`, `vod_list`.
    pub kind: String,
    /// The event subject.
    pub subject: String,
    /// The name of the watch it came through.
    pub watch: Option<String>,
    /// What is needed to poll it again, as JSON.
    pub params: String,
    /// `config`, `discovered` or `dynamic`.
    pub origin: String,
    /// Whether a current watch still covers it (a removed watch keeps its state).
    pub active: bool,
    /// The last status seen.
    pub status: Option<String>,
    /// The last percent seen (encodes).
    pub percent: Option<f64>,
    /// Whether the last status was terminal.
    pub terminal: bool,
    /// When to poll next, epoch milliseconds; `None` when not polled.
    pub next_due_ms: Option<i64>,
    /// Consecutive failed polls.
    pub failures: u32,
    /// Whether `watch.failing` was emitted and `watch.recovered` not yet.
    pub failing: bool,
    /// The last failure.
    pub last_error: Option<String>,
    /// Last poll, epoch milliseconds.
    pub last_polled_ms: Option<i64>,
    /// Last status change, epoch milliseconds.
    pub last_change_ms: Option<i64>,
    /// When the item was first watched or seen, epoch milliseconds.
    pub since_ms: Option<i64>,
    /// Whether `watch.stalled` was emitted for the item's current status.
    pub stalled: bool,
    /// When the API says the followed status was reached (the VOD job's `lastWorkTime`).
    pub changed_at_ms: Option<i64>,
}

/// An event to append to the outbox.
#[derive(Debug, Clone, PartialEq)]
pub struct OutboxEvent {
    /// The event id.
    pub id: String,
    /// The event type.
    pub event_type: String,
    /// The subject.
    pub subject: String,
    /// The serialized CloudEvent.
    pub body: String,
}

/// A round the daemon did for `once`.
#[derive(Debug, Clone, PartialEq)]
pub struct RoundReport {
    /// The outbox's last seq when the round was asked for.
    pub first_seq: i64,
    /// The outbox's last seq when it was done.
    pub last_seq: i64,
    /// One line per failed poll: what, and why.
    pub failures: Vec<String>,
}

/// An event read back from the outbox.
#[derive(Debug, Clone, PartialEq)]
pub struct OutboxRow {
    /// Position in the outbox, increasing.
    pub seq: i64,
    /// The event id.
    pub id: String,
    /// The event type.
    pub event_type: String,
    /// The subject.
    pub subject: String,
    /// The serialized CloudEvent.
    pub body: String,
    /// When it was committed, epoch milliseconds.
    pub created_ms: i64,
}

/// A watch added at run time (`register --watch`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DynamicWatch {
    /// Row id, increasing.
    pub id: i64,
    /// Workspace.
    pub workspace: String,
    /// Project id.
    pub project_id: String,
    /// Asset id.
    pub asset_id: String,
    /// Label.
    pub name: Option<String>,
    /// Also watch analysis.
    pub analysis: bool,
}

/// One replica of a PostgreSQL store (SPEC §9), as `status` and the status page show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaRow {
    /// The replica's name: its `instance`, by default the host name and pid.
    pub instance: String,
    /// The host it runs on.
    pub host: String,
    /// Its process id on that host.
    pub pid: i64,
    /// The shards it holds a lease on, ascending.
    pub shards: Vec<u16>,
    /// How long until its leases expire, in milliseconds (negative once expired); `None`
    /// when it holds no lease (a standby).
    pub lease_expires_in_ms: Option<i64>,
    /// When it was last heard from, epoch milliseconds.
    pub last_seen_ms: i64,
}

/// What the engine, the sinks and the commands ask of a state store. Each backend keeps
/// the same promises; the SQLite tests and the PostgreSQL tests check the same behaviour.
pub trait Backend: Send {
    /// The store as an operator names it: the file, or `postgres://user@host:port/db`.
    fn describe(&self) -> String;

    /// Calls `f` with every item, one row at a time, so loading 100,000 items never holds
    /// them all as rows at once.
    fn for_each_item(&self, f: &mut dyn FnMut(ItemRow)) -> Result<(), StoreError>;
    /// How many items there are.
    fn item_count(&self) -> Result<i64, StoreError>;
    /// Every item, by subject then kind.
    fn items(&self) -> Result<Vec<ItemRow>, StoreError>;
    /// The stored detail of an item, as JSON text.
    fn detail(&self, key: &str) -> Result<Option<String>, StoreError>;
    /// Writes item updates and new events in one transaction: either all of it is durable
    /// or none of it is. `details` pairs an item key with its new detail JSON. `creates`
    /// are items of shards this process does not hold: each is created if absent and never
    /// changed. On PostgreSQL the commit is fenced: it is refused whole
    /// ([`StoreError::Fenced`]) when this replica no longer holds a shard of `items` or
    /// `events`.
    fn commit(
        &mut self,
        items: &[ItemRow],
        details: &[(String, String)],
        events: &[OutboxEvent],
        creates: &[ItemRow],
    ) -> Result<(), StoreError>;
    /// Calls `f` with every item of the shards in `shards`, one row at a time.
    fn for_each_item_in(&self, shards: ShardSet, f: &mut dyn FnMut(ItemRow)) -> Result<(), StoreError> {
        self.for_each_item(&mut |row| {
            if shards.contains(shard_of(&row.subject)) {
                f(row);
            }
        })
    }
    /// The newest item sequence number (0 where items are not numbered): items created
    /// after it are found by [`Backend::items_created_after`].
    fn last_item_created(&self) -> Result<i64, StoreError> {
        Ok(0)
    }
    /// Items of `shards` created after the sequence number `after` (by another replica),
    /// and the newest sequence number seen.
    fn items_created_after(&self, after: i64, _shards: ShardSet) -> Result<(i64, Vec<ItemRow>), StoreError> {
        Ok((after, Vec::new()))
    }
    /// Up to `limit` events after `seq` of one shard (all shards with `None`), in order.
    fn outbox_after_in(&self, seq: i64, limit: usize, shard: Option<u16>) -> Result<Vec<OutboxRow>, StoreError> {
        let _ = shard;
        self.outbox_after(seq, limit)
    }

    /// Active items whose status can still change (list targets excluded).
    fn pending_items(&self) -> Result<i64, StoreError>;

    /// Deletes up to `batch` outbox events that every sink in `cursors` has passed and that
    /// are older than `older_than_ms` (epoch ms), keeping any a dead letter, a retry or a
    /// replay still needs. Returns how many went.
    fn prune_outbox(&mut self, cursors: &[String], older_than_ms: i64, batch: usize) -> Result<usize, StoreError>;
    /// Up to `limit` events after `seq`, in order.
    fn outbox_after(&self, seq: i64, limit: usize) -> Result<Vec<OutboxRow>, StoreError>;
    /// The newest outbox position, 0 when empty; never goes down, pruned or not.
    fn last_seq(&self) -> Result<i64, StoreError>;
    /// How many events the outbox holds.
    fn outbox_len(&self) -> Result<i64, StoreError>;
    /// The outbox position just before the first event committed at or after `at_ms`
    /// (epoch ms): reading after it gives every event since then.
    fn seq_before_time(&self, at_ms: i64) -> Result<i64, StoreError>;

    /// A sink's progress: the last outbox position it has handled. A sink seen for the
    /// first time starts at the current end of the outbox, so adding a sink does not replay
    /// history.
    fn cursor(&mut self, sink: &str) -> Result<i64, StoreError>;
    /// Sets a sink's cursor, creating it if needed (to replay from a position).
    fn set_cursor_at(&mut self, sink: &str, seq: i64) -> Result<(), StoreError>;
    /// Records that `sink` has handled everything up to `seq`.
    fn set_cursor(&mut self, sink: &str, seq: i64) -> Result<(), StoreError>;

    /// Asks the daemon holding this store for one round of every watch; returns the
    /// request's id.
    fn request_round(&mut self) -> Result<i64, StoreError>;
    /// The ids of rounds asked for and not yet done, after `after`, oldest first.
    fn open_round_requests(&self, after: i64) -> Result<Vec<i64>, StoreError>;
    /// Records that the round `id` is done: the outbox up to now holds its events, and
    /// `failures` (one line per failed poll) says what failed.
    fn finish_round(&mut self, id: i64, failures: &[String]) -> Result<(), StoreError>;
    /// The round `id`, once done; `None` while it is still running.
    fn round(&self, id: i64) -> Result<Option<RoundReport>, StoreError>;

    /// Records a fact about the running daemon under `key`, replacing the previous value.
    fn set_fact(&mut self, key: &str, value: &str) -> Result<(), StoreError>;
    /// The fact recorded under `key`, if any.
    fn fact(&self, key: &str) -> Result<Option<String>, StoreError>;

    /// Adds a dynamic watch; a running daemon picks it up. Returns its id.
    fn add_dynamic_watch(&mut self, w: &DynamicWatch) -> Result<i64, StoreError>;
    /// Adds many dynamic watches in one transaction.
    fn add_dynamic_watches(&mut self, watches: &[DynamicWatch]) -> Result<(), StoreError>;
    /// Calls `f` with every dynamic watch, one at a time.
    fn for_each_dynamic_watch(&self, f: &mut dyn FnMut(DynamicWatch)) -> Result<(), StoreError>;
    /// Dynamic watches with an id above `after`, by id.
    fn dynamic_watches_after(&self, after: i64) -> Result<Vec<DynamicWatch>, StoreError>;

    /// The deliveries done past `cursor` and the retries in progress, to resume after a restart.
    fn webhook_progress(&self, sink: &str, cursor: i64)
    -> Result<(HashSet<i64>, HashMap<i64, RetryState>), StoreError>;
    /// Records outcomes and moves the webhook sink's cursor to `cursor`, in one transaction.
    fn record_deliveries(&mut self, sink: &str, outcomes: &[Outcome], cursor: i64) -> Result<(), StoreError>;
    /// Dead letters, of one sink or all, oldest first.
    fn dead_letters(&self, sink: Option<&str>) -> Result<Vec<DeadLetter>, StoreError>;
    /// Re-queues dead letters (one event id, or all) and lifts the pauses of their sinks.
    /// Returns how many were re-queued.
    fn replay_dead_letters(&mut self, event_id: Option<&str>) -> Result<usize, StoreError>;
    /// Replays waiting for `sink`, with their events, in outbox order.
    fn pending_replays(&self, sink: &str) -> Result<Vec<OutboxRow>, StoreError>;
    /// Pauses `sink` (410 Gone) until a reload or a replay lifts it.
    fn pause_sink(&mut self, sink: &str, reason: &str) -> Result<(), StoreError>;
    /// Why `sink` is paused, if it is.
    fn sink_pause(&self, sink: &str) -> Result<Option<String>, StoreError>;
    /// Lifts every pause (a reload does this).
    fn clear_sink_pauses(&mut self) -> Result<(), StoreError>;
    /// Per sink: cursor, retrying count, dead letters, pause.
    fn sink_summaries(&self) -> Result<Vec<SinkSummary>, StoreError>;

    /// The replicas sharing this store and the shards each holds (SPEC §9), for `status`
    /// and the status page. Empty when the store has no replicas (SQLite, or a PostgreSQL
    /// store before replicas exist).
    fn replicas(&self) -> Result<Vec<ReplicaRow>, StoreError>;
}

/// An open state store, of either backend. Everything it can do is [`Backend`]'s.
pub struct Store {
    inner: Box<dyn Backend>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("store", &self.inner.describe()).finish()
    }
}

impl std::ops::Deref for Store {
    type Target = dyn Backend;
    fn deref(&self) -> &Self::Target {
        self.inner.as_ref()
    }
}

impl std::ops::DerefMut for Store {
    fn deref_mut(&mut self) -> &mut Self::Target {
        self.inner.as_mut()
    }
}

impl Store {
    /// Opens (creating if needed) the store the daemon writes and brings its schema up to date.
    pub fn open(state: &StateConfig) -> Result<Self, StoreError> {
        Ok(match state {
            StateConfig::Sqlite { path } => Self::from(sqlite::SqliteStore::open(path)?),
            StateConfig::Postgres(pg) => Self::from(postgres::PgStore::open(pg)?),
        })
    }

    /// Opens a second handle for recording sink progress (on SQLite, `synchronous=NORMAL`).
    pub fn open_for_progress(state: &StateConfig) -> Result<Self, StoreError> {
        Ok(match state {
            StateConfig::Sqlite { path } => Self::from(sqlite::SqliteStore::open_for_progress(path)?),
            StateConfig::Postgres(pg) => Self::from(postgres::PgStore::open(pg)?),
        })
    }

    /// Opens the store for commands that only look (`status`, `tail`): it never migrates
    /// or writes, and on SQLite needs no write access to the file or its directory.
    pub fn open_read_only(state: &StateConfig) -> Result<Self, StoreError> {
        Ok(match state {
            StateConfig::Sqlite { path } => Self::from(sqlite::SqliteStore::open_read_only(path)?),
            StateConfig::Postgres(pg) => Self::from(postgres::PgStore::open_read_only(pg)?),
        })
    }

    /// Whether the store exists yet: a command that only reads has nothing to show before
    /// the daemon's first start. A PostgreSQL store counts as existing once reachable.
    pub fn exists(state: &StateConfig) -> bool {
        match state {
            StateConfig::Sqlite { path } => path.exists(),
            StateConfig::Postgres(_) => true,
        }
    }
}

/// The one writer's hold on a store, for the writer's whole life; released when dropped,
/// and by the kernel or the server when the process dies, `kill -9` included.
#[derive(Debug)]
pub enum WriterLock {
    /// An `flock` on the file beside the SQLite database.
    File(StoreLock),
    /// A session advisory lock on a PostgreSQL connection of its own.
    Postgres(postgres::WriterLock),
}

impl WriterLock {
    /// Takes the writer's lock without waiting: a second writer is refused with
    /// [`LockError::Held`], naming the first.
    pub fn acquire(state: &StateConfig) -> Result<Self, StoreError> {
        Ok(match state {
            StateConfig::Sqlite { path } => Self::File(StoreLock::acquire(path)?),
            StateConfig::Postgres(pg) => Self::Postgres(postgres::WriterLock::acquire(pg)?),
        })
    }
}

impl<B: Backend + 'static> From<B> for Store {
    fn from(backend: B) -> Self {
        Self {
            inner: Box::new(backend),
        }
    }
}
