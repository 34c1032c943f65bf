//! Replicas sharing one PostgreSQL store (SPEC §9), on a real server the test starts:
//! kill -9 of replicas while items change, a replica frozen past its lease, a replica
//! joining, one quota shared by three, and the fence itself at the store.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use serde_json::Value;

use crate::helpers::{Daemon, config_text, read_events, set_import, sim_with, summary, transition};
use crate::pg;
use ncp_watchd::cluster::{SHARDS, ShardSet, shard_of};
use ncp_watchd::store::postgres::{Fence, Leases, set_fence};
use ncp_watchd::store::{ItemRow, OutboxEvent, Store, StoreError};

/// Fast polls, short leases, and a log sink per replica.
fn cluster_config(sim_url: &str, server: &pg::PgServer, assets: usize, extra: &str) -> String {
    let mut watches = String::new();
    for i in 1..=assets {
        watches.push_str(&format!(
            "[[watch.video_asset]]\nworkspace = \"ws\"\nproject_id = \"1\"\nasset_id = \"{i}\"\n"
        ));
    }
    config_text(
        sim_url,
        extra,
        &format!(
            "{watches}\n[poll]\ninterval = \"100ms\"\ndiscovery_interval = \"300ms\"\nmax_backoff = \"300ms\"\n\n\
             [[sink.log]]\npath = \"events.jsonl\"\n\n[cluster]\nlease_ttl = \"3s\"\n\n{}",
            server.state_toml()
        ),
    )
}

fn scenario(assets: usize) -> String {
    (1..=assets)
        .map(|i| {
            format!(
                "[[video_asset]]\nworkspace = \"ws\"\nproject_id = \"1\"\nasset_id = \"{i}\"\nimport = [{{ at = \"0s\", status = \"S0\" }}]\n"
            )
        })
        .collect()
}

/// How many unexpired leases each holder has, read from the database.
fn holdings(server: &pg::PgServer) -> Vec<u16> {
    // Nothing is held before the first replica has made the schema.
    if server
        .sql_in("ncp_watchd", "SELECT to_regclass('leases') IS NOT NULL")
        .trim()
        != "t"
    {
        return Vec::new();
    }
    let out = server.sql_in(
        "ncp_watchd",
        "SELECT COALESCE(string_agg(n::text, ',' ORDER BY n DESC), '') FROM \
         (SELECT COUNT(*) AS n FROM leases WHERE holder IS NOT NULL AND expires_at > now() GROUP BY holder) h",
    );
    out.trim()
        .split(',')
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().unwrap())
        .collect()
}

