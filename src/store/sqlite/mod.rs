//! The SQLite backend: one file holding everything, written by one process.
//!
//! WAL mode with `synchronous=FULL` on the writing connection: a committed transaction
//! survives a crash and a power loss. Sinks record their progress on their own connection
//! with `synchronous=NORMAL`, which survives a crash of the process (the only thing that
//! can lose an in-flight line) without paying an fsync per line.

mod lock;
mod migrations;

pub use lock::{LockError, StoreLock, lock_path};

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, params};

use super::*;

/// Item columns, in `ItemRow` field order.
const ITEM_COLUMNS: &str = "key, kind, subject, watch, params, origin, active, status, percent, terminal, \
                            next_due_ms, failures, failing, last_error, last_polled_ms, last_change_ms, since_ms, stalled, changed_at_ms";

/// An outbox row from `seq, id, type, subject, body, created_ms`.
fn outbox_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<OutboxRow> {
    Ok(OutboxRow {
        seq: r.get(0)?,
        id: r.get(1)?,
        event_type: r.get(2)?,
        subject: r.get(3)?,
        body: r.get(4)?,
        created_ms: r.get(5)?,
    })
}

/// Dynamic watch columns, in `DynamicWatch` field order.
const DYNAMIC_COLUMNS: &str = "id, workspace, project_id, asset_id, name, analysis";

fn dynamic_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<DynamicWatch> {
    Ok(DynamicWatch {
        id: r.get(0)?,
        workspace: r.get(1)?,
        project_id: r.get(2)?,
        asset_id: r.get(3)?,
        name: r.get(4)?,
        analysis: r.get(5)?,
    })
}

fn item_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<ItemRow> {
    Ok(ItemRow {
        key: r.get(0)?,
        kind: r.get(1)?,
        subject: r.get(2)?,
        watch: r.get(3)?,
        params: r.get(4)?,
        origin: r.get(5)?,
        active: r.get(6)?,
        status: r.get(7)?,
        percent: r.get(8)?,
        terminal: r.get(9)?,
        next_due_ms: r.get(10)?,
        failures: r.get(11)?,
        failing: r.get(12)?,
        last_error: r.get(13)?,
        last_polled_ms: r.get(14)?,
        last_change_ms: r.get(15)?,
        since_ms: r.get(16)?,
        stalled: r.get(17)?,
        changed_at_ms: r.get(18)?,
    })
}

/// The SQLite backend: one file.
pub struct SqliteStore {
    /// The one connection of this handle; each component opens its own handle.
    conn: Connection,
    /// The file, for messages.
    path: PathBuf,
}

/// What a path keeps unescaped in an SQLite `file:` URI.
const URI_PATH: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'/')
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// How long a connection waits for another process's write lock before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

