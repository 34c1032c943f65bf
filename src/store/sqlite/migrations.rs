//! Schema migrations, applied in order; `PRAGMA user_version` counts those applied.
//! Never edit a shipped migration: add a new one.

/// Every migration, oldest first.
pub const ALL: &[&str] = &[
    // 1: items, the outbox, sink cursors, dynamic watches.
    "
    CREATE TABLE items (
        key            TEXT PRIMARY KEY,
        kind           TEXT NOT NULL,
        subject        TEXT NOT NULL,
        watch          TEXT,
        params         TEXT NOT NULL,
        origin         TEXT NOT NULL,
        active         INTEGER NOT NULL,
        status         TEXT,
        percent        REAL,
        detail         TEXT,
        terminal       INTEGER NOT NULL,
        next_due_ms    INTEGER,
        failures       INTEGER NOT NULL,
        failing        INTEGER NOT NULL,
        last_error     TEXT,
        last_polled_ms INTEGER,
        last_change_ms INTEGER
    ) WITHOUT ROWID;
    CREATE TABLE outbox (
        seq        INTEGER PRIMARY KEY AUTOINCREMENT,
        id         TEXT NOT NULL UNIQUE,
        type       TEXT NOT NULL,
        subject    TEXT NOT NULL,
        created_ms INTEGER NOT NULL,
        body       TEXT NOT NULL
    );
    CREATE TABLE sink_cursors (
        sink     TEXT PRIMARY KEY,
        last_seq INTEGER NOT NULL
    );
    CREATE TABLE dynamic_watches (
        id         INTEGER PRIMARY KEY AUTOINCREMENT,
        workspace  TEXT NOT NULL,
        project_id TEXT NOT NULL,
        asset_id   TEXT NOT NULL,
        name       TEXT,
        analysis   INTEGER NOT NULL,
        created_ms INTEGER NOT NULL
    );
    ",
    // 2: webhook delivery: per sink, what is done past the cursor, what is retrying, dead
    // letters, replays asked for, and pauses (410 Gone).
    "
    CREATE TABLE webhook_done (
        sink TEXT NOT NULL,
        seq  INTEGER NOT NULL,
        PRIMARY KEY (sink, seq)
    ) WITHOUT ROWID;
    CREATE TABLE webhook_retry (
        sink            TEXT NOT NULL,
        seq             INTEGER NOT NULL,
        attempts        INTEGER NOT NULL,
        next_attempt_ms INTEGER NOT NULL,
        last_error      TEXT,
        PRIMARY KEY (sink, seq)
    ) WITHOUT ROWID;
    CREATE TABLE dead_letters (
        sink       TEXT NOT NULL,
        seq        INTEGER NOT NULL,
        event_id   TEXT NOT NULL,
        subject    TEXT NOT NULL,
        type       TEXT NOT NULL,
        attempts   INTEGER NOT NULL,
        last_error TEXT,
        created_ms INTEGER NOT NULL,
        PRIMARY KEY (sink, seq)
    ) WITHOUT ROWID;
    CREATE TABLE webhook_replay (
        sink TEXT NOT NULL,
        seq  INTEGER NOT NULL,
        PRIMARY KEY (sink, seq)
    ) WITHOUT ROWID;
    CREATE TABLE sink_pauses (
        sink     TEXT PRIMARY KEY,
        reason   TEXT NOT NULL,
        since_ms INTEGER NOT NULL
    );
    ",
    // 3: field behaviour (SPEC §8): when each item was first watched (upload grace, the VOD
    // window's reach), whether it is stalled, and the API's own time of the status followed
    // (the newest VOD job). Lists read before this version count as read, so a `baseline`
    // added later does not swallow the first new items.
    "
    ALTER TABLE items ADD COLUMN since_ms INTEGER;
    ALTER TABLE items ADD COLUMN stalled INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE items ADD COLUMN changed_at_ms INTEGER;
    UPDATE items SET since_ms = COALESCE(last_change_ms, last_polled_ms);
    UPDATE items SET status = 'READ'
        WHERE kind IN ('project_list', 'vod_list') AND status IS NULL AND last_polled_ms IS NOT NULL AND failures = 0;
    ",
    // 4: rounds asked of the running daemon by `once` (one writer per store: a second
    // process never polls on its own, it asks the one that holds the lock).
    "
    CREATE TABLE poll_requests (
        id         INTEGER PRIMARY KEY AUTOINCREMENT,
        created_ms INTEGER NOT NULL,
        first_seq  INTEGER NOT NULL,
        done_ms    INTEGER,
        last_seq   INTEGER,
        failures   INTEGER,
        report     TEXT
    );
    ",
    // 5: small facts the daemon records for the commands that only read (`status`): when
    // the last VOD Station callback came (SPEC §10), written at most once a second.
    "
    CREATE TABLE daemon_facts (
        key        TEXT PRIMARY KEY,
        value      TEXT NOT NULL,
        updated_ms INTEGER NOT NULL
    ) WITHOUT ROWID;
    ",
];