async fn wait_holdings(server: &pg::PgServer, want: &[u16], within: Duration) {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let now = holdings(server);
        if now == want {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "leases held {now:?}, waited for {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The pid of the replica holding `shard`.
fn holder_pid(server: &pg::PgServer, shard: u16) -> Option<u32> {
    server
        .sql_in(
            "ncp_watchd",
            &format!(
                "SELECT r.pid FROM leases l JOIN replicas r ON r.id = l.holder WHERE l.shard = {shard} AND l.expires_at > now()"
            ),
        )
        .trim()
        .parse()
        .ok()
}

/// Every committed event, from the outbox.
fn outbox(server: &pg::PgServer) -> Vec<Value> {
    let out = server.sql_in(
        "ncp_watchd",
        "SELECT COALESCE(json_agg(body::json ORDER BY seq), '[]') FROM outbox",
    );
    serde_json::from_str(out.trim()).unwrap()
}

/// Waits until the outbox holds an event of `event_type` for every subject; returns the
/// whole outbox then.
async fn wait_outbox(server: &pg::PgServer, subjects: &[String], event_type: &str, within: Duration) -> Vec<Value> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let events = outbox(server);
        if subjects.iter().all(|s| {
            events
                .iter()
                .any(|e| e["subject"] == s.as_str() && e["type"] == event_type)
        }) {
            return events;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not every subject had {event_type}:\n{}",
            summary(&events)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The subject of the video asset `i` of the tests' project.
fn asset_subject(i: impl std::fmt::Display) -> String {
    format!("workspaces/ws/projects/1/video-assets/{i}")
}

/// Waits until every subject's import is `COMPLETED` in the outbox, each change in its
/// chain once (see [`assert_chains`]); returns the whole outbox then.
async fn wait_completed(server: &pg::PgServer, subjects: &[String], within: Duration) -> Vec<Value> {
    let events = wait_outbox(server, subjects, "video_asset.import.completed", within).await;
    assert_chains(&events, subjects, "COMPLETED");
    events
}

/// Per subject, the outbox holds a chain from first sight to `last`, each link once: no
/// change lost, none emitted twice.
fn assert_chains(events: &[Value], subjects: &[String], last: &str) {
    for s in subjects {
        let chain: Vec<_> = events
            .iter()
            .map(transition)
            .filter(|t| &t.1 == s && t.0.starts_with("video_asset.import"))
            .collect();
        assert!(!chain.is_empty(), "{s} never seen:\n{}", summary(events));
        assert_eq!(chain[0].2, None, "{s} starts with a first sight:\n{chain:?}");
        for pair in chain.windows(2) {
            assert_eq!(
                pair[1].2.as_deref(),
                Some(pair[0].3.as_str()),
                "{s}: a change was lost or emitted twice:\n{chain:?}"
            );
        }
        assert_eq!(chain.last().unwrap().3, last, "{s}: {chain:?}");
    }
}

/// The ids of the events the replicas' log sinks wrote.
fn delivered_ids(replicas: &[&Daemon]) -> HashSet<String> {
    replicas
        .iter()
        .flat_map(|r| read_events(&r.dir.join("events.jsonl")))
        .map(|e| e["id"].as_str().unwrap().to_string())
        .collect()
}

/// Every committed event reached some replica's log sink.
fn assert_delivered(events: &[Value], replicas: &[&Daemon]) {
    let seen = delivered_ids(replicas);
    for e in events {
        assert!(
            seen.contains(e["id"].as_str().unwrap()),
            "event {} ({} {}) was committed but never delivered",
            e["id"],
            e["type"],
            e["subject"]
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn three_replicas_lose_two_to_kill_9_and_every_change_is_emitted_once_and_delivered() {
    let Some(server) = pg::start(false) else { return };
    let assets = 12;
    let sim = std::sync::Arc::new(sim_with(&scenario(assets), 100_000).await);
    let config = cluster_config(&sim.url(), &server, assets, "");
    let mut a = Daemon::start(&config).await;
    let mut b = Daemon::start(&config).await;
    let c = Daemon::start(&config).await;
    wait_holdings(&server, &[6, 5, 5], Duration::from_secs(30)).await;

    // The world changes in the background while replicas die: each asset walks S1, S2, …
    let churn = crate::helpers::Churn::start(sim.clone(), assets, 50..150);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    a.signal("KILL");
    a.exit_within(Duration::from_secs(5)).await;
    // The survivors take the dead one's shards once its leases expire (3 s).
    wait_holdings(&server, &[8, 8], Duration::from_secs(15)).await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    b.signal("KILL");
    b.exit_within(Duration::from_secs(5)).await;
    wait_holdings(&server, &[SHARDS], Duration::from_secs(15)).await;
    churn.finish().await;

    let subjects: Vec<String> = (1..=assets).map(asset_subject).collect();
    let events = wait_completed(&server, &subjects, Duration::from_secs(30)).await;
    // Delivery: the last replica delivers what it committed and what the dead left behind.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let seen = delivered_ids(&[&a, &b, &c]);
        let all_there = events.iter().all(|e| seen.contains(e["id"].as_str().unwrap()));
        if all_there || tokio::time::Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_delivered(&events, &[&a, &b, &c]);
    assert!(!c.log().contains(pg::PASSWORD));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_replica_frozen_past_its_lease_cannot_commit_when_it_wakes_and_nothing_is_repeated() {
    let Some(server) = pg::start(false) else { return };
    let assets = 8;
    let sim = std::sync::Arc::new(sim_with(&scenario(assets), 100_000).await);
    let config = cluster_config(&sim.url(), &server, assets, "");
    let a = Daemon::start(&config).await;
    let b = Daemon::start(&config).await;
    wait_holdings(&server, &[8, 8], Duration::from_secs(30)).await;
    let subjects: Vec<String> = (1..=assets).map(asset_subject).collect();
    // Freeze the replica holding asset 1's shard: it stops mid-work, leases and all.
    let shard = shard_of(&subjects[0]);
    let frozen_pid = holder_pid(&server, shard).expect("the shard has a holder");
    let (frozen, other) = if a.child.id() == Some(frozen_pid) {
        (&a, &b)
    } else {
        (&b, &a)
    };
    let epoch_before: i64 = server
        .sql_in("ncp_watchd", &format!("SELECT epoch FROM leases WHERE shard = {shard}"))
        .trim()
        .parse()
        .unwrap();
    frozen.signal("STOP");
    // While it sleeps the world changes; the other replica takes its shards over.
    for i in 1..=assets {
        set_import(&sim, &i.to_string(), "S1");
    }
    wait_holdings(&server, &[SHARDS], Duration::from_secs(15)).await;
    assert_eq!(holder_pid(&server, shard), other.child.id());
    let epoch_after: i64 = server
        .sql_in("ncp_watchd", &format!("SELECT epoch FROM leases WHERE shard = {shard}"))
        .trim()
        .parse()
        .unwrap();
    assert!(epoch_after > epoch_before, "the takeover raised the shard's epoch");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !subjects.iter().all(|s| {
        outbox(&server)
            .iter()
            .any(|e| e["subject"] == s.as_str() && e["data"]["current"] == "S1")
    }) {
        assert!(tokio::time::Instant::now() < deadline, "{}", other.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // It wakes with polls and results of the old epoch in hand, and a next change to see.
    for i in 1..=assets {
        set_import(&sim, &i.to_string(), "COMPLETED");
    }
    frozen.signal("CONT");
    // It notices it lost its leases (or has its stale commit fenced) and rejoins.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !(frozen.log().contains("leases lost") || frozen.log().contains("commit refused")) {
        assert!(tokio::time::Instant::now() < deadline, "{}", frozen.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    wait_holdings(&server, &[8, 8], Duration::from_secs(20)).await;
    wait_completed(&server, &subjects, Duration::from_secs(20)).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn replicas_joining_get_a_fair_share_of_the_shards_and_changes_still_come_once() {
    let Some(server) = pg::start(false) else { return };
    let assets = 6;
    let sim = sim_with(&scenario(assets), 100_000).await;
    let config = cluster_config(&sim.url(), &server, assets, "");
    let first = Daemon::start(&config).await;
    wait_holdings(&server, &[SHARDS], Duration::from_secs(20)).await;
    let second = Daemon::start(&config).await;
    wait_holdings(&server, &[8, 8], Duration::from_secs(20)).await;
    let third = Daemon::start(&config).await;
    wait_holdings(&server, &[6, 5, 5], Duration::from_secs(20)).await;
    for i in 1..=assets {
        set_import(&sim, &i.to_string(), "COMPLETED");
    }
    let subjects: Vec<String> = (1..=assets).map(asset_subject).collect();
    wait_completed(&server, &subjects, Duration::from_secs(20)).await;
    // A clean stop hands the shards over at once, not after the lease expires.
    let mut third = third;
    third.signal("TERM");
    assert!(
        third.exit_within(Duration::from_secs(10)).await.success(),
        "{}",
        third.log()
    );
    wait_holdings(&server, &[8, 8], Duration::from_secs(5)).await;
    // `status` lists the replicas and their shards.
    let cfg = first.dir.join("config.toml");
    let out = crate::helpers::watchd(&["status", "-c", cfg.to_str().unwrap()], &crate::helpers::sim_env()).await;
    let (stdout, stderr) = crate::helpers::text(&out);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert_eq!(stdout.matches("replica ").count(), 2, "{stdout}");
    // With its shards and its lease's age (SPEC §9).
    assert_eq!(stdout.matches(", leases renewed ").count(), 2, "{stdout}");
    assert!(
        stdout.contains("shards [") && stdout.contains(" ago, expire in "),
        "{stdout}"
    );
    drop(second);
}

#[tokio::test(flavor = "multi_thread")]
async fn three_replicas_share_one_quota_and_no_minute_holds_more() {
    let Some(server) = pg::start(false) else { return };
    let assets = 60;
    let quota = 300;
    // The simulator holds the same quota: any excess of the cluster's would be a 429.
    let sim = sim_with(&scenario(assets), quota).await;
    let config = cluster_config(&sim.url(), &server, assets, &format!("rate_limit_per_minute = {quota}"));
    let replicas = [
        Daemon::start(&config).await,
        Daemon::start(&config).await,
        Daemon::start(&config).await,
    ];
    wait_holdings(&server, &[6, 5, 5], Duration::from_secs(30)).await;
    let started = std::time::Instant::now();
    // Demand is far beyond the quota (60 items every 100 ms); run past one full minute.
    tokio::time::sleep(Duration::from_secs(70)).await;
    for r in &replicas {
        r.signal("TERM");
    }
    let log = sim.requests();
    let refused = log.iter().filter(|r| r.status == 429).count();
    assert_eq!(refused, 0, "the cluster went over the quota {refused} times");
    let times: Vec<i64> = log.iter().map(|r| r.at_ms).collect();
    let mut busiest = 0;
    for (i, t0) in times.iter().enumerate() {
        let in_window = times[i..].iter().take_while(|t| **t < t0 + 60_000).count();
        busiest = busiest.max(in_window);
    }
    assert!(busiest <= quota as usize, "{busiest} calls in one minute");
    // And the quota is used: the last minute holds most of it.
    let end = *times.last().unwrap();
    let last_minute = times.iter().filter(|t| **t > end - 60_000).count();
    assert!(
        last_minute as f64 >= 0.85 * f64::from(quota),
        "only {last_minute} calls in the last minute of {:?}",
        started.elapsed()
    );
}

#[test]
fn a_commit_under_a_lease_taken_over_is_refused_whole() {
    let Some(server) = pg::start(false) else { return };
    let state = server.state_config("sslmode=disable");
    let mut store = Store::open(&state).unwrap();
    let ncp_watchd::config::StateConfig::Postgres(pg) = &state else {
        unreachable!()
    };
    let leases = Leases::open(pg).unwrap();
    let ttl = Duration::from_secs(30);
    let got = leases.acquire("replica-a", SHARDS, ttl).unwrap();
    assert_eq!(got.len(), usize::from(SHARDS));
    let subject = "workspaces/ws/projects/1/video-assets/7";
    let shard = shard_of(subject);
    set_fence(Some(Fence {
        holder: "replica-a".into(),
        held: got.clone(),
        draining: HashMap::new(),
    }));
    let event = |id: &str| OutboxEvent {
        id: id.into(),
        event_type: "video_asset.import.completed".into(),
        subject: subject.into(),
        body: "{}".into(),
    };
    store.commit(&[], &[], &[event("e1")], &[]).unwrap();
    // Replica A freezes; its lease runs out; replica B takes the shard (a new epoch).
    server.sql_in(
        "ncp_watchd",
        &format!("UPDATE leases SET expires_at = now() - interval '1 second' WHERE shard = {shard}"),
    );
    let taken = leases.acquire("replica-b", 1, ttl).unwrap();
    assert_eq!(taken.keys().copied().collect::<Vec<_>>(), vec![shard]);
    assert!(taken[&shard] > got[&shard]);
    // A wakes and commits with what it still believes: refused, and nothing written.
    let item = ItemRow {
        key: format!("import:{subject}"),
        kind: "import".into(),
        subject: subject.into(),
        watch: None,
        params: "{}".into(),
        origin: "config".into(),
        active: true,
        status: Some("COMPLETED".into()),
        percent: None,
        terminal: true,
        next_due_ms: None,
        failures: 0,
        failing: false,
        last_error: None,
        last_polled_ms: None,
        last_change_ms: None,
        since_ms: None,
        stalled: false,
        changed_at_ms: None,
    };
    let err = store
        .commit(std::slice::from_ref(&item), &[], &[event("e2")], &[])
        .unwrap_err();
    assert!(matches!(err, StoreError::Fenced { .. }), "{err}");
    assert!(err.to_string().contains(&format!("[{shard}]")), "{err}");
    assert_eq!(store.outbox_len().unwrap(), 1, "the stale event was not written");
    assert_eq!(store.item_count().unwrap(), 0, "the stale state was not written");
    // A shard it still holds takes its commits; an item of the lost shard may only be
    // created for its new holder, never changed.
    let other = (0..1000)
        .map(|i| format!("query-assets/k{i}.jpg"))
        .find(|s| shard_of(s) != shard)
        .unwrap();
    store
        .commit(
            &[],
            &[],
            &[OutboxEvent {
                subject: other,
                ..event("e3")
            }],
            std::slice::from_ref(&item),
        )
        .unwrap();
    assert_eq!(store.outbox_len().unwrap(), 2);
    assert_eq!(store.item_count().unwrap(), 1);
    // A sink's progress in the lost shard is refused the same way.
    let sink = ncp_watchd::store::shard_sink("log:out", Some(shard));
    store.cursor(&sink).unwrap();
    assert!(matches!(store.set_cursor(&sink, 1), Err(StoreError::Fenced { .. })));
    set_fence(None);
    assert!(ShardSet::all().contains(shard));
}

#[tokio::test(flavor = "multi_thread")]
async fn assets_one_replica_discovers_in_anothers_shards_are_polled_by_their_holder() {
    let Some(server) = pg::start(false) else { return };
    let sim = sim_with(&scenario(1), 100_000).await;
    let config = config_text(
        &sim.url(),
        "",
        &format!(
            "[[watch.project]]\nworkspace = \"ws\"\nproject_id = \"1\"\n\n\
             [poll]\ninterval = \"100ms\"\ndiscovery_interval = \"300ms\"\nmax_backoff = \"300ms\"\n\n\
             [[sink.log]]\npath = \"events.jsonl\"\n\n[cluster]\nlease_ttl = \"3s\"\n\n{}",
            server.state_toml()
        ),
    );
    let _a = Daemon::start(&config).await;
    let _b = Daemon::start(&config).await;
    wait_holdings(&server, &[8, 8], Duration::from_secs(30)).await;
    // New assets appear in the project: the list's holder finds them all, and each one's
    // import is created in its own shard, half of them held by the other replica.
    let subjects: Vec<String> = (2..=21)
        .map(|i| {
            set_import(&sim, &i.to_string(), "IN_PROGRESS");
            asset_subject(i)
        })
        .collect();
    let list_holder = holder_pid(&server, shard_of("workspaces/ws/projects/1"));
    let elsewhere = subjects
        .iter()
        .filter(|s| holder_pid(&server, shard_of(s)) != list_holder)
        .count();
    assert!(
        elsewhere > 0,
        "some discovered asset lives in the other replica's shards"
    );
    let events = wait_outbox(
        &server,
        &subjects,
        "video_asset.import.in_progress",
        Duration::from_secs(20),
    )
    .await;
    // Each first sight once, by whichever replica holds the asset.
    for s in &subjects {
        let n = events
            .iter()
            .filter(|e| e["subject"] == s.as_str() && e["type"] == "video_asset.import.in_progress")
            .count();
        assert_eq!(n, 1, "{s}: {n} first sights");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_callback_to_a_replica_without_the_vod_list_reaches_its_holder() {
    const TOKEN: &str = "cbTOKEN0sentinel0a1b2c3d4e5f6a7b8c9d0e1f2";
    const ENCODE: &str = "vodstation/categories/7/files/a.mp4/outputs/hls";
    let Some(server) = pg::start(false) else { return };
    let sim = sim_with(
        "[[vod]]\ncategory_id = \"7\"\ncategory_name = \"news\"\nfile_path = \"a.mp4\"\noutput_type = \"hls\"\n\
         started_ago = \"5m\"\nencode = [{ at = \"0s\", status = \"RUNNING\", percent = 10 }]\n",
        100_000,
    )
    .await;
    // The VOD list is read every 30 s at most; only a callback makes it due sooner.
    let config = config_text(
        &sim.url(),
        "",
        &format!(
            "[[watch.vod]]\ncategories = [\"7\"]\n\n[poll]\ninterval = \"30s\"\ndiscovery_interval = \"30s\"\n\n\
             [callbacks]\nvod_token_env = \"VOD_TOKEN\"\nfallback_interval = \"5m\"\n\n\
             [cluster]\nlease_ttl = \"3s\"\n\n{}",
            server.state_toml()
        ),
    );
    let start = || async {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join("config.toml"), &config).unwrap();
        let mut d = Daemon::start_with_env(tmp.path(), &[("VOD_TOKEN", TOKEN)]).await;
        d.adopt(tmp);
        d.wait_started().await;
        d
    };
    let (a, b) = (start().await, start().await);
    wait_holdings(&server, &[8, 8], Duration::from_secs(30)).await;
    let subjects = vec![ENCODE.to_string()];
    wait_outbox(&server, &subjects, "vod.encode.running", Duration::from_secs(30)).await;
    let holder = holder_pid(&server, shard_of("vodstation"));
    let elsewhere = if a.child.id() == holder { &b } else { &a };
    sim.set(ncp_watchd::sim::SetState::Vod {
        category_id: "7".into(),
        category_name: None,
        file_path: "a.mp4".into(),
        output_type: "hls".into(),
        status: "COMPLETE".into(),
        percent: Some(100.0),
        new_job: false,
    });
    let answer = reqwest::Client::new()
        .post(format!(
            "http://{}/callbacks/vod/{TOKEN}",
            elsewhere.server_addr().await
        ))
        .header("content-type", "application/json")
        .body(
            serde_json::json!({"categoryId": 7, "categoryName": "news", "fileId": 1, "filePath": "a.mp4",
                               "encodingOptionId": 2, "outputType": "hls", "link": "", "status": "COMPLETE"})
            .to_string(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status().as_u16(), 204);
    // Well before the 30 s read: the holder took the hint the other replica handed over.
    let events = wait_outbox(&server, &subjects, "vod.encode.complete", Duration::from_secs(10)).await;
    let complete = events.iter().find(|e| e["type"] == "vod.encode.complete").unwrap();
    assert_eq!(complete["data"]["hint"], "callback", "{complete}");
    assert!(!elsewhere.log().contains(TOKEN) && !a.log().contains(TOKEN));
}

#[test]
fn an_answer_to_a_poll_sent_before_the_shard_was_taken_again_is_dropped() {
    use ncp_watchd::daemon::engine::{Engine, PollResult, Polled, now_ms};
    use ncp_watchd::watch::{Aspect, Observation, Resource};
    let dir = tempfile::tempdir().unwrap();
    let text = crate::helpers::config_text(
        "http://127.0.0.1:9",
        "",
        &format!(
            "[[watch.video_asset]]\nworkspace = \"ws\"\nproject_id = \"1\"\nasset_id = \"1\"\n[state]\npath = \"{}\"\n",
            dir.path().join("state.db").display()
        ),
    );
    let config = crate::helpers::config(&text);
    let store = Store::open(&config.state).unwrap();
    let mut engine = Engine::open_sharded(config, store, Some(ShardSet::all())).unwrap();
    let (key, _) = engine.next_due(now_ms()).expect("the watch is due");
    let sent = now_ms() - 1;
    let answer = |at_ms| PollResult {
        key: key.clone(),
        outcome: Ok(Polled::Status(Observation {
            resource: Resource::VideoAsset {
                workspace: "ws".into(),
                project_id: "1".into(),
                asset_id: "1".into(),
            },
            aspect: Aspect::Import,
            status: "IN_PROGRESS".into(),
            percent: None,
            changed_at_ms: None,
            awaiting_file: false,
            detail: serde_json::json!({}),
        })),
        at_ms,
    };
    // The shard goes to another replica and comes back while the poll is out.
    engine.set_shards(ShardSet::EMPTY).unwrap();
    engine.set_shards(ShardSet::all()).unwrap();
    assert!(
        engine.apply(vec![answer(sent)]).unwrap().is_empty(),
        "a stale answer is dropped"
    );
    // The item is polled again, and that answer counts.
    let (again, _) = engine.next_due(now_ms() + 1).expect("the item is due again");
    assert_eq!(again, key);
    let events = engine.apply(vec![answer(now_ms())]).unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].event_type, "video_asset.import.in_progress");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_reload_that_remakes_the_client_keeps_the_replicas_share_of_the_quota() {
    let Some(server) = pg::start(false) else { return };
    let assets = 20;
    let quota = 120;
    let sim = sim_with(&scenario(assets), 100_000).await;
    let api = format!("rate_limit_per_minute = {quota}");
    let config = cluster_config(&sim.url(), &server, assets, &api);
    let a = Daemon::start(&config).await;
    let _b = Daemon::start(&config).await;
    wait_holdings(&server, &[8, 8], Duration::from_secs(30)).await;
    // A new [api] setting remakes the client of one replica (new limiters).
    let reloaded = cluster_config(&sim.url(), &server, assets, &format!("{api}\ntimeout = \"9s\""));
    std::fs::write(a.dir.join("config.toml"), reloaded).unwrap();
    a.signal("HUP");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !a.log().contains("configuration reloaded") {
        assert!(tokio::time::Instant::now() < deadline, "{}", a.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let from = ncp_watchd::daemon::engine::now_ms();
    tokio::time::sleep(Duration::from_secs(20)).await;
    // Each replica holds half the shards: 120 × 8/16 less its reserve of 4 is 56 a minute,
    // about 37 calls between them in 20 s. A reloaded replica with limiters of its own
    // beside the old ones (the polls queued there still draining) or at the whole quota
    // made 46 to 55.
    let calls = sim.requests().iter().filter(|r| r.at_ms >= from).count();
    assert!(calls <= 45, "{calls} calls in 20 s: a replica took more than its share");
    assert!(
        calls >= 10,
        "{calls} calls in 20 s: the shares were not used\n{}",
        a.log()
    );
}

/// The most requests that were open at one time, from when each arrived and was answered.
fn most_at_once(got: &[crate::receiver::Received]) -> usize {
    got.iter()
        .map(|r| {
            got.iter()
                .filter(|o| o.arrived <= r.arrived && r.arrived < o.answered)
                .count()
        })
        .max()
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_replica_holding_every_shard_sends_a_receiver_no_more_at_once_than_a_single_daemon() {
    use crate::receiver::{Receiver, Reply};
    let Some(server) = pg::start(false) else { return };
    // 64 assets, one event each, spread over the shards: 16 parts of the sink each have
    // events to send at once.
    let assets = 64;
    let sim = sim_with(&scenario(assets), 100_000).await;
    let receiver = Receiver::start("127.0.0.1:0".parse().unwrap(), vec![]).await;
    receiver.set_fallback(Reply::Slow(200, 400));
    let shards: HashSet<u16> = (1..=assets).map(|i| shard_of(&asset_subject(i))).collect();
    assert!(shards.len() >= 12, "the events fall in {} shards only", shards.len());
    let sink = format!(
        "\n[[sink.webhook]]\nname = \"ops\"\nurl = \"{}\"\ntimeout = \"5s\"\nevents = [\"video_asset.import.*\"]\n",
        receiver.url()
    );
    let config = cluster_config(&sim.url(), &server, assets, "") + &sink;
    let replica = Daemon::start(&config).await;
    let got = receiver.wait_delivered(assets, Duration::from_secs(60)).await;
    assert_eq!(got.len(), assets, "{}", replica.log());
    let at_once = most_at_once(&got);
    // The sink's bound (16 in flight) holds for the replica as a whole, not per shard, and
    // the shards' parts still send side by side.
    assert!(at_once <= 16, "{at_once} requests were open at once");
    assert!(
        at_once >= 4,
        "only {at_once} request(s) open at once: the parts did not send side by side"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_replica_whose_store_stops_answering_is_not_ready_once_its_leases_run_out() {
    let Some(server) = pg::start(false) else { return };
    let assets = 4;
    let sim = sim_with(&scenario(assets), 100_000).await;
    let config = cluster_config(&sim.url(), &server, assets, "");
    let replica = Daemon::start(&config).await;
    wait_holdings(&server, &[SHARDS], Duration::from_secs(20)).await;
    let addr = replica.server_addr().await;
    let readyz = || async move {
        reqwest::get(format!("http://{addr}/readyz"))
            .await
            .map(|r| r.status().as_u16())
            .unwrap_or(0)
    };
    let wait_readyz = |want: u16, within: Duration| async move {
        let deadline = tokio::time::Instant::now() + within;
        while readyz().await != want {
            assert!(tokio::time::Instant::now() < deadline, "/readyz never answered {want}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    wait_readyz(200, Duration::from_secs(20)).await;
    // The server freezes with every connection open: no error, no answer. The leases
    // (3 s) run out unrenewed, and the replica says it is not ready.
    server.signal_all("STOP");
    let frozen = tokio::time::Instant::now();
    wait_readyz(503, Duration::from_secs(10)).await;
    assert!(
        frozen.elapsed() < Duration::from_secs(6),
        "not ready only after {:?}",
        frozen.elapsed()
    );
    // And it makes no more calls: its share of the quota is nothing, even while its loop
    // may wait on the frozen store.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let metrics = reqwest::get(format!("http://{addr}/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        if metrics.contains("ncp_watchd_quota_share_per_minute{host=\"media\"} 0\n") {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the share was kept:\n{metrics}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // When it answers again, the replica takes its shards back and polls them.
    server.signal_all("CONT");
    wait_readyz(200, Duration::from_secs(30)).await;
    set_import(&sim, "1", "COMPLETED");
    wait_outbox(
        &server,
        &["workspaces/ws/projects/1/video-assets/1".to_string()],
        "video_asset.import.completed",
        Duration::from_secs(30),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_refused_key_is_one_account_event_even_when_the_accounts_holder_watches_nothing() {
    let Some(server) = pg::start(false) else { return };
    let prefix: String = ncp_watchd::sim::DEFAULT_ACCESS_KEY.chars().take(8).collect();
    let account = format!("accounts/{prefix}");
    let account_shard = shard_of(&account);
    // A second replica joining takes the upper half of the shards (8–15) and the first keeps
    // the lower: the one watched asset lies in the half without the account's shard.
    let asset = (1..)
        .find(|i| (shard_of(&asset_subject(*i)) < 8) != (account_shard < 8))
        .unwrap();
    let sim = sim_with(
        &format!("[[video_asset]]\nworkspace = \"ws\"\nproject_id = \"1\"\nasset_id = \"{asset}\"\nimport = [{{ at = \"0s\", status = \"S0\" }}]\n"),
        100_000,
    )
    .await;
    let keys = tempfile::tempdir().unwrap();
    let (ak, sk) = (keys.path().join("ak"), keys.path().join("sk"));
    std::fs::write(&ak, ncp_watchd::sim::DEFAULT_ACCESS_KEY).unwrap();
    std::fs::write(&sk, ncp_watchd::sim::DEFAULT_SECRET_KEY).unwrap();
    let config = config_text(
        &sim.url(),
        "",
        &format!(
            "[credentials]\naccess_key_file = \"{}\"\nsecret_key_file = \"{}\"\n\
             [[watch.video_asset]]\nworkspace = \"ws\"\nproject_id = \"1\"\nasset_id = \"{asset}\"\n\
             [poll]\ninterval = \"100ms\"\nmax_backoff = \"300ms\"\n\n[cluster]\nlease_ttl = \"3s\"\n\n{}",
            ak.display(),
            sk.display(),
            server.state_toml()
        ),
    );
    let first = Daemon::start(&config).await;
    wait_holdings(&server, &[SHARDS], Duration::from_secs(20)).await;
    let second = Daemon::start(&config).await;
    wait_holdings(&server, &[8, 8], Duration::from_secs(20)).await;
    assert_ne!(
        holder_pid(&server, account_shard),
        holder_pid(&server, shard_of(&asset_subject(asset))),
        "the account's shard and the asset's are held apart"
    );
    wait_outbox(
        &server,
        &[asset_subject(asset)],
        "video_asset.import.s0",
        Duration::from_secs(20),
    )
    .await;
    // The key is refused from now on (only the asset's holder is told so by the gateway),
    // then good again: one event each time, from the account's holder.
    for (secret, event) in [
        ("not-the-secret", "account.failing"),
        (ncp_watchd::sim::DEFAULT_SECRET_KEY, "account.recovered"),
    ] {
        std::fs::write(&sk, secret).unwrap();
        first.signal("HUP");
        second.signal("HUP");
        let events = wait_outbox(&server, std::slice::from_ref(&account), event, Duration::from_secs(30)).await;
        assert_eq!(
            events.iter().filter(|e| e["type"] == "account.failing").count(),
            1,
            "{}",
            summary(&events)
        );
    }
}
