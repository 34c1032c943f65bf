//! The command line as a hand meets it: `-c` anywhere, `tail`, completions, the man page.

use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};

use crate::helpers::{
    Daemon, FAST_POLL, TWO_ASSETS, config_dir, config_text, set_import, sim_env, sim_with, text, watchd, watchd_bin,
};

const ONE: &str = "[[watch.video_asset]]\nworkspace = \"ws\"\nproject_id = \"1\"\nasset_id = \"1\"\n";

#[tokio::test]
async fn the_config_option_works_before_or_after_the_subcommand() {
    let sim = sim_with(TWO_ASSETS, 100_000).await;
    let cfg = config_dir(&config_text(&sim.url(), "", ONE));
    let path = cfg.path.to_str().unwrap();
    assert!(watchd(&["once", "-c", path], &sim_env()).await.status.success());
    for args in [
        vec!["-c", path, "check"],
        vec!["check", "--config", path],
        vec!["dead-letters", "list", "-c", path],
        vec!["dead-letters", "-c", path, "list"],
        vec!["-c", path, "dead-letters", "list", "--json"],
        vec!["status", "--json", "-c", path],
        vec!["--config", path, "status"],
    ] {
        let out = watchd(&args, &sim_env()).await;
        let (stdout, stderr) = text(&out);
        assert!(out.status.success(), "{args:?}: {stderr}");
        assert!(!stdout.is_empty(), "{args:?} printed nothing");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn tail_follows_committed_events_with_filters_beside_a_running_daemon() {
    let sim = sim_with(TWO_ASSETS, 100_000).await;
    let both = format!("{ONE}[[watch.video_asset]]\nworkspace = \"ws\"\nproject_id = \"1\"\nasset_id = \"2\"\n");
    let mut daemon = Daemon::start(&config_text(&sim.url(), "", &format!("{both}{FAST_POLL}"))).await;
    daemon
        .wait_for(Duration::from_secs(20), "first sight of both", |e| e.len() == 2)
        .await;
    let config = daemon.dir.join("config.toml");
    // What came before, with --since, and a subject filter.
    let out = watchd(
        &[
            "tail",
            "-c",
            config.to_str().unwrap(),
            "--since",
            "1h",
            "--no-follow",
            "--subject",
            "*/video-assets/2",
        ],
        &sim_env(),
    )
    .await;
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    let lines: Vec<serde_json::Value> = stdout.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 1, "{stdout}");
    assert_eq!(lines[0]["subject"], "workspaces/ws/projects/1/video-assets/2");
    // Following: the type asked for only, as the changes are committed.
    let mut child = tokio::process::Command::new(watchd_bin())
        // --since covers the moments before tail reads the outbox, so no change can slip by.
        .args([
            "tail",
            "-c",
            config.to_str().unwrap(),
            "--type",
            "video_asset.import.completed",
            "--since",
            "1h",
        ])
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    set_import(&sim, "1", "FAILED");
    set_import(&sim, "2", "COMPLETED");
    let line = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
        .await
        .expect("tail printed the event within 20 s")
        .unwrap()
        .unwrap();
    let event: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(event["type"], "video_asset.import.completed");
    assert_eq!(event["subject"], "workspaces/ws/projects/1/video-assets/2");
    // The FAILED event is committed too, but filtered out: the daemon's log has both.
    daemon
        .wait_for(Duration::from_secs(20), "both changes", |e| e.len() == 4)
        .await;
    child.kill().await.unwrap();
    daemon.signal("TERM");
    daemon.exit_within(Duration::from_secs(10)).await;
}

#[tokio::test]
async fn completions_and_the_man_page_are_generated() {
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let out = watchd(&["completions", shell], &[]).await;
        let (stdout, stderr) = text(&out);
        assert!(out.status.success(), "{shell}: {stderr}");
        for word in ["dead-letters", "healthcheck", "tail", "config"] {
            assert!(stdout.contains(word), "{shell} completion lacks {word}");
        }
    }
    // The bash script is valid bash.
    let out = watchd(&["completions", "bash"], &[]).await;
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("ncp-watchd.bash");
    std::fs::write(&script, &out.stdout).unwrap();
    let check = std::process::Command::new("bash")
        .arg("-n")
        .arg(&script)
        .status()
        .unwrap();
    assert!(check.success(), "bash -n rejected the completion script");

    let out = watchd(&["man"], &[]).await;
    let (page, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    assert!(page.starts_with(".ie") || page.contains(".TH ncp-watchd 1"), "{page}");
    assert!(page.contains(".TH ncp-watchd 1"), "{page}");
    for word in ["dead\\-letters", "completions", "\\-\\-config"] {
        assert!(page.contains(word), "man page lacks {word}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn once_over_a_large_backlog_shows_progress_as_plain_lines_or_a_bar_on_a_terminal() {
    let mut scenario = String::new();
    let mut watches = String::new();
    for i in 1..=150 {
        scenario.push_str(&format!(
            "[[video_asset]]\nworkspace = \"ws\"\nproject_id = \"1\"\nasset_id = \"{i}\"\nimport = [{{ at = \"0s\", status = \"IN_PROGRESS\" }}]\n"
        ));
        watches.push_str(&format!(
            "[[watch.video_asset]]\nworkspace = \"ws\"\nproject_id = \"1\"\nasset_id = \"{i}\"\n"
        ));
    }
    let sim = sim_with(&scenario, 100_000).await;
    let cfg = config_dir(&config_text(&sim.url(), "", &watches));
    let out = watchd(&["once", "-c", cfg.path.to_str().unwrap()], &sim_env()).await;
    let (_, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("polled 15 of 150"),
        "plain progress lines off a terminal:\n{stderr}"
    );
    // On a terminal (util-linux `script` gives it one): a bar with an ETA, no plain lines.
    let Ok(script) = which("script") else {
        assert!(std::env::var_os("CI").is_none(), "CI: `script` (util-linux) is missing");
        eprintln!("skipping the terminal half: no `script` command here");
        return;
    };
    let cfg2 = config_dir(&config_text(&sim.url(), "", &watches));
    let command = format!("{} once -c {}", watchd_bin().display(), cfg2.path.display());
    let out = tokio::process::Command::new(script)
        .args(["-qec", &command, "/dev/null"])
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("NCLOUD_ACCESS_KEY", ncp_watchd::sim::DEFAULT_ACCESS_KEY)
        .env("NCLOUD_SECRET_KEY", ncp_watchd::sim::DEFAULT_SECRET_KEY)
        .env("TERM", "xterm")
        .output()
        .await
        .unwrap();
    let screen = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{screen}");
    assert!(
        screen.contains("polls") && screen.contains("ETA"),
        "a progress bar on a terminal:\n{screen}"
    );
    assert!(!screen.contains("polled 15 of 150"), "{screen}");
}

fn which(name: &str) -> Result<std::path::PathBuf, ()> {
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .ok_or(())
}
