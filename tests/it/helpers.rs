//! Shared test helpers.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use ncp_watchd::config::{Config, CredentialSource, Credentials, Secret};
use ncp_watchd::ncp::NcpClient;
use ncp_watchd::sim::{self, Scenario, SimConfig, SimHandle};

/// The binary under test: this build's, or `NCP_WATCHD_BIN` (to show that a test fails
/// against an older build: `NCP_WATCHD_BIN=/path/to/old/ncp-watchd cargo test field`).
pub fn watchd_bin() -> std::path::PathBuf {
    std::env::var_os("NCP_WATCHD_BIN")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| env!("CARGO_BIN_EXE_ncp-watchd").into())
}

/// Starts a simulator playing `scenario` text with default credentials and `quota`.
pub async fn sim_with(scenario: &str, quota: u32) -> SimHandle {
    let mut config = SimConfig::new(Scenario::parse(scenario).expect("test scenario parses"));
    config.quota_per_minute = quota;
    SimHandle::start(config, "127.0.0.1:0".parse().unwrap())
        .await
        .expect("simulator starts")
}

/// The simulator's own credentials.
pub fn sim_credentials() -> Credentials {
    credentials(sim::DEFAULT_ACCESS_KEY, sim::DEFAULT_SECRET_KEY)
}

/// Credentials with the given values.
pub fn credentials(access: &str, secret: &str) -> Credentials {
    Credentials {
        access_key: Secret::new(access),
        secret_key: Secret::new(secret),
        access_key_source: CredentialSource::BuiltIn,
        secret_key_source: CredentialSource::BuiltIn,
        api_url: None,
    }
}

/// A config file's text: `rest`, then an `[api]` table pointing both APIs at `url` with
/// test defaults, each overridden by a line of `api_extra` that sets the same key.
pub fn config_text(url: &str, api_extra: &str, rest: &str) -> String {
    let defaults = ["rate_limit_per_minute = 6000", "max_in_flight = 8", "timeout = \"2s\""];
    let mut api = format!("[api]\nmedia_url = \"{url}\"\nvod_url = \"{url}\"\n{api_extra}\n");
    for line in defaults {
        let key = line.split(' ').next().unwrap();
        if !api_extra.contains(&format!("{key} =")) {
            api.push_str(line);
            api.push('\n');
        }
    }
    let state = if rest.contains("[state]") {
        ""
    } else {
        "[state]\npath = \"state.db\"\n"
    };
    // Any free port: tests run many daemons at once.
    let state = if rest.contains("[server]") {
        state.to_string()
    } else {
        format!("{state}[server]\nlisten = \"127.0.0.1:0\"\n")
    };
    format!("{rest}\n{state}{api}")
}

/// A validated config from `text` (paths resolve in a temporary directory).
pub fn config(text: &str) -> Config {
    Config::parse(Path::new("/tmp/test.toml"), text).unwrap_or_else(|e| panic!("test config is invalid: {e}"))
}

/// A client for `sim` with `api_extra` lines in `[api]`.
pub fn client(sim: &SimHandle, api_extra: &str) -> NcpClient {
    let c = config(&config_text(
        &sim.url(),
        api_extra,
        "[[watch.search_image]]\nasset_key = \"x\"\n",
    ));
    NcpClient::new(&c.api, &sim_credentials()).expect("client builds")
}

/// A temporary directory holding `config.toml` with `text`.
pub struct ConfigDir {
    /// Kept so the directory lives as long as the test needs the file.
    pub _dir: tempfile::TempDir,
    pub path: PathBuf,
}

pub fn config_dir(text: &str) -> ConfigDir {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    std::fs::write(&path, text).unwrap();
    ConfigDir { _dir: dir, path }
}

