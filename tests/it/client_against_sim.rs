//! The NCP client against the simulator over loopback: every endpoint, every error class.

use std::time::Duration;

use ncp_watchd::ncp::{ApiError, NcpClient, Retry};
use ncp_watchd::sim::{ErrorShape, Fault, FaultAction, SetState};

use crate::helpers::{client, config, config_text, credentials, sim_credentials, sim_with};

const SCENARIO: &str = r#"
[[video_asset]]
workspace = "my ws"
project_id = "1234"
asset_id = "5678"
resolution = "1920x1080"
size = 120333399
import = [{ at = "0s", status = "COMPLETED" }]
analysis = [{ at = "0s", status = "ANALYZING" }]

[[search_image]]
asset_key = "images/2026/11/query image.jpg"
upload = [{ at = "0s", status = "FAILED", message = "RESOLUTION_NOT_SUPPORT" }]

[[vod]]
category_id = "10019"
category_name = "test2"
file_path = "dir/a.mp4"
output_type = "auto"
started_ago = "1h"
encode = [{ at = "0s", status = "RUNNING", percent = 45 }]
"#;

fn fault(path: &str, action: FaultAction) -> Fault {
    Fault {
        path_contains: Some(path.to_string()),
        count: 1,
        action,
    }
}

#[tokio::test]
async fn every_endpoint_answers_a_signed_request() {
    let sim = sim_with(SCENARIO, 1000).await;
    let c = client(&sim, "");
    let s = c.import_status("my ws", "1234", "5678").await.unwrap();
    assert_eq!(s.upload_status, "COMPLETED");
    assert_eq!(s.meta_data.unwrap().size, Some(120333399));
    assert_eq!(
        c.analysis_status("my ws", "1234", "5678").await.unwrap().status,
        "ANALYZING"
    );
    let i = c.search_image_status("images/2026/11/query image.jpg").await.unwrap();
    assert_eq!(
        (i.upload_status.as_str(), i.upload_message.as_deref()),
        ("FAILED", Some("RESOLUTION_NOT_SUPPORT"))
    );
    let assets = c.list_assets("my ws", "1234").await.unwrap();
    assert_eq!(assets.iter().map(|a| a.asset_id.as_str()).collect::<Vec<_>>(), ["5678"]);
    let now = chrono::Utc::now().timestamp_millis();
    let encodes = c.vod_statuses(now - 86_400_000, now).await.unwrap();
    assert_eq!(encodes.len(), 1);
    assert_eq!(
        (encodes[0].status.as_str(), encodes[0].percent),
        ("RUNNING", Some(45.0))
    );
    let new = c
        .register_asset("my ws", "1234", "bucket", "uploads/new.mp4")
        .await
        .unwrap();
    assert_eq!(
        c.import_status("my ws", "1234", &new.asset_id)
            .await
            .unwrap()
            .upload_status,
        "IN_PROGRESS"
    );

    // The workspace with a space went out percent-encoded, and that encoded form was signed
    // (the simulator verified every signature above).
    let targets: Vec<String> = sim.requests().into_iter().map(|r| r.target).collect();
    assert!(
        targets
            .iter()
            .any(|t| t == "/api/v1/workspaces/my%20ws/projects/1234/video-assets/5678/import-status"),
        "{targets:?}"
    );
    assert!(
        targets
            .iter()
            .any(|t| t.starts_with("/api/v2/status?pageNo=1&pageSizeNo=100&workStartTimeFrom=")),
        "{targets:?}"
    );
    assert!(sim.requests().iter().all(|r| r.status == 200));
}

#[tokio::test]
async fn the_newer_asset_path_revision_is_used_when_configured() {
    let sim = sim_with(SCENARIO, 1000).await;
    let c = client(&sim, "media_asset_path = \"assets\"");
    assert_eq!(
        c.import_status("my ws", "1234", "5678").await.unwrap().upload_status,
        "COMPLETED"
    );
    assert!(
        sim.requests()
            .iter()
            .any(|r| r.target == "/api/v1/workspaces/my%20ws/projects/1234/assets/5678/import-status")
    );
}

