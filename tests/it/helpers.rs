//! Shared test helpers.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use ncp_watchd::config::{Config, CredentialSource, Credentials, Secret};
use ncp_watchd::ncp::NcpClient;
use ncp_watchd::sim::{self, Scenario, SimConfig, SimHandle};

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
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_ncp-watchd"));
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
