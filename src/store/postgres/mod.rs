//! The PostgreSQL backend (SPEC §9): the same tables as SQLite, in a database that
//! several replicas can share.
//!
//! Every outbox append takes one transaction-scoped advisory lock first, so events are
//! numbered in the order their transactions commit: a sink that has read up to `seq` can
//! never later find a smaller `seq` appear behind it (which concurrent `BIGSERIAL` inserts
//! alone would allow).

mod connect;
mod lease;
mod migrations;

pub use connect::{ConnectSpec, Tls, Verify, parse_url};
pub use lease::{Fence, Leases, Member, ReplicaView, set_fence};

use std::collections::{HashMap, HashSet};
use std::future::Future;

use deadpool_postgres::{Object, Pool};
use tokio_postgres::Row;
use tokio_postgres::types::ToSql;

use super::*;
use crate::cluster::{ShardSet, shard_of};
use crate::config::PostgresConfig;

/// The advisory lock every commit that writes items or events holds until it commits
/// (`ncpoutbx`): outbox positions and item sequence numbers follow commit order.
const OUTBOX_LOCK: i64 = 0x6e63_706f_7574_6278;

/// Replicas not heard from for this long are no longer listed by `status`.
const REPLICAS_SHOWN_FOR: std::time::Duration = std::time::Duration::from_secs(60);

/// Rows read per round trip when walking a whole table.
const PAGE: i64 = 1000;

/// Item columns, in `ItemRow` field order (the same as SQLite's).
const ITEM_COLUMNS: &str = "key, kind, subject, watch, params, origin, active, status, percent, terminal, \
                            next_due_ms, failures, failing, last_error, last_polled_ms, last_change_ms, since_ms, stalled, changed_at_ms";

/// A handle on the PostgreSQL store: a share of the process's pool.
pub struct PgStore {
    /// The process's pool for this URL.
    pool: Pool,
    /// `postgres://user@host:port/db`, for messages.
    display: String,
}

/// Why a statement failed: the driver's error, or one of ours (the pool, a version).
enum Fail {
    /// The driver's.
    Pg(tokio_postgres::Error),
    /// Ours.
    Store(StoreError),
}

impl From<tokio_postgres::Error> for Fail {
    fn from(e: tokio_postgres::Error) -> Self {
        Self::Pg(e)
    }
}

impl From<StoreError> for Fail {
    fn from(e: StoreError) -> Self {
        Self::Store(e)
    }
}

impl PgStore {
    /// Opens the store, creating and migrating its schema under the migration lock.
    pub fn open(pg: &PostgresConfig) -> Result<Self, StoreError> {
        let store = Self::connect(pg)?;
        store.run(|mut c| async move {
            let tx = c.transaction().await?;
            tx.execute("SELECT pg_advisory_xact_lock($1)", &[&migrations::MIGRATION_LOCK])
                .await?;
            tx.batch_execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations (version BIGINT PRIMARY KEY, applied_ms BIGINT NOT NULL)",
            )
            .await?;
            let found: i64 = tx
                .query_one("SELECT COALESCE(MAX(version), 0) FROM schema_migrations", &[])
                .await?
                .get(0);
            let supported = migrations::ALL.len() as i64;
            if found > supported {
                return Err(Fail::Store(StoreError::TooNew {
                    store: String::new(),
                    found,
                    supported,
                }));
            }
            for (version, sql) in (1_i64..).zip(migrations::ALL.iter()).skip(found.max(0) as usize) {
                tx.batch_execute(sql).await?;
                tx.execute(
                    "INSERT INTO schema_migrations (version, applied_ms) VALUES ($1, $2)",
                    &[&version, &now_ms()],
                )
                .await?;
            }
            tx.commit().await?;
            Ok(())
        })?;
        store.place_unplaced()?;
        Ok(store)
    }

    /// Gives every item and event written before shards existed (schema version 1) its
    /// shard, a page at a time.
    fn place_unplaced(&self) -> Result<(), StoreError> {
        loop {
            let rows = self.query(
                "SELECT key, subject FROM items WHERE shard IS NULL LIMIT 1000",
                vec![],
                |r| (r.get::<_, String>(0), r.get::<_, String>(1)),
            )?;
            if rows.is_empty() {
                break;
            }
            let (keys, shards): (Vec<String>, Vec<i32>) =
                rows.into_iter().map(|(k, s)| (k, i32::from(shard_of(&s)))).unzip();
            self.execute(
                "UPDATE items SET shard = u.shard FROM unnest($1::text[], $2::int[]) AS u(key, shard) \
                 WHERE items.key = u.key",
                vec![p(keys), p(shards)],
            )?;
        }
        loop {
            let rows = self.query(
                "SELECT seq, subject FROM outbox WHERE shard IS NULL LIMIT 1000",
                vec![],
                |r| (r.get::<_, i64>(0), r.get::<_, String>(1)),
            )?;
            if rows.is_empty() {
                break;
            }
            let (seqs, shards): (Vec<i64>, Vec<i32>) =
                rows.into_iter().map(|(q, s)| (q, i32::from(shard_of(&s)))).unzip();
            self.execute(
                "UPDATE outbox SET shard = u.shard FROM unnest($1::bigint[], $2::int[]) AS u(seq, shard) \
                 WHERE outbox.seq = u.seq",
                vec![p(seqs), p(shards)],
            )?;
        }
        Ok(())
    }

    /// Opens the store for commands that only read: it never creates or migrates.
    pub fn open_read_only(pg: &PostgresConfig) -> Result<Self, StoreError> {
        let store = Self::connect(pg)?;
        let found = store.run(|c| async move {
            let exists: bool = c
                .query_one("SELECT to_regclass('schema_migrations') IS NOT NULL", &[])
                .await?
                .get(0);
            if !exists {
                return Ok(0);
            }
            Ok(
                c.query_one("SELECT COALESCE(MAX(version), 0) FROM schema_migrations", &[])
                    .await?
                    .get::<_, i64>(0),
            )
        })?;
        let supported = migrations::ALL.len() as i64;
        if found > supported {
            return Err(StoreError::TooNew {
                store: store.display.clone(),
                found,
                supported,
            });
        }
        if found < supported {
            return Err(StoreError::TooOld {
                store: store.display.clone(),
                found,
                supported,
            });
        }
        Ok(store)
    }

    fn connect(pg: &PostgresConfig) -> Result<Self, StoreError> {
        let (pool, spec) = connect::pool(pg)?;
        Ok(Self {
            pool,
            display: spec.display,
        })
    }

    /// Runs `work` with a pooled connection on the PostgreSQL runtime and waits for it.
    fn run<T, F, Fut>(&self, work: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(Object) -> Fut + Send + 'static,
        Fut: Future<Output = Result<T, Fail>> + Send,
    {
        let pool = self.pool.clone();
        let display = self.display.clone();
        let answer = connect::block(async move {
            let client = pool.get().await.map_err(|e| {
                Fail::Store(StoreError::Connect {
                    store: display.clone(),
                    reason: pool_error(e),
                })
            })?;
            work(client).await
        })?;
        answer.map_err(|f| match f {
            Fail::Pg(e) => StoreError::Postgres(connect::describe(&e)),
            Fail::Store(StoreError::TooNew { found, supported, .. }) => StoreError::TooNew {
                store: self.display.clone(),
                found,
                supported,
            },
            Fail::Store(e) => e,
        })
    }

    /// One statement's rows.
    fn query<T: Send + 'static>(
        &self,
        sql: &'static str,
        params: Vec<Param>,
        map: fn(&Row) -> T,
    ) -> Result<Vec<T>, StoreError> {
        self.run(move |c| async move {
            let stmt = c.prepare_cached(sql).await?;
            let refs = refs(&params);
            Ok(c.query(&stmt, &refs).await?.iter().map(map).collect())
        })
    }

    /// One statement's single value of its first row.
    fn scalar<T>(&self, sql: &'static str, params: Vec<Param>) -> Result<T, StoreError>
    where
        T: for<'a> tokio_postgres::types::FromSql<'a> + Send + 'static,
    {
        self.run(move |c| async move {
            let stmt = c.prepare_cached(sql).await?;
            let refs = refs(&params);
            Ok(c.query_one(&stmt, &refs).await?.get(0))
        })
    }

    /// One statement that changes rows; returns how many.
    fn execute(&self, sql: &'static str, params: Vec<Param>) -> Result<u64, StoreError> {
        self.run(move |c| async move {
            let stmt = c.prepare_cached(sql).await?;
            let refs = refs(&params);
            Ok(c.execute(&stmt, &refs).await?)
        })
    }
}

