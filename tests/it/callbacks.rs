//! VOD Station callbacks as hints (SPEC §10): the real binary against the simulator, which
//! sends VOD Station's callbacks, and against callbacks this test forges, floods or loses.

use std::time::Duration;

use ncp_watchd::sim::{SetState, SimHandle};
use ncp_watchd::store::Store;
use serde_json::{Value, json};

use crate::helpers::{Daemon, config_dir, config_text, has, sim_env, sim_with, summary, text, watchd};

/// The test's callback token: 40 characters, never to be seen in any output.
const TOKEN: &str = "cbTOKEN0sentinel0a1b2c3d4e5f6a7b8c9d0e1f2";
/// The variable the daemon reads it from.
const TOKEN_ENV: &str = "NCP_WATCHD_TEST_VOD_TOKEN";
const ENCODE: &str = "vodstation/categories/7/files/a.mp4/outputs/hls";
const VOD_LIST: &str = "/api/v2/status";

/// One encode of category 7 running from the start, and one of category 8 (unwatched).
const RUNNING: &str = r#"
[[vod]]
category_id = "7"
category_name = "news"
file_path = "a.mp4"
output_type = "hls"
started_ago = "5m"
encode = [{ at = "0s", status = "RUNNING", percent = 10 }]

[[vod]]
category_id = "8"
file_path = "b.mp4"
output_type = "hls"
started_ago = "5m"
encode = [{ at = "0s", status = "RUNNING", percent = 10 }]
"#;

/// A config watching category 7 with callbacks on, polling every 30 s (discovery too),
/// with `fallback` as `[callbacks] fallback_interval`.
fn config(sim: &SimHandle, fallback: &str) -> String {
    config_text(
        &sim.url(),
        "",
        &format!(
            "[[watch.vod]]\ncategories = [\"7\"]\n\n[poll]\ninterval = \"30s\"\ndiscovery_interval = \"30s\"\n\n\
             [callbacks]\nvod_token_env = \"{TOKEN_ENV}\"\nfallback_interval = \"{fallback}\"\n\n[[sink.log]]\npath = \"events.jsonl\"\n"
        ),
    )
}

/// Starts the daemon on `config` with the token in its environment.
async fn start(config: &str) -> Daemon {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("config.toml"), config).unwrap();
    let mut daemon = Daemon::start_with_env(tmp.path(), &[(TOKEN_ENV, TOKEN)]).await;
    daemon.adopt(tmp);
    daemon.wait_started().await;
    daemon
}

/// The callback URL of `daemon` with `token`.
async fn callback_url(daemon: &Daemon, token: &str) -> String {
    format!("http://{}/callbacks/vod/{token}", daemon.server_addr().await)
}

/// The body VOD Station sends, for category `category` and `status`.
fn body(category: u64, status: &str) -> Value {
    json!({"categoryId": category, "categoryName": "news", "fileId": 1, "filePath": "a.mp4",
           "encodingOptionId": 2, "outputType": "hls", "link": "", "status": status})
}

