//! `ncp-watchd once` end to end: the real binary against the simulator.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use crate::helpers::{config_dir, config_text, sim_env, sim_with, text, watchd};

const SCENARIO: &str = r#"
[[video_asset]]
workspace = "ws"
project_id = "1234"
asset_id = "5678"
resolution = "1920x1080"
duration_ms = 253702
size = 120333399
format = "mp4"
import = [{ at = "0s", status = "COMPLETED" }]
analysis = [{ at = "0s", status = "ANALYZING" }]

[[video_asset]]
workspace = "ws"
project_id = "1234"
asset_id = "5679"
import = [{ at = "0s", status = "IN_PROGRESS" }]

[[search_image]]
asset_key = "images/q.jpg"
upload = [{ at = "0s", status = "FAILED", message = "OVER_SIZE_LIMIT" }]

[[vod]]
category_id = "10019"
category_name = "test2"
file_path = "movie.mp4"
output_type = "auto_90fps_abr"
size = 81040256
started_ago = "1h"
encode = [{ at = "0s", status = "COMPLETE", percent = 100 }]

[[vod]]
category_id = "10020"
category_name = "promo"
file_path = "teaser.mp4"
output_type = "hls"
encode = [{ at = "0s", status = "RUNNING", percent = 40 }]

[[vod]]
category_id = "10099"
category_name = "unwatched"
file_path = "old.mp4"
output_type = "hls"
encode = [{ at = "0s", status = "COMPLETE", percent = 100 }]
"#;

const WATCHES: &str = r#"
instance = "it"
[[watch.video_asset]]
workspace = "ws"
project_id = "1234"
asset_id = "5678"
name = "launch-trailer"
analysis = true

[[watch.project]]
workspace = "ws"
project_id = "1234"
name = "whole-project"

[[watch.search_image]]
asset_key = "images/q.jpg"

[[watch.vod]]
categories = ["test2", "10020"]
name = "encodes"
"#;

