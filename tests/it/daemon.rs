//! `ncp-watchd run`: the real binary against the simulator, through restarts, crashes,
//! faults and reloads.

use std::collections::BTreeMap;
use std::time::Duration;

use ncp_watchd::sim::{ErrorShape, Fault, FaultAction};
use serde_json::Value;

use crate::helpers::{
    Daemon, FAST_POLL, TWO_ASSETS, config_text, has, read_events, set_import, sim_with, summary, transition,
};

type Transition = (String, String, Option<String>, String);

fn t(ty: &str, subject: &str, previous: Option<&str>, current: &str) -> Transition {
    (
        ty.to_string(),
        subject.to_string(),
        previous.map(str::to_string),
        current.to_string(),
    )
}

fn fault(path: &str, count: u32, action: FaultAction) -> Fault {
    Fault {
        path_contains: Some(path.to_string()),
        count,
        action,
    }
}

const EVERY_TYPE_SCENARIO: &str = r#"
[[video_asset]]
workspace = "ws"
project_id = "1"
asset_id = "10"
import = [{ at = "0s", status = "IN_PROGRESS" }, { at = "1s", status = "COMPLETED" }]
analysis = [{ at = "0s", status = "BEFORE_ANALYZE" }, { at = "2500ms", status = "WAIT_ANALYZE" }, { at = "3500ms", status = "ANALYZING" }, { at = "4500ms", status = "ANALYZE_COMPLETED" }]

[[video_asset]]
workspace = "ws"
project_id = "1"
asset_id = "11"
import = [{ at = "0s", status = "COMPLETED" }]
analysis = [{ at = "0s", status = "BEFORE_ANALYZE" }, { at = "2s", status = "ANALYZE_FAIL" }]

[[video_asset]]
workspace = "ws"
project_id = "1"
asset_id = "12"
import = [{ at = "0s", status = "COMPLETED" }]
analysis = [{ at = "0s", status = "BEFORE_ANALYZE" }, { at = "2s", status = "ANALYZE_CANCEL" }]

[[video_asset]]
workspace = "ws"
project_id = "1"
asset_id = "13"
import = [{ at = "0s", status = "IN_PROGRESS" }, { at = "5s", status = "COMPLETED" }]

[[video_asset]]
workspace = "ws"
project_id = "1"
asset_id = "14"
import = [{ at = "0s", status = "IN_PROGRESS" }, { at = "3s", status = "COMPLETED" }]

[[video_asset]]
workspace = "ws"
project_id = "2"
asset_id = "20"
import = [{ at = "0s", status = "IN_PROGRESS" }, { at = "2s", status = "FAILED" }]

[[video_asset]]
workspace = "ws"
project_id = "2"
asset_id = "21"
import = [{ at = "0s", status = "IN_PROGRESS" }, { at = "2s", status = "FILE_NOT_EXIST" }]

[[video_asset]]
workspace = "ws"
project_id = "2"
asset_id = "22"
import = [{ at = "1s", status = "IN_PROGRESS" }, { at = "3s", status = "INVALID_METADATA" }]

[[search_image]]
asset_key = "s1.jpg"
upload = [{ at = "0s", status = "COMPLETED" }]

[[search_image]]
asset_key = "s2.jpg"
upload = [{ at = "0s", status = "FAILED", message = "OVER_SIZE_LIMIT" }]

[[vod]]
category_id = "7"
category_name = "c7"
file_path = "e1.mp4"
output_type = "hls"
encode = [{ at = "0s", status = "WAITING", percent = 0 }, { at = "1s", status = "RUNNING", percent = 30 }, { at = "2s", status = "RUNNING", percent = 60 }, { at = "3s", status = "COMPLETE", percent = 100 }]

[[vod]]
category_id = "7"
category_name = "c7"
file_path = "e2.mp4"
output_type = "hls"
encode = [{ at = "0s", status = "RUNNING", percent = 10 }, { at = "2s", status = "FAILURE", percent = 10 }]

[[vod]]
category_id = "7"
category_name = "c7"
file_path = "e3.mp4"
output_type = "hls"
encode = [{ at = "0s", status = "WAITING", percent = 0 }, { at = "2s", status = "CANCELED", percent = 0 }]