impl SqliteStore {
    /// Opens (creating if needed) the store at `path` and brings its schema up to date.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        Self::open_with(path, "FULL")
    }

    /// Opens a second connection for recording sink progress (`synchronous=NORMAL`).
    pub fn open_for_progress(path: &Path) -> Result<Self, StoreError> {
        Self::open_with(path, "NORMAL")
    }

    fn open_with(path: &Path, synchronous: &str) -> Result<Self, StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| StoreError::Directory {
                path: dir.to_path_buf(),
                source,
            })?;
        }
        let open = |source| StoreError::Open {
            path: path.to_path_buf(),
            source,
        };
        let conn = Connection::open(path).map_err(open)?;
        conn.busy_timeout(BUSY_TIMEOUT).map_err(open)?;
        // Turning a new file to WAL takes an exclusive lock, and SQLite refuses a second
        // process doing the same at that moment at once, without its busy handler (a
        // daemon and `register` started together): wait and try again, within the timeout.
        let started = std::time::Instant::now();
        loop {
            match conn.pragma_update(None, "journal_mode", "WAL") {
                Err(rusqlite::Error::SqliteFailure(e, _))
                    if e.code == rusqlite::ErrorCode::DatabaseBusy && started.elapsed() < BUSY_TIMEOUT =>
                {
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
                done => break done.map_err(open)?,
            }
        }
        conn.pragma_update(None, "synchronous", synchronous).map_err(open)?;
        conn.pragma_update(None, "foreign_keys", "ON").map_err(open)?;
        let mut store = Self {
            conn,
            path: path.to_path_buf(),
        };
        store.migrate()?;
        Ok(store)
    }

    /// Opens the store read-only, for commands that only look (`status`): it needs no
    /// write access to the file or its directory, and never migrates or writes.
    pub fn open_read_only(path: &Path) -> Result<Self, StoreError> {
        use rusqlite::OpenFlags;
        let open = |source| StoreError::Open {
            path: path.to_path_buf(),
            source,
        };
        let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX | OpenFlags::SQLITE_OPEN_URI;
        let version = |conn: &Connection| conn.pragma_query_value(None, "user_version", |r| r.get::<_, i64>(0));
        let normal = Connection::open_with_flags(path, flags).and_then(|c| {
            c.busy_timeout(BUSY_TIMEOUT)?;
            let v = version(&c)?;
            Ok((c, v))
        });
        let (conn, found) = match normal {
            Ok(opened) => opened,
            // A WAL database whose -shm cannot be created (a read-only directory or mount,
            // no daemon running) opens only as immutable: nothing writes it then anyway.
            Err(first) => {
                let uri = format!(
                    "file:{}?immutable=1",
                    percent_encoding::utf8_percent_encode(&path.to_string_lossy(), URI_PATH)
                );
                let c = Connection::open_with_flags(&uri, flags).map_err(|_| open(first))?;
                let v = version(&c).map_err(open)?;
                (c, v)
            }
        };
        let supported = migrations::ALL.len() as i64;
        if found > supported {
            return Err(StoreError::TooNew {
                store: path.display().to_string(),
                found,
                supported,
            });
        }
        if found < supported {
            return Err(StoreError::TooOld {
                store: path.display().to_string(),
                found,
                supported,
            });
        }
        Ok(Self {
            conn,
            path: path.to_path_buf(),
        })
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn migrate(&mut self) -> Result<(), StoreError> {
        let found: i64 = self.conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
        let supported = migrations::ALL.len() as i64;
        if found > supported {
            return Err(StoreError::TooNew {
                store: self.path.display().to_string(),
                found,
                supported,
            });
        }
        if found == supported {
            return Ok(());
        }
        // Two processes may open a new store at the same moment (a daemon starting while
        // `dead-letters list` or `status` looks): the write lock is taken first and the
        // version read again under it, so each migration runs exactly once.
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let found: i64 = tx.pragma_query_value(None, "user_version", |r| r.get(0))?;
        for sql in migrations::ALL.iter().skip(found.max(0) as usize) {
            tx.execute_batch(sql)?;
        }
        tx.pragma_update(None, "user_version", supported)?;
        tx.commit()?;
        Ok(())
    }
}

/// An item's columns, in `ITEM_COLUMNS` order.
fn item_params(i: &ItemRow) -> rusqlite::ParamsFromIter<[&dyn rusqlite::ToSql; 19]> {
    rusqlite::params_from_iter([
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
        &i.failures,
        &i.failing,
        &i.last_error,
        &i.last_polled_ms,
        &i.last_change_ms,
        &i.since_ms,
        &i.stalled,
        &i.changed_at_ms,
    ])
}

impl Backend for SqliteStore {
    fn describe(&self) -> String {
        self.path.display().to_string()
    }

    /// Calls `f` with every item, one row at a time, so loading 100,000 items never holds
    /// them all as rows at once.
    fn for_each_item(&self, f: &mut dyn FnMut(ItemRow)) -> Result<(), StoreError> {
        let mut stmt = self.conn.prepare(&format!("SELECT {ITEM_COLUMNS} FROM items"))?;
        let mut rows = stmt.query([])?;
        while let Some(row) = rows.next()? {
            f(item_from_row(row)?);
        }
        Ok(())
    }

    /// How many items there are.
    fn item_count(&self) -> Result<i64, StoreError> {
        Ok(self.conn.query_row("SELECT COUNT(*) FROM items", [], |r| r.get(0))?)
    }