/// POSTs `body` (raw bytes) to `url`; the answer's status.
async fn post(url: &str, body: impl Into<reqwest::Body>) -> u16 {
    reqwest::Client::new()
        .post(url)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// API requests of the VOD list the simulator has answered, with their arrival times.
fn list_calls(sim: &SimHandle) -> Vec<i64> {
    sim.requests()
        .iter()
        .filter(|r| r.target.starts_with(VOD_LIST))
        .map(|r| r.at_ms)
        .collect()
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// Waits until the VOD list item's last read started at or after `after_ms` and was
/// committed (the store is written only at commit).
async fn wait_list_read_committed(daemon: &Daemon, after_ms: i64) {
    let path = daemon.dir.join("state.db");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let read = Store::open_read_only(&ncp_watchd::config::StateConfig::sqlite(&path))
            .and_then(|s| s.items())
            .ok()
            .and_then(|items| items.into_iter().find(|i| i.kind == "vod_list"))
            .and_then(|i| i.last_polled_ms);
        if read.is_some_and(|t| t >= after_ms) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no VOD list read committed after {after_ms}; daemon log:\n{}",
            daemon.log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The committed events (the outbox), as the store holds them.
fn outbox(daemon: &Daemon) -> Vec<Value> {
    let store = Store::open_read_only(&ncp_watchd::config::StateConfig::sqlite(daemon.dir.join("state.db"))).unwrap();
    store
        .outbox_after(0, 10_000)
        .unwrap()
        .iter()
        .map(|r| serde_json::from_str(&r.body).unwrap())
        .collect()
}

async fn first_sight(daemon: &Daemon) {
    daemon
        .wait_for(Duration::from_secs(20), "the encode's first sight", |e| {
            has(e, "vod.encode.running", ENCODE)
        })
        .await;
}

fn set_encode(sim: &SimHandle, status: &str, percent: f64) {
    sim.set(SetState::Vod {
        category_id: "7".into(),
        category_name: None,
        file_path: "a.mp4".into(),
        output_type: "hls".into(),
        status: status.into(),
        percent: Some(percent),
        new_job: false,
    });
}

#[tokio::test(flavor = "multi_thread")]
async fn a_change_is_reported_within_3_s_of_its_callback_while_the_poll_interval_is_30_s() {
    let sim = sim_with(RUNNING, 100_000).await;
    let mut daemon = start(&config(&sim, "5m")).await;
    first_sight(&daemon).await;
    sim.set_vod_callback_url(Some(callback_url(&daemon, TOKEN).await));
    let reads_before = list_calls(&sim).len();
    set_encode(&sim, "COMPLETE", 100.0);
    let events = daemon
        .wait_for(Duration::from_secs(3), "the end, within 3 s of its callback", |e| {
            has(e, "vod.encode.complete", ENCODE)
        })
        .await;
    let sent = sim.callbacks();
    assert_eq!(sent.len(), 1, "one callback for the one changed output: {sent:?}");
    assert_eq!(sent[0].body["status"], "COMPLETE");
    let complete = events.iter().find(|e| e["type"] == "vod.encode.complete").unwrap();
    assert_eq!(
        complete["data"]["hint"], "callback",
        "a change first seen by a read a callback asked for says so: {complete}"
    );
    let first = events.iter().find(|e| e["type"] == "vod.encode.running").unwrap();
    assert!(
        first["data"].get("hint").is_none(),
        "a scheduled poll's event has no hint: {first}"
    );
    assert_eq!(
        list_calls(&sim).len(),
        reads_before + 1,
        "one list read for the callback"
    );
    // `status` shows when the last callback came.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let out = watchd(&["status", "-c", daemon.dir.join("config.toml").to_str().unwrap()], &[]).await;
        let (stdout, stderr) = text(&out);
        if stdout.contains("callbacks: last VOD Station callback") {
            assert!(!stdout.contains(TOKEN) && !stderr.contains(TOKEN), "{stdout}{stderr}");
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "status never showed the callback:\n{stdout}{stderr}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    daemon.signal("TERM");
    assert!(daemon.exit_within(Duration::from_secs(10)).await.success());
    assert!(
        !daemon.log().contains(TOKEN),
        "the token reached the log:\n{}",
        daemon.log()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_forged_callback_produces_no_event_and_at_most_one_extra_list_call() {
    let sim = sim_with(RUNNING, 100_000).await;
    let mut daemon = start(&config(&sim, "5m")).await;
    first_sight(&daemon).await;
    let url = callback_url(&daemon, TOKEN).await;
    let reads_before = list_calls(&sim).len();
    let forged_at = now_ms();
    // A forged (or replayed) COMPLETE for an encode that is still running.
    assert_eq!(post(&url, body(7, "COMPLETE").to_string()).await, 204);
    wait_list_read_committed(&daemon, forged_at).await;
    let events = outbox(&daemon);
    assert!(
        !has(&events, "vod.encode.complete", ENCODE),
        "a callback is a hint, never state:\n{}",
        summary(&events)
    );
    assert_eq!(events.len(), 1, "only the first sight:\n{}", summary(&events));
    assert_eq!(list_calls(&sim).len(), reads_before + 1, "one extra list read");
    daemon.signal("TERM");
    assert!(daemon.exit_within(Duration::from_secs(10)).await.success());
    assert_eq!(list_calls(&sim).len(), reads_before + 1, "and no more");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_flood_of_a_thousand_callbacks_costs_at_most_a_few_list_calls() {
    let sim = sim_with(RUNNING, 100_000).await;
    let mut daemon = start(&config(&sim, "5m")).await;
    first_sight(&daemon).await;
    let url = callback_url(&daemon, TOKEN).await;
    let reads_before = list_calls(&sim).len();
    let http = reqwest::Client::new();
    let flood_from = now_ms();
    let started = tokio::time::Instant::now();
    let mut sending = tokio::task::JoinSet::new();
    let sem = std::sync::Arc::new(tokio::sync::Semaphore::new(64));
    for i in 0..1000u32 {
        let (http, url, sem) = (http.clone(), url.clone(), sem.clone());
        let status = ["WAITING", "RUNNING", "COMPLETE", "FAILURE"][i as usize % 4];
        sending.spawn(async move {
            let _permit = sem.acquire().await.unwrap();
            http.post(&url)
                .json(&body(7, status))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        });
    }
    while let Some(status) = sending.join_next().await {
        assert_eq!(status.unwrap(), 204);
    }
    let flood = started.elapsed();
    let flood_to = now_ms();
    // The read that follows the flood's last callbacks is committed, then nothing is left.
    wait_list_read_committed(&daemon, flood_to).await;
    let reads: Vec<i64> = list_calls(&sim).into_iter().skip(reads_before).collect();
    // One read at once, then at most one a second while callbacks keep coming, and one
    // for those that came during the last read.
    let bound = 2 + flood.as_secs_f64().ceil() as usize;
    assert!(
        reads.len() <= bound,
        "{} list reads for 1,000 callbacks in {flood:?} (at most {bound})",
        reads.len()
    );
    for pair in reads.windows(2) {
        assert!(
            pair[1] - pair[0] >= 900,
            "reads for hints are a second apart: {reads:?} (flood from {flood_from})"
        );
    }
    let metrics = reqwest::get(format!("http://{}/metrics", daemon.server_addr().await))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("ncp_watchd_callbacks_total{outcome=\"accepted\"} 1000"),
        "{metrics}"
    );
    daemon.signal("TERM");
    assert!(daemon.exit_within(Duration::from_secs(10)).await.success());
    let events = outbox(&daemon);
    assert_eq!(events.len(), 1, "a flood of hints is no event:\n{}", summary(&events));
}

#[tokio::test(flavor = "multi_thread")]
async fn wrong_tokens_oversize_and_malformed_bodies_are_refused_and_counted() {
    let sim = sim_with(RUNNING, 100_000).await;
    let mut daemon = start(&config(&sim, "5m")).await;
    first_sight(&daemon).await;
    let url = callback_url(&daemon, TOKEN).await;
    let reads_before = list_calls(&sim).len();
    let good = body(7, "COMPLETE").to_string();
    let wrong = callback_url(&daemon, "cbTOKEN0sentinel0a1b2c3d4e5f6a7b8c9d0e1f3").await;
    let short = callback_url(&daemon, &TOKEN[..20]).await;
    assert_eq!(post(&wrong, good.clone()).await, 404, "a wrong token");
    assert_eq!(post(&short, good.clone()).await, 404, "a prefix of the token");
    assert_eq!(post(&format!("{url}x"), good.clone()).await, 404, "the token and more");
    let huge = format!(
        "{{\"categoryId\":7,\"status\":\"COMPLETE\",\"pad\":\"{}\"}}",
        "x".repeat(64 * 1024)
    );
    assert_eq!(post(&url, huge.clone()).await, 413, "over 64 KiB");
    assert_eq!(
        post(&wrong, huge).await,
        404,
        "a wrong token learns nothing of the size"
    );
    assert_eq!(post(&url, "{\"categoryId\":7").await, 400, "not JSON");
    assert_eq!(post(&url, "{\"status\":\"COMPLETE\"}").await, 400, "no category");
    assert_eq!(post(&url, "[]").await, 400, "not an object");
    // Tolerant decoding: WAITING with an empty filePath, ids as strings, unknown fields.
    let waiting = json!({"categoryId": "7", "categoryName": "news", "fileId": "1", "filePath": "",
                         "encodingOptionId": "2", "outputType": "hls", "link": false, "status": "WAITING", "extra": [1]});
    assert_eq!(post(&url, waiting.to_string()).await, 204);
    assert_eq!(
        post(&url, body(8, "COMPLETE").to_string()).await,
        204,
        "an unwatched category"
    );
    let exactly = format!(
        "{{\"categoryId\":8,\"status\":\"RUNNING\",\"pad\":\"{}\"}}",
        "y".repeat(64 * 1024 - 44)
    );
    assert_eq!(exactly.len(), 64 * 1024);
    assert_eq!(post(&url, exactly).await, 204, "64 KiB is still a body");
    let metrics_url = format!("http://{}/metrics", daemon.server_addr().await);
    let expected = [
        "ncp_watchd_callbacks_total{outcome=\"bad_token\"} 4",
        "ncp_watchd_callbacks_total{outcome=\"too_large\"} 1",
        "ncp_watchd_callbacks_total{outcome=\"malformed\"} 3",
        "ncp_watchd_callbacks_total{outcome=\"accepted\"} 1",
        "ncp_watchd_callbacks_total{outcome=\"ignored\"} 2",
    ];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let metrics = loop {
        let metrics = reqwest::get(&metrics_url).await.unwrap().text().await.unwrap();
        if expected.iter().all(|e| metrics.contains(e)) {
            break metrics;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{expected:?} not all in:\n{metrics}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(metrics.contains("# HELP ncp_watchd_callbacks_total"), "{metrics}");
    assert!(!metrics.contains(TOKEN), "the token reached /metrics");
    crate::ops::promtool_check(&metrics);
    daemon.signal("TERM");
    assert!(daemon.exit_within(Duration::from_secs(10)).await.success());
    assert!(
        list_calls(&sim).len() <= reads_before + 1,
        "only the one watched, valid callback asked for a read"
    );
    let log = daemon.log();
    assert!(
        log.contains("for a category no watch claims"),
        "ignored at debug:\n{log}"
    );
    for secret in [TOKEN, &TOKEN[..20]] {
        assert!(!log.contains(secret), "the token reached the log:\n{log}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn callbacks_lost_entirely_still_end_in_the_event_through_the_fallback_read() {
    let sim = sim_with(RUNNING, 100_000).await;
    // No callback URL: every callback is lost. The fallback reads every 2 s.
    let daemon = start(&config(&sim, "2s")).await;
    first_sight(&daemon).await;
    set_encode(&sim, "FAILURE", 60.0);
    let events = daemon
        .wait_for(Duration::from_secs(10), "the failure, through the fallback", |e| {
            has(e, "vod.encode.failure", ENCODE)
        })
        .await;
    let failure = events.iter().find(|e| e["type"] == "vod.encode.failure").unwrap();
    assert!(failure["data"].get("hint").is_none(), "{failure}");
    assert!(sim.callbacks().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn the_simulator_sends_vod_stations_callback_for_every_status_change_but_canceled() {
    let receiver = crate::receiver::Receiver::start("127.0.0.1:0".parse().unwrap(), vec![]).await;
    let sim = sim_with(
        r#"
[[vod]]
category_id = "7"
category_name = "news"
file_path = "a.mp4"
output_type = "hls"
started_ago = "1m"
encode = [{ at = "0s", status = "RUNNING", percent = 10 }]
"#,
        100_000,
    )
    .await;
    sim.set_vod_callback_url(Some(receiver.url_with_path("/cb")));
    set_encode(&sim, "RUNNING", 50.0); // progress only: no status change, no callback
    set_encode(&sim, "FAILURE", 50.0);
    wait_n(&sim, 1).await;
    sim.set(SetState::Vod {
        category_id: "7".into(),
        category_name: None,
        file_path: "a.mp4".into(),
        output_type: "hls".into(),
        status: "WAITING".into(),
        percent: Some(0.0),
        new_job: true,
    });
    wait_n(&sim, 2).await;
    set_encode(&sim, "CANCELED", 0.0);
    set_encode(&sim, "RUNNING", 5.0);
    wait_n(&sim, 3).await;
    let received = receiver.wait_delivered(3, Duration::from_secs(10)).await;
    let bodies: Vec<Value> = received
        .iter()
        .map(|r| serde_json::from_str(&r.body).unwrap())
        .collect();
    let statuses: Vec<&str> = bodies.iter().map(|b| b["status"].as_str().unwrap()).collect();
    assert_eq!(
        statuses,
        ["FAILURE", "WAITING", "RUNNING"],
        "no CANCELED, no progress: {bodies:?}"
    );
    for b in &bodies {
        for key in [
            "categoryId",
            "categoryName",
            "fileId",
            "filePath",
            "encodingOptionId",
            "outputType",
            "link",
            "status",
        ] {
            assert!(b.get(key).is_some(), "{key} missing from {b}");
        }
        assert_eq!(b["categoryId"], 7);
        assert!(ncp_watchd::ncp::vod::decode_vod_callback(b.to_string().as_bytes()).is_ok());
    }
    assert_eq!(bodies[1]["filePath"], "", "filePath is empty while WAITING");
    assert_eq!(bodies[2]["filePath"], "a.mp4");
    assert_eq!(sim.callbacks().len(), 3);
}

async fn wait_n(sim: &SimHandle, n: usize) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while sim.callbacks().len() < n {
        assert!(
            tokio::time::Instant::now() < deadline,
            "fewer than {n} callbacks: {:?}",
            sim.callbacks()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn check_enforces_the_token_and_never_prints_it() {
    let watch = "[[watch.vod]]\ncategories = [\"7\"]\n";
    let run = |toml: String, env: Vec<(&'static str, String)>| async move {
        let dir = config_dir(&toml);
        let mut all: Vec<(&str, &str)> = sim_env().to_vec();
        all.extend(env.iter().map(|(k, v)| (*k, v.as_str())));
        let out = watchd(&["check", "-c", dir.path.to_str().unwrap()], &all).await;
        let (stdout, stderr) = text(&out);
        (out.status.code(), stdout, stderr)
    };
    let with = |lines: &str| format!("{watch}[callbacks]\n{lines}\n");
    // A good token from the environment: the summary says where it comes from.
    let (code, stdout, stderr) = run(
        with(&format!("vod_token_env = \"{TOKEN_ENV}\"")),
        vec![(TOKEN_ENV, TOKEN.to_string())],
    )
    .await;
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        stdout.contains(&format!("<the token from environment variable {TOKEN_ENV}>")),
        "{stdout}"
    );
    assert!(stdout.contains("read every 5m"), "{stdout}");
    assert!(!stdout.contains(TOKEN) && !stderr.contains(TOKEN), "{stdout}{stderr}");
    // Too short, from a file beside the config.
    let dir = config_dir(&with("vod_token_file = \"token\"\nfallback_interval = \"1m\""));
    let short = "short-but-not-32-characters";
    std::fs::write(dir.path.parent().unwrap().join("token"), format!("{short}\n")).unwrap();
    let out = watchd(&["check", "-c", dir.path.to_str().unwrap()], &sim_env()).await;
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(2), "{stdout}{stderr}");
    assert!(stderr.contains("at least 32"), "{stderr}");
    assert!(stderr.contains("token"), "names the file: {stderr}");
    assert!(!stderr.contains(short) && !stdout.contains(short), "{stdout}{stderr}");
    // Characters that would need encoding in a URL path.
    let (code, _, stderr) = run(
        with(&format!("vod_token_env = \"{TOKEN_ENV}\"")),
        vec![(TOKEN_ENV, format!("{TOKEN}/with?slash"))],
    )
    .await;
    assert_eq!(code, Some(2));
    assert!(stderr.contains("letters, digits"), "{stderr}");
    assert!(!stderr.contains(TOKEN), "{stderr}");
    // Unset, both sources, neither.
    let (code, _, stderr) = run(with(&format!("vod_token_env = \"{TOKEN_ENV}\"")), vec![]).await;
    assert_eq!(code, Some(2));
    assert!(
        stderr.contains(&format!("environment variable {TOKEN_ENV} is not set")),
        "{stderr}"
    );
    // `run` refuses it as the configuration error it is (exit 2), before polling.
    let dir = config_dir(&config_text(
        "http://127.0.0.1:9",
        "",
        &with(&format!("vod_token_env = \"{TOKEN_ENV}\"")),
    ));
    let out = watchd(&["run", "-c", dir.path.to_str().unwrap()], &sim_env()).await;
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(2), "{stdout}{stderr}");
    assert!(stderr.contains(&format!("{TOKEN_ENV} is not set")), "{stderr}");
    let (code, _, stderr) = run(
        with(&format!("vod_token_env = \"{TOKEN_ENV}\"\nvod_token_file = \"t\"")),
        vec![(TOKEN_ENV, TOKEN.to_string())],
    )
    .await;
    assert_eq!(code, Some(2));
    assert!(stderr.contains("not both"), "{stderr}");
    let (code, _, stderr) = run(with("fallback_interval = \"1m\""), vec![]).await;
    assert_eq!(code, Some(2));
    assert!(stderr.contains("missing the callback token"), "{stderr}");
    let (code, _, stderr) = run(with("vod_token_envv = \"X\""), vec![]).await;
    assert_eq!(code, Some(2));
    assert!(stderr.contains("did you mean `vod_token_env`"), "{stderr}");
}