[[vod]]
category_id = "8"
category_name = "unwatched"
file_path = "x.mp4"
output_type = "hls"
encode = [{ at = "0s", status = "COMPLETE", percent = 100 }]
"#;

const EVERY_TYPE_WATCHES: &str = r#"
[[watch.video_asset]]
workspace = "ws"
project_id = "1"
asset_id = "10"
analysis = true

[[watch.video_asset]]
workspace = "ws"
project_id = "1"
asset_id = "11"
analysis = true

[[watch.video_asset]]
workspace = "ws"
project_id = "1"
asset_id = "12"
analysis = true

[[watch.video_asset]]
workspace = "ws"
project_id = "1"
asset_id = "13"

[[watch.video_asset]]
workspace = "ws"
project_id = "1"
asset_id = "14"

[[watch.project]]
workspace = "ws"
project_id = "2"

[[watch.search_image]]
asset_key = "s1.jpg"

[[watch.search_image]]
asset_key = "s2.jpg"

[[watch.vod]]
categories = ["7"]
progress_step = 25
"#;

fn every_type_expected() -> Vec<Transition> {
    let a = |id: &str| format!("workspaces/ws/projects/1/video-assets/{id}");
    let p = |id: &str| format!("workspaces/ws/projects/2/video-assets/{id}");
    let listed = |id: &str| format!("workspaces/ws/projects/2/assets/{id}");
    let e = |f: &str| format!("vodstation/categories/7/files/{f}/outputs/hls");
    let mut v = vec![
        t("video_asset.import.in_progress", &a("10"), None, "IN_PROGRESS"),
        t(
            "video_asset.import.completed",
            &a("10"),
            Some("IN_PROGRESS"),
            "COMPLETED",
        ),
        t("video_asset.analysis.before_analyze", &a("10"), None, "BEFORE_ANALYZE"),
        t(
            "video_asset.analysis.wait_analyze",
            &a("10"),
            Some("BEFORE_ANALYZE"),
            "WAIT_ANALYZE",
        ),
        t(
            "video_asset.analysis.analyzing",
            &a("10"),
            Some("WAIT_ANALYZE"),
            "ANALYZING",
        ),
        t(
            "video_asset.analysis.analyze_completed",
            &a("10"),
            Some("ANALYZING"),
            "ANALYZE_COMPLETED",
        ),
        t("video_asset.import.completed", &a("11"), None, "COMPLETED"),
        t("video_asset.analysis.before_analyze", &a("11"), None, "BEFORE_ANALYZE"),
        t(
            "video_asset.analysis.analyze_fail",
            &a("11"),
            Some("BEFORE_ANALYZE"),
            "ANALYZE_FAIL",
        ),
        t("video_asset.import.completed", &a("12"), None, "COMPLETED"),
        t("video_asset.analysis.before_analyze", &a("12"), None, "BEFORE_ANALYZE"),
        t(
            "video_asset.analysis.analyze_cancel",
            &a("12"),
            Some("BEFORE_ANALYZE"),
            "ANALYZE_CANCEL",
        ),
        t("project.asset.discovered", &listed("20"), None, "LISTED"),
        t("project.asset.discovered", &listed("21"), None, "LISTED"),
        t("project.asset.discovered", &listed("22"), None, "LISTED"),
        t("video_asset.import.in_progress", &p("20"), None, "IN_PROGRESS"),
        t("video_asset.import.failed", &p("20"), Some("IN_PROGRESS"), "FAILED"),
        t("video_asset.import.in_progress", &p("21"), None, "IN_PROGRESS"),
        t(
            "video_asset.import.file_not_exist",
            &p("21"),
            Some("IN_PROGRESS"),
            "FILE_NOT_EXIST",
        ),
        t("video_asset.import.in_progress", &p("22"), None, "IN_PROGRESS"),
        t(
            "video_asset.import.invalid_metadata",
            &p("22"),
            Some("IN_PROGRESS"),
            "INVALID_METADATA",
        ),
        t(
            "search_image.upload.completed",
            "query-assets/s1.jpg",
            None,
            "COMPLETED",
        ),
        t("search_image.upload.failed", "query-assets/s2.jpg", None, "FAILED"),
        t("vod.encode.waiting", &e("e1.mp4"), None, "WAITING"),
        t("vod.encode.running", &e("e1.mp4"), Some("WAITING"), "RUNNING"),
        t("vod.encode.progress", &e("e1.mp4"), Some("RUNNING"), "RUNNING"),
        t("vod.encode.complete", &e("e1.mp4"), Some("RUNNING"), "COMPLETE"),
        t("vod.encode.running", &e("e2.mp4"), None, "RUNNING"),
        t("vod.encode.failure", &e("e2.mp4"), Some("RUNNING"), "FAILURE"),
        t("vod.encode.waiting", &e("e3.mp4"), None, "WAITING"),
        t("vod.encode.canceled", &e("e3.mp4"), Some("WAITING"), "CANCELED"),
    ];
    // 13's server errors fail the watch after five tries; 14's refused key is the
    // account's, one account.failing however many watches it hits (SPEC §8).
    v.push(t("watch.failing", &a("13"), None, "UNKNOWN"));
    v.push(t("watch.recovered", &a("13"), None, "UNKNOWN"));
    let account = format!("accounts/{}", &ncp_watchd::sim::DEFAULT_ACCESS_KEY[..8]);
    v.push(t("account.failing", &account, None, "UNKNOWN"));
    v.push(t("account.recovered", &account, None, "UNKNOWN"));
    for id in ["13", "14"] {
        v.push(t("video_asset.import.in_progress", &a(id), None, "IN_PROGRESS"));
        v.push(t(
            "video_asset.import.completed",
            &a(id),
            Some("IN_PROGRESS"),
            "COMPLETED",
        ));
    }
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread")]
async fn every_event_type_is_produced_with_exact_previous_and_current() {
    let sim = sim_with(EVERY_TYPE_SCENARIO, 6000).await;
    let server_error = FaultAction::Error {
        status: 503,
        error_code: None,
        retry_after: None,
        shape: ErrorShape::Gateway,
    };
    sim.inject(fault("/video-assets/13/import-status", 5, server_error));
    let refused = FaultAction::Error {
        status: 401,
        error_code: Some("200".into()),
        retry_after: None,
        shape: ErrorShape::Gateway,
    };
    sim.inject(fault("/video-assets/14/import-status", 1, refused));
    let daemon = Daemon::start(&config_text(
        &sim.url(),
        "",
        &format!("{EVERY_TYPE_WATCHES}\n{FAST_POLL}"),
    ))
    .await;
    let expected = every_type_expected();
    let events = daemon
        .wait_for(Duration::from_secs(40), "every expected transition", |events| {
            let got: Vec<Transition> = events.iter().map(transition).collect();
            expected.iter().all(|e| got.contains(e))
        })
        .await;
    let mut got: Vec<Transition> = events.iter().map(transition).collect();
    got.sort();
    assert_eq!(
        got,
        expected,
        "exactly the expected transitions, each once:\n{}",
        summary(&events)
    );

    let failing = |id: &str| {
        events
            .iter()
            .find(|e| {
                e["type"] == "watch.failing" && e["subject"] == format!("workspaces/ws/projects/1/video-assets/{id}")
            })
            .unwrap()["data"]["error"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert!(failing("13").contains("server error (HTTP 503"), "{}", failing("13"));
    let account = events.iter().find(|e| e["type"] == "account.failing").unwrap();
    let refused = account["data"]["error"].as_str().unwrap();
    assert!(refused.contains("authentication refused"), "{refused}");
    let statuses: Vec<u16> = sim
        .requests()
        .iter()
        .filter(|r| r.target.contains("/13/"))
        .map(|r| r.status)
        .collect();
    assert_eq!(
        &statuses[..6],
        &[503, 503, 503, 503, 503, 200],
        "failing after exactly five failures"
    );
    let ids: std::collections::HashSet<&str> = events.iter().map(|e| e["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), events.len(), "every event has its own id");
    for e in &events {
        let id = uuid::Uuid::parse_str(e["id"].as_str().unwrap()).unwrap();
        assert_eq!(id.get_version_num(), 7);
    }
}

const CHANGING_WATCHES: &str = r#"
[[watch.project]]
workspace = "ws"
project_id = "1"
"#;

#[tokio::test(flavor = "multi_thread")]
async fn a_restart_neither_repeats_nor_misses_a_transition() {
    let sim = sim_with(TWO_ASSETS, 6000).await;
    let mut daemon = Daemon::start(&config_text(
        &sim.url(),
        "",
        &format!("{CHANGING_WATCHES}\n{FAST_POLL}"),
    ))
    .await;
    let a1 = "workspaces/ws/projects/1/video-assets/1";
    let a2 = "workspaces/ws/projects/1/video-assets/2";
    daemon
        .wait_for(Duration::from_secs(20), "first sight of both assets", |e| {
            has(e, "video_asset.import.in_progress", a1) && has(e, "video_asset.import.in_progress", a2)
        })
        .await;
    daemon.signal("TERM");
    let status = daemon.exit_within(Duration::from_secs(10)).await;
    assert!(status.success(), "SIGTERM exits 0: {status:?}\n{}", daemon.log());

    // While it is down, the world moves on.
    set_import(&sim, "1", "COMPLETED");
    set_import(&sim, "2", "QUEUED_AGAIN");
    let tmp = daemon.keep_dir();
    let daemon = Daemon::start_in(&daemon.dir).await;
    let events = daemon
        .wait_for(Duration::from_secs(20), "the changes made while down", |e| {
            has(e, "video_asset.import.completed", a1) && has(e, "video_asset.import.queued_again", a2)
        })
        .await;
    let got: Vec<Transition> = events.iter().map(transition).collect();
    let mut counts: BTreeMap<&Transition, usize> = BTreeMap::new();
    for tr in &got {
        *counts.entry(tr).or_default() += 1;
    }
    assert!(
        counts.values().all(|n| *n == 1),
        "no transition twice:\n{}",
        summary(&events)
    );
    assert!(got.contains(&t("video_asset.import.completed", a1, Some("IN_PROGRESS"), "COMPLETED")));
    assert!(got.contains(&t(
        "video_asset.import.queued_again",
        a2,
        Some("IN_PROGRESS"),
        "QUEUED_AGAIN"
    )));
    assert_eq!(
        got.iter().filter(|t| t.0 == "project.asset.discovered").count(),
        2,
        "discovery is not repeated"
    );
    drop(tmp);
}

#[tokio::test(flavor = "multi_thread")]
async fn sigkill_at_random_moments_loses_and_repeats_nothing_but_the_line_in_flight() {
    sigkill_loop("", |dir| {
        ncp_watchd::store::Store::open(&ncp_watchd::config::StateConfig::sqlite(dir.join("state.db"))).unwrap()
    })
    .await;
}

/// Kills the daemon at random moments while the world changes, then checks that the
/// outbox holds every change exactly once and the log sink every event. `state` is the
/// `[state]` table (empty: SQLite in the daemon's directory); `open` opens that store.
pub async fn sigkill_loop(state: &str, open: impl Fn(&std::path::Path) -> ncp_watchd::store::Store) {
    let assets = 6;
    let mut scenario = String::new();
    for i in 1..=assets {
        scenario.push_str(&format!(
            "[[video_asset]]\nworkspace = \"ws\"\nproject_id = \"1\"\nasset_id = \"{i}\"\nimport = [{{ at = \"0s\", status = \"S0\" }}]\n"
        ));
    }
    let sim = std::sync::Arc::new(sim_with(&scenario, 100_000).await);
    let config = config_text(
        &sim.url(),
        "",
        &format!(
            "{CHANGING_WATCHES}\n[poll]\ninterval = \"50ms\"\ndiscovery_interval = \"100ms\"\nmax_backoff = \"200ms\"\n[[sink.log]]\npath = \"events.jsonl\"\n{state}"
        ),
    );
    // 20 cycles here; a longer soak: NCP_WATCHD_SOAK_KILLS=500 cargo test --release sigkill.
    let kills: usize = std::env::var("NCP_WATCHD_SOAK_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    // The world keeps changing in the background, for as long as the kills go on: each
    // asset walks through statuses S1, S2, ...
    let churn = crate::helpers::Churn::start(sim.clone(), assets, 20..80);
    let mut daemon = Daemon::start(&config).await;
    let tmp = daemon.keep_dir();
    let dir = daemon.dir.clone();
    for _ in 0..kills {
        tokio::time::sleep(Duration::from_millis(fastrand::u64(50..250))).await;
        daemon.signal("KILL");
        daemon.exit_within(Duration::from_secs(5)).await;
        daemon = Daemon::start_in(&dir).await;
    }
    churn.finish().await;
    daemon.wait_started().await;
    let subjects: Vec<String> = (1..=assets)
        .map(|i| format!("workspaces/ws/projects/1/video-assets/{i}"))
        .collect();
    daemon
        .wait_for(Duration::from_secs(30), "every asset's final state", |e| {
            subjects.iter().all(|s| has(e, "video_asset.import.completed", s))
        })
        .await;
    daemon.signal("TERM");
    let status = daemon.exit_within(Duration::from_secs(10)).await;
    assert!(
        status.success(),
        "{status:?}\n{}",
        daemon.log().lines().rev().take(30).collect::<Vec<_>>().join("\n")
    );

    // The outbox: per subject, a chain from first sight to COMPLETED, each link once.
    let store = open(&dir);
    let outbox = store.outbox_after(0, 1_000_000).unwrap();
    let events: Vec<Value> = outbox.iter().map(|r| serde_json::from_str(&r.body).unwrap()).collect();
    for s in &subjects {
        let chain: Vec<Transition> = events
            .iter()
            .map(transition)
            .filter(|t| &t.1 == s && t.0.starts_with("video_asset.import"))
            .collect();
        assert_eq!(chain[0].2, None, "{s} starts with a first sight:\n{}", summary(&events));
        for pair in chain.windows(2) {
            assert_eq!(
                pair[1].2.as_deref(),
                Some(pair[0].3.as_str()),
                "{s}: a change was lost or repeated:\n{chain:?}"
            );
        }
        assert_eq!(chain.last().unwrap().3, "COMPLETED");
    }
    // The log sink: every outbox event, and at most one repeat per kill.
    let lines = read_events(&dir.join("events.jsonl"));
    let ids: std::collections::HashSet<&str> = lines.iter().map(|e| e["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), outbox.len(), "every committed event reached the log");
    assert!(
        lines.len() - ids.len() <= kills,
        "{} repeated lines for {kills} kills",
        lines.len() - ids.len()
    );
    drop(tmp);
}

#[tokio::test(flavor = "multi_thread")]
async fn under_backlog_the_daemon_spends_its_quota_and_never_more() {
    let (scenario, mut watches) = importing_assets(40);
    // The project's list is one more item in the same queue: discovery must get its turns.
    watches.push_str("[[watch.project]]\nworkspace = \"ws\"\nproject_id = \"9\"\n");
    // The simulator holds the same quota as the daemon: any excess would be a 429.
    let sim = sim_with(&scenario, 600).await;
    let config = config_text(
        &sim.url(),
        "rate_limit_per_minute = 600",
        &format!("{watches}\n{FAST_POLL}"),
    );
    let mut daemon = Daemon::start(&config).await;
    let start = std::time::Instant::now();
    daemon
        .wait_for(Duration::from_secs(20), "first sight of every asset", |e| {
            e.iter()
                .filter(|e| e["type"] == "video_asset.import.in_progress")
                .count()
                >= 40
        })
        .await;
    let elapsed = start.elapsed();
    // Discovery shares the queue: while the backlog lasts, the list still gets its turns.
    let list_reads = || {
        sim.requests()
            .iter()
            .filter(|r| r.target.contains("/assets?pageNum="))
            .count()
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while list_reads() < 2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "discovery was starved: the list was read once"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    daemon.signal("TERM");
    assert!(daemon.exit_within(Duration::from_secs(10)).await.success());

    let log = sim.requests();
    assert_600_a_minute(&log);
    // In due order: every asset is polled once before any is polled twice.
    let first: std::collections::HashSet<&str> = log.iter().take(41).map(|r| r.target.as_str()).collect();
    assert_eq!(
        first.len(),
        41,
        "the first 41 calls went to 40 different assets and the list"
    );
    // 40 first sights need 40 calls: at 10 per second that is about 4 s, not 40 intervals.
    assert!(
        elapsed < Duration::from_secs(8),
        "the backlog took {elapsed:?}: the quota was not spent"
    );
}

/// A scenario of `n` video assets of project `ws/9` importing from the start, and a watch
/// of each.
fn importing_assets(n: usize) -> (String, String) {
    (1..=n)
        .map(|i| {
            (
                format!(
                    "[[video_asset]]\nworkspace = \"ws\"\nproject_id = \"9\"\nasset_id = \"{i}\"\nimport = [{{ at = \"0s\", status = \"IN_PROGRESS\" }}]\n"
                ),
                format!("[[watch.video_asset]]\nworkspace = \"ws\"\nproject_id = \"9\"\nasset_id = \"{i}\"\n"),
            )
        })
        .unzip()
}

/// No self-inflicted 429 in `log`, and no second of it above what 600 calls a minute allow:
/// 10 per second after a burst of two, so no one-second window holds more than 11 calls
/// (+1 for arrival jitter at the window's edges), which scales to no 60 s window above 600
/// (proven exactly, on a fake clock, by the limiter's unit test).
fn assert_600_a_minute(log: &[ncp_watchd::sim::RequestRecord]) {
    assert!(
        log.iter().all(|r| r.status == 200),
        "no self-inflicted 429: {:?}",
        log.iter().map(|r| (r.service.as_str(), r.status)).collect::<Vec<_>>()
    );
    let times: Vec<i64> = log.iter().map(|r| r.at_ms).collect();
    for (i, t0) in times.iter().enumerate() {
        let in_window = times[i..].iter().take_while(|t| **t < t0 + 1000).count();
        assert!(in_window <= 12, "{in_window} calls in the second after {t0}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn media_and_vod_calls_to_one_host_share_its_quota() {
    // Both services on the one simulator, whose quota counts them together (per key).
    let (scenario, watches) = importing_assets(20);
    let watches = format!("[[watch.vod]]\n{watches}");
    let sim = sim_with(&scenario, 600).await;
    let config = config_text(
        &sim.url(),
        "rate_limit_per_minute = 600",
        &format!("{watches}\n{FAST_POLL}"),
    );
    let mut daemon = Daemon::start(&config).await;
    // Both want more than the quota: 20 assets every 200 ms, the VOD list every 300 ms.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let served = |service: &str| sim.requests().iter().filter(|r| r.service == service).count();
    while served("media") < 60 || served("vod") < 5 {
        assert!(tokio::time::Instant::now() < deadline, "{}", daemon.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    daemon.signal("TERM");
    assert!(daemon.exit_within(Duration::from_secs(10)).await.success());
    assert_600_a_minute(&sim.requests());
}

#[tokio::test(flavor = "multi_thread")]
async fn faults_of_every_kind_delay_changes_but_lose_none() {
    let sim = sim_with(TWO_ASSETS, 6000).await;
    let error = |status: u16, retry_after: Option<u64>| FaultAction::Error {
        status,
        error_code: None,
        retry_after,
        shape: ErrorShape::Gateway,
    };
    sim.inject(fault("import-status", 3, error(503, None)));
    sim.inject(fault("import-status", 1, error(429, Some(1))));
    sim.inject(fault("import-status", 2, FaultAction::Malformed { body: None }));
    sim.inject(fault("import-status", 1, FaultAction::Stall { ms: 3000 }));
    sim.inject(fault("/assets?", 2, error(500, None)));
    let config = config_text(
        &sim.url(),
        "timeout = \"500ms\"",
        &format!("{CHANGING_WATCHES}\n{FAST_POLL}"),
    );
    let mut daemon = Daemon::start(&config).await;
    let a1 = "workspaces/ws/projects/1/video-assets/1";
    let a2 = "workspaces/ws/projects/1/video-assets/2";
    daemon
        .wait_for(Duration::from_secs(30), "first sight despite faults", |e| {
            has(e, "video_asset.import.in_progress", a1) && has(e, "video_asset.import.in_progress", a2)
        })
        .await;
    set_import(&sim, "1", "COMPLETED");
    set_import(&sim, "2", "FAILED");
    sim.inject(fault("import-status", 2, error(504, None)));
    let events = daemon
        .wait_for(Duration::from_secs(30), "the final states", |e| {
            has(e, "video_asset.import.completed", a1) && has(e, "video_asset.import.failed", a2)
        })
        .await;
    let statuses: Vec<u16> = sim.requests().iter().map(|r| r.status).collect();
    for code in [503, 429, 500, 504] {
        assert!(statuses.contains(&code), "the {code} fault happened: {statuses:?}");
    }
    assert!(
        daemon.child.try_wait().unwrap().is_none(),
        "the daemon is still running"
    );
    assert_eq!(
        events
            .iter()
            .filter(|e| e["type"] == "video_asset.import.in_progress")
            .count(),
        2
    );
    assert!(
        daemon.log().contains("malformed response"),
        "malformed bodies are logged"
    );
    daemon.signal("TERM");
    assert!(daemon.exit_within(Duration::from_secs(10)).await.success());
}

#[tokio::test(flavor = "multi_thread")]
async fn sighup_adds_and_removes_watches_and_an_invalid_config_changes_nothing() {
    let scenario = format!(
        "{TWO_ASSETS}\n[[search_image]]\nasset_key = \"late.jpg\"\nupload = [{{ at = \"0s\", status = \"COMPLETED\" }}]\n"
    );
    let sim = sim_with(&scenario, 6000).await;
    let one = "[[watch.video_asset]]\nworkspace = \"ws\"\nproject_id = \"1\"\nasset_id = \"1\"\n";
    let two = "[[watch.video_asset]]\nworkspace = \"ws\"\nproject_id = \"1\"\nasset_id = \"2\"\n";
    let image = "[[watch.search_image]]\nasset_key = \"late.jpg\"\n";
    let write = |dir: &std::path::Path, watches: &str| {
        std::fs::write(
            dir.join("config.toml"),
            config_text(&sim.url(), "", &format!("{watches}\n{FAST_POLL}")),
        )
        .unwrap();
    };
    let mut daemon = Daemon::start(&config_text(&sim.url(), "", &format!("{one}\n{FAST_POLL}"))).await;
    let a1 = "workspaces/ws/projects/1/video-assets/1";
    let a2 = "workspaces/ws/projects/1/video-assets/2";
    daemon
        .wait_for(Duration::from_secs(20), "the first watch", |e| {
            has(e, "video_asset.import.in_progress", a1)
        })
        .await;

    // Add asset 2 and the image, remove asset 1.
    // Also add a sink that takes only completions.
    let completions = "[[sink.log]]\nname = \"completions\"\npath = \"completions.jsonl\"\nevents = [\"video_asset.import.completed\"]\n";
    write(&daemon.dir, &format!("{two}{image}{completions}"));
    daemon.signal("HUP");
    daemon
        .wait_for(Duration::from_secs(20), "the added watches", |e| {
            has(e, "video_asset.import.in_progress", a2)
                && has(e, "search_image.upload.completed", "query-assets/late.jpg")
        })
        .await;
    let status = crate::helpers::watchd(
        &[
            "status",
            "--json",
            "-c",
            daemon.dir.join("config.toml").to_str().unwrap(),
        ],
        &[],
    )
    .await;
    let rows: Vec<Value> = serde_json::from_slice(&status.stdout).unwrap();
    let active = |subject: &str, kind: &str| {
        rows.iter()
            .find(|r| r["subject"] == subject && r["kind"] == kind)
            .map(|r| r["active"].as_bool().unwrap())
    };
    assert_eq!(
        active(a1, "import"),
        Some(false),
        "the removed watch stops, its state kept: {rows:?}"
    );
    assert_eq!(active(a2, "import"), Some(true));

    // An invalid file is refused; the running watches go on.
    std::fs::write(
        daemon.dir.join("config.toml"),
        "[[watch.video_asset]]\nworkspace = \"ws\"\nprojct_id = 1\n",
    )
    .unwrap();
    daemon.signal("HUP");
    set_import(&sim, "2", "COMPLETED");
    set_import(&sim, "1", "COMPLETED");
    daemon
        .wait_for(Duration::from_secs(20), "asset 2 to complete", |e| {
            has(e, "video_asset.import.completed", a2)
        })
        .await;
    let only_completions = read_events(&daemon.dir.join("completions.jsonl"));
    assert!(
        only_completions.iter().any(|e| e["subject"] == a2),
        "the added sink got the completion"
    );
    assert!(
        only_completions
            .iter()
            .all(|e| e["type"] == "video_asset.import.completed"),
        "{}",
        summary(&only_completions)
    );
    let log = daemon.log();
    assert!(log.contains("the new configuration is invalid"), "{log}");
    assert!(
        log.contains("config.toml:3:1: error: watch.video_asset[0].projct_id"),
        "the log names file, line and key:\n{log}"
    );
    assert!(
        !has(&daemon.events(), "video_asset.import.completed", a1),
        "the removed watch stays removed"
    );

    // Re-adding asset 1 resumes it from its kept state: the change is reported, first sight is not repeated.
    write(&daemon.dir, &format!("{one}{two}"));
    daemon.signal("HUP");
    let events = daemon
        .wait_for(Duration::from_secs(20), "asset 1 again", |e| {
            has(e, "video_asset.import.completed", a1)
        })
        .await;
    assert_eq!(
        events
            .iter()
            .filter(|e| e["type"] == "video_asset.import.in_progress" && e["subject"] == a1)
            .count(),
        1
    );

    daemon.signal("TERM");
    let started = std::time::Instant::now();
    assert!(daemon.exit_within(Duration::from_secs(10)).await.success());
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[tokio::test(flavor = "multi_thread")]
async fn json_logs_are_one_object_per_line_with_the_event_id_and_subject_and_the_flag_beats_the_config() {
    let sim = sim_with(TWO_ASSETS, 6000).await;
    let config = config_text(
        &sim.url(),
        "",
        &format!("{CHANGING_WATCHES}\n{FAST_POLL}\n[log]\nformat = \"text\"\nlevel = \"info\"\n"),
    );
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("config.toml"), config).unwrap();
    // No RUST_LOG here: the configured level and format apply.
    let log = std::fs::File::create(tmp.path().join("daemon.log")).unwrap();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_ncp-watchd"))
        .args([
            "run",
            "--log-format",
            "json",
            "-c",
            tmp.path().join("config.toml").to_str().unwrap(),
        ])
        .env_clear()
        .env("NCLOUD_ACCESS_KEY", ncp_watchd::sim::DEFAULT_ACCESS_KEY)
        .env("NCLOUD_SECRET_KEY", ncp_watchd::sim::DEFAULT_SECRET_KEY)
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let lines = loop {
        let text = std::fs::read_to_string(tmp.path().join("daemon.log")).unwrap_or_default();
        let lines: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect();
        if lines.iter().filter(|l| l["message"] == "event").count() >= 2 {
            break lines;
        }
        assert!(tokio::time::Instant::now() < deadline, "no event lines:\n{text}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let event = lines.iter().find(|l| l["message"] == "event").unwrap();
    assert!(
        event["event_id"]
            .as_str()
            .is_some_and(|id| uuid::Uuid::parse_str(id).is_ok()),
        "{event}"
    );
    assert!(
        event["subject"]
            .as_str()
            .is_some_and(|s| s.starts_with("workspaces/ws/projects/1/")),
        "{event}"
    );
    assert_eq!(event["level"], "INFO");
    let _ = std::process::Command::new("kill")
        .args(["-s", "TERM", &child.id().unwrap().to_string()])
        .status();
    assert!(child.wait().await.unwrap().success());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_running_daemon_picks_up_a_watch_added_by_register() {
    let sim = sim_with(TWO_ASSETS, 6000).await;
    let one = "[[watch.video_asset]]\nworkspace = \"ws\"\nproject_id = \"1\"\nasset_id = \"1\"\n";
    let daemon = Daemon::start(&config_text(&sim.url(), "", &format!("{one}\n{FAST_POLL}"))).await;
    daemon.wait_started().await;
    let config = daemon.dir.join("config.toml");
    let args = [
        "register",
        "-c",
        config.to_str().unwrap(),
        "--workspace",
        "ws",
        "--project",
        "1",
        "--bucket",
        "b",
        "--key",
        "k.mp4",
        "--watch",
    ];
    let out = crate::helpers::watchd(&args, &crate::helpers::sim_env()).await;
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let id = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let subject = format!("workspaces/ws/projects/1/video-assets/{id}");
    // The simulator's register template completes the import after 3 s.
    daemon
        .wait_for(Duration::from_secs(20), "the registered asset's import", |e| {
            has(e, "video_asset.import.in_progress", &subject) && has(e, "video_asset.import.completed", &subject)
        })
        .await;
}
