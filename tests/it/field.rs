//! Field behaviour (SPEC §8): the real binary against the simulator playing what real NCP
//! does — re-encodes, undecodable rows, uploads that land late, stalled and long work,
//! first runs on big projects, refused keys, odd error bodies, regions.

use std::time::Duration;

use ncp_watchd::sim::SimHandle;
use serde_json::{Value, json};

use crate::helpers::{
    Daemon, FAST_POLL, config_dir, config_text, has, set_import, sim_env, sim_with, summary, text, transition, watchd,
};

/// Posts `body` to the simulator's admin route `route` (`state` or `faults`).
async fn admin(sim: &SimHandle, route: &str, body: Value) {
    let r = reqwest::Client::new()
        .post(format!("{}/_sim/{route}", sim.url()))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 204, "/_sim/{route} refused {body}");
}

/// How many API requests whose path and query contain `needle` the simulator has answered.
fn calls(sim: &SimHandle, needle: &str) -> usize {
    sim.requests().iter().filter(|r| r.target.contains(needle)).count()
}

/// Waits until the simulator has answered at least `n` requests containing `needle`.
async fn wait_calls(sim: &SimHandle, daemon: &Daemon, needle: &str, n: usize) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while calls(sim, needle) < n {
        assert!(
            tokio::time::Instant::now() < deadline,
            "fewer than {n} calls to {needle} ({} so far); daemon log:\n{}",
            calls(sim, needle),
            daemon.log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The events of one subject, as transitions.
fn of(events: &[Value], subject: &str) -> Vec<(String, String, Option<String>, String)> {
    events
        .iter()
        .filter(|e| e["subject"] == subject)
        .map(transition)
        .collect()
}

const VOD_WATCH: &str = "[[watch.vod]]\ncategories = [\"7\"]\n";
const ENCODE: &str = "vodstation/categories/7/files/a.mp4/outputs/hls";

#[tokio::test(flavor = "multi_thread")]
async fn two_jobs_of_one_output_give_one_event_and_no_flipping() {
    // A retry after FAILURE lists a second row for the same output: the list has no job id.
    let scenario = r#"
[[vod]]
category_id = "7"
file_path = "a.mp4"
output_type = "hls"
started_ago = "2h"
encode = [{ at = "0s", status = "FAILURE", percent = 40 }]

[[vod]]
category_id = "7"
file_path = "a.mp4"
output_type = "hls"
started_ago = "10m"
encode = [{ at = "0s", status = "RUNNING", percent = 10 }]
"#;
    let sim = sim_with(scenario, 100_000).await;
    let mut daemon = Daemon::start(&config_text(&sim.url(), "", &format!("{VOD_WATCH}{FAST_POLL}"))).await;
    daemon
        .wait_for(Duration::from_secs(20), "the encode's first sight", |e| {
            has(e, "vod.encode.running", ENCODE)
        })
        .await;
    // Many more reads of the unchanged list: each must be silent.
    let read = calls(&sim, "/api/v2/status");
    wait_calls(&sim, &daemon, "/api/v2/status", read + 8).await;
    // The newest job finishes; then a re-encode of the same file starts a third job.
    admin(&sim, "state", json!({"kind": "vod", "category_id": "7", "file_path": "a.mp4", "output_type": "hls", "status": "COMPLETE", "percent": 100})).await;
    daemon
        .wait_for(Duration::from_secs(20), "the newest job's end", |e| {
            has(e, "vod.encode.complete", ENCODE)
        })
        .await;
    admin(&sim, "state", json!({"kind": "vod", "category_id": "7", "file_path": "a.mp4", "output_type": "hls", "status": "WAITING", "percent": 0, "new_job": true})).await;
    let events = daemon
        .wait_for(Duration::from_secs(20), "the re-encode's first sight", |e| {
            has(e, "vod.encode.waiting", ENCODE)
        })
        .await;
    assert!(has(&events, "vod.encode.waiting", ENCODE));
    let read = calls(&sim, "/api/v2/status");
    wait_calls(&sim, &daemon, "/api/v2/status", read + 8).await;
    let events = daemon.events();
    assert_eq!(
        of(&events, ENCODE),
        vec![
            ("vod.encode.running".into(), ENCODE.into(), None, "RUNNING".into()),
            (
                "vod.encode.complete".into(),
                ENCODE.into(),
                Some("RUNNING".into()),
                "COMPLETE".into()
            ),
            (
                "vod.encode.waiting".into(),
                ENCODE.into(),
                Some("COMPLETE".into()),
                "WAITING".into()
            ),
        ],
        "an unchanged list gives no event however often it is read:\n{}",
        summary(&events)
    );
    daemon.signal("TERM");
    daemon.exit_within(Duration::from_secs(10)).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_search_image_watched_before_its_upload_lands_completes_when_it_lands() {
    let sim = sim_with("", 100_000).await;
    let watches =
        "[[watch.search_image]]\nasset_key = \"late.jpg\"\n[[watch.search_image]]\nasset_key = \"never.jpg\"\n";
    // Two watches: one file lands within the grace; the other never does.
    let config = config_text(&sim.url(), "", &format!("{watches}{FAST_POLL}"))
        .replace("[poll]\n", "[poll]\nupload_grace = \"3s\"\n");
    let mut daemon = Daemon::start(&config).await;
    wait_calls(&sim, &daemon, "/uploads/complete", 6).await;
    assert!(
        daemon.events().is_empty(),
        "FILE_NOT_EXIST within the grace is not final: {}",
        summary(&daemon.events())
    );
    admin(
        &sim,
        "state",
        json!({"kind": "search_image", "asset_key": "late.jpg", "status": "COMPLETED"}),
    )
    .await;
    let events = daemon
        .wait_for(Duration::from_secs(20), "both images to settle", |e| {
            has(e, "search_image.upload.completed", "query-assets/late.jpg")
                && has(e, "search_image.upload.failed", "query-assets/never.jpg")
        })
        .await;
    assert_eq!(
        of(&events, "query-assets/late.jpg"),
        vec![(
            "search_image.upload.completed".into(),
            "query-assets/late.jpg".into(),
            None,
            "COMPLETED".into()
        )]
    );
    let failed = events
        .iter()
        .find(|e| e["subject"] == "query-assets/never.jpg")
        .unwrap();
    assert_eq!(failed["data"]["detail"]["uploadMessage"], "FILE_NOT_EXIST");
    assert_eq!(of(&events, "query-assets/never.jpg").len(), 1);
    daemon.signal("TERM");
    daemon.exit_within(Duration::from_secs(10)).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn null_lists_and_undecodable_rows_poison_nothing() {
    let scenario = r#"
null_empty_lists = true

[[vod]]
category_id = "7"
file_path = "a.mp4"
output_type = "hls"
encode = [{ at = "0s", status = "RUNNING", percent = 10 }]
"#;
    let sim = sim_with(scenario, 100_000).await;
    // Project 5 is empty (its list answers `"content": null`); the VOD list and project 1
    // each carry one row that cannot be decoded, on every read.
    admin(
        &sim,
        "faults",
        json!({"fault": "extra_row", "path_contains": "/api/v2/status", "count": 1000,
        "row": {"categoryId": 7, "categoryName": null, "filePath": null, "outputType": "hls", "status": "RUNNING"}}),
    )
    .await;
    admin(
        &sim,
        "faults",
        json!({"fault": "extra_row", "path_contains": "/projects/1/assets?", "count": 1000,
        "row": {"fileName": "no-id.mp4", "key": "no-id.mp4"}}),
    )
    .await;
    set_import(&sim, "3", "IN_PROGRESS");
    let watches = "[[watch.project]]\nworkspace = \"ws\"\nproject_id = \"1\"\n[[watch.project]]\nworkspace = \"ws\"\nproject_id = \"5\"\n";
    let mut daemon = Daemon::start(&config_text(
        &sim.url(),
        "",
        &format!("{VOD_WATCH}{watches}{FAST_POLL}"),
    ))
    .await;
    daemon
        .wait_for(Duration::from_secs(20), "the good rows observed", |e| {
            has(e, "vod.encode.running", ENCODE)
                && has(e, "project.asset.discovered", "workspaces/ws/projects/1/assets/3")
        })
        .await;
    let reads = calls(&sim, "/api/v2/status");
    wait_calls(&sim, &daemon, "/api/v2/status", reads + 8).await;
    wait_calls(&sim, &daemon, "/projects/5/assets?", 8).await;
    let events = daemon.events();
    assert!(
        !events.iter().any(|e| e["type"] == "watch.failing"),
        "a bad row or a null list failed a watch:\n{}",
        summary(&events)
    );
    let log = daemon.log();
    let warned = log
        .lines()
        .filter(|l| l.contains("skipping a list row that does not decode"))
        .count();
    assert_eq!(warned, 2, "each bad row is logged once:\n{log}");
    // The rest still changes normally.
    set_import(&sim, "4", "IN_PROGRESS");
    daemon
        .wait_for(Duration::from_secs(20), "a later asset", |e| {
            has(e, "project.asset.discovered", "workspaces/ws/projects/1/assets/4")
        })
        .await;
    daemon.signal("TERM");
    daemon.exit_within(Duration::from_secs(10)).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_item_unchanged_past_stall_after_is_announced_once_and_polled_rarely() {
    let scenario = r#"
[[video_asset]]
workspace = "ws"
project_id = "1"
asset_id = "1"
import = [{ at = "0s", status = "COMPLETED" }]
analysis = [{ at = "0s", status = "BEFORE_ANALYZE" }]

[[video_asset]]
workspace = "ws"
project_id = "1"
asset_id = "2"
import = [{ at = "0s", status = "IN_PROGRESS" }]
"#;
    let sim = sim_with(scenario, 100_000).await;
    let watches = "[[watch.video_asset]]\nworkspace = \"ws\"\nproject_id = \"1\"\nasset_id = \"1\"\nanalysis = true\n\
                   [[watch.video_asset]]\nworkspace = \"ws\"\nproject_id = \"1\"\nasset_id = \"2\"\n\
                   [[watch.project]]\nworkspace = \"ws\"\nproject_id = \"1\"\nanalysis = true\n";
    let config = config_text(&sim.url(), "", &format!("{watches}{FAST_POLL}"))
        .replace("[poll]\n", "[poll]\nstall_after = \"2s\"\nstalled_interval = \"1h\"\n");
    let mut daemon = Daemon::start(&config).await;
    let analysis = "workspaces/ws/projects/1/video-assets/1";
    let events = daemon
        .wait_for(Duration::from_secs(20), "both items stalled", |e| {
            e.iter().filter(|e| e["type"] == "watch.stalled").count() == 2
        })
        .await;
    let stalled = events
        .iter()
        .find(|e| e["type"] == "watch.stalled" && e["subject"] == analysis)
        .unwrap();
    assert_eq!(stalled["data"]["current"], "BEFORE_ANALYZE");
    assert_eq!(stalled["data"]["detail"]["polled_every"], "1h");
    // From now on the stalled items cost (almost) nothing, while the project list goes on
    // being read: its reads are the clock here, no sleep needed.
    let (index, import) = (
        calls(&sim, "/index/status"),
        calls(&sim, "/video-assets/2/import-status"),
    );
    let lists = calls(&sim, "/projects/1/assets?");
    wait_calls(&sim, &daemon, "/projects/1/assets?", lists + 8).await;
    assert!(
        calls(&sim, "/index/status") <= index + 1,
        "the stalled analysis was polled on"
    );
    assert!(
        calls(&sim, "/video-assets/2/import-status") <= import + 1,
        "the stalled import was polled on"
    );
    let events = daemon.events();
    assert_eq!(
        events.iter().filter(|e| e["type"] == "watch.stalled").count(),
        2,
        "stalled is announced once per item:\n{}",
        summary(&events)
    );
    daemon.signal("TERM");
    daemon.exit_within(Duration::from_secs(10)).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_baseline_records_what_exists_without_events_or_status_polls() {
    let mut scenario = String::new();
    for i in 1..=50 {
        scenario.push_str(&format!(
            "[[video_asset]]\nworkspace = \"ws\"\nproject_id = \"1\"\nasset_id = \"{i}\"\nimport = [{{ at = \"0s\", status = \"COMPLETED\" }}]\n"
        ));
    }
    scenario.push_str(
        "[[vod]]\ncategory_id = \"7\"\nfile_path = \"a.mp4\"\noutput_type = \"hls\"\nencode = [{ at = \"0s\", status = \"RUNNING\", percent = 10 }]\n\
         [[vod]]\ncategory_id = \"7\"\nfile_path = \"old.mp4\"\noutput_type = \"hls\"\nencode = [{ at = \"0s\", status = \"COMPLETE\", percent = 100 }]\n",
    );
    let sim = sim_with(&scenario, 100_000).await;
    let watches = "[[watch.project]]\nworkspace = \"ws\"\nproject_id = \"1\"\nbaseline = true\n\
                   [[watch.vod]]\ncategories = [\"7\"]\nbaseline = true\n";
    let mut daemon = Daemon::start(&config_text(&sim.url(), "", &format!("{watches}{FAST_POLL}"))).await;
    wait_calls(&sim, &daemon, "/projects/1/assets?", 3).await;
    wait_calls(&sim, &daemon, "/api/v2/status", 3).await;
    assert!(
        daemon.events().is_empty(),
        "a baseline announces nothing that existed: {}",
        summary(&daemon.events())
    );
    assert_eq!(calls(&sim, "/import-status"), 0, "old assets are not polled one by one");
    // Later changes are events as usual.
    set_import(&sim, "51", "IN_PROGRESS");
    admin(&sim, "state", json!({"kind": "vod", "category_id": "7", "file_path": "a.mp4", "output_type": "hls", "status": "COMPLETE", "percent": 100})).await;
    let events = daemon
        .wait_for(Duration::from_secs(20), "the new asset and the finished encode", |e| {
            has(
                e,
                "video_asset.import.in_progress",
                "workspaces/ws/projects/1/video-assets/51",
            ) && has(e, "vod.encode.complete", ENCODE)
        })
        .await;
    let complete = events.iter().find(|e| e["type"] == "vod.encode.complete").unwrap();
    assert_eq!(complete["data"]["previous"], "RUNNING");
    let types: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert!(
        events.iter().all(|e| {
            let s = e["subject"].as_str().unwrap();
            s.ends_with("/51") || s == ENCODE
        }),
        "only the later changes are events: {types:?}"
    );
    assert_eq!(calls(&sim, "/import-status") - calls(&sim, "/video-assets/51/"), 0);
    daemon.signal("TERM");
    daemon.exit_within(Duration::from_secs(10)).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_encode_older_than_the_window_is_still_seen_to_finish_after_a_restart() {
    let scenario = "[[vod]]\ncategory_id = \"7\"\nfile_path = \"a.mp4\"\noutput_type = \"hls\"\nstarted_ago = \"50m\"\nencode = [{ at = \"0s\", status = \"RUNNING\", percent = 10 }]\n";
    let sim = sim_with(scenario, 100_000).await;
    let config = config_text(&sim.url(), "", &format!("{VOD_WATCH}{FAST_POLL}"));
    let mut daemon = Daemon::start(&config.replace("[poll]\n", "[poll]\nvod_lookback = \"1h\"\n")).await;
    daemon
        .wait_for(Duration::from_secs(20), "the running encode", |e| {
            has(e, "vod.encode.running", ENCODE)
        })
        .await;
    daemon.signal("TERM");
    daemon.exit_within(Duration::from_secs(10)).await;
    // Time passes while the daemon is down: its window no longer covers the encode's start
    // (played here by a shorter lookback), and the encode ends meanwhile.
    let tmp = daemon.keep_dir();
    let dir = daemon.dir.clone();
    std::fs::write(
        dir.join("config.toml"),
        config.replace("[poll]\n", "[poll]\nvod_lookback = \"10m\"\n"),
    )
    .unwrap();
    admin(&sim, "state", json!({"kind": "vod", "category_id": "7", "file_path": "a.mp4", "output_type": "hls", "status": "COMPLETE", "percent": 100})).await;
    let mut daemon = Daemon::start_in(&dir).await;
    if let Some(tmp) = tmp {
        daemon.adopt(tmp);
    }
    daemon
        .wait_for(Duration::from_secs(20), "the old encode's end", |e| {
            has(e, "vod.encode.complete", ENCODE)
        })
        .await;
    daemon.signal("TERM");
    daemon.exit_within(Duration::from_secs(10)).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bad_request_fails_the_watch_at_once_with_the_services_own_error() {
    let sim = sim_with(crate::helpers::TWO_ASSETS, 100_000).await;
    admin(&sim, "faults", json!({"fault": "error", "status": 400, "error_code": "4001", "shape": "mi", "path_contains": "/video-assets/1/", "count": 1000})).await;
    admin(&sim, "faults", json!({"fault": "error", "status": 400, "error_code": "4002", "shape": "response_error", "path_contains": "/video-assets/2/", "count": 1000})).await;
    let watches = "[[watch.video_asset]]\nworkspace = \"ws\"\nproject_id = \"1\"\nasset_id = \"1\"\n\
                   [[watch.video_asset]]\nworkspace = \"ws\"\nproject_id = \"1\"\nasset_id = \"2\"\n";
    let mut daemon = Daemon::start(&config_text(&sim.url(), "", &format!("{watches}{FAST_POLL}"))).await;
    let events = daemon
        .wait_for(Duration::from_secs(20), "both watches failing", |e| {
            e.iter().filter(|e| e["type"] == "watch.failing").count() == 2
        })
        .await;
    for (asset, code) in [("1", "4001"), ("2", "4002")] {
        let subject = format!("workspaces/ws/projects/1/video-assets/{asset}");
        let failing = events.iter().find(|e| e["subject"] == subject.as_str()).unwrap();
        let error = failing["data"]["error"].as_str().unwrap();
        assert!(error.contains(code) && error.contains("Injected Fault"), "{error}");
        assert_eq!(
            calls(&sim, &format!("/video-assets/{asset}/")),
            1,
            "failing at once, after one answer"
        );
    }
    daemon.signal("TERM");
    daemon.exit_within(Duration::from_secs(10)).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_refused_key_is_one_account_event_and_a_sighup_with_a_new_key_resumes_every_watch() {
    let sim = sim_with(crate::helpers::TWO_ASSETS, 100_000).await;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    std::fs::write(dir.join("ak"), ncp_watchd::sim::DEFAULT_ACCESS_KEY).unwrap();
    std::fs::write(dir.join("sk"), "not-the-secret").unwrap();
    let watches = "[credentials]\naccess_key_file = \"ak\"\nsecret_key_file = \"sk\"\n\
                   [[watch.video_asset]]\nworkspace = \"ws\"\nproject_id = \"1\"\nasset_id = \"1\"\n\
                   [[watch.video_asset]]\nworkspace = \"ws\"\nproject_id = \"1\"\nasset_id = \"2\"\n\
                   [[watch.project]]\nworkspace = \"ws\"\nproject_id = \"1\"\n";
    std::fs::write(
        dir.join("config.toml"),
        config_text(&sim.url(), "", &format!("{watches}{FAST_POLL}")),
    )
    .unwrap();
    let mut daemon = Daemon::start_in(dir).await;
    daemon.wait_started().await;
    let prefix: String = ncp_watchd::sim::DEFAULT_ACCESS_KEY.chars().take(8).collect();
    let account = format!("accounts/{prefix}");
    daemon
        .wait_for(Duration::from_secs(20), "the account failing", |e| {
            has(e, "account.failing", &account)
        })
        .await;
    // Every watch is refused a few times over; still one event, and no watch.failing.
    wait_calls(&sim, &daemon, "", 6).await;
    let log = daemon.log();
    assert!(
        log.contains(&format!(
            "the request was signed with the access key from file {}",
            dir.join("ak").display()
        )),
        "the log names the credential source:\n{log}"
    );
    assert!(!log.contains("not-the-secret"), "a secret reached the log");
    // The key is rotated and the daemon told.
    std::fs::write(dir.join("sk"), ncp_watchd::sim::DEFAULT_SECRET_KEY).unwrap();
    daemon.signal("HUP");
    let events = daemon
        .wait_for(Duration::from_secs(20), "recovery and every watch resumed", |e| {
            has(e, "account.recovered", &account)
                && has(
                    e,
                    "video_asset.import.in_progress",
                    "workspaces/ws/projects/1/video-assets/1",
                )
                && has(
                    e,
                    "video_asset.import.in_progress",
                    "workspaces/ws/projects/1/video-assets/2",
                )
                && has(e, "project.asset.discovered", "workspaces/ws/projects/1/assets/1")
        })
        .await;
    assert_eq!(
        events.iter().filter(|e| e["type"] == "account.failing").count(),
        1,
        "{}",
        summary(&events)
    );
    assert!(
        !events.iter().any(|e| e["type"] == "watch.failing"),
        "{}",
        summary(&events)
    );
    let failing = events.iter().find(|e| e["type"] == "account.failing").unwrap();
    assert!(
        failing["data"]["error"]
            .as_str()
            .unwrap()
            .contains("authentication refused")
    );
    daemon.signal("TERM");
    daemon.exit_within(Duration::from_secs(10)).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_refusal_for_clock_skew_says_how_far_off_the_clock_is() {
    let sim = sim_with(
        &format!("clock_offset_ms = 420000\n{}", crate::helpers::TWO_ASSETS),
        100_000,
    )
    .await;
    let cfg = config_dir(&config_text(
        &sim.url(),
        "",
        "[[watch.video_asset]]\nworkspace = \"ws\"\nproject_id = \"1\"\nasset_id = \"1\"\n",
    ));
    let out = watchd(&["once", "-c", cfg.path.to_str().unwrap()], &sim_env()).await;
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        ["7m", "6m 59s", "7m 1s"]
            .iter()
            .any(|d| stderr.contains(&format!("the gateway's clock is {d} ahead of this machine's"))),
        "{stderr}"
    );
    assert!(
        stderr.contains("environment variable NCLOUD_ACCESS_KEY"),
        "the credential source is named: {stderr}"
    );
}

#[tokio::test]
async fn an_unknown_import_status_path_hints_at_media_asset_path() {
    let sim = sim_with(crate::helpers::TWO_ASSETS, 100_000).await;
    let cfg = config_dir(&config_text(
        &sim.url(),
        "",
        "[[watch.video_asset]]\nworkspace = \"ws\"\nproject_id = \"1\"\nasset_id = \"77\"\n",
    ));
    let out = watchd(&["once", "-c", cfg.path.to_str().unwrap()], &sim_env()).await;
    let (_, stderr) = text(&out);
    assert!(stderr.contains("media_asset_path = \"assets\""), "{stderr}");
}

#[tokio::test]
async fn the_ncp_cli_files_api_url_is_honoured_with_its_keys() {
    let sim = sim_with(crate::helpers::TWO_ASSETS, 100_000).await;
    let home = tempfile::tempdir().unwrap();
    std::fs::create_dir(home.path().join(".ncloud")).unwrap();
    std::fs::write(
        home.path().join(".ncloud/configure"),
        format!(
            "[DEFAULT]\nncloud_access_key_id = {}\nncloud_secret_access_key = {}\nncloud_api_url = {}\n",
            ncp_watchd::sim::DEFAULT_ACCESS_KEY,
            ncp_watchd::sim::DEFAULT_SECRET_KEY,
            sim.url()
        ),
    )
    .unwrap();
    // No [api] URLs and no region: the CLI's file decides.
    let cfg = config_dir(
        "[[watch.video_asset]]\nworkspace = \"ws\"\nproject_id = \"1\"\nasset_id = \"1\"\n[state]\npath = \"state.db\"\n[[sink.log]]\n",
    );
    let home_path = home.path().to_str().unwrap();
    let out = watchd(&["once", "-c", cfg.path.to_str().unwrap()], &[("HOME", home_path)]).await;
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(stdout.contains("video_asset.import.in_progress"), "{stdout}");
    let out = watchd(&["check", "-c", cfg.path.to_str().unwrap()], &[("HOME", home_path)]).await;
    let (stdout, _) = text(&out);
    assert!(stdout.contains("from ncloud_api_url in the NCP CLI's file"), "{stdout}");
    assert!(stdout.contains(&sim.url()), "{stdout}");
}
