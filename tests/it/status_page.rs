//! The status page (`GET /`) and its JSON (`GET /api/status`) of the real daemon against
//! the simulator: what they show, that outside text stays text, that no secret shows, and
//! (with Chromium) what a real browser renders from it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

use crate::helpers::{Daemon, FAST_POLL, config_text, has, sim_with};

/// A watch name that is markup: it must be shown as text, never become an element.
const HOSTILE: &str = "<img src=x onerror=alert(1)>";

/// Asset 1 is importing, 2 is done, 3 does not exist (404 for an hour: failing soon), and
/// one search image is done.
const SCENARIO: &str = r#"
[[video_asset]]
workspace = "ws"
project_id = "1"
asset_id = "1"
import = [{ at = "0s", status = "IN_PROGRESS" }]

[[video_asset]]
workspace = "ws"
project_id = "1"
asset_id = "2"
import = [{ at = "0s", status = "COMPLETED" }]

[[video_asset]]
workspace = "ws"
project_id = "1"
asset_id = "3"
import = [{ at = "1h", status = "COMPLETED" }]

[[search_image]]
asset_key = "images/q.jpg"
upload = [{ at = "0s", status = "COMPLETED" }]
"#;

/// The path and query of the webhook URL: a token the page must never show.
const URL_SECRET_PATH: &str = "/hooks/T0KEN-IN-THE-PATH-0123456789";
const URL_SECRET_QUERY: &str = "sig=QUERY-SECRET-abcdef987654";

