//! The simulator on its own: the `ncp-sim` binary, its admin routes and its gateway rules.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ncp_watchd::ncp::signer;
use ncp_watchd::sim::{self, SetState, SimHandle};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::helpers::{client, sim_with};

const SCENARIO: &str = r#"
[[video_asset]]
workspace = "w"
project_id = "1"
asset_id = "2"
import = [{ at = "0s", status = "IN_PROGRESS" }]
"#;

#[tokio::test]
async fn unsigned_requests_get_the_gateway_error_body() {
    let sim = sim_with(SCENARIO, 1000).await;
    let response = reqwest::get(format!(
        "{}/api/v1/workspaces/w/projects/1/video-assets/2/import-status",
        sim.url()
    ))
    .await
    .unwrap();
    assert_eq!(response.status().as_u16(), 401);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["errorCode"], "200");
    assert_eq!(body["error"]["message"], "Authentication Failed");
}

#[tokio::test]
async fn admin_routes_set_states_inject_faults_and_show_the_request_log() {
    let sim = sim_with(SCENARIO, 1000).await;
    let http = reqwest::Client::new();
    let c = client(&sim, "");
    let set =
        json!({"kind": "video_asset", "workspace": "w", "project_id": "1", "asset_id": "2", "status": "COMPLETED"});
    let r = http
        .post(format!("{}/_sim/state", sim.url()))
        .json(&set)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 204);
    assert_eq!(c.import_status("w", "1", "2").await.unwrap().upload_status, "COMPLETED");

    let fault = json!({"fault": "error", "status": 503, "count": 2, "path_contains": "import-status"});
    assert_eq!(
        http.post(format!("{}/_sim/faults", sim.url()))
            .json(&fault)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16(),
        204
    );
    assert!(c.import_status("w", "1", "2").await.is_err());
    assert!(c.import_status("w", "1", "2").await.is_err());
    assert!(c.import_status("w", "1", "2").await.is_ok());

    let bad = http
        .post(format!("{}/_sim/faults", sim.url()))
        .body("{\"fault\":\"meteor\"}")
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status().as_u16(), 400);

    let log: Vec<Value> = http
        .get(format!("{}/_sim/requests", sim.url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let statuses: Vec<u64> = log.iter().map(|r| r["status"].as_u64().unwrap()).collect();
    assert_eq!(statuses, [200, 503, 503, 200]);
    assert_eq!(log[0]["service"], "media");
    assert_eq!(log[0]["access_key"], ncp_watchd::sim::DEFAULT_ACCESS_KEY);

    let status: Value = http
        .get(format!("{}/_sim/status", sim.url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(status["requests"], 4);
}

#[tokio::test]
async fn the_ncp_sim_binary_serves_on_the_address_it_prints() {
    let scenario = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(scenario.path(), SCENARIO).unwrap();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_ncp-sim"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--quota",
            "50",
            "--scenario",
            scenario.path().to_str().unwrap(),
        ])
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let url = first
        .strip_prefix("ncp-sim listening on ")
        .unwrap_or_else(|| panic!("{first}"))
        .to_string();
    let mut rest = String::new();
    while let Ok(Ok(Some(line))) = tokio::time::timeout(Duration::from_secs(2), lines.next_line()).await {
        rest.push_str(&line);
        rest.push('\n');
        if line.contains("admin:") {
            break;
        }
    }
    assert!(rest.contains("quota: 50 calls/min"), "{rest}");

    let cfg = crate::helpers::config(&crate::helpers::config_text(
        &url,
        "",
        "[[watch.search_image]]\nasset_key = \"x\"\n",
    ));
    let c = ncp_watchd::ncp::NcpClient::new(&cfg.api, &crate::helpers::sim_credentials()).unwrap();
    assert_eq!(
        c.import_status("w", "1", "2").await.unwrap().upload_status,
        "IN_PROGRESS"
    );
    child.kill().await.unwrap();
}

#[tokio::test]
async fn ncp_sim_rejects_a_bad_scenario_file_with_its_line() {
    let scenario = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(scenario.path(), "[[vod]]\ncategory_id = \"1\"\nfile_paht = \"x\"\n").unwrap();
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_ncp-sim"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--scenario",
            scenario.path().to_str().unwrap(),
        ])
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("line 3") && stderr.contains("file_paht"), "{stderr}");
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as i64
}