fn events(stdout: &str) -> Vec<Value> {
    stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

#[tokio::test]
async fn once_prints_a_typed_event_for_every_item_of_all_four_watch_kinds() {
    let sim = sim_with(SCENARIO, 1000).await;
    let cfg = config_dir(&config_text(&sim.url(), "", WATCHES));
    let out = watchd(&["once", "-c", cfg.path.to_str().unwrap()], &sim_env()).await;
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let events = events(&stdout);

    let by_type: BTreeMap<(String, String), &Value> = events
        .iter()
        .map(|e| {
            (
                (
                    e["type"].as_str().unwrap().to_string(),
                    e["subject"].as_str().unwrap().to_string(),
                ),
                e,
            )
        })
        .collect();
    let expected = [
        (
            "video_asset.import.completed",
            "workspaces/ws/projects/1234/video-assets/5678",
            "launch-trailer",
            "COMPLETED",
            true,
        ),
        (
            "video_asset.analysis.analyzing",
            "workspaces/ws/projects/1234/video-assets/5678",
            "launch-trailer",
            "ANALYZING",
            false,
        ),
        (
            "project.asset.discovered",
            "workspaces/ws/projects/1234/assets/5678",
            "whole-project",
            "LISTED",
            true,
        ),
        (
            "project.asset.discovered",
            "workspaces/ws/projects/1234/assets/5679",
            "whole-project",
            "LISTED",
            true,
        ),
        (
            "video_asset.import.in_progress",
            "workspaces/ws/projects/1234/video-assets/5679",
            "whole-project",
            "IN_PROGRESS",
            false,
        ),
        (
            "search_image.upload.failed",
            "query-assets/images/q.jpg",
            "",
            "FAILED",
            true,
        ),
        (
            "vod.encode.complete",
            "vodstation/categories/10019/files/movie.mp4/outputs/auto_90fps_abr",
            "encodes",
            "COMPLETE",
            true,
        ),
        (
            "vod.encode.running",
            "vodstation/categories/10020/files/teaser.mp4/outputs/hls",
            "encodes",
            "RUNNING",
            false,
        ),
    ];
    assert_eq!(
        events.len(),
        expected.len(),
        "one event per observation, the unwatched category left out:\n{stdout}"
    );
    for (ty, subject, watch, current, terminal) in expected {
        let e = by_type
            .get(&(ty.to_string(), subject.to_string()))
            .unwrap_or_else(|| panic!("no {ty} for {subject}:\n{stdout}"));
        assert_eq!(e["specversion"], "1.0");
        assert_eq!(e["source"], "ncp-watchd/it");
        assert_eq!(e["datacontenttype"], "application/json");
        assert!(uuid::Uuid::parse_str(e["id"].as_str().unwrap()).is_ok());
        assert!(chrono::DateTime::parse_from_rfc3339(e["time"].as_str().unwrap()).is_ok());
        let d = &e["data"];
        assert_eq!(d["previous"], Value::Null, "first sight has previous null");
        assert_eq!(d["current"], current);
        assert_eq!(d["terminal"], terminal, "{ty}");
        assert_eq!(d["watch"], if watch.is_empty() { Value::Null } else { json!(watch) });
    }

    let import = by_type[&(
        "video_asset.import.completed".to_string(),
        "workspaces/ws/projects/1234/video-assets/5678".to_string(),
    )];
    assert_eq!(
        import["data"]["resource"],
        json!({"kind": "video_asset", "workspace": "ws", "project_id": "1234", "asset_id": "5678"})
    );
    assert_eq!(
        import["data"]["detail"]["metaData"],
        json!({"resolution": "1920x1080", "durationMs": 253702, "size": 120333399, "format": "mp4"})
    );
    let image = by_type[&(
        "search_image.upload.failed".to_string(),
        "query-assets/images/q.jpg".to_string(),
    )];
    assert_eq!(image["data"]["detail"]["uploadMessage"], "OVER_SIZE_LIMIT");
    let vod = by_type[&(
        "vod.encode.complete".to_string(),
        "vodstation/categories/10019/files/movie.mp4/outputs/auto_90fps_abr".to_string(),
    )];
    assert_eq!(vod["data"]["resource"]["category_name"], "test2");
    assert_eq!(vod["data"]["percent"], 100.0);
    assert_eq!(vod["data"]["detail"]["outputTotalSize"], 81040256);

    // The explicitly watched asset is polled once, not a second time for the project.
    let polls = sim
        .requests()
        .iter()
        .filter(|r| r.target.ends_with("/5678/import-status"))
        .count();
    assert_eq!(polls, 1);
}

#[tokio::test]
async fn once_fails_when_a_poll_fails_but_still_prints_what_it_saw() {
    let sim = sim_with(SCENARIO, 1000).await;
    let watches = "[[watch.video_asset]]\nworkspace = \"ws\"\nproject_id = \"1234\"\nasset_id = \"404\"\n\
                   [[watch.search_image]]\nasset_key = \"images/q.jpg\"\n";
    let cfg = config_dir(&config_text(&sim.url(), "", watches));
    let out = watchd(&["once", "-c", cfg.path.to_str().unwrap()], &sim_env()).await;
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("polling import workspaces/ws/projects/1234/video-assets/404 failed: not found"),
        "{stderr}"
    );
    assert_eq!(events(&stdout).len(), 1, "{stdout}");
}

#[tokio::test]
async fn once_with_a_wrong_secret_reports_the_refusal_without_the_secret() {
    let sim = sim_with(SCENARIO, 1000).await;
    let cfg = config_dir(&config_text(
        &sim.url(),
        "",
        "[[watch.search_image]]\nasset_key = \"images/q.jpg\"\n",
    ));
    let env = [
        ("NCLOUD_ACCESS_KEY", ncp_watchd::sim::DEFAULT_ACCESS_KEY),
        ("NCLOUD_SECRET_KEY", "WRONG-SECRET-SENTINEL"),
    ];
    let out = watchd(&["once", "-c", cfg.path.to_str().unwrap()], &env).await;
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr.contains("authentication refused (HTTP 401, errorCode 200"),
        "{stderr}"
    );
    assert!(!stderr.contains("WRONG-SECRET-SENTINEL") && !stdout.contains("WRONG-SECRET-SENTINEL"));
}

