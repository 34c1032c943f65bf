//! The PostgreSQL schema, versioned like SQLite's: `schema_migrations` lists the versions
//! applied, and each runs once, in one transaction, under an advisory lock so replicas
//! starting together never race. Never edit a shipped migration: add a new one.
//!
//! Version 1 is the SQLite schema as of its version 5, in PostgreSQL's types: times are
//! epoch milliseconds (`BIGINT`), flags are `BOOLEAN`.

/// The advisory lock key migrations run under (`ncpwatch1` read as bytes, kept stable).
pub const MIGRATION_LOCK: i64 = 0x6e63_7077_6174_6331;

/// Every migration, oldest first.
pub const ALL: &[&str] = &[
    "
    CREATE TABLE items (
        key            TEXT PRIMARY KEY,
        kind           TEXT NOT NULL,
        subject        TEXT NOT NULL,
        watch          TEXT,
        params         TEXT NOT NULL,
        origin         TEXT NOT NULL,
        active         BOOLEAN NOT NULL,
        status         TEXT,
        percent        DOUBLE PRECISION,
        detail         TEXT,
        terminal       BOOLEAN NOT NULL,
        next_due_ms    BIGINT,
        failures       BIGINT NOT NULL,
        failing        BOOLEAN NOT NULL,
        last_error     TEXT,
        last_polled_ms BIGINT,
        last_change_ms BIGINT,
        since_ms       BIGINT,
        stalled        BOOLEAN NOT NULL DEFAULT FALSE,
        changed_at_ms  BIGINT
    );
    CREATE TABLE outbox (
        seq        BIGSERIAL PRIMARY KEY,
        id         TEXT NOT NULL UNIQUE,
        type       TEXT NOT NULL,
        subject    TEXT NOT NULL,
        created_ms BIGINT NOT NULL,
        body       TEXT NOT NULL
    );
    CREATE INDEX outbox_created ON outbox (created_ms);
    CREATE TABLE sink_cursors (
        sink     TEXT PRIMARY KEY,
        last_seq BIGINT NOT NULL
    );
    CREATE TABLE dynamic_watches (
        id         BIGSERIAL PRIMARY KEY,
        workspace  TEXT NOT NULL,
        project_id TEXT NOT NULL,
        asset_id   TEXT NOT NULL,
        name       TEXT,
        analysis   BOOLEAN NOT NULL,
        created_ms BIGINT NOT NULL
    );
    CREATE TABLE webhook_done (
        sink TEXT NOT NULL,
        seq  BIGINT NOT NULL,
        PRIMARY KEY (sink, seq)
    );
    CREATE TABLE webhook_retry (
        sink            TEXT NOT NULL,
        seq             BIGINT NOT NULL,
        attempts        BIGINT NOT NULL,
        next_attempt_ms BIGINT NOT NULL,
        last_error      TEXT,
        PRIMARY KEY (sink, seq)
    );
    CREATE TABLE dead_letters (
        sink       TEXT NOT NULL,
        seq        BIGINT NOT NULL,
        event_id   TEXT NOT NULL,
        subject    TEXT NOT NULL,
        type       TEXT NOT NULL,
        attempts   BIGINT NOT NULL,
        last_error TEXT,
        created_ms BIGINT NOT NULL,
        PRIMARY KEY (sink, seq)
    );
    CREATE TABLE webhook_replay (
        sink TEXT NOT NULL,
        seq  BIGINT NOT NULL,
        PRIMARY KEY (sink, seq)
    );
    CREATE TABLE sink_pauses (
        sink     TEXT PRIMARY KEY,
        reason   TEXT NOT NULL,
        since_ms BIGINT NOT NULL
    );
    CREATE TABLE poll_requests (
        id         BIGSERIAL PRIMARY KEY,
        created_ms BIGINT NOT NULL,
        first_seq  BIGINT NOT NULL,
        done_ms    BIGINT,
        last_seq   BIGINT,
        failures   BIGINT,
        report     TEXT
    );
    CREATE TABLE daemon_facts (
        key        TEXT PRIMARY KEY,
        value      TEXT NOT NULL,
        updated_ms BIGINT NOT NULL
    );
",
    // Version 2: shards and leases (SPEC §9). Items and events carry their shard (filled
    // in by `PgStore::open` for rows written before); items a sequence number, so a
    // replica finds the items other replicas create in its shards; one lease per shard.
    "
    ALTER TABLE items ADD COLUMN shard INTEGER;
    ALTER TABLE items ADD COLUMN created BIGSERIAL;
    CREATE INDEX items_shard_created ON items (shard, created);
    ALTER TABLE outbox ADD COLUMN shard INTEGER;
    CREATE INDEX outbox_shard_seq ON outbox (shard, seq);
    CREATE TABLE leases (
        shard       INTEGER PRIMARY KEY,
        holder      TEXT,
        epoch       BIGINT NOT NULL DEFAULT 0,
        expires_at  TIMESTAMPTZ,
        acquired_at TIMESTAMPTZ
    );
    INSERT INTO leases (shard) SELECT generate_series(0, 15);
    CREATE TABLE replicas (
        id         TEXT PRIMARY KEY,
        instance   TEXT NOT NULL,
        host       TEXT NOT NULL,
        pid        BIGINT NOT NULL,
        started_at TIMESTAMPTZ NOT NULL,
        seen_at    TIMESTAMPTZ NOT NULL
    );
    CREATE TABLE round_parts (
        request  BIGINT NOT NULL,
        holder   TEXT NOT NULL,
        shards   BIGINT NOT NULL,
        last_seq BIGINT NOT NULL,
        report   TEXT NOT NULL,
        PRIMARY KEY (request, holder)
    );
",
];