/// Sends `method target` (path and query exactly as on the wire) to `sim`, signed with its
/// credentials at `timestamp_ms` over `signed_target`, with an optional JSON body.
async fn send_signed_as(
    sim: &SimHandle,
    method: &str,
    target: &str,
    signed_target: &str,
    timestamp_ms: i64,
    body: Option<Value>,
) -> reqwest::Response {
    let signature = signer::sign(
        method,
        signed_target,
        timestamp_ms as u64,
        sim::DEFAULT_ACCESS_KEY,
        sim::DEFAULT_SECRET_KEY,
    );
    let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let mut request = reqwest::Client::new()
        .request(method, format!("{}{target}", sim.url()))
        .header(signer::HEADER_TIMESTAMP, timestamp_ms.to_string())
        .header(signer::HEADER_ACCESS_KEY, sim::DEFAULT_ACCESS_KEY)
        .header(signer::HEADER_SIGNATURE, signature);
    if let Some(body) = body {
        request = request.json(&body);
    }
    request.send().await.unwrap()
}

/// A correctly signed request at the real clock; returns the status and the JSON body.
async fn call(sim: &SimHandle, method: &str, target: &str, body: Option<Value>) -> (u16, Value) {
    let response = send_signed_as(sim, method, target, target, now_ms(), body).await;
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

async fn post_fault(sim: &SimHandle, fault: Value) {
    let r = reqwest::Client::new()
        .post(format!("{}/_sim/faults", sim.url()))
        .json(&fault)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 204, "{fault}");
}

fn date_ms(response: &reqwest::Response) -> i64 {
    let date = response
        .headers()
        .get("date")
        .expect("every response has a Date header")
        .to_str()
        .unwrap();
    httpdate::parse_http_date(date)
        .unwrap()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

const VOD_PAGE: &str = "/api/v2/status?pageNo=1&pageSizeNo=10";

/// `filePath status` of each row of a VOD page, in order.
fn vod_rows(body: &Value) -> Vec<String> {
    body["content"]
        .as_array()
        .unwrap_or_else(|| panic!("{body}"))
        .iter()
        .map(|r| format!("{} {}", r["filePath"].as_str().unwrap(), r["status"].as_str().unwrap()))
        .collect()
}

/// Sets a state through the admin route, as a test written in another language would.
async fn set_state(sim: &SimHandle, change: Value) {
    let r = reqwest::Client::new()
        .post(format!("{}/_sim/state", sim.url()))
        .json(&change)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 204, "{change}");
}

#[tokio::test]
async fn empty_list_pages_answer_null_content_when_the_scenario_plays_it() {
    let scenario = format!("null_empty_lists = true\n{SCENARIO}");
    let sim = sim_with(&scenario, 1000).await;
    let (status, body) = call(
        &sim,
        "GET",
        "/api/v1/workspaces/w/projects/9/assets?pageNum=1&pageSize=10",
        None,
    )
    .await;
    assert_eq!(status, 200);
    assert!(body["result"]["content"].is_null(), "{body}");
    assert_eq!(body["result"]["totalCount"], 0);
    // A page past the end of a non-empty list is empty too.
    let (_, body) = call(
        &sim,
        "GET",
        "/api/v1/workspaces/w/projects/1/assets?pageNum=2&pageSize=10",
        None,
    )
    .await;
    assert!(body["result"]["content"].is_null(), "{body}");
    let (_, body) = call(
        &sim,
        "GET",
        "/api/v1/workspaces/w/projects/1/assets?pageNum=1&pageSize=10",
        None,
    )
    .await;
    assert_eq!(body["result"]["content"][0]["assetId"], 2);
    let (status, body) = call(&sim, "GET", VOD_PAGE, None).await;
    assert_eq!(status, 200);
    assert!(body["content"].is_null(), "{body}");

    // Without the option an empty page is an empty array.
    let sim = sim_with(SCENARIO, 1000).await;
    let (_, body) = call(&sim, "GET", VOD_PAGE, None).await;
    assert_eq!(body["content"], json!([]));
}