#[tokio::test]
async fn register_prints_the_new_asset_id_and_the_asset_is_then_pollable() {
    let sim = sim_with(SCENARIO, 1000).await;
    let cfg = config_dir(&config_text(&sim.url(), "", WATCHES));
    let path = cfg.path.to_str().unwrap();
    let args = [
        "register",
        "-c",
        path,
        "--workspace",
        "ws",
        "--project",
        "1234",
        "--bucket",
        "b",
        "--key",
        "up/new.mp4",
    ];
    let out = watchd(&args, &sim_env()).await;
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert_eq!(stdout.trim(), "9000");
    let registered = sim
        .requests()
        .into_iter()
        .find(|r| r.method == "POST" && r.target.contains("/import/object-storage"));
    assert_eq!(
        registered.unwrap().target,
        "/api/v1/workspaces/ws/projects/1234/assets/import/object-storage"
    );

    // With --watch the new asset becomes a watch of its own: the next run polls it.
    let mut with_watch = args.to_vec();
    with_watch.push("--watch");
    let out = watchd(&with_watch, &sim_env()).await;
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert_eq!(stdout.trim(), "9001");
    let out = watchd(&["once", "-c", path], &sim_env()).await;
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(
        events(&stdout)
            .iter()
            .any(|e| e["subject"] == "workspaces/ws/projects/1234/video-assets/9001"
                && e["type"] == "video_asset.import.in_progress"),
        "{stdout}"
    );
}

#[tokio::test]
async fn a_second_once_prints_only_what_changed_since_the_first() {
    let sim = sim_with(SCENARIO, 1000).await;
    let cfg = config_dir(&config_text(&sim.url(), "", WATCHES));
    let path = cfg.path.to_str().unwrap();
    let first = watchd(&["once", "-c", path], &sim_env()).await;
    assert_eq!(first.status.code(), Some(0));
    assert_eq!(events(&text(&first).0).len(), 8);

    let again = watchd(&["once", "-c", path], &sim_env()).await;
    let (stdout, stderr) = text(&again);
    assert_eq!(again.status.code(), Some(0), "{stderr}");
    assert_eq!(stdout, "", "nothing changed, nothing printed");

    sim.set(ncp_watchd::sim::SetState::VideoAsset {
        workspace: "ws".into(),
        project_id: "1234".into(),
        asset_id: "5679".into(),
        status: "COMPLETED".into(),
    });
    let third = watchd(&["once", "-c", path], &sim_env()).await;
    let printed = events(&text(&third).0);
    assert_eq!(printed.len(), 1, "{printed:?}");
    assert_eq!(printed[0]["type"], "video_asset.import.completed");
    assert_eq!(printed[0]["data"]["previous"], "IN_PROGRESS");
    assert_eq!(printed[0]["data"]["current"], "COMPLETED");
    // Finished items are not polled again: the third run asked only about what could change.
    let third_run_calls = sim
        .requests()
        .iter()
        .filter(|r| r.target.ends_with("/5678/import-status"))
        .count();
    assert_eq!(
        third_run_calls, 1,
        "the completed asset was polled once, in the first run"
    );
}

#[tokio::test]
async fn status_shows_what_each_item_last_showed() {
    let sim = sim_with(SCENARIO, 1000).await;
    let cfg = config_dir(&config_text(&sim.url(), "", WATCHES));
    let path = cfg.path.to_str().unwrap();
    let before = watchd(&["status", "-c", path], &sim_env()).await;
    assert_eq!(before.status.code(), Some(1));
    assert!(text(&before).1.contains("no state yet"), "{}", text(&before).1);
    assert_eq!(watchd(&["once", "-c", path], &sim_env()).await.status.code(), Some(0));

    let table = watchd(&["status", "-c", path], &sim_env()).await;
    let (stdout, stderr) = text(&table);
    assert_eq!(table.status.code(), Some(0), "{stderr}");
    let line = |needle: &str| {
        stdout
            .lines()
            .find(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("{needle}:\n{stdout}"))
            .to_string()
    };
    let import = line("workspaces/ws/projects/1234/video-assets/5679");
    assert!(
        import.starts_with("import") && import.contains("IN_PROGRESS") && import.contains("watching"),
        "{import}"
    );
    let encode = line("files/teaser.mp4/outputs/hls");
    assert!(
        encode.contains("RUNNING 40%") && encode.contains("(encodes)"),
        "{encode}"
    );
    assert!(line("query-assets/images/q.jpg").contains("final"));

    let json = watchd(&["status", "--json", "-c", path], &sim_env()).await;
    let rows: Vec<Value> = serde_json::from_slice(&json.stdout).unwrap();
    let analysis = rows.iter().find(|r| r["kind"] == "analysis").unwrap();
    assert_eq!(analysis["status"], "ANALYZING");
    assert_eq!(analysis["terminal"], false);
    assert!(analysis["next_due"].is_string() && analysis["last_polled"].is_string());
}

