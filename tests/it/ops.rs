//! Operations: `/healthz`, `/readyz`, `/metrics`, systemd notifications, `healthcheck`.

use std::time::Duration;

use ncp_watchd::sim::{Fault, FaultAction};

use crate::helpers::{Daemon, FAST_POLL, config_text, sim_with, text, watchd};

const ONE_ASSET: &str = "[[video_asset]]\nworkspace = \"ws\"\nproject_id = \"1\"\nasset_id = \"1\"\nimport = [{ at = \"0s\", status = \"IN_PROGRESS\" }]\n";
const WATCH: &str = "[[watch.video_asset]]\nworkspace = \"ws\"\nproject_id = \"1\"\nasset_id = \"1\"\n";

async fn get(url: &str) -> (u16, String) {
    let r = reqwest::get(url).await.unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

async fn wait_until<F: std::future::Future<Output = bool>>(within: Duration, what: &str, mut check: impl FnMut() -> F) {
    let deadline = tokio::time::Instant::now() + within;
    while !check().await {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn health_readiness_and_metrics_answer_and_move() {
    let sim = sim_with(ONE_ASSET, 6000).await;
    // The first poll stalls, so the first round is visibly not done for a while.
    sim.inject(Fault {
        path_contains: Some("import-status".into()),
        count: 1,
        action: FaultAction::Stall { ms: 1500 },
    });
    let mut daemon = Daemon::start(&config_text(&sim.url(), "", &format!("{WATCH}{FAST_POLL}"))).await;
    let base = format!("http://{}", daemon.server_addr().await);
    assert_eq!(get(&format!("{base}/healthz")).await.0, 200);
    let (status, body) = get(&format!("{base}/readyz")).await;
    assert_eq!(status, 503, "not ready before the first round: {body}");
    wait_until(Duration::from_secs(20), "/readyz 200", || async {
        get(&format!("{base}/readyz")).await.0 == 200
    })
    .await;
    wait_until(Duration::from_secs(20), "gauges", || async {
        get(&format!("{base}/metrics")).await.1.contains("ncp_watchd_watches{")
    })
    .await;
    let (status, metrics) = get(&format!("{base}/metrics")).await;
    assert_eq!(status, 200);
    for needle in [
        "ncp_watchd_build_info{version=",
        "ncp_watchd_api_calls_total{host=\"media\",endpoint=\"import_status\",outcome=\"ok\"}",
        "ncp_watchd_api_call_duration_seconds_bucket{",
        "ncp_watchd_events_total{type=\"video_asset.import.in_progress\"} 1",
        "ncp_watchd_watches{kind=\"import\",state=\"watching\"} 1",
        "ncp_watchd_deliveries_total{sink=",
        // A series a dashboard rates over exists before its first increment.
        "ncp_watchd_rate_limit_waits_total{host=\"vod\"} 0",
    ] {
        assert!(metrics.contains(needle), "/metrics lacks {needle}:\n{metrics}");
    }
    // The sink gauges and the delivery counter name a sink alike, so they can be joined.
    let sink = metrics
        .lines()
        .find_map(|l| l.strip_prefix("ncp_watchd_deliveries_total{sink=\""))
        .and_then(|rest| rest.split('"').next())
        .unwrap();
    for gauge in ["ncp_watchd_outbox_pending", "ncp_watchd_dead_letters"] {
        let needle = format!("{gauge}{{sink=\"{sink}\"}}");
        assert!(metrics.contains(&needle), "/metrics lacks {needle}:\n{metrics}");
    }
    for line in metrics.lines().filter(|l| !l.starts_with('#') && !l.is_empty()) {
        assert!(line.starts_with("ncp_watchd_"), "every metric is prefixed: {line}");
        let value = line.rsplit(' ').next().unwrap();
        assert!(value.parse::<f64>().is_ok(), "a sample ends in a number: {line}");
    }
    promtool_check(&metrics);
    daemon.signal("TERM");
    assert!(daemon.exit_within(Duration::from_secs(10)).await.success());
}

/// `promtool check metrics` on the exposition, when promtool is installed (`.ci/run`
/// installs it from Debian's prometheus package).
pub(crate) fn promtool_check(metrics: &str) {
    use std::io::Write as _;
    let Ok(mut child) = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
    else {
        eprintln!("note: promtool is not installed; `promtool check metrics` was skipped");
        return;
    };
    child.stdin.take().unwrap().write_all(metrics.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn systemd_hears_ready_watchdog_reloading_and_stopping() {
    let sim = sim_with(ONE_ASSET, 6000).await;
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(
        tmp.path().join("config.toml"),
        config_text(&sim.url(), "", &format!("{WATCH}{FAST_POLL}")),
    )
    .unwrap();
    let socket_path = tmp.path().join("notify.sock");
    let socket = tokio::net::UnixDatagram::bind(&socket_path).unwrap();
    let messages = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let collected = messages.clone();
    let listener = tokio::spawn(async move {
        let mut buf = vec![0u8; 4096];
        while let Ok(n) = socket.recv(&mut buf).await {
            collected
                .lock()
                .unwrap()
                .push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
    });
    let env = [
        ("NOTIFY_SOCKET", socket_path.to_str().unwrap()),
        ("WATCHDOG_USEC", "1000000"),
    ];
    let mut daemon = Daemon::start_with_env(tmp.path(), &env).await;
    let seen = |needle: &'static str| {
        let m = messages.clone();
        move || {
            let m = m.clone();
            async move { m.lock().unwrap().iter().filter(|s| s.contains(needle)).count() }
        }
    };
    wait_until(Duration::from_secs(20), "READY=1", || async {
        seen("READY=1")().await >= 1
    })
    .await;
    wait_until(Duration::from_secs(20), "WATCHDOG=1 twice", || async {
        seen("WATCHDOG=1")().await >= 2
    })
    .await;
    daemon.signal("HUP");
    wait_until(Duration::from_secs(20), "RELOADING=1", || async {
        seen("RELOADING=1")().await >= 1
    })
    .await;
    wait_until(Duration::from_secs(20), "READY=1 after the reload", || async {
        seen("READY=1")().await >= 2
    })
    .await;
    let reloading = messages
        .lock()
        .unwrap()
        .iter()
        .find(|m| m.contains("RELOADING=1"))
        .cloned()
        .unwrap();
    assert!(reloading.contains("MONOTONIC_USEC="), "{reloading}");
    daemon.signal("TERM");
    assert!(daemon.exit_within(Duration::from_secs(10)).await.success());
    assert!(seen("STOPPING=1")().await >= 1, "{:?}", messages.lock().unwrap());
    listener.abort();
}

#[tokio::test(flavor = "multi_thread")]
async fn healthcheck_exits_0_for_a_live_daemon_and_1_for_a_dead_one() {
    let sim = sim_with(ONE_ASSET, 6000).await;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = config_text(
        &sim.url(),
        "",
        &format!("{WATCH}{FAST_POLL}[server]\nlisten = \"127.0.0.1:{port}\"\n"),
    );
    let mut daemon = Daemon::start(&config).await;
    daemon.server_addr().await;
    let path = daemon.dir.join("config.toml");
    let live = watchd(&["healthcheck", "-c", path.to_str().unwrap()], &[]).await;
    assert_eq!(live.status.code(), Some(0), "{}", text(&live).1);
    daemon.signal("TERM");
    assert!(daemon.exit_within(Duration::from_secs(10)).await.success());
    let dead = watchd(&["healthcheck", "-c", path.to_str().unwrap()], &[]).await;
    assert_eq!(dead.status.code(), Some(1));
    let (_, stderr) = text(&dead);
    assert!(
        stderr.contains(&format!("nothing answers at http://127.0.0.1:{port}/healthz")),
        "{stderr}"
    );
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
}

fn systemd_analyze(args: &[&str]) -> std::process::Output {
    std::process::Command::new("systemd-analyze")
        .args(args)
        .output()
        .expect("systemd-analyze runs (Debian's systemd package ships it)")
}

#[test]
fn the_systemd_unit_scores_2_or_better_offline_and_verifies_clean() {
    let unit = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/systemd/ncp-watchd.service");
    let out = systemd_analyze(&["security", "--offline=yes", unit]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    let score: f64 = text
        .split("Overall exposure level for ncp-watchd.service:")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no exposure level in:\n{text}"));
    assert!(score <= 2.0, "exposure {score} > 2.0:\n{text}");

    // `verify` checks that ExecStart exists: point it at the binary under test.
    let tmp = tempfile::tempdir().unwrap();
    let copy = tmp.path().join("ncp-watchd.service");
    let text = std::fs::read_to_string(unit)
        .unwrap()
        .replace("/usr/bin/ncp-watchd", env!("CARGO_BIN_EXE_ncp-watchd"));
    std::fs::write(&copy, text).unwrap();
    let out = systemd_analyze(&["verify", "--man=no", copy.to_str().unwrap()]);
    let said = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        out.status.success() && said.trim().is_empty(),
        "systemd-analyze verify:\n{said}"
    );
}

#[test]
fn the_container_files_agree_with_the_unit_and_the_cli() {
    let containerfile =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/container/Containerfile")).unwrap();
    for needle in [
        "FROM gcr.io/distroless/cc-debian12:nonroot",
        "USER nonroot",
        "STOPSIGNAL SIGTERM",
        "\"/usr/local/bin/ncp-watchd\", \"healthcheck\"",
        "VOLUME [\"/var/lib/ncp-watchd\"]",
        "CREDENTIALS_DIRECTORY=/run/secrets",
        "cargo chef cook",
    ] {
        assert!(containerfile.contains(needle), "Containerfile lacks {needle}");
    }
    // The image's config is a valid config, with the server reachable for healthcheck.
    let path = std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/container/config.toml"));
    let c = ncp_watchd::config::Config::load(path).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.listen.port(), 9464);
    assert_eq!(
        c.state,
        ncp_watchd::config::StateConfig::sqlite("/var/lib/ncp-watchd/state.db")
    );
}

#[test]
fn the_deb_installs_the_binary_and_the_config_where_the_unit_looks_for_them() {
    let manifest: toml::Table =
        toml::from_str(&std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml")).unwrap()).unwrap();
    let deb = &manifest["package"]["metadata"]["deb"];
    let assets: Vec<(&str, &str)> = deb["assets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| (a[0].as_str().unwrap(), a[1].as_str().unwrap()))
        .collect();
    for (source, dest) in [
        ("target/release/ncp-watchd", "usr/bin/"),
        ("config/ncp-watchd.toml", "etc/ncp-watchd/config.toml"),
    ] {
        assert!(
            assets.contains(&(source, dest)),
            "the .deb lacks {source} -> {dest}: {assets:?}"
        );
    }
    for (source, _) in &assets {
        let local = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(source);
        assert!(
            source.starts_with("target/release/") || local.is_file(),
            "{source} is packaged but missing"
        );
    }
    assert_eq!(deb["systemd-units"]["unit-scripts"].as_str(), Some("deploy/systemd"));
    let unit = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/deploy/systemd/ncp-watchd.service"
    ))
    .unwrap();
    assert!(
        unit.lines()
            .any(|l| l == "ExecStart=/usr/bin/ncp-watchd run -c /etc/ncp-watchd/config.toml"),
        "the unit runs the packaged binary with the packaged config"
    );
}