/// A daemon watching the scenario, with a webhook sink whose URL carries a token (the
/// receiver is a closed port, so deliveries retry), once the failing item has failed.
async fn daemon_with_page() -> (ncp_watchd::sim::SimHandle, Daemon, String) {
    let sim = sim_with(SCENARIO, 100_000).await;
    let closed_port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let watches = format!(
        "[[watch.video_asset]]\nworkspace = \"ws\"\nproject_id = \"1\"\nasset_id = \"1\"\nname = {hostile}\n\n\
         [[watch.video_asset]]\nworkspace = \"ws\"\nproject_id = \"1\"\nasset_id = \"2\"\nname = \"launch-trailer\"\n\n\
         [[watch.video_asset]]\nworkspace = \"ws\"\nproject_id = \"1\"\nasset_id = \"3\"\nname = \"missing-asset\"\n\n\
         [[watch.search_image]]\nasset_key = \"images/q.jpg\"\n\n\
         [[sink.webhook]]\nname = \"ops\"\nurl = \"http://127.0.0.1:{closed_port}{URL_SECRET_PATH}?{URL_SECRET_QUERY}\"\nretry_initial = \"1s\"\nretry_max = \"2s\"\n",
        hostile = serde_json::to_string(HOSTILE).unwrap(),
    );
    let daemon = Daemon::start(&config_text(&sim.url(), "", &format!("{watches}{FAST_POLL}"))).await;
    let base = format!("http://{}", daemon.server_addr().await);
    daemon
        .wait_for(Duration::from_secs(30), "the missing asset to fail", |e| {
            has(e, "watch.failing", "workspaces/ws/projects/1/video-assets/3")
                && has(e, "search_image.upload.completed", "query-assets/images/q.jpg")
        })
        .await;
    // The first round is done once /readyz says so.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while reqwest::get(format!("{base}/readyz")).await.unwrap().status() != 200 {
        assert!(tokio::time::Instant::now() < deadline, "never ready:\n{}", daemon.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    (sim, daemon, base)
}

fn assert_no_secret(what: &str, text: &str) {
    for secret in [
        URL_SECRET_PATH,
        "T0KEN-IN-THE-PATH",
        URL_SECRET_QUERY,
        "QUERY-SECRET",
        ncp_watchd::sim::DEFAULT_SECRET_KEY,
    ] {
        assert!(!text.contains(secret), "{what} shows the secret {secret:?}:\n{text}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_status_page_and_its_json_show_the_watches_events_sinks_and_calls_with_outside_text_as_text() {
    let (_sim, daemon, base) = daemon_with_page().await;
    let http = reqwest::Client::new();

    // /api/status: the report.
    let response = http.get(format!("{base}/api/status")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-content-type-options"], "nosniff");
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/json")
    );
    let body = response.text().await.unwrap();
    assert_no_secret("/api/status", &body);
    let report: Value = serde_json::from_str(&body).unwrap();
    let import = report["counts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["kind"] == "import")
        .unwrap_or_else(|| panic!("no import counts: {report:#}"));
    assert_eq!(import["total"], 3, "{import}");
    assert_eq!(import["failing"], 1, "{import}");
    assert_eq!(import["final"], 1, "{import}");
    assert_eq!(import["watching"], 1, "{import}");
    let items = report["items"].as_array().unwrap();
    assert_eq!(report["items_total"], items.len());
    assert_eq!(report["items_omitted"], 0);
    assert_eq!(items[0]["state"], "failing", "problems first: {items:#?}");
    assert_eq!(items[0]["watch"], "missing-asset");
    assert!(
        items[0]["last_error"].as_str().unwrap().contains("404"),
        "{:#}",
        items[0]
    );
    let hostile = items
        .iter()
        .find(|i| i["watch"] == HOSTILE)
        .expect("the hostile name, verbatim in JSON");
    assert_eq!(hostile["status"], "IN_PROGRESS");
    assert_eq!(hostile["subject"], "workspaces/ws/projects/1/video-assets/1");
    for key in [
        "kind",
        "active",
        "percent",
        "terminal",
        "last_polled",
        "last_change",
        "next_due",
        "failures",
        "failing",
    ] {
        assert!(
            hostile.get(key).is_some(),
            "item rows keep `status --json`'s {key}: {hostile:#}"
        );
    }
    let events = report["events"].as_array().unwrap();
    assert!(events.iter().any(|e| e["type"] == "watch.failing"), "{events:#?}");
    assert!(events.len() <= 100);
    assert!(
        events.windows(2).all(|w| w[0]["seq"].as_i64() > w[1]["seq"].as_i64()),
        "newest first"
    );
    let sink = report["sinks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "ops")
        .unwrap_or_else(|| panic!("no webhook sink: {report:#}"));
    assert_eq!(sink["kind"], "webhook");
    assert!(
        sink["receiver"].as_str().unwrap().starts_with("http://127.0.0.1"),
        "{sink}"
    );
    assert!(sink["pending"].as_i64().unwrap() >= 1, "the receiver is down: {sink}");
    let media = report["api"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["host"] == "media")
        .unwrap_or_else(|| panic!("no media host: {report:#}"));
    assert_eq!(media["quota_per_minute"], 6000);
    let minutes: Vec<u64> = media["per_minute"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_u64().unwrap())
        .collect();
    assert_eq!(minutes.len(), 60);
    assert!(minutes.iter().sum::<u64>() >= 4, "every watch was polled: {minutes:?}");
    assert_eq!(report["replicas"], serde_json::json!([]), "SQLite has no replicas");

    // GET /: the page, with the hostile name escaped and no secret.
    let response = http.get(format!("{base}/")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let headers = response.headers().clone();
    assert_eq!(headers["x-content-type-options"], "nosniff");
    assert!(headers["content-type"].to_str().unwrap().starts_with("text/html"));
    let csp = headers["content-security-policy"].to_str().unwrap();
    assert!(
        csp.starts_with("default-src 'none'") && !csp.contains("unsafe"),
        "{csp}"
    );
    let page = response.text().await.unwrap();
    assert_no_secret("the page", &page);
    assert!(
        page.contains("&lt;img src=x onerror=alert(1)&gt;"),
        "the name is escaped text"
    );
    assert!(!page.contains("<img"), "no img element anywhere in the page");
    assert!(page.contains("missing-asset") && page.contains("launch-trailer"));
    assert!(page.contains("IN_PROGRESS") && page.contains("COMPLETED"));
    assert!(!page.contains("id=\"replicas\""), "no replicas section on SQLite");
    let first_row = page.split("<tr data-state=\"").nth(1).unwrap();
    assert!(first_row.starts_with("failing"), "failing rows first: {first_row}");

    // The page changes nothing: only GET (and HEAD) are answered.
    for method in [reqwest::Method::POST, reqwest::Method::PUT, reqwest::Method::DELETE] {
        let r = http.request(method.clone(), format!("{base}/")).send().await.unwrap();
        assert_eq!(r.status(), 405, "{method} /");
        let r = http
            .request(method.clone(), format!("{base}/api/status"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 405, "{method} /api/status");
    }
    drop(daemon);
}

/// Chromium, if this machine has it: `CI=true` makes a missing one a failure.
fn chromium() -> Option<PathBuf> {
    let found = ["chromium", "chromium-browser", "google-chrome"]
        .iter()
        .filter_map(|name| {
            std::env::var_os("PATH").and_then(|paths| {
                std::env::split_paths(&paths)
                    .map(|dir| dir.join(name))
                    .find(|p| p.is_file())
            })
        })
        .next();
    if found.is_none() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI=true but no chromium on PATH: .ci/run installs Debian's chromium package"
        );
        eprintln!("skipping the browser checks: no chromium on PATH (apt-get install chromium)");
    }
    found
}

/// Runs headless Chromium with `args` and the page's URL; its stdout.
async fn run_chromium(browser: &Path, profile: &Path, args: &[&str], url: &str) -> String {
    let out = tokio::time::timeout(
        Duration::from_secs(90),
        tokio::process::Command::new(browser)
            .args(["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run"])
            .arg(format!("--user-data-dir={}", profile.display()))
            .args(args)
            .arg(url)
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("chromium finishes within 90 s")
    .expect("chromium runs");
    assert!(
        out.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_real_browser_renders_the_status_page_with_the_hostile_name_as_text() {
    let Some(browser) = chromium() else { return };
    let (_sim, daemon, base) = daemon_with_page().await;
    let profile = tempfile::tempdir().unwrap();
    let url = format!("{base}/");
    let report: Value = reqwest::get(format!("{base}/api/status"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();

    // The DOM after the script ran, past one in-place refresh (virtual time runs ahead).
    let dom = run_chromium(
        &browser,
        profile.path(),
        &["--virtual-time-budget=7000", "--dump-dom"],
        &url,
    )
    .await;
    assert_no_secret("the rendered DOM", &dom);
    assert!(
        dom.contains("<td>&lt;img src=x onerror=alert(1)&gt;</td>"),
        "the name is a text cell:\n{dom}"
    );
    assert!(!dom.contains("<img"), "the browser made no img element:\n{dom}");
    let rows = dom.matches("<tr data-state=\"").count();
    assert_eq!(
        rows,
        report["items"].as_array().unwrap().len(),
        "one row per item:\n{dom}"
    );
    assert_eq!(dom.matches("<tr data-state=\"failing\"").count(), 1);
    let import_counts = dom
        .split("<tr data-kind=\"import\">")
        .nth(1)
        .and_then(|rest| rest.split("</tr>").next())
        .unwrap_or_else(|| panic!("no import counts row:\n{dom}"));
    assert_eq!(
        import_counts,
        "<td>import</td><td class=\"num\">3</td><td class=\"num\">1</td><td class=\"num\">0</td><td class=\"num\">1</td><td class=\"num\">1</td><td class=\"num\">0</td>",
        "kind, total, failing, stalled, watching, final, removed"
    );
    assert!(
        dom.contains("id=\"refreshed\">refreshed "),
        "the script refreshed the page in place:\n{dom}"
    );

    // A screenshot, kept under target/ (and written to docs/ when asked, for the README).
    let shot = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("status-page.png");
    let _ = std::fs::remove_file(&shot);
    run_chromium(
        &browser,
        profile.path(),
        &[
            &format!("--screenshot={}", shot.display()),
            "--window-size=1280,1600",
            "--hide-scrollbars",
        ],
        &url,
    )
    .await;
    let png = std::fs::read(&shot).expect("chromium wrote the screenshot");
    assert!(
        png.starts_with(b"\x89PNG\r\n\x1a\n") && png.len() > 10_000,
        "a real PNG"
    );
    if std::env::var_os("NCP_WATCHD_UPDATE_SCREENSHOT").is_some() {
        let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/status-page.png");
        std::fs::copy(&shot, &docs).unwrap();
    }
    drop(daemon);
}