#[tokio::test]
async fn every_response_carries_the_gateway_clock_and_the_window_follows_it() {
    const AHEAD_MS: i64 = 3_600_000;
    let sim = sim_with(&format!("clock_offset_ms = {AHEAD_MS}\n{SCENARIO}"), 1000).await;
    let target = "/api/v1/workspaces/w/projects/1/video-assets/2/import-status";

    // Signed at the real clock: an hour behind the gateway, so refused, and the Date header
    // shows the gateway's clock.
    let before = now_ms();
    let refused = send_signed_as(&sim, "GET", target, target, before, None).await;
    assert_eq!(refused.status().as_u16(), 401);
    let skew = date_ms(&refused) - before;
    assert!((AHEAD_MS - 5_000..=AHEAD_MS + 5_000).contains(&skew), "{skew}");
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["error"]["errorCode"], "200");

    // Signed at the gateway's clock: accepted.
    let ok = send_signed_as(&sim, "GET", target, target, now_ms() + AHEAD_MS, None).await;
    assert_eq!(ok.status().as_u16(), 200);
    assert!((date_ms(&ok) - now_ms() - AHEAD_MS).abs() < 5_000);

    // Unsigned requests, unknown routes and admin routes carry it too.
    let unsigned = reqwest::get(format!("{}{target}", sim.url())).await.unwrap();
    assert_eq!(unsigned.status().as_u16(), 401);
    assert!((date_ms(&unsigned) - now_ms() - AHEAD_MS).abs() < 5_000);
    let admin = reqwest::get(format!("{}/_sim/status", sim.url())).await.unwrap();
    date_ms(&admin);

    // A gateway behind the real clock by 10 minutes refuses a request signed now.
    let sim = sim_with(&format!("clock_offset_ms = -600000\n{SCENARIO}"), 1000).await;
    let behind = send_signed_as(&sim, "GET", target, target, now_ms(), None).await;
    assert_eq!(behind.status().as_u16(), 401);
    assert!((date_ms(&behind) - now_ms() + 600_000).abs() < 5_000);
}

#[tokio::test]
async fn signatures_are_checked_over_the_target_exactly_as_sent() {
    let sim = sim_with(SCENARIO, 1000).await;
    for target in [
        "/api/v1/workspaces/my%20ws/projects/1/video-assets/2/import-status",
        "/api/v1/workspaces/%EC%98%81%EC%83%81/projects/1/video-assets/2/import-status",
        "/api/v2/status?pageNo=1&pageSizeNo=10&q=a%2Bb%2Fc%3Dd%25e",
    ] {
        let signed = send_signed_as(&sim, "GET", target, target, now_ms(), None).await;
        assert_ne!(signed.status().as_u16(), 401, "{target}");
        // The same request signed over its decoded form is refused.
        let decoded = percent_encoding::percent_decode_str(target).decode_utf8().unwrap();
        let refused = send_signed_as(&sim, "GET", target, &decoded, now_ms(), None).await;
        assert_eq!(refused.status().as_u16(), 401, "{target}");
    }
}

#[tokio::test]
async fn a_reversed_vod_window_is_refused_with_errorcode_100() {
    let sim = sim_with(SCENARIO, 1000).await;
    let reversed = format!("{VOD_PAGE}&workStartTimeFrom=2000&workStartTimeTo=1000");
    let (status, body) = call(&sim, "GET", &reversed, None).await;
    assert_eq!(status, 400);
    assert_eq!(body["error"]["errorCode"], "100");
    let ordered = format!("{VOD_PAGE}&workStartTimeFrom=1000&workStartTimeTo=2000");
    assert_eq!(call(&sim, "GET", &ordered, None).await.0, 200);
}

