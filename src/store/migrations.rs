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
];
