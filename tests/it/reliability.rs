//! Reliability (issue 9): one writer per store, bounded everything, no secret echoed, a
//! stop within 10 s, a full disk that turns the daemon red.

use std::time::Duration;

use serde_json::{Value, json};

use crate::helpers::{
    Daemon, FAST_POLL, TWO_ASSETS, config_dir, config_text, has, set_import, sim_env, sim_with, summary, text, watchd,
};

const ONE: &str = "[[watch.video_asset]]\nworkspace = \"ws\"\nproject_id = \"1\"\nasset_id = \"1\"\n";
const BOTH: &str = "[[watch.video_asset]]\nworkspace = \"ws\"\nproject_id = \"1\"\nasset_id = \"1\"\n\
                    [[watch.video_asset]]\nworkspace = \"ws\"\nproject_id = \"1\"\nasset_id = \"2\"\n";

async fn http_status(addr: std::net::SocketAddr, path: &str) -> u16 {
    reqwest::get(format!("http://{addr}{path}"))
        .await
        .map(|r| r.status().as_u16())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_second_daemon_on_one_store_is_refused_naming_the_first() {
    let sim = sim_with(TWO_ASSETS, 100_000).await;
    let mut first = Daemon::start(&config_text(&sim.url(), "", &format!("{ONE}{FAST_POLL}"))).await;
    first.wait_started().await;
    let config = first.dir.join("config.toml");
    let out = watchd(&["run", "-c", config.to_str().unwrap()], &sim_env()).await;
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    let pid = first.child.id().unwrap();
    assert!(
        stderr.contains(&format!(
            "another ncp-watchd (pid {pid}) is already running on the state store"
        )),
        "{stderr}"
    );
    // The lock goes with the process, however it dies.
    first.signal("KILL");
    first.exit_within(Duration::from_secs(5)).await;
    let tmp = first.keep_dir();
    let mut again = Daemon::start_in(&first.dir).await;
    if let Some(tmp) = tmp {
        again.adopt(tmp);
    }
    again.wait_started().await;
    again.signal("TERM");
    again.exit_within(Duration::from_secs(10)).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn once_beside_a_running_daemon_asks_it_for_a_round_and_nothing_is_emitted_twice() {
    let sim = sim_with(TWO_ASSETS, 100_000).await;
    // A slow poll interval: the change below is seen by the round `once` asks for.
    let config =
        config_text(&sim.url(), "", &format!("{BOTH}{FAST_POLL}")).replace("interval = \"200ms\"", "interval = \"1h\"");
    let mut daemon = Daemon::start(&config).await;
    daemon
        .wait_for(Duration::from_secs(20), "first sight of both", |e| e.len() == 2)
        .await;
    set_import(&sim, "1", "COMPLETED");
    set_import(&sim, "2", "FAILED");
    let out = watchd(
        &["once", "-c", daemon.dir.join("config.toml").to_str().unwrap()],
        &sim_env(),
    )
    .await;
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let printed: Vec<Value> = stdout.lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
    let mut types: Vec<&str> = printed.iter().map(|e| e["type"].as_str().unwrap()).collect();
    types.sort();
    assert_eq!(
        types,
        ["video_asset.import.completed", "video_asset.import.failed"],
        "{stdout}"
    );
    let events = daemon
        .wait_for(
            Duration::from_secs(20),
            "the daemon's sink to write the round's events",
            |e| e.len() == 4,
        )
        .await;
    let ids: std::collections::HashSet<&str> = events.iter().map(|e| e["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), 4, "{}", summary(&events));
    for e in &printed {
        assert!(
            ids.contains(e["id"].as_str().unwrap()),
            "once printed the daemon's own events"
        );
    }
    // One detection per change: the import statuses were asked for once per round.
    let polls = sim
        .requests()
        .iter()
        .filter(|r| r.target.ends_with("/1/import-status"))
        .count();
    assert_eq!(polls, 2, "the daemon's first round and the round once asked for");
    daemon.signal("TERM");
    daemon.exit_within(Duration::from_secs(10)).await;
}

/// `dir` mounted read-only at a new temporary directory; outside CI, `None` (saying why)
/// where mounting is not allowed.
fn read_only_view(dir: &std::path::Path) -> Option<(tempfile::TempDir, Unmount)> {
    let view = tempfile::tempdir().unwrap();
    let run = |args: &[&std::ffi::OsStr]| {
        std::process::Command::new("mount")
            .args(args)
            .status()
            .is_ok_and(|s| s.success())
    };
    let ok = run(&["--bind".as_ref(), dir.as_os_str(), view.path().as_os_str()])
        && run(&["-o".as_ref(), "remount,bind,ro".as_ref(), view.path().as_os_str()]);
    if !ok {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI: cannot make a read-only bind mount"
        );
        eprintln!("skipping: cannot make a read-only bind mount here (needs root)");
        return None;
    }
    let unmount = Unmount(view.path().to_path_buf());
    Some((view, unmount))
}

#[tokio::test(flavor = "multi_thread")]
async fn status_reads_a_store_it_cannot_write() {
    let sim = sim_with(TWO_ASSETS, 100_000).await;
    let cfg = config_dir(&config_text(&sim.url(), "", ONE));
    let path = cfg.path.to_str().unwrap();
    assert!(watchd(&["once", "-c", path], &sim_env()).await.status.success());
    let dir = cfg.path.parent().unwrap();
    let db = dir.join("state.db");
    let before = std::fs::read(&db).unwrap();
    let Some((view, _unmount)) = read_only_view(dir) else {
        return;
    };
    let out = watchd(
        &[
            "status",
            "-c",
            view.path().join("config.toml").to_str().unwrap(),
            "--json",
        ],
        &sim_env(),
    )
    .await;
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "status needs no write access: {stderr}");
    assert!(stdout.contains("IN_PROGRESS"), "{stdout}");
    assert_eq!(std::fs::read(&db).unwrap(), before, "status changed the database");
}

#[tokio::test(flavor = "multi_thread")]
async fn changes_seen_while_once_and_the_daemon_both_run_are_emitted_once() {
    let sim = sim_with(TWO_ASSETS, 100_000).await;
    let mut daemon = Daemon::start(&config_text(&sim.url(), "", &format!("{BOTH}{FAST_POLL}"))).await;
    daemon
        .wait_for(Duration::from_secs(20), "first sight of both", |e| e.len() == 2)
        .await;
    let config = daemon.dir.join("config.toml");
    for step in 1..=4 {
        let status = format!("STEP_{step}");
        set_import(&sim, "1", &status);
        set_import(&sim, "2", &status);
        // `once` runs while the daemon polls every 200 ms: two writers would both see it.
        let out = watchd(&["once", "-c", config.to_str().unwrap()], &sim_env()).await;
        assert!(out.status.success(), "{}", text(&out).1);
        daemon
            .wait_for(Duration::from_secs(20), "both assets at the step", |e| {
                e.iter().filter(|e| e["data"]["current"] == status.as_str()).count() >= 2
            })
            .await;
    }
    // Let the daemon poll a few more times: a second writer's changes would be seen again.
    let seen = sim.requests().len();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while sim.requests().len() < seen + 8 {
        assert!(tokio::time::Instant::now() < deadline, "the daemon stopped polling");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let events = daemon.events();
    let transitions: Vec<_> = events.iter().map(crate::helpers::transition).collect();
    let unique: std::collections::HashSet<_> = transitions.iter().collect();
    assert_eq!(
        unique.len(),
        transitions.len(),
        "a change was emitted twice:\n{}",
        summary(&events)
    );
    assert_eq!(transitions.len(), 10, "{}", summary(&events));
    daemon.signal("TERM");
    daemon.exit_within(Duration::from_secs(10)).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_api_that_echoes_the_access_key_gets_it_scrubbed_everywhere() {
    let sim = sim_with(TWO_ASSETS, 100_000).await;
    let key = ncp_watchd::sim::DEFAULT_ACCESS_KEY;
    // An undecodable answer echoing the key, and a refusal echoing it in its message.
    sim.inject(ncp_watchd::sim::Fault {
        path_contains: Some("/video-assets/1/".into()),
        count: 1000,
        action: ncp_watchd::sim::FaultAction::Malformed {
            body: Some(format!(
                r#"{{"code":"0","message":"success","result":{{"echo":"{key}"}}}}"#
            )),
        },
    });
    let refusal = json!({"fault": "error", "status": 400, "error_code": "4001", "shape": "mi", "path_contains": "/video-assets/2/", "count": 1000});
    reqwest::Client::new()
        .post(format!("{}/_sim/faults", sim.url()))
        .json(&refusal)
        .send()
        .await
        .unwrap();
    let mut daemon = Daemon::start(&config_text(&sim.url(), "", &format!("{BOTH}{FAST_POLL}"))).await;
    daemon
        .wait_for(Duration::from_secs(30), "both watches failing", |e| {
            e.iter().filter(|e| e["type"] == "watch.failing").count() == 2
        })
        .await;
    daemon.signal("TERM");
    daemon.exit_within(Duration::from_secs(10)).await;
    let log = daemon.log();
    assert!(log.contains("<redacted>"), "the echo was logged, scrubbed:\n{log}");
    assert!(!log.contains(key), "the access key reached the log:\n{log}");
    let events = std::fs::read_to_string(daemon.dir.join("events.jsonl")).unwrap();
    assert!(!events.contains(key), "the access key reached an event:\n{events}");
    let db = std::fs::read(daemon.dir.join("state.db")).unwrap();
    assert!(
        !db.windows(key.len()).any(|w| w == key.as_bytes()),
        "the access key reached the state store"
    );
    let status = watchd(
        &[
            "status",
            "-c",
            daemon.dir.join("config.toml").to_str().unwrap(),
            "--json",
        ],
        &sim_env(),
    )
    .await;
    assert!(!String::from_utf8_lossy(&status.stdout).contains(key));
}

#[tokio::test(flavor = "multi_thread")]
async fn an_absurd_retry_after_is_capped_not_a_panic() {
    let sim = sim_with(TWO_ASSETS, 100_000).await;
    let fault = json!({"fault": "error", "status": 429, "retry_after": u64::MAX, "path_contains": "/video-assets/1/", "count": 1});
    reqwest::Client::new()
        .post(format!("{}/_sim/faults", sim.url()))
        .json(&fault)
        .send()
        .await
        .unwrap();
    // A 429 pauses the whole host, but never longer than max_backoff.
    let cfg = config_dir(&config_text(
        &sim.url(),
        "",
        &format!("{BOTH}[poll]\nmax_backoff = \"2s\"\n"),
    ));
    let out = watchd(&["once", "-c", cfg.path.to_str().unwrap()], &sim_env()).await;
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "a failed poll, not a crash: {stderr}");
    assert!(
        sim.requests()
            .iter()
            .any(|r| r.target.contains("/video-assets/2/") && r.status == 200),
        "the host's pause ended"
    );
    assert!(
        stderr.contains("rate limited") && stderr.contains("retry after 3600s"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stop_with_polls_and_deliveries_hanging_takes_at_most_ten_seconds() {
    let sim = sim_with(TWO_ASSETS, 100_000).await;
    let mut daemon = Daemon::start(&config_text(
        &sim.url(),
        "timeout = \"30s\"",
        &format!("{BOTH}{FAST_POLL}"),
    ))
    .await;
    daemon
        .wait_for(Duration::from_secs(20), "first sight of both", |e| e.len() == 2)
        .await;
    // Every poll from now on hangs for a minute.
    sim.inject(ncp_watchd::sim::Fault {
        path_contains: Some("/import-status".into()),
        count: 1000,
        action: ncp_watchd::sim::FaultAction::Stall { ms: 60_000 },
    });
    let before = sim.requests().len();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while sim.requests().len() < before + 2 {
        assert!(tokio::time::Instant::now() < deadline, "no poll went out");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let asked = std::time::Instant::now();
    daemon.signal("TERM");
    let status = daemon.exit_within(Duration::from_secs(10)).await;
    assert!(status.success(), "{}", daemon.log());
    assert!(asked.elapsed() <= Duration::from_secs(10), "{:?}", asked.elapsed());
}

/// Runs `f` with a small tmpfs mounted at a temporary directory; outside CI, skips (saying
/// why) where mounting is not allowed.
/// Unmounts its path when dropped.
struct Unmount(std::path::PathBuf);

impl Drop for Unmount {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

fn small_disk(size: &str) -> Option<(tempfile::TempDir, Unmount)> {
    let dir = tempfile::tempdir().unwrap();
    let ok = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
        .arg(dir.path())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI: cannot mount a tmpfs to play a full disk"
        );
        eprintln!("skipping: cannot mount a tmpfs here (needs root) to play a full disk");
        return None;
    }
    let unmount = Unmount(dir.path().to_path_buf());
    Some((dir, unmount))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_full_disk_turns_readyz_red_and_it_recovers_when_there_is_room() {
    let Some((disk, _unmount)) = small_disk("4m") else {
        return;
    };
    let sim = sim_with(TWO_ASSETS, 100_000).await;
    let mut daemon = Daemon::start(&config_text(
        &sim.url(),
        "",
        &format!(
            "{BOTH}{FAST_POLL}[state]\npath = \"{}/state.db\"\n",
            disk.path().display()
        ),
    ))
    .await;
    let addr = daemon.server_addr().await;
    daemon
        .wait_for(Duration::from_secs(20), "first sight of both", |e| e.len() == 2)
        .await;
    let ready = |want: u16| async move {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while http_status(addr, "/readyz").await != want {
            assert!(tokio::time::Instant::now() < deadline, "/readyz never answered {want}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    ready(200).await;
    // Fill the disk, then make changes that must be committed.
    let filler = disk.path().join("filler");
    let _ = std::process::Command::new("dd")
        .args(["if=/dev/zero", &format!("of={}", filler.display()), "bs=64k"])
        .stderr(std::process::Stdio::null())
        .status();
    for i in 0..20 {
        set_import(&sim, "1", &format!("STEP_{i}"));
        set_import(&sim, "2", &format!("STEP_{i}"));
        if http_status(addr, "/readyz").await == 503 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    ready(503).await;
    assert!(daemon.log().contains("CANNOT COMMIT"), "{}", daemon.log());
    std::fs::remove_file(&filler).unwrap();
    set_import(&sim, "1", "COMPLETED");
    ready(200).await;
    daemon
        .wait_for(Duration::from_secs(20), "the change after the disk had room", |e| {
            has(
                e,
                "video_asset.import.completed",
                "workspaces/ws/projects/1/video-assets/1",
            )
        })
        .await;
    daemon.signal("TERM");
    daemon.exit_within(Duration::from_secs(10)).await;
}