#[tokio::test]
async fn lists_are_paged_to_the_end() {
    let mut scenario = String::new();
    for i in 1..=2345 {
        scenario.push_str(&format!("[[video_asset]]\nworkspace = \"w\"\nproject_id = \"1\"\nasset_id = \"{i}\"\nimport = [{{ at = \"0s\", status = \"IN_PROGRESS\" }}]\n"));
    }
    for i in 0..250 {
        scenario.push_str(&format!("[[vod]]\ncategory_id = \"1\"\nfile_path = \"f{i}.mp4\"\noutput_type = \"o\"\nencode = [{{ at = \"0s\", status = \"WAITING\" }}]\n"));
    }
    let sim = sim_with(&scenario, 1000).await;
    let c = client(&sim, "");
    let assets = c.list_assets("w", "1").await.unwrap();
    assert_eq!(assets.len(), 2345);
    let now = chrono::Utc::now().timestamp_millis();
    let encodes = c.vod_statuses(now - 60_000, now + 60_000).await.unwrap();
    assert_eq!(encodes.len(), 250);
    let pages: Vec<String> = sim.requests().into_iter().map(|r| r.target).collect();
    assert_eq!(
        pages.iter().filter(|t| t.contains("/assets?pageNum=")).count(),
        3,
        "{pages:?}"
    );
    assert_eq!(
        pages.iter().filter(|t| t.contains("/api/v2/status?")).count(),
        3,
        "{pages:?}"
    );
}

#[tokio::test]
async fn vod_numbers_served_as_strings_decode_the_same() {
    let sim = sim_with(&format!("numbers_as_strings = true\n{SCENARIO}"), 1000).await;
    let now = chrono::Utc::now().timestamp_millis();
    let encodes = client(&sim, "").vod_statuses(now - 86_400_000, now).await.unwrap();
    assert_eq!(
        (encodes[0].category_id.as_str(), encodes[0].percent),
        ("10019", Some(45.0))
    );
}

#[tokio::test]
async fn a_wrong_secret_key_is_refused_like_the_gateway_refuses_it() {
    let sim = sim_with(SCENARIO, 1000).await;
    let c = client(&sim, "").with_credentials(&credentials(
        ncp_watchd::sim::DEFAULT_ACCESS_KEY,
        "WRONG-SECRET-SENTINEL",
    ));
    let e = c.import_status("my ws", "1234", "5678").await.unwrap_err();
    assert!(
        matches!(&e, ApiError::AuthRefused { status: 401, code, .. } if code == "200"),
        "{e:?}"
    );
    assert!(e.fails_watch_at_once());
    assert_eq!(e.retry(), Retry::NotSoon);
    assert!(!e.to_string().contains("WRONG-SECRET-SENTINEL"));
}

#[tokio::test]
async fn a_timestamp_more_than_five_minutes_off_is_refused() {
    let sim = sim_with(SCENARIO, 1000).await;
    let stale = client(&sim, "").with_clock_offset(-6 * 60 * 1000);
    let e = stale.import_status("my ws", "1234", "5678").await.unwrap_err();
    assert!(
        matches!(&e, ApiError::AuthRefused { message, .. } if message.contains("5 minutes")),
        "{e:?}"
    );
    let slightly_off = client(&sim, "").with_clock_offset(-4 * 60 * 1000);
    assert!(slightly_off.import_status("my ws", "1234", "5678").await.is_ok());
}

#[tokio::test]
async fn each_gateway_error_class_arrives_classified() {
    let sim = sim_with(SCENARIO, 1000).await;
    let c = client(&sim, "");
    let call = || c.import_status("my ws", "1234", "5678");
    let error = |status: u16, code: Option<&str>, retry_after: Option<u64>| FaultAction::Error {
        status,
        error_code: code.map(str::to_string),
        retry_after,
        shape: ErrorShape::Gateway,
    };
    sim.inject(fault("import-status", error(400, None, None)));
    assert!(matches!(call().await, Err(ApiError::BadRequest { .. })));
    sim.inject(fault("import-status", error(401, Some("210"), None)));
    assert!(matches!(call().await, Err(ApiError::AuthRefused { code, .. }) if code == "210"));
    sim.inject(fault("import-status", error(429, Some("420"), Some(1))));
    let e = call().await.unwrap_err();
    assert_eq!(e.retry(), Retry::After(Duration::from_secs(1)));
    assert!(e.slows_host());
    for (status, code) in [(503, "500"), (504, "510"), (500, "900")] {
        sim.inject(fault("import-status", error(status, None, None)));
        let e = call().await.unwrap_err();
        assert!(
            matches!(&e, ApiError::Server { status: s, code: c, .. } if *s == status && c == code),
            "{e:?}"
        );
        assert_eq!(e.retry(), Retry::Backoff);
    }
    sim.inject(fault("import-status", FaultAction::Malformed { body: None }));
    assert!(matches!(call().await, Err(ApiError::Malformed { .. })));
    assert!(matches!(
        c.import_status("my ws", "1234", "404404").await,
        Err(ApiError::NotFound { .. })
    ));
    assert!(call().await.is_ok(), "faults are used up and the next call succeeds");
}