impl PgStore {
    /// Calls `f` with every item (of `shards` only, when given), a page at a time by key.
    fn walk_items(&self, shards: Option<ShardSet>, f: &mut dyn FnMut(ItemRow)) -> Result<(), StoreError> {
        // Every shard's number, or none: `shard = ANY('{}')` would match nothing.
        let list: Option<Vec<i32>> = shards.map(|s| s.iter().map(i32::from).collect());
        let mut after = String::new();
        loop {
            let page = self.query(
                "SELECT key, kind, subject, watch, params, origin, active, status, percent, terminal, \
                 next_due_ms, failures, failing, last_error, last_polled_ms, last_change_ms, since_ms, stalled, changed_at_ms \
                 FROM items WHERE key > $1 AND ($3::int[] IS NULL OR shard = ANY($3)) ORDER BY key LIMIT $2",
                vec![p(after.clone()), p(PAGE), p(list.clone())],
                item_from_row,
            )?;
            let full = page.len() as i64 == PAGE;
            for row in page {
                after.clone_from(&row.key);
                f(row);
            }
            if !full {
                return Ok(());
            }
        }
    }
}

/// Opens the transaction that records a sink's progress. It commits without waiting for
/// the server's disk (`synchronous_commit = off`), as SQLite records progress with
/// `synchronous=NORMAL`: a crash of ncp-watchd loses nothing, a crash of the server may
/// lose the last fraction of a second of progress, and those events are delivered again
/// with the same ids. A shard's part of a sink records progress only while this replica
/// holds the shard: a replica paused past its lease cannot move a cursor its successor
/// relies on.
async fn progress_transaction<'a>(
    c: &'a mut Object,
    fence: Option<&Fence>,
    sink: &str,
) -> Result<deadpool_postgres::Transaction<'a>, Fail> {
    let tx = c.transaction().await?;
    tx.batch_execute("SET LOCAL synchronous_commit = off").await?;
    if let (Some(fence), (_, Some(shard))) = (fence, split_shard_sink(sink)) {
        lease::check(&tx, fence, ShardSet::of([shard]), true).await?;
    }
    Ok(tx)
}

/// A statement parameter, owned so it can cross to the PostgreSQL runtime.
type Param = Box<dyn ToSql + Send + Sync>;

fn refs(params: &[Param]) -> Vec<&(dyn ToSql + Sync)> {
    params.iter().map(|p| p.as_ref() as &(dyn ToSql + Sync)).collect()
}

