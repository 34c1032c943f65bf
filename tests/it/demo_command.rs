//! `ncp-watchd demo`: the first command of the README.

use crate::helpers::{text, watchd};

#[tokio::test]
async fn the_demo_plays_the_built_in_scenario_to_its_end() {
    let out = watchd(&["demo"], &[]).await;
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    for needle in [
        "video_asset.import.in_progress",
        "video_asset.import.completed",
        "video_asset.import.failed",
        "video_asset.import.file_not_exist",
        "video_asset.import.invalid_metadata",
        "video_asset.analysis.analyze_completed",
        "project.asset.discovered",
        "search_image.upload.completed",
        "search_image.upload.failed",
        "vod.encode.running",
        "vod.encode.progress",
        "vod.encode.complete",
        "vod.encode.failure",
        "vod.encode.canceled",
        "scenario done:",
    ] {
        assert!(stdout.contains(needle), "the demo did not show {needle}:\n{stdout}");
    }
    assert!(
        stdout.contains("IN_PROGRESS → COMPLETED"),
        "changes show their previous state:\n{stdout}"
    );
    assert!(!stdout.contains("failed:"), "no poll fails in the demo:\n{stdout}");
    // Every event reached the local receiver as a webhook whose signature it checked.
    let line = stdout
        .lines()
        .find(|l| l.starts_with("the local receiver got "))
        .unwrap_or_else(|| panic!("no receiver summary:\n{stdout}"));
    let numbers: Vec<u64> = line.split(' ').filter_map(|w| w.parse().ok()).collect();
    assert!(
        numbers.len() == 2 && numbers[0] == numbers[1] && numbers[0] > 0,
        "{line}"
    );
    assert!(line.ends_with("every signature valid"), "{line}");
    assert!(
        stdout.contains("[via callback]"),
        "the simulator's callbacks bring encode changes before their poll:\n{stdout}"
    );
    assert!(
        !stdout.contains("categories/10099"),
        "the unwatched category stays out:\n{stdout}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_demo_prints_the_address_of_its_status_page_which_answers_while_it_runs() {
    use tokio::io::AsyncBufReadExt as _;
    let home = tempfile::tempdir().unwrap();
    let mut child = tokio::process::Command::new(crate::helpers::watchd_bin())
        .arg("demo")
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", home.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let mut seen = String::new();
    let url = loop {
        let line = tokio::time::timeout(std::time::Duration::from_secs(20), lines.next_line())
            .await
            .expect("the demo prints within 20 s")
            .unwrap()
            .unwrap_or_else(|| panic!("the demo printed no status page address:\n{seen}"));
        if let Some(rest) = line.strip_prefix("status page: ") {
            break rest.split(' ').next().unwrap().to_string();
        }
        seen.push_str(&line);
        seen.push('\n');
    };
    assert!(url.starts_with("http://127.0.0.1:") && url.ends_with('/'), "{url}");
    // The daemon binds its listener just after the address is printed.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    let page = loop {
        match reqwest::get(&url).await {
            Ok(r) if r.status() == 200 => break r.text().await.unwrap(),
            _ if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(std::time::Duration::from_millis(50)).await
            }
            other => panic!("the status page did not answer: {other:?}"),
        }
    };
    assert!(page.contains("<title>ncp-watchd demo</title>"), "{page}");
    while lines.next_line().await.unwrap().is_some() {}
    assert!(child.wait().await.unwrap().success());
}