    /// Every item.
    fn items(&self) -> Result<Vec<ItemRow>, StoreError> {
        let mut stmt = self
            .conn
            .prepare(&format!("SELECT {ITEM_COLUMNS} FROM items ORDER BY subject, kind"))?;
        let rows = stmt.query_map([], item_from_row)?.collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    /// The stored detail of an item, as JSON text.
    fn detail(&self, key: &str) -> Result<Option<String>, StoreError> {
        Ok(self
            .conn
            .query_row("SELECT detail FROM items WHERE key = ?1", [key], |r| r.get(0))
            .optional()?
            .flatten())
    }

    /// Writes item updates and new events in one transaction: either all of it is durable
    /// or none of it is. `details` pairs an item key with its new detail JSON.
    fn commit(
        &mut self,
        items: &[ItemRow],
        details: &[(String, String)],
        events: &[OutboxEvent],
        creates: &[ItemRow],
    ) -> Result<(), StoreError> {
        let tx = self.conn.transaction()?;
        {
            let mut upsert = tx.prepare_cached(&format!(
                "INSERT INTO items ({ITEM_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19) \
                 ON CONFLICT(key) DO UPDATE SET kind = excluded.kind, subject = excluded.subject, watch = excluded.watch, \
                 params = excluded.params, origin = excluded.origin, active = excluded.active, status = excluded.status, \
                 percent = excluded.percent, terminal = excluded.terminal, next_due_ms = excluded.next_due_ms, \
                 failures = excluded.failures, failing = excluded.failing, last_error = excluded.last_error, \
                 last_polled_ms = excluded.last_polled_ms, last_change_ms = excluded.last_change_ms, \
                 since_ms = excluded.since_ms, stalled = excluded.stalled, changed_at_ms = excluded.changed_at_ms"
            ))?;
            let mut create = tx.prepare_cached(&format!(
                "INSERT OR IGNORE INTO items ({ITEM_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19)"
            ))?;
            for i in items {
                upsert.execute(item_params(i))?;
            }
            for i in creates {
                create.execute(item_params(i))?;
            }
            let mut detail = tx.prepare_cached("UPDATE items SET detail = ?2 WHERE key = ?1")?;
            for (key, json) in details {
                detail.execute(params![key, json])?;
            }
            let mut insert = tx.prepare_cached(
                "INSERT INTO outbox (id, type, subject, created_ms, body) VALUES (?1, ?2, ?3, ?4, ?5)",
            )?;
            let now = chrono::Utc::now().timestamp_millis();
            for e in events {
                insert.execute(params![e.id, e.event_type, e.subject, now, e.body])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Deletes up to `batch` outbox events that every sink in `cursors` has passed and that
    /// are older than `older_than_ms` (epoch ms), keeping any a dead letter, a retry or a
    /// replay still needs. Returns how many went. Small batches keep the write lock short,
    /// so commits of new changes never wait long behind a prune.
    fn prune_outbox(&mut self, cursors: &[String], older_than_ms: i64, batch: usize) -> Result<usize, StoreError> {
        let passed: i64 = if cursors.is_empty() {
            self.last_seq()?
        } else {
            let mut lowest = i64::MAX;
            for c in cursors {
                let seq: Option<i64> = self
                    .conn
                    .query_row("SELECT last_seq FROM sink_cursors WHERE sink = ?1", [c], |r| r.get(0))
                    .optional()?;
                // A sink without a cursor has not started: it holds back nothing it would read.
                lowest = lowest.min(seq.unwrap_or(i64::MAX));
            }
            if lowest == i64::MAX { self.last_seq()? } else { lowest }
        };
        let deleted = self.conn.execute(
            "DELETE FROM outbox WHERE seq IN (
                 SELECT seq FROM outbox
                 WHERE seq <= ?1 AND created_ms < ?2
                   AND seq NOT IN (SELECT seq FROM dead_letters)
                   AND seq NOT IN (SELECT seq FROM webhook_retry)
                   AND seq NOT IN (SELECT seq FROM webhook_replay)
                 ORDER BY seq LIMIT ?3)",
            params![passed, older_than_ms, batch as i64],
        )?;
        if deleted > 0 {
            // Progress records below every cursor say nothing any more.
            self.conn.execute(
                "DELETE FROM webhook_done WHERE seq <= ?1 AND seq NOT IN (SELECT seq FROM outbox)",
                [passed],
            )?;
        }
        Ok(deleted)
    }

    /// Asks the daemon holding this store for one round of every watch; returns the
    /// request's id.
    fn request_round(&mut self) -> Result<i64, StoreError> {
        let now = chrono::Utc::now().timestamp_millis();
        let first = self.last_seq()?;
        self.conn.execute(
            "INSERT INTO poll_requests (created_ms, first_seq) VALUES (?1, ?2)",
            params![now, first],
        )?;
        Ok(self.conn.last_insert_rowid())
    }

    /// The ids of rounds asked for and not yet done, after `after`, oldest first.
    fn open_round_requests(&self, after: i64) -> Result<Vec<i64>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT id FROM poll_requests WHERE id > ?1 AND done_ms IS NULL ORDER BY id")?;
        let ids = stmt
            .query_map([after], |r| r.get(0))?
            .collect::<Result<Vec<i64>, _>>()?;
        Ok(ids)
    }

    /// Records that the round `id` is done: the outbox up to now holds its events, and
    /// `report` (one line per failed poll) says what failed.
    fn finish_round(&mut self, id: i64, failures: &[String]) -> Result<(), StoreError> {
        let now = chrono::Utc::now().timestamp_millis();
        let last = self.last_seq()?;
        self.conn.execute(
            "UPDATE poll_requests SET done_ms = ?2, last_seq = ?3, failures = ?4, report = ?5 WHERE id = ?1",
            params![id, now, last, failures.len() as i64, failures.join("\n")],
        )?;
        Ok(())
    }

    /// The round `id`, once done: the outbox range `(first_seq, last_seq]` it covers and the
    /// failed polls; `None` while it is still running.
    fn round(&self, id: i64) -> Result<Option<RoundReport>, StoreError> {
        Ok(self
            .conn
            .query_row(
                "SELECT first_seq, last_seq, report FROM poll_requests WHERE id = ?1 AND done_ms IS NOT NULL",
                [id],
                |r| {
                    let report: Option<String> = r.get(2)?;
                    Ok(RoundReport {
                        first_seq: r.get(0)?,
                        last_seq: r.get(1)?,
                        failures: report
                            .unwrap_or_default()
                            .lines()
                            .filter(|l| !l.is_empty())
                            .map(str::to_string)
                            .collect(),
                    })
                },
            )
            .optional()?)
    }

    /// The outbox position just before the first event committed at or after `at_ms`
    /// (epoch ms): reading after it gives every event since then.
    fn seq_before_time(&self, at_ms: i64) -> Result<i64, StoreError> {
        let first: Option<i64> =
            self.conn
                .query_row("SELECT MIN(seq) FROM outbox WHERE created_ms >= ?1", [at_ms], |r| {
                    r.get(0)
                })?;
        match first {
            Some(seq) => Ok(seq - 1),
            None => self.last_seq(),
        }
    }

    /// Records a fact about the running daemon under `key` (such as when the last callback
    /// came), replacing the previous value.
    fn set_fact(&mut self, key: &str, value: &str) -> Result<(), StoreError> {
        let now = chrono::Utc::now().timestamp_millis();
        self.conn.execute(
            "INSERT INTO daemon_facts (key, value, updated_ms) VALUES (?1, ?2, ?3)
             ON CONFLICT (key) DO UPDATE SET value = excluded.value, updated_ms = excluded.updated_ms",
            params![key, value, now],
        )?;
        Ok(())
    }

    /// The fact recorded under `key`, if any.
    fn fact(&self, key: &str) -> Result<Option<String>, StoreError> {
        Ok(self
            .conn
            .query_row("SELECT value FROM daemon_facts WHERE key = ?1", [key], |r| r.get(0))
            .optional()?)
    }

    /// Up to `limit` events after `seq`, in order.
    fn outbox_after(&self, seq: i64, limit: usize) -> Result<Vec<OutboxRow>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT seq, id, type, subject, body, created_ms FROM outbox WHERE seq > ?1 ORDER BY seq LIMIT ?2",
        )?;
        let rows = stmt
            .query_map(params![seq, limit as i64], outbox_from_row)?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    /// The newest outbox position, 0 when empty.
    fn last_seq(&self) -> Result<i64, StoreError> {
        Ok(self
            .conn
            .query_row("SELECT MAX(COALESCE((SELECT MAX(seq) FROM outbox), 0), COALESCE((SELECT seq FROM sqlite_sequence WHERE name = 'outbox'), 0))", [], |r| r.get(0))?)
    }

    /// A sink's progress: the last outbox position it has handled. A sink seen for the
    /// first time starts at the current end of the outbox, so adding a sink does not replay
    /// history.
    fn cursor(&mut self, sink: &str) -> Result<i64, StoreError> {
        let tx = self.conn.transaction()?;
        let found: Option<i64> = tx
            .query_row("SELECT last_seq FROM sink_cursors WHERE sink = ?1", [sink], |r| {
                r.get(0)
            })
            .optional()?;
        let seq = match found {
            Some(seq) => seq,
            None => {
                let end: i64 = tx.query_row("SELECT COALESCE(MAX(seq), 0) FROM outbox", [], |r| r.get(0))?;
                tx.execute(
                    "INSERT INTO sink_cursors (sink, last_seq) VALUES (?1, ?2)",
                    params![sink, end],
                )?;
                end
            }
        };
        tx.commit()?;
        Ok(seq)
    }

    /// Sets a sink's cursor, creating it if needed (to replay from a position).
    fn set_cursor_at(&mut self, sink: &str, seq: i64) -> Result<(), StoreError> {
        self.conn.execute(
            "INSERT OR REPLACE INTO sink_cursors (sink, last_seq) VALUES (?1, ?2)",
            params![sink, seq],
        )?;
        Ok(())
    }

    /// Records that `sink` has handled everything up to `seq`.
    fn set_cursor(&mut self, sink: &str, seq: i64) -> Result<(), StoreError> {
        self.conn
            .prepare_cached("UPDATE sink_cursors SET last_seq = MAX(last_seq, ?2) WHERE sink = ?1")?
            .execute(params![sink, seq])?;
        Ok(())
    }

    /// Adds a dynamic watch; a running daemon picks it up.
    fn add_dynamic_watch(&mut self, w: &DynamicWatch) -> Result<i64, StoreError> {
        self.conn.execute(
            "INSERT INTO dynamic_watches (workspace, project_id, asset_id, name, analysis, created_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![w.workspace, w.project_id, w.asset_id, w.name, w.analysis, chrono::Utc::now().timestamp_millis()],
        )?;
        Ok(self.conn.last_insert_rowid())
    }

    /// Adds many dynamic watches in one transaction.
    fn add_dynamic_watches(&mut self, watches: &[DynamicWatch]) -> Result<(), StoreError> {
        let tx = self.conn.transaction()?;
        {
            let mut insert = tx.prepare_cached(
                "INSERT INTO dynamic_watches (workspace, project_id, asset_id, name, analysis, created_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?;
            let now = chrono::Utc::now().timestamp_millis();
            for w in watches {
                insert.execute(params![w.workspace, w.project_id, w.asset_id, w.name, w.analysis, now])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Calls `f` with every dynamic watch, one at a time.
    fn for_each_dynamic_watch(&self, f: &mut dyn FnMut(DynamicWatch)) -> Result<(), StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached(&format!("SELECT {DYNAMIC_COLUMNS} FROM dynamic_watches"))?;
        let mut rows = stmt.query([])?;
        while let Some(r) = rows.next()? {
            f(dynamic_from_row(r)?);
        }
        Ok(())
    }

    /// Dynamic watches with an id above `after`.
    fn dynamic_watches_after(&self, after: i64) -> Result<Vec<DynamicWatch>, StoreError> {
        let mut stmt = self.conn.prepare_cached(&format!(
            "SELECT {DYNAMIC_COLUMNS} FROM dynamic_watches WHERE id > ?1 ORDER BY id"
        ))?;
        let rows = stmt
            .query_map([after], dynamic_from_row)?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    /// Active items whose status can still change (list targets excluded).
    fn pending_items(&self) -> Result<i64, StoreError> {
        Ok(self.conn.query_row(
            "SELECT COUNT(*) FROM items WHERE active = 1 AND terminal = 0 AND kind NOT IN ('project_list', 'vod_list')",
            [],
            |r| r.get(0),
        )?)
    }

    /// Every event in the outbox, for tests and `status`.
    fn outbox_len(&self) -> Result<i64, StoreError> {
        Ok(self.conn.query_row("SELECT COUNT(*) FROM outbox", [], |r| r.get(0))?)
    }

    /// The deliveries done past `cursor` and the retries in progress, to resume after a restart.
    fn webhook_progress(
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
    fn record_deliveries(&mut self, sink: &str, outcomes: &[Outcome], cursor: i64) -> Result<(), StoreError> {
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
            // Never backwards: a sink part stopping (a reload restarts it) may record its
            // last progress after its successor has moved on.
            tx.prepare_cached("UPDATE sink_cursors SET last_seq = MAX(last_seq, ?2) WHERE sink = ?1")?
                .execute(params![webhook_cursor(sink), cursor])?;
            tx.prepare_cached("DELETE FROM webhook_done WHERE sink = ?1 AND seq <= ?2")?
                .execute(params![sink, cursor])?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Dead letters, of one sink or all.
    fn dead_letters(&self, sink: Option<&str>) -> Result<Vec<DeadLetter>, StoreError> {
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
    fn replay_dead_letters(&mut self, event_id: Option<&str>) -> Result<usize, StoreError> {
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
    fn pending_replays(&self, sink: &str) -> Result<Vec<OutboxRow>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT o.seq, o.id, o.type, o.subject, o.body, o.created_ms FROM webhook_replay r JOIN outbox o ON o.seq = r.seq \
             WHERE r.sink = ?1 ORDER BY o.seq",
        )?;
        let rows = stmt
            .query_map([sink], outbox_from_row)?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    /// Pauses `sink` (410 Gone) until a reload or a replay lifts it.
    fn pause_sink(&mut self, sink: &str, reason: &str) -> Result<(), StoreError> {
        self.conn.execute(
            "INSERT OR REPLACE INTO sink_pauses (sink, reason, since_ms) VALUES (?1, ?2, ?3)",
            params![sink, reason, chrono::Utc::now().timestamp_millis()],
        )?;
        Ok(())
    }

    /// Why `sink` is paused, if it is.
    fn sink_pause(&self, sink: &str) -> Result<Option<String>, StoreError> {
        Ok(self
            .conn
            .query_row("SELECT reason FROM sink_pauses WHERE sink = ?1", [sink], |r| r.get(0))
            .optional()?)
    }

    /// Lifts every pause (a reload does this).
    fn clear_sink_pauses(&mut self) -> Result<(), StoreError> {
        self.conn.execute("DELETE FROM sink_pauses", [])?;
        Ok(())
    }

    /// An SQLite store is written by one process: there are no replicas.
    fn replicas(&self) -> Result<Vec<ReplicaRow>, StoreError> {
        Ok(Vec::new())
    }

    /// Per sink: cursor, retrying count, dead letters, pause.
    fn sink_summaries(&self) -> Result<Vec<SinkSummary>, StoreError> {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn event(i: usize) -> OutboxEvent {
        OutboxEvent {
            id: format!("id-{i}"),
            event_type: "t".into(),
            subject: format!("s/{}", i % 3),
            body: "{}".into(),
        }
    }

    #[test]
    fn processes_opening_a_new_store_together_migrate_it_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        let handles: Vec<_> = (0..8)
            .map(|_| {
                let path = path.clone();
                std::thread::spawn(move || SqliteStore::open(&path).map(|_| ()))
            })
            .collect();
        for h in handles {
            h.join().unwrap().unwrap();
        }
        let store = SqliteStore::open(&path).unwrap();
        let version: i64 = store
            .conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        assert_eq!(version, migrations::ALL.len() as i64);
    }

    #[test]
    fn prune_keeps_what_a_sink_a_dead_letter_or_a_retry_still_needs() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = SqliteStore::open(&dir.path().join("state.db")).unwrap();
        let events: Vec<OutboxEvent> = (1..=10).map(event).collect();
        store.commit(&[], &[], &events, &[]).unwrap();
        store.set_cursor_at("log:a", 8).unwrap();
        store.set_cursor_at("webhook:b", 6).unwrap();
        store
            .conn
            .execute_batch(
                "INSERT INTO dead_letters VALUES ('webhook:b', 2, 'id-2', 's/2', 't', 10, 'gone', 0);
                 INSERT INTO webhook_retry VALUES ('webhook:b', 4, 1, 0, NULL);",
            )
            .unwrap();
        let sinks = ["log:a".to_string(), "webhook:b".to_string()];
        // Nothing is old enough yet.
        assert_eq!(store.prune_outbox(&sinks, 0, 100).unwrap(), 0);
        let later = chrono::Utc::now().timestamp_millis() + 1000;
        // Up to the slowest sink (6), less the dead letter (2) and the retry (4), in batches.
        assert_eq!(store.prune_outbox(&sinks, later, 2).unwrap(), 2);
        assert_eq!(store.prune_outbox(&sinks, later, 100).unwrap(), 2);
        let left: Vec<i64> = store.outbox_after(0, 100).unwrap().iter().map(|r| r.seq).collect();
        assert_eq!(left, vec![2, 4, 7, 8, 9, 10]);
        // New events keep counting up from where the outbox was, pruned or not.
        let last = store.last_seq().unwrap();
        assert_eq!(last, 10);
        store.prune_outbox(&["log:a".to_string()], later, 100).unwrap();
        store.commit(&[], &[], &[event(11)], &[]).unwrap();
        assert_eq!(store.last_seq().unwrap(), 11);
    }
}