/// Runs `ncp-watchd` with `args` and a clean environment: no NCP variables, an empty
/// home, plus `env`. Gives up after a minute.
pub async fn watchd(args: &[&str], env: &[(&str, &str)]) -> Output {
    let home = tempfile::tempdir().unwrap();
    let mut cmd = tokio::process::Command::new(watchd_bin());
    cmd.args(args)
        .env_clear()
        .env("HOME", home.path())
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .kill_on_drop(true);
    for (k, v) in env {
        cmd.env(k, v);
    }
    tokio::time::timeout(Duration::from_secs(60), cmd.output())
        .await
        .expect("ncp-watchd finishes within a minute")
        .expect("ncp-watchd runs")
}

/// The simulator's credentials as environment variables.
pub fn sim_env() -> [(&'static str, &'static str); 2] {
    [
        ("NCLOUD_ACCESS_KEY", sim::DEFAULT_ACCESS_KEY),
        ("NCLOUD_SECRET_KEY", sim::DEFAULT_SECRET_KEY),
    ]
}

/// Stdout and stderr as text.
pub fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// The real `ncp-watchd run` as a child process, with its config, state and event log in
/// a temporary directory.
pub struct Daemon {
    /// The child.
    pub child: tokio::process::Child,
    /// The directory holding config.toml, state.db, events.jsonl and daemon.log.
    pub dir: PathBuf,
    _tmp: Option<tempfile::TempDir>,
}

/// Config lines every daemon test uses: a fast poll, a JSON log sink to events.jsonl.
pub const FAST_POLL: &str = "[poll]\ninterval = \"200ms\"\ndiscovery_interval = \"300ms\"\nmax_backoff = \"500ms\"\n\n[[sink.log]]\npath = \"events.jsonl\"\n";