fn p(v: impl ToSql + Send + Sync + 'static) -> Param {
    Box::new(v)
}

fn pool_error(e: deadpool_postgres::PoolError) -> String {
    match e {
        deadpool_postgres::PoolError::Backend(e) => connect::describe(&e),
        other => format!("{other}; check that the server is up and reachable"),
    }
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

fn item_from_row(r: &Row) -> ItemRow {
    ItemRow {
        key: r.get(0),
        kind: r.get(1),
        subject: r.get(2),
        watch: r.get(3),
        params: r.get(4),
        origin: r.get(5),
        active: r.get(6),
        status: r.get(7),
        percent: r.get(8),
        terminal: r.get(9),
        next_due_ms: r.get(10),
        failures: u32::try_from(r.get::<_, i64>(11)).unwrap_or(u32::MAX),
        failing: r.get(12),
        last_error: r.get(13),
        last_polled_ms: r.get(14),
        last_change_ms: r.get(15),
        since_ms: r.get(16),
        stalled: r.get(17),
        changed_at_ms: r.get(18),
    }
}

fn outbox_from_row(r: &Row) -> OutboxRow {
    OutboxRow {
        seq: r.get(0),
        id: r.get(1),
        event_type: r.get(2),
        subject: r.get(3),
        body: r.get(4),
        created_ms: r.get(5),
    }
}

fn dynamic_from_row(r: &Row) -> DynamicWatch {
    DynamicWatch {
        id: r.get(0),
        workspace: r.get(1),
        project_id: r.get(2),
        asset_id: r.get(3),
        name: r.get(4),
        analysis: r.get(5),
    }
}

fn attempts(v: i64) -> u32 {
    u32::try_from(v).unwrap_or(u32::MAX)
}

/// `once` on a cluster store with no replica running: it takes every shard's lease for
/// its run (renewed by a thread of its own), so a replica starting meanwhile waits for
/// them instead of polling beside it. Dropping it hands the shards back.
pub struct WriterLock {
    leases: std::sync::Arc<Leases>,
    me: Member,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl std::fmt::Debug for WriterLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WriterLock")
    }
}

/// How long `once`'s leases last between its renewals (every second).
const SOLO_LEASE_TTL: std::time::Duration = std::time::Duration::from_secs(15);

impl WriterLock {
    /// Takes every shard, or is refused ([`LockError::Held`]) naming a live replica.
    pub fn acquire(pg: &PostgresConfig) -> Result<Self, StoreError> {
        let leases = Leases::open(pg)?;
        let store = leases.describe();
        let holder_of = |m: &Member| format!("replica {} (pid {} on {})", m.instance, m.pid, m.host);
        if let Some(m) = leases.live(SOLO_LEASE_TTL)?.first() {
            return Err(StoreError::Locked(LockError::Held {
                store,
                holder: Some(holder_of(m)),
            }));
        }
        let me = crate::cluster::member("once");
        let got = leases.acquire(&me.id, crate::cluster::SHARDS, SOLO_LEASE_TTL)?;
        if got.len() < usize::from(crate::cluster::SHARDS) {
            leases.release(&me.id, ShardSet::of(got.keys().copied()))?;
            return Err(StoreError::Locked(LockError::Held { store, holder: None }));
        }
        set_fence(Some(Fence {
            holder: me.id.clone(),
            held: got.clone(),
            draining: HashMap::new(),
        }));
        let leases = std::sync::Arc::new(leases);
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (renewer, halt, id) = (leases.clone(), stop.clone(), me.id.clone());
        std::thread::spawn(move || {
            while !halt.load(std::sync::atomic::Ordering::SeqCst) {
                std::thread::sleep(crate::cluster::TICK);
                if let Err(e) = renewer.renew(&id, &got, SOLO_LEASE_TTL) {
                    tracing::warn!(error = %e, "cannot renew the leases of this run");
                }
            }
        });
        Ok(Self { leases, me, stop })
    }
}

impl Drop for WriterLock {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        set_fence(None);
        if let Err(e) = self.leases.release(&self.me.id, ShardSet::all()) {
            tracing::warn!(error = %e, "cannot hand the shards back; they are free once their leases expire");
        }
    }
}

impl Backend for PgStore {
    fn describe(&self) -> String {
        self.display.clone()
    }

    fn for_each_item(&self, f: &mut dyn FnMut(ItemRow)) -> Result<(), StoreError> {
        self.walk_items(None, f)
    }

    fn item_count(&self) -> Result<i64, StoreError> {
        self.scalar("SELECT COUNT(*) FROM items", vec![])
    }

    fn for_each_item_in(&self, shards: ShardSet, f: &mut dyn FnMut(ItemRow)) -> Result<(), StoreError> {
        self.walk_items(Some(shards), f)
    }

    fn last_item_created(&self) -> Result<i64, StoreError> {
        self.scalar("SELECT COALESCE(MAX(created), 0) FROM items", vec![])
    }

    fn items_created_after(&self, after: i64, shards: ShardSet) -> Result<(i64, Vec<ItemRow>), StoreError> {
        let list: Vec<i32> = shards.iter().map(i32::from).collect();
        // Commits that create items hold the commit lock while they take numbers, so
        // numbers become visible in order: nothing below the newest seen can appear later.
        let rows = self.query(
            "SELECT key, kind, subject, watch, params, origin, active, status, percent, terminal, \
             next_due_ms, failures, failing, last_error, last_polled_ms, last_change_ms, since_ms, stalled, changed_at_ms, created \
             FROM items WHERE created > $1 ORDER BY created LIMIT 5000",
            vec![p(after)],
            |r| (item_from_row(r), r.get::<_, i64>(19)),
        )?;
        let newest = rows.last().map_or(after, |(_, c)| *c);
        Ok((
            newest,
            rows.into_iter()
                .map(|(row, _)| row)
                .filter(|row| list.contains(&i32::from(shard_of(&row.subject))))
                .collect(),
        ))
    }