#[tokio::test]
async fn a_search_image_not_in_object_storage_yet_answers_failed_file_not_exist() {
    let scenario = format!(
        "{SCENARIO}\n[[search_image]]\nasset_key = \"later.jpg\"\nupload = [{{ at = \"1h\", status = \"COMPLETED\" }}]\n"
    );
    let sim = sim_with(&scenario, 1000).await;
    for key in ["never-uploaded.jpg", "later.jpg"] {
        let (status, body) = call(
            &sim,
            "POST",
            "/api/v1/query-assets/uploads/complete",
            Some(json!({"assetKey": key})),
        )
        .await;
        assert_eq!(status, 200, "{key}");
        assert_eq!(
            body,
            json!({"code": "0", "message": "success", "result": {"assetKey": key, "uploadStatus": "FAILED", "uploadMessage": "FILE_NOT_EXIST"}})
        );
    }
    sim.set(SetState::SearchImage {
        asset_key: "later.jpg".into(),
        status: "COMPLETED".into(),
        message: None,
    });
    let status = client(&sim, "").search_image_status("later.jpg").await.unwrap();
    assert_eq!(status.upload_status, "COMPLETED");
}

#[tokio::test]
async fn the_assets_import_status_path_leaves_out_video_id() {
    let sim = sim_with(SCENARIO, 1000).await;
    let (status, newer) = call(
        &sim,
        "GET",
        "/api/v1/workspaces/w/projects/1/assets/2/import-status",
        None,
    )
    .await;
    assert_eq!(status, 200);
    assert!(newer["result"].get("videoId").is_none(), "{newer}");
    assert_eq!(newer["result"]["uploadStatus"], "IN_PROGRESS");
    let (_, older) = call(
        &sim,
        "GET",
        "/api/v1/workspaces/w/projects/1/video-assets/2/import-status",
        None,
    )
    .await;
    assert_eq!(older["result"]["videoId"], 2);
}

#[tokio::test]
async fn injected_errors_come_in_each_services_shape() {
    let sim = sim_with(SCENARIO, 1000).await;
    let target = "/api/v1/workspaces/w/projects/1/video-assets/2/import-status";
    let cases = [
        (
            json!({"fault": "error", "status": 400}),
            400,
            json!({"error": {"errorCode": "100", "message": "Injected Fault", "details": "injected by /_sim/faults"}}),
        ),
        (
            json!({"fault": "error", "status": 404, "shape": "gateway"}),
            404,
            json!({"error": {"errorCode": "300", "message": "Injected Fault", "details": "injected by /_sim/faults"}}),
        ),
        (
            json!({"fault": "error", "status": 400, "error_code": "4001", "shape": "mi"}),
            400,
            json!({"code": "4001", "message": "Injected Fault"}),
        ),
        (
            json!({"fault": "error", "status": 500, "shape": "response_error"}),
            500,
            json!({"responseError": {"code": "900", "message": "Injected Fault"}}),
        ),
    ];
    for (fault, status, body) in cases {
        post_fault(&sim, fault.clone()).await;
        assert_eq!(call(&sim, "GET", target, None).await, (status, body), "{fault}");
    }
    assert_eq!(call(&sim, "GET", target, None).await.0, 200);

    let bad = reqwest::Client::new()
        .post(format!("{}/_sim/faults", sim.url()))
        .json(&json!({"fault": "error", "status": 400, "shape": "soap"}))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status().as_u16(), 400);
}

const TWO_VODS: &str = r#"
[[vod]]
category_id = "7"
file_path = "a.mp4"
output_type = "hls"
started_ago = "2m"
encode = [{ at = "0s", status = "COMPLETE", percent = 100 }]

[[vod]]
category_id = "7"
file_path = "b.mp4"
output_type = "hls"
started_ago = "1m"
encode = [{ at = "0s", status = "RUNNING", percent = 50 }]
"#;

