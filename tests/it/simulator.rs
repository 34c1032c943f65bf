//! The simulator on its own: the `ncp-sim` binary, its admin routes and its gateway rules.

use std::time::Duration;

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