    fn outbox_after_in(&self, seq: i64, limit: usize, shard: Option<u16>) -> Result<Vec<OutboxRow>, StoreError> {
        match shard {
            None => self.outbox_after(seq, limit),
            Some(shard) => self.query(
                "SELECT seq, id, type, subject, body, created_ms FROM outbox WHERE shard = $3 AND seq > $1 ORDER BY seq LIMIT $2",
                vec![p(seq), p(limit as i64), p(i32::from(shard))],
                outbox_from_row,
            ),
        }
    }

    fn replicas(&self) -> Result<Vec<ReplicaRow>, StoreError> {
        Ok(lease::replicas(self, REPLICAS_SHOWN_FOR)?
            .into_iter()
            .map(|r| ReplicaRow {
                instance: r.member.instance,
                host: r.member.host,
                pid: r.member.pid,
                shards: r.shards.iter().collect(),
                lease_expires_in_ms: r.lease_expires_in_ms,
                last_seen_ms: now_ms() - r.seen_ms_ago,
            })
            .collect())
    }

    fn items(&self) -> Result<Vec<ItemRow>, StoreError> {
        self.query(
            "SELECT key, kind, subject, watch, params, origin, active, status, percent, terminal, \
             next_due_ms, failures, failing, last_error, last_polled_ms, last_change_ms, since_ms, stalled, changed_at_ms \
             FROM items ORDER BY subject, kind",
            vec![],
            item_from_row,
        )
    }

    fn detail(&self, key: &str) -> Result<Option<String>, StoreError> {
        Ok(self
            .query(
                "SELECT detail FROM items WHERE key = $1",
                vec![p(key.to_string())],
                |r| r.get::<_, Option<String>>(0),
            )?
            .into_iter()
            .next()
            .flatten())
    }

    fn commit(
        &mut self,
        items: &[ItemRow],
        details: &[(String, String)],
        events: &[OutboxEvent],
        creates: &[ItemRow],
    ) -> Result<(), StoreError> {
        let items = items.to_vec();
        let details = details.to_vec();
        let events = events.to_vec();
        let creates = creates.to_vec();
        let fence = lease::fence();
        self.run(move |mut c| async move {
            let tx = c.transaction().await?;
            if !events.is_empty() || !items.is_empty() || !creates.is_empty() {
                tx.execute("SELECT pg_advisory_xact_lock($1)", &[&OUTBOX_LOCK]).await?;
            }
            if let Some(fence) = &fence {
                // Every shard whose state or events this commit writes must still be ours.
                let touched = ShardSet::of(
                    items
                        .iter()
                        .map(|i| shard_of(&i.subject))
                        .chain(events.iter().map(|e| shard_of(&e.subject))),
                );
                lease::check(&tx, fence, touched, false).await?;
            }
            let upsert = tx
                .prepare_cached(&format!(
                    "INSERT INTO items ({ITEM_COLUMNS}, shard) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20) \
                     ON CONFLICT (key) DO UPDATE SET kind = EXCLUDED.kind, subject = EXCLUDED.subject, watch = EXCLUDED.watch, \
                     params = EXCLUDED.params, origin = EXCLUDED.origin, active = EXCLUDED.active, status = EXCLUDED.status, \
                     percent = EXCLUDED.percent, terminal = EXCLUDED.terminal, next_due_ms = EXCLUDED.next_due_ms, \
                     failures = EXCLUDED.failures, failing = EXCLUDED.failing, last_error = EXCLUDED.last_error, \
                     last_polled_ms = EXCLUDED.last_polled_ms, last_change_ms = EXCLUDED.last_change_ms, \
                     since_ms = EXCLUDED.since_ms, stalled = EXCLUDED.stalled, changed_at_ms = EXCLUDED.changed_at_ms, \
                     shard = EXCLUDED.shard"
                ))
                .await?;
            // Items made for another replica's shard (an asset a project list found, a
            // watch of the config): created if absent, never changed.
            let create = tx
                .prepare_cached(&format!(
                    "INSERT INTO items ({ITEM_COLUMNS}, shard) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20) \
                     ON CONFLICT (key) DO NOTHING"
                ))
                .await?;
            for (statement, rows) in [(&upsert, &items), (&create, &creates)] {
                for i in rows {
                    let failures = i64::from(i.failures);
                    let shard = i32::from(shard_of(&i.subject));
                    tx.execute(
                        statement,
                        &[
                            &i.key,
                            &i.kind,
                            &i.subject,
                            &i.watch,
                            &i.params,
                            &i.origin,
                            &i.active,
                            &i.status,
                            &i.percent,
                            &i.terminal,
                            &i.next_due_ms,
                            &failures,
                            &i.failing,
                            &i.last_error,
                            &i.last_polled_ms,
                            &i.last_change_ms,
                            &i.since_ms,
                            &i.stalled,
                            &i.changed_at_ms,
                            &shard,
                        ],
                    )
                    .await?;
                }
            }
            let detail = tx.prepare_cached("UPDATE items SET detail = $2 WHERE key = $1").await?;
            for (key, json) in &details {
                tx.execute(&detail, &[key, json]).await?;
            }
            let insert = tx
                .prepare_cached(
                    "INSERT INTO outbox (id, type, subject, created_ms, body, shard) VALUES ($1, $2, $3, $4, $5, $6)",
                )
                .await?;
            let now = now_ms();
            for e in &events {
                let shard = i32::from(shard_of(&e.subject));
                tx.execute(&insert, &[&e.id, &e.event_type, &e.subject, &now, &e.body, &shard])
                    .await?;
            }
            tx.commit().await?;
            Ok(())
        })
    }