#[tokio::test]
async fn once_delivers_to_the_log_sinks_and_prints_nothing_twice() {
    let sim = sim_with(SCENARIO, 1000).await;
    let sinks = "[[sink.log]]\npath = \"events.jsonl\"\n[[sink.log]]\nname = \"finished\"\npath = \"finished.jsonl\"\nevents = [\"*.complete*\"]\n";
    let cfg = config_dir(&config_text(&sim.url(), "", &format!("{WATCHES}{sinks}")));
    let path = cfg.path.to_str().unwrap();
    let out = watchd(&["once", "-c", path], &sim_env()).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out).1);
    let dir = cfg.path.parent().unwrap();
    let all = crate::helpers::read_events(&dir.join("events.jsonl"));
    assert_eq!(all.len(), 8, "the first run's events reach a new sink");
    let finished = crate::helpers::read_events(&dir.join("finished.jsonl"));
    let types: Vec<&str> = finished.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(types.len(), 2, "{types:?}");
    assert!(
        types.contains(&"video_asset.import.completed") && types.contains(&"vod.encode.complete"),
        "{types:?}"
    );
    assert_eq!(
        events(&text(&out).0).len(),
        8,
        "no sink writes to stdout, so once prints the events"
    );

    watchd(&["once", "-c", path], &sim_env()).await;
    assert_eq!(
        crate::helpers::read_events(&dir.join("events.jsonl")).len(),
        8,
        "nothing is written twice"
    );
}

#[tokio::test]
async fn once_delivers_webhooks_and_fails_until_the_receiver_takes_them() {
    use crate::receiver::{Receiver, Reply};
    let sim = sim_with(SCENARIO, 1000).await;
    // The receiver refuses the first attempts (one per subject: two subjects are selected).
    let receiver = Receiver::start("127.0.0.1:0".parse().unwrap(), vec![Reply::Status(503); 2]).await;
    let sink = format!(
        "[[sink.webhook]]\nname = \"ops\"\nurl = \"{}\"\nretry_initial = \"100ms\"\nretry_max = \"200ms\"\nevents = [\"video_asset.*\"]\n",
        receiver.url()
    );
    let cfg = config_dir(&config_text(&sim.url(), "", &format!("{WATCHES}{sink}")));
    let path = cfg.path.to_str().unwrap();
    let first = watchd(&["once", "-c", path], &sim_env()).await;
    let (_, stderr) = text(&first);
    assert_eq!(
        first.status.code(),
        Some(1),
        "{stderr} received={:?} stdout={}",
        receiver.received().iter().map(|r| r.status).collect::<Vec<_>>(),
        text(&first).0.lines().count()
    );
    assert!(
        stderr.contains("sink.webhook `ops`") && stderr.contains("retried on the next run"),
        "{stderr}"
    );
    assert!(!stderr.contains("T0KEN-SENTINEL"), "{stderr}");
    assert!(receiver.delivered().is_empty());

    // The next run retries them, and the receiver takes them now.
    let second = watchd(&["once", "-c", path], &sim_env()).await;
    assert_eq!(second.status.code(), Some(0), "{}", text(&second).1);
    let got = receiver.delivered();
    let types: std::collections::BTreeSet<String> = got.iter().map(crate::receiver::Received::event_type).collect();
    assert_eq!(got.len(), 3, "{types:?}");
    assert!(types.contains("video_asset.import.completed") && types.contains("video_asset.analysis.analyzing"));
}