impl Daemon {
    /// Writes `config` into a new directory and starts the daemon on it.
    pub async fn start(config: &str) -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_path_buf();
        std::fs::write(dir.join("config.toml"), config).unwrap();
        let mut d = Self::start_in(&dir).await;
        d._tmp = Some(tmp);
        d
    }

    /// Starts the daemon on the config already in `dir`.
    pub async fn start_in(dir: &Path) -> Self {
        Self::start_with_env(dir, &[]).await
    }

    /// Starts the daemon on the config in `dir` with extra environment variables.
    pub async fn start_with_env(dir: &Path, env: &[(&str, &str)]) -> Self {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("daemon.log"))
            .unwrap();
        let child = tokio::process::Command::new(watchd_bin())
            .args(["run", "-c", dir.join("config.toml").to_str().unwrap()])
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", dir)
            .env("NCLOUD_ACCESS_KEY", sim::DEFAULT_ACCESS_KEY)
            .env("NCLOUD_SECRET_KEY", sim::DEFAULT_SECRET_KEY)
            .env("RUST_LOG", "ncp_watchd=debug")
            .env("NO_COLOR", "1")
            .envs(env.iter().copied())
            .stdout(std::process::Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .expect("ncp-watchd starts");
        Self {
            child,
            dir: dir.to_path_buf(),
            _tmp: None,
        }
    }

    /// Waits until this process has logged that it is running (its signal handlers are
    /// installed then).
    pub async fn wait_started(&self) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        let pid = self.child.id().unwrap_or_default();
        while !self.log().contains(&format!("ncp-watchd running pid={pid}")) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the daemon did not start:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The health server's address, from the daemon's log.
    pub async fn server_addr(&self) -> std::net::SocketAddr {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let log = self.log();
            if let Some(rest) = log.split("health and metrics server listening on http://").nth(1) {
                let addr: String = rest.chars().take_while(|c| !c.is_whitespace()).collect();
                return addr.parse().unwrap_or_else(|e| panic!("{e}: {addr}"));
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no server address in the log:\n{log}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Ties a temporary directory's lifetime to this daemon.
    pub fn adopt(&mut self, tmp: tempfile::TempDir) {
        self._tmp = Some(tmp);
    }

    /// Stops the child without killing the directory (for restarts).
    pub fn keep_dir(&mut self) -> Option<tempfile::TempDir> {
        self._tmp.take()
    }

    /// The events written to the log sink so far.
    pub fn events(&self) -> Vec<serde_json::Value> {
        read_events(&self.dir.join("events.jsonl"))
    }

    /// The daemon's own log.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("daemon.log")).unwrap_or_default()
    }

    /// Waits until `done` holds for the events written so far, or fails after `within`.
    pub async fn wait_for(
        &self,
        within: Duration,
        what: &str,
        done: impl Fn(&[serde_json::Value]) -> bool,
    ) -> Vec<serde_json::Value> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let events = self.events();
            if done(&events) {
                return events;
            }
            if tokio::time::Instant::now() > deadline {
                panic!(
                    "timed out waiting for {what}; events so far:\n{}\ndaemon log:\n{}",
                    summary(&events),
                    self.log()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Sends a signal by name (`TERM`, `HUP`, `KILL`).
    pub fn signal(&self, name: &str) {
        let pid = self.child.id().expect("the daemon is running");
        let status = std::process::Command::new("kill")
            .args(["-s", name, &pid.to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "kill -s {name} {pid} failed");
    }

    /// Waits for the process to exit, failing after `within`.
    pub async fn exit_within(&mut self, within: Duration) -> std::process::ExitStatus {
        match tokio::time::timeout(within, self.child.wait()).await {
            Ok(status) => status.unwrap(),
            Err(_) => panic!("the daemon did not exit within {within:?}; log:\n{}", self.log()),
        }
    }
}

/// Event lines of a JSON-lines file (a torn last line, from a kill, is skipped).
pub fn read_events(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// `(type, subject, previous, current)` of an event.
pub fn transition(e: &serde_json::Value) -> (String, String, Option<String>, String) {
    (
        e["type"].as_str().unwrap_or_default().to_string(),
        e["subject"].as_str().unwrap_or_default().to_string(),
        e["data"]["previous"].as_str().map(str::to_string),
        e["data"]["current"].as_str().unwrap_or_default().to_string(),
    )
}

/// One line per event, for failure messages.
pub fn summary(events: &[serde_json::Value]) -> String {
    events.iter().map(|e| format!("{:?}\n", transition(e))).collect()
}

/// Whether some event has this type and subject.
pub fn has(events: &[serde_json::Value], event_type: &str, subject: &str) -> bool {
    events
        .iter()
        .any(|e| e["type"] == event_type && e["subject"] == subject)
}

/// Two assets of workspace `ws`, project `1`, both in progress from the start.
pub const TWO_ASSETS: &str = r#"
[[video_asset]]
workspace = "ws"
project_id = "1"
asset_id = "1"
import = [{ at = "0s", status = "IN_PROGRESS" }]

[[video_asset]]
workspace = "ws"
project_id = "1"
asset_id = "2"
import = [{ at = "0s", status = "IN_PROGRESS" }]
"#;

/// The world changing in the background: each of the assets `1..=assets` walks through
/// statuses S1, S2, … (a third of them each step, a step every `pace` ms) until
/// [`Churn::finish`], which then completes every one.
pub struct Churn {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Churn {
    pub fn start(sim: std::sync::Arc<SimHandle>, assets: usize, pace: std::ops::Range<u64>) -> Self {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stopped = stop.clone();
        let task = tokio::spawn(async move {
            let mut step = 0;
            while !stopped.load(std::sync::atomic::Ordering::Relaxed) {
                step += 1;
                for i in 1..=assets {
                    if fastrand::u8(0..3) == 0 {
                        set_import(&sim, &i.to_string(), &format!("S{step}"));
                    }
                }
                tokio::time::sleep(Duration::from_millis(fastrand::u64(pace.clone()))).await;
            }
            for i in 1..=assets {
                set_import(&sim, &i.to_string(), "COMPLETED");
            }
        });
        Self { stop, task }
    }

    /// Stops the changes; every asset ends `COMPLETED`.
    pub async fn finish(self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.task.await.unwrap();
    }
}

/// Sets the import status of asset `ws/1/{asset}` in the simulator, now.
pub fn set_import(sim: &ncp_watchd::sim::SimHandle, asset: &str, status: &str) {
    sim.set(ncp_watchd::sim::SetState::VideoAsset {
        workspace: "ws".into(),
        project_id: "1".into(),
        asset_id: asset.into(),
        status: status.into(),
    });
}
