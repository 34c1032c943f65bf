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
    assert!(
        stdout.contains("[via callback]"),
        "the simulator's callbacks bring encode changes before their poll:\n{stdout}"
    );
    assert!(
        !stdout.contains("categories/10099"),
        "the unwatched category stays out:\n{stdout}"
    );
}