    fn pending_items(&self) -> Result<i64, StoreError> {
        self.scalar(
            "SELECT COUNT(*) FROM items WHERE active AND NOT terminal AND kind NOT IN ('project_list', 'vod_list')",
            vec![],
        )
    }

    fn prune_outbox(&mut self, cursors: &[String], older_than_ms: i64, batch: usize) -> Result<usize, StoreError> {
        // An event may go once every sink has passed it: the sink's cursor of the event's
        // shard on a cluster (`webhook:NAME#3`), or else the sink's own. A sink without a
        // cursor has not started: it holds back nothing it would read.
        let deleted = self.execute(
            "DELETE FROM outbox WHERE seq IN (
                 SELECT o.seq FROM outbox o
                 WHERE o.created_ms < $2
                   AND NOT EXISTS (
                       SELECT 1 FROM unnest($1::text[]) AS s(name)
                       WHERE COALESCE(
                           (SELECT last_seq FROM sink_cursors WHERE sink = s.name || '#' || o.shard),
                           (SELECT last_seq FROM sink_cursors WHERE sink = s.name),
                           o.seq) < o.seq)
                   AND o.seq NOT IN (SELECT seq FROM dead_letters)
                   AND o.seq NOT IN (SELECT seq FROM webhook_retry)
                   AND o.seq NOT IN (SELECT seq FROM webhook_replay)
                 ORDER BY o.seq LIMIT $3)",
            vec![p(cursors.to_vec()), p(older_than_ms), p(batch as i64)],
        )?;
        if deleted > 0 {
            // Progress records of events gone say nothing any more.
            self.execute(
                "DELETE FROM webhook_done WHERE seq < (SELECT COALESCE(MIN(seq), 9223372036854775807) FROM outbox)",
                vec![],
            )?;
        }
        Ok(deleted as usize)
    }

    fn outbox_after(&self, seq: i64, limit: usize) -> Result<Vec<OutboxRow>, StoreError> {
        self.query(
            "SELECT seq, id, type, subject, body, created_ms FROM outbox WHERE seq > $1 ORDER BY seq LIMIT $2",
            vec![p(seq), p(limit as i64)],
            outbox_from_row,
        )
    }

    fn last_seq(&self) -> Result<i64, StoreError> {
        // The sequence remembers what pruning deleted; numbers taken by a transaction that
        // rolled back are gaps, which every reader skips.
        self.scalar(
            "SELECT GREATEST(COALESCE((SELECT MAX(seq) FROM outbox), 0), \
             (SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM outbox_seq_seq))",
            vec![],
        )
    }

    fn outbox_len(&self) -> Result<i64, StoreError> {
        self.scalar("SELECT COUNT(*) FROM outbox", vec![])
    }

    fn seq_before_time(&self, at_ms: i64) -> Result<i64, StoreError> {
        let first: Option<i64> = self.scalar("SELECT MIN(seq) FROM outbox WHERE created_ms >= $1", vec![p(at_ms)])?;
        match first {
            Some(seq) => Ok(seq - 1),
            None => self.last_seq(),
        }
    }

    fn cursor(&mut self, sink: &str) -> Result<i64, StoreError> {
        let sink = sink.to_string();
        // A shard's part of a sink starts where the whole sink was (a store that ran
        // before shards), or else at the end of the outbox like any new sink.
        let base = split_shard_sink(&sink).0.to_string();
        self.run(move |c| async move {
            // Two processes may meet a new sink at once: the first insert wins, both read it.
            c.execute(
                "INSERT INTO sink_cursors (sink, last_seq) SELECT $1, \
                   COALESCE((SELECT last_seq FROM sink_cursors WHERE sink = $2 AND $2 <> $1), \
                            (SELECT COALESCE(MAX(seq), 0) FROM outbox)) \
                 ON CONFLICT (sink) DO NOTHING",
                &[&sink, &base],
            )
            .await?;
            Ok(
                c.query_one("SELECT last_seq FROM sink_cursors WHERE sink = $1", &[&sink])
                    .await?
                    .get(0),
            )
        })
    }

    fn set_cursor_at(&mut self, sink: &str, seq: i64) -> Result<(), StoreError> {
        self.execute(
            "INSERT INTO sink_cursors (sink, last_seq) VALUES ($1, $2) \
             ON CONFLICT (sink) DO UPDATE SET last_seq = EXCLUDED.last_seq",
            vec![p(sink.to_string()), p(seq)],
        )?;
        Ok(())
    }

    fn set_cursor(&mut self, sink: &str, seq: i64) -> Result<(), StoreError> {
        let sink = sink.to_string();
        let fence = lease::fence();
        self.run(move |mut c| async move {
            let tx = progress_transaction(&mut c, fence.as_ref(), &sink).await?;
            tx.execute(
                "UPDATE sink_cursors SET last_seq = GREATEST(last_seq, $2) WHERE sink = $1",
                &[&sink, &seq],
            )
            .await?;
            tx.commit().await?;
            Ok(())
        })
    }

    fn request_round(&mut self) -> Result<i64, StoreError> {
        let first = self.last_seq()?;
        self.scalar(
            "INSERT INTO poll_requests (created_ms, first_seq) VALUES ($1, $2) RETURNING id",
            vec![p(now_ms()), p(first)],
        )
    }

    fn open_round_requests(&self, after: i64) -> Result<Vec<i64>, StoreError> {
        self.query(
            "SELECT id FROM poll_requests WHERE id > $1 AND done_ms IS NULL ORDER BY id",
            vec![p(after)],
            |r| r.get(0),
        )
    }

    fn finish_round(&mut self, id: i64, failures: &[String]) -> Result<(), StoreError> {
        let last = self.last_seq()?;
        let report = failures.join("\n");
        let Some(fence) = lease::fence() else {
            self.execute(
                "UPDATE poll_requests SET done_ms = $2, last_seq = $3, failures = $4, report = $5 WHERE id = $1",
                vec![p(id), p(now_ms()), p(last), p(failures.len() as i64), p(report)],
            )?;
            return Ok(());
        };
        // On a cluster each replica polls its own shards: the round is done when the parts
        // recorded cover every shard.
        let mask = ShardSet::of(fence.held.keys().copied());
        let all = ShardSet::all();
        let holder = fence.holder.clone();
        self.run(move |mut c| async move {
            let tx = c.transaction().await?;
            tx.execute(
                "INSERT INTO round_parts (request, holder, shards, last_seq, report) VALUES ($1, $2, $3, $4, $5) \
                 ON CONFLICT (request, holder) DO UPDATE SET shards = EXCLUDED.shards, last_seq = EXCLUDED.last_seq, report = EXCLUDED.report",
                &[&id, &holder, &mask.bits(), &last, &report],
            )
            .await?;
            let row = tx
                .query_one(
                    "SELECT COALESCE(bit_or(shards), 0), COALESCE(MAX(last_seq), 0), \
                       COALESCE(string_agg(NULLIF(report, ''), E'\\n'), '') FROM round_parts WHERE request = $1",
                    &[&id],
                )
                .await?;
            let (covered, last, report): (i64, i64, String) = (row.get(0), row.get(1), row.get(2));
            if covered & all.bits() == all.bits() {
                let failures = report.lines().filter(|l| !l.is_empty()).count() as i64;
                tx.execute(
                    "UPDATE poll_requests SET done_ms = $2, last_seq = $3, failures = $4, report = $5 WHERE id = $1",
                    &[&id, &now_ms(), &last, &failures, &report],
                )
                .await?;
            }
            tx.commit().await?;
            Ok(())
        })
    }

    fn round(&self, id: i64) -> Result<Option<RoundReport>, StoreError> {
        Ok(self
            .query(
                "SELECT first_seq, last_seq, report FROM poll_requests WHERE id = $1 AND done_ms IS NOT NULL",
                vec![p(id)],
                |r| RoundReport {
                    first_seq: r.get(0),
                    last_seq: r.get::<_, Option<i64>>(1).unwrap_or_default(),
                    failures: r
                        .get::<_, Option<String>>(2)
                        .unwrap_or_default()
                        .lines()
                        .filter(|l| !l.is_empty())
                        .map(str::to_string)
                        .collect(),
                },
            )?
            .into_iter()
            .next())
    }

    fn set_fact(&mut self, key: &str, value: &str) -> Result<(), StoreError> {
        self.execute(
            "INSERT INTO daemon_facts (key, value, updated_ms) VALUES ($1, $2, $3) \
             ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value, updated_ms = EXCLUDED.updated_ms",
            vec![p(key.to_string()), p(value.to_string()), p(now_ms())],
        )?;
        Ok(())
    }

    fn fact(&self, key: &str) -> Result<Option<String>, StoreError> {
        Ok(self
            .query(
                "SELECT value FROM daemon_facts WHERE key = $1",
                vec![p(key.to_string())],
                |r| r.get(0),
            )?
            .into_iter()
            .next())
    }

    fn add_dynamic_watch(&mut self, w: &DynamicWatch) -> Result<i64, StoreError> {
        self.scalar(
            "INSERT INTO dynamic_watches (workspace, project_id, asset_id, name, analysis, created_ms) \
             VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
            vec![
                p(w.workspace.clone()),
                p(w.project_id.clone()),
                p(w.asset_id.clone()),
                p(w.name.clone()),
                p(w.analysis),
                p(now_ms()),
            ],
        )
    }

    fn add_dynamic_watches(&mut self, watches: &[DynamicWatch]) -> Result<(), StoreError> {
        let watches = watches.to_vec();
        self.run(move |mut c| async move {
            let tx = c.transaction().await?;
            let insert = tx
                .prepare_cached(
                    "INSERT INTO dynamic_watches (workspace, project_id, asset_id, name, analysis, created_ms) \
                     VALUES ($1, $2, $3, $4, $5, $6)",
                )
                .await?;
            let now = now_ms();
            for w in &watches {
                tx.execute(
                    &insert,
                    &[&w.workspace, &w.project_id, &w.asset_id, &w.name, &w.analysis, &now],
                )
                .await?;
            }
            tx.commit().await?;
            Ok(())
        })
    }

    fn for_each_dynamic_watch(&self, f: &mut dyn FnMut(DynamicWatch)) -> Result<(), StoreError> {
        let mut after = 0;
        loop {
            let page = self.query(
                "SELECT id, workspace, project_id, asset_id, name, analysis FROM dynamic_watches \
                 WHERE id > $1 ORDER BY id LIMIT $2",
                vec![p(after), p(PAGE)],
                dynamic_from_row,
            )?;
            let full = page.len() as i64 == PAGE;
            for w in page {
                after = w.id;
                f(w);
            }
            if !full {
                return Ok(());
            }
        }
    }

    fn dynamic_watches_after(&self, after: i64) -> Result<Vec<DynamicWatch>, StoreError> {
        self.query(
            "SELECT id, workspace, project_id, asset_id, name, analysis FROM dynamic_watches WHERE id > $1 ORDER BY id",
            vec![p(after)],
            dynamic_from_row,
        )
    }

    fn webhook_progress(
        &self,
        sink: &str,
        cursor: i64,
    ) -> Result<(HashSet<i64>, HashMap<i64, RetryState>), StoreError> {
        let done = self
            .query(
                "SELECT seq FROM webhook_done WHERE sink = $1 AND seq > $2",
                vec![p(sink.to_string()), p(cursor)],
                |r| r.get::<_, i64>(0),
            )?
            .into_iter()
            .collect();
        let retries = self
            .query(
                "SELECT seq, attempts, next_attempt_ms, last_error FROM webhook_retry WHERE sink = $1",
                vec![p(sink.to_string())],
                |r| {
                    (
                        r.get::<_, i64>(0),
                        RetryState {
                            attempts: attempts(r.get(1)),
                            next_attempt_ms: r.get(2),
                            last_error: r.get(3),
                        },
                    )
                },
            )?
            .into_iter()
            .collect();
        Ok((done, retries))
    }

    fn record_deliveries(&mut self, sink: &str, outcomes: &[Outcome], cursor: i64) -> Result<(), StoreError> {
        let sink = sink.to_string();
        let outcomes = outcomes.to_vec();
        let fence = lease::fence();
        self.run(move |mut c| async move {
            let tx = progress_transaction(&mut c, fence.as_ref(), &sink).await?;
            let done = tx
                .prepare_cached("INSERT INTO webhook_done (sink, seq) VALUES ($1, $2) ON CONFLICT DO NOTHING")
                .await?;
            let unretry = tx
                .prepare_cached("DELETE FROM webhook_retry WHERE sink = $1 AND seq = $2")
                .await?;
            let unreplay = tx
                .prepare_cached("DELETE FROM webhook_replay WHERE sink = $1 AND seq = $2")
                .await?;
            let retry = tx
                .prepare_cached(
                    "INSERT INTO webhook_retry (sink, seq, attempts, next_attempt_ms, last_error) VALUES ($1, $2, $3, $4, $5) \
                     ON CONFLICT (sink, seq) DO UPDATE SET attempts = EXCLUDED.attempts, \
                     next_attempt_ms = EXCLUDED.next_attempt_ms, last_error = EXCLUDED.last_error",
                )
                .await?;
            let dead = tx
                .prepare_cached(
                    "INSERT INTO dead_letters (sink, seq, event_id, subject, type, attempts, last_error, created_ms) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
                     ON CONFLICT (sink, seq) DO UPDATE SET event_id = EXCLUDED.event_id, subject = EXCLUDED.subject, \
                     type = EXCLUDED.type, attempts = EXCLUDED.attempts, last_error = EXCLUDED.last_error, \
                     created_ms = EXCLUDED.created_ms",
                )
                .await?;
            for o in &outcomes {
                match o {
                    Outcome::Delivered { seq, replay: false } => {
                        tx.execute(&done, &[&sink, seq]).await?;
                        tx.execute(&unretry, &[&sink, seq]).await?;
                    }
                    Outcome::Delivered { seq, replay: true } => {
                        tx.execute(&unreplay, &[&sink, seq]).await?;
                    }
                    Outcome::Retry { seq, state } => {
                        let n = i64::from(state.attempts);
                        tx.execute(&retry, &[&sink, seq, &n, &state.next_attempt_ms, &state.last_error])
                            .await?;
                    }
                    Outcome::Dead { letter, replay } => {
                        let n = i64::from(letter.attempts);
                        tx.execute(
                            &dead,
                            &[
                                &sink,
                                &letter.seq,
                                &letter.event_id,
                                &letter.subject,
                                &letter.event_type,
                                &n,
                                &letter.last_error,
                                &letter.created_ms,
                            ],
                        )
                        .await?;
                        if *replay {
                            tx.execute(&unreplay, &[&sink, &letter.seq]).await?;
                        } else {
                            tx.execute(&done, &[&sink, &letter.seq]).await?;
                            tx.execute(&unretry, &[&sink, &letter.seq]).await?;
                        }
                    }
                }
            }
            // Never backwards: a sink part stopping (a reload restarts it) may record its
            // last progress after its successor has moved on.
            tx.execute(
                "UPDATE sink_cursors SET last_seq = GREATEST(last_seq, $2) WHERE sink = $1",
                &[&webhook_cursor(&sink), &cursor],
            )
            .await?;
            tx.execute("DELETE FROM webhook_done WHERE sink = $1 AND seq <= $2", &[&sink, &cursor])
                .await?;
            tx.commit().await?;
            Ok(())
        })
    }

    fn dead_letters(&self, sink: Option<&str>) -> Result<Vec<DeadLetter>, StoreError> {
        self.query(
            "SELECT sink, seq, event_id, subject, type, attempts, last_error, created_ms FROM dead_letters \
             WHERE $1::text IS NULL OR sink = $1 ORDER BY created_ms, seq",
            vec![p(sink.map(str::to_string))],
            |r| DeadLetter {
                sink: r.get(0),
                seq: r.get(1),
                event_id: r.get(2),
                subject: r.get(3),
                event_type: r.get(4),
                attempts: attempts(r.get(5)),
                last_error: r.get(6),
                created_ms: r.get(7),
            },
        )
    }

    fn replay_dead_letters(&mut self, event_id: Option<&str>) -> Result<usize, StoreError> {
        let event_id = event_id.map(str::to_string);
        self.run(move |mut c| async move {
            let tx = c.transaction().await?;
            let n = tx
                .execute(
                    "INSERT INTO webhook_replay (sink, seq) SELECT sink, seq FROM dead_letters \
                     WHERE $1::text IS NULL OR event_id = $1 ON CONFLICT DO NOTHING",
                    &[&event_id],
                )
                .await?;
            tx.execute(
                "DELETE FROM sink_pauses WHERE $1::text IS NULL \
                 OR sink IN (SELECT sink FROM dead_letters WHERE event_id = $1)",
                &[&event_id],
            )
            .await?;
            tx.execute(
                "DELETE FROM dead_letters WHERE $1::text IS NULL OR event_id = $1",
                &[&event_id],
            )
            .await?;
            tx.commit().await?;
            Ok(n as usize)
        })
    }

    fn pending_replays(&self, sink: &str) -> Result<Vec<OutboxRow>, StoreError> {
        self.query(
            "SELECT o.seq, o.id, o.type, o.subject, o.body, o.created_ms FROM webhook_replay r JOIN outbox o ON o.seq = r.seq \
             WHERE r.sink = $1 ORDER BY o.seq",
            vec![p(sink.to_string())],
            outbox_from_row,
        )
    }

    fn pause_sink(&mut self, sink: &str, reason: &str) -> Result<(), StoreError> {
        self.execute(
            "INSERT INTO sink_pauses (sink, reason, since_ms) VALUES ($1, $2, $3) \
             ON CONFLICT (sink) DO UPDATE SET reason = EXCLUDED.reason, since_ms = EXCLUDED.since_ms",
            vec![p(sink.to_string()), p(reason.to_string()), p(now_ms())],
        )?;
        Ok(())
    }

    fn sink_pause(&self, sink: &str) -> Result<Option<String>, StoreError> {
        Ok(self
            .query(
                "SELECT reason FROM sink_pauses WHERE sink = $1",
                vec![p(sink.to_string())],
                |r| r.get(0),
            )?
            .into_iter()
            .next())
    }

    fn clear_sink_pauses(&mut self) -> Result<(), StoreError> {
        self.execute("DELETE FROM sink_pauses", vec![])?;
        Ok(())
    }

    fn sink_summaries(&self) -> Result<Vec<SinkSummary>, StoreError> {
        // On a cluster a sink has one cursor per shard (`webhook:NAME#3`): each counts
        // the events of its shard, and the parts add up to the sink.
        let rows = self.query(
            "SELECT c.sink, \
               CASE WHEN c.sink ~ '#[0-9]+$' \
                 THEN (SELECT COUNT(*) FROM outbox o WHERE o.seq > c.last_seq \
                         AND o.shard = substring(c.sink from '#([0-9]+)$')::int) \
                 ELSE GREATEST((SELECT COALESCE(MAX(seq), 0) FROM outbox) - c.last_seq, 0) END, \
               (SELECT COUNT(*) FROM webhook_retry r WHERE r.sink = substr(c.sink, 9)), \
               (SELECT COUNT(*) FROM dead_letters d WHERE d.sink = substr(c.sink, 9)), \
               (SELECT reason FROM sink_pauses s WHERE s.sink = substr(c.sink, 9)), \
               CASE WHEN c.sink ~ '#[0-9]+$' \
                 THEN (SELECT MIN(o.created_ms) FROM outbox o WHERE o.seq > c.last_seq \
                         AND o.shard = substring(c.sink from '#([0-9]+)$')::int) \
                 ELSE (SELECT MIN(o.created_ms) FROM outbox o WHERE o.seq > c.last_seq) END \
             FROM sink_cursors c ORDER BY c.sink",
            vec![],
            |r| {
                (
                    r.get::<_, String>(0),
                    r.get::<_, i64>(1),
                    r.get::<_, i64>(2),
                    r.get::<_, i64>(3),
                    r.get::<_, Option<String>>(4),
                    r.get::<_, Option<i64>>(5),
                )
            },
        )?;
        let mut summaries: Vec<SinkSummary> = Vec::new();
        let sharded: HashSet<String> = rows
            .iter()
            .filter(|r| split_shard_sink(&r.0).1.is_some())
            .map(|r| split_shard_sink(&r.0).0.to_string())
            .collect();
        for (name, behind, retrying, dead_letters, paused, oldest) in rows {
            let (base, shard) = split_shard_sink(&name);
            // A sink's pre-shard cursor says nothing once its shards have their own.
            if shard.is_none() && sharded.contains(base) {
                continue;
            }
            match summaries.iter_mut().find(|s| s.cursor_name == base) {
                Some(s) => {
                    s.behind += behind;
                    s.retrying += retrying;
                    s.dead_letters += dead_letters;
                    s.paused = s.paused.take().or(paused);
                    s.oldest_pending_ms = match (s.oldest_pending_ms, oldest) {
                        (Some(a), Some(b)) => Some(a.min(b)),
                        (a, b) => a.or(b),
                    };
                }
                None => summaries.push(SinkSummary {
                    cursor_name: base.to_string(),
                    behind,
                    retrying,
                    dead_letters,
                    paused,
                    oldest_pending_ms: oldest,
                }),
            }
        }
        Ok(summaries)
    }
}