#[tokio::test]
async fn a_stalled_answer_times_out_and_a_closed_port_is_a_transport_error() {
    let sim = sim_with(SCENARIO, 1000).await;
    let c = client(&sim, "timeout = \"300ms\"");
    sim.inject(fault("import-status", FaultAction::Stall { ms: 3000 }));
    let e = c.import_status("my ws", "1234", "5678").await.unwrap_err();
    assert!(matches!(e, ApiError::Timeout(_)), "{e:?}");
    assert_eq!(e.retry(), Retry::Backoff);

    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let cfg = config(&config_text(
        &format!("http://{closed}"),
        "",
        "[[watch.search_image]]\nasset_key = \"x\"\n",
    ));
    let c = NcpClient::new(&cfg.api, &sim_credentials()).unwrap();
    let e = c.search_image_status("x").await.unwrap_err();
    assert!(matches!(&e, ApiError::Transport(m) if m.contains("onnect")), "{e:?}");
}

#[tokio::test]
async fn over_the_simulated_quota_answers_429_with_retry_after() {
    let sim = sim_with(SCENARIO, 3).await;
    let c = client(&sim, "");
    // The quota is per access key (SPEC §7): a VOD Station call counts against it too.
    let now = chrono::Utc::now().timestamp_millis();
    c.vod_statuses(now - 1000, now).await.unwrap();
    for _ in 0..2 {
        c.import_status("my ws", "1234", "5678").await.unwrap();
    }
    let e = c.import_status("my ws", "1234", "5678").await.unwrap_err();
    let ApiError::RateLimited {
        retry_after: Some(wait),
        ..
    } = e
    else {
        panic!("{e:?}")
    };
    assert!(wait > Duration::ZERO && wait <= Duration::from_secs(60), "{wait:?}");
}

#[tokio::test]
async fn the_client_spaces_calls_to_stay_within_its_per_minute_limit() {
    // 600 per minute is one call per 100 ms after a burst of two: 12 calls cannot finish in
    // under a second, and the simulator, holding the same quota, never refuses one.
    let sim = sim_with(SCENARIO, 600).await;
    let cfg = config(&config_text(
        &sim.url(),
        "rate_limit_per_minute = 600",
        "[[watch.search_image]]\nasset_key = \"x\"\n",
    ));
    let c = NcpClient::new(&cfg.api, &sim_credentials()).unwrap();
    let mut calls = tokio::task::JoinSet::new();
    for _ in 0..12 {
        let c = c.clone();
        calls.spawn(async move { c.import_status("my ws", "1234", "5678").await.map(|_| ()) });
    }
    for r in calls.join_all().await {
        r.unwrap();
    }
    let log = sim.requests();
    assert!(log.iter().all(|r| r.status == 200));
    let span = log.last().unwrap().at_ms - log.first().unwrap().at_ms;
    assert!(span >= 990, "12 calls at 600/min took only {span} ms");
}

#[tokio::test]
async fn state_changes_made_through_the_simulator_are_seen_by_the_next_poll() {
    let sim = sim_with(SCENARIO, 1000).await;
    let c = client(&sim, "");
    sim.set(SetState::VideoAsset {
        workspace: "my ws".into(),
        project_id: "1234".into(),
        asset_id: "5678".into(),
        status: "FAILED".into(),
    });
    assert_eq!(
        c.import_status("my ws", "1234", "5678").await.unwrap().upload_status,
        "FAILED"
    );
}