#[tokio::test]
async fn an_extra_row_is_appended_to_the_next_list_page_only() {
    let scenario = format!("null_empty_lists = true\n{SCENARIO}\n{TWO_VODS}");
    let sim = sim_with(&scenario, 1000).await;
    let bad_vod = json!({"categoryId": 7, "filePath": null, "outputType": "hls", "status": "RUNNING"});
    post_fault(&sim, json!({"fault": "extra_row", "row": bad_vod, "count": 2})).await;
    // A request that is not a list does not use up the fault.
    let import = "/api/v1/workspaces/w/projects/1/video-assets/2/import-status";
    assert_eq!(call(&sim, "GET", import, None).await.0, 200);

    let (status, body) = call(&sim, "GET", VOD_PAGE, None).await;
    assert_eq!(status, 200);
    let rows = body["content"].as_array().unwrap();
    assert_eq!(rows.len(), 3, "{body}");
    assert_eq!(rows[0]["filePath"], "a.mp4");
    assert_eq!(rows[2], bad_vod);
    // The second use lands on an empty page, whose null content becomes an array.
    let (_, body) = call(
        &sim,
        "GET",
        "/api/v1/workspaces/w/projects/9/assets?pageNum=1&pageSize=10",
        None,
    )
    .await;
    assert_eq!(body["result"]["content"], json!([bad_vod]));
    // Used up.
    assert_eq!(vod_rows(&call(&sim, "GET", VOD_PAGE, None).await.1).len(), 2);

    sim.inject(
        serde_json::from_value(json!({
            "fault": "extra_row", "path_contains": "/assets?", "row": {"fileName": "no-id.mp4"},
        }))
        .unwrap(),
    );
    let (_, body) = call(
        &sim,
        "GET",
        "/api/v1/workspaces/w/projects/1/assets?pageNum=1&pageSize=10",
        None,
    )
    .await;
    let rows = body["result"]["content"].as_array().unwrap();
    assert_eq!(rows.len(), 2, "{body}");
    assert_eq!(rows[1], json!({"fileName": "no-id.mp4"}));
}

#[tokio::test]
async fn repeat_page_answers_page_one_whatever_page_is_asked() {
    let mut scenario = String::new();
    for id in 1..=3 {
        scenario.push_str(&format!(
            "[[video_asset]]\nworkspace = \"w\"\nproject_id = \"1\"\nasset_id = \"{id}\"\nimport = [{{ at = \"0s\", status = \"COMPLETED\" }}]\n"
        ));
    }
    let sim = sim_with(&scenario, 1000).await;
    let page = |n: u32| format!("/api/v1/workspaces/w/projects/1/assets?pageNum={n}&pageSize=1");
    let first_id = |body: &Value| body["result"]["content"][0]["assetId"].clone();
    post_fault(&sim, json!({"fault": "repeat_page", "count": 2})).await;
    for n in [3, 2] {
        let (status, body) = call(&sim, "GET", &page(n), None).await;
        assert_eq!(status, 200);
        assert_eq!(first_id(&body), 1, "page {n}: {body}");
        assert_eq!(body["result"]["pageNo"], 1);
    }
    assert_eq!(first_id(&call(&sim, "GET", &page(3), None).await.1), 3);

    // The VOD list's pageNo too.
    let sim = sim_with(
        &format!(
            "{TWO_VODS}\n{}",
            TWO_VODS.replace("a.mp4", "c.mp4").replace("b.mp4", "d.mp4")
        ),
        1000,
    )
    .await;
    let page2 = "/api/v2/status?pageNo=2&pageSizeNo=10";
    assert!(
        call(&sim, "GET", page2, None).await.1["content"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    post_fault(&sim, json!({"fault": "repeat_page", "path_contains": "/api/v2/status"})).await;
    assert_eq!(vod_rows(&call(&sim, "GET", page2, None).await.1).len(), 4);
}

const RE_ENCODED: &str = r#"
[[vod]]
category_id = "7"
file_path = "clip.mp4"
output_type = "hls"
started_ago = "10m"
encode = [{ at = "0s", status = "FAILURE", percent = 40 }]

[[vod]]
category_id = "7"
file_path = "clip.mp4"
output_type = "hls"
started_ago = "1m"
encode = [{ at = "0s", status = "RUNNING", percent = 10 }]
"#;

#[tokio::test]
async fn re_encodes_under_one_name_are_listed_as_separate_jobs_in_either_order() {
    let sim = sim_with(RE_ENCODED, 1000).await;
    let rows = vod_rows(&call(&sim, "GET", VOD_PAGE, None).await.1);
    assert_eq!(rows, ["clip.mp4 FAILURE", "clip.mp4 RUNNING"]);
    let sim = sim_with(&format!("vod_newest_first = true\n{RE_ENCODED}"), 1000).await;
    let (_, body) = call(&sim, "GET", VOD_PAGE, None).await;
    assert_eq!(body["total"], 2);
    assert_eq!(vod_rows(&body), ["clip.mp4 RUNNING", "clip.mp4 FAILURE"]);

    // An update without new_job goes to the newest job, not the first in the file.
    sim.set(
        serde_json::from_value(json!({
            "kind": "vod", "category_id": "7", "file_path": "clip.mp4", "output_type": "hls",
            "status": "COMPLETE", "percent": 100,
        }))
        .unwrap(),
    );
    let (_, body) = call(&sim, "GET", VOD_PAGE, None).await;
    assert_eq!(vod_rows(&body), ["clip.mp4 COMPLETE", "clip.mp4 FAILURE"]);
    assert_eq!(body["content"][1]["percent"], 40);
}

#[tokio::test]
async fn a_new_job_adds_a_row_beside_the_failed_one_with_its_own_last_work_time() {
    let scenario = r#"
[[vod]]
category_id = "7"
category_name = "cat"
file_path = "clip.mp4"
output_type = "hls"
started_ago = "10m"
encode = [{ at = "0s", status = "RUNNING", percent = 10 }]
"#;
    let sim = sim_with(scenario, 1000).await;
    let vod = |status: &str, new_job: bool| {
        json!({
            "kind": "vod", "category_id": "7", "file_path": "clip.mp4", "output_type": "hls",
            "status": status, "new_job": new_job,
        })
    };
    set_state(&sim, vod("FAILURE", false)).await;
    let (_, body) = call(&sim, "GET", VOD_PAGE, None).await;
    assert_eq!(vod_rows(&body), ["clip.mp4 FAILURE"]);
    let failed_at = body["content"][0]["lastWorkTime"].clone();

    set_state(&sim, vod("WAITING", true)).await;
    let (_, body) = call(&sim, "GET", VOD_PAGE, None).await;
    assert_eq!(vod_rows(&body), ["clip.mp4 FAILURE", "clip.mp4 WAITING"]);
    assert_eq!(body["content"][1]["categoryName"], "cat");
    // Each row shows the time of its own latest step (same zone and format, so the text
    // orders like the time; the two may tie within one second, as on NCP).
    assert_eq!(body["content"][0]["lastWorkTime"], failed_at);
    assert!(body["content"][1]["lastWorkTime"].as_str().unwrap() >= failed_at.as_str().unwrap());

    set_state(&sim, vod("RUNNING", false)).await;
    let (_, body) = call(&sim, "GET", VOD_PAGE, None).await;
    assert_eq!(vod_rows(&body), ["clip.mp4 FAILURE", "clip.mp4 RUNNING"]);
    assert_eq!(body["content"][0]["lastWorkTime"], failed_at);
}

#[tokio::test]
async fn ncp_sim_help_describes_the_simulator_not_the_daemon() {
    for flag in ["--help", "-h"] {
        let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_ncp-sim"))
            .arg(flag)
            .output()
            .await
            .unwrap();
        assert!(out.status.success());
        let help = String::from_utf8_lossy(&out.stdout);
        assert!(help.contains("simulator"), "{help}");
        assert!(!help.contains(env!("CARGO_PKG_DESCRIPTION")), "{help}");
        if flag == "--help" {
            for needle in [
                "/_sim/faults",
                "/_sim/state",
                sim::DEFAULT_ACCESS_KEY,
                sim::DEFAULT_SECRET_KEY,
            ] {
                assert!(help.contains(needle), "{needle}: {help}");
            }
        }
    }
}
