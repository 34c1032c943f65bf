//! `ncp-watchd run`: the daemon, with signals. SIGTERM and SIGINT stop it gracefully;
//! SIGHUP reloads the config file and the credentials, and an invalid new file is logged
//! and ignored.

use std::path::{Path, PathBuf};

use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::cli::RunArgs;
use crate::config::{self, Config, LogFormat, resolve_credentials};
use crate::daemon;

use super::{Failure, load_config, render_config_error};

/// Runs the daemon until SIGTERM or SIGINT.
pub async fn run(args: &RunArgs) -> Result<(), Failure> {
    let path = config::config_path(args.config.config.as_deref());
    // Signals first: a SIGTERM that arrives while the config loads must stop us gracefully,
    // not kill us with the default action.
    let shutdown = CancellationToken::new();
    let (reloads, reload_rx) = mpsc::unbounded_channel();
    let signals = watch_signals(path, shutdown.clone(), reloads).map_err(|e| Failure::Runtime(e.to_string()))?;
    let mut config = load_config(&args.config)?;
    match args.log_format.as_deref() {
        Some("json") => config.log.format = LogFormat::Json,
        Some("text") => config.log.format = LogFormat::Text,
        _ => {}
    }
    init_logging(&config);
    let credentials = resolve_credentials(&config.credentials).map_err(|e| Failure::Config(format!("error: {e}")))?;
    let result = daemon::run(config, credentials, shutdown.clone(), reload_rx, Vec::new()).await;
    shutdown.cancel();
    signals.abort();
    result.map_err(|e| match e {
        daemon::DaemonError::Sink { .. }
        | daemon::DaemonError::Callbacks(_)
        | daemon::DaemonError::Store(crate::store::StoreError::Locked(_)) => Failure::Config(format!("error: {e}")),
        other => Failure::Runtime(other.to_string()),
    })
}

/// Logs to stderr in the configured format; `RUST_LOG` overrides the configured level.
fn init_logging(config: &Config) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&config.log.level));
    // Colours only on a terminal: journald and container collectors get plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr()) && std::env::var_os("NO_COLOR").is_none();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(crate::text::ScrubbingStderr)
        .with_ansi(ansi);
    let _ = match config.log.format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

#[allow(
    clippy::expect_used,
    reason = "each expect here states an invariant of our own types, never of input"
)]
fn watch_signals(
    path: PathBuf,
    shutdown: CancellationToken,
    reloads: mpsc::UnboundedSender<daemon::Reload>,
) -> std::io::Result<tokio::task::JoinHandle<()>> {
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;
    Ok(tokio::spawn(async move {
        // Reading and validating the file and the key files is blocking work of unbounded
        // length (a slow disk, a huge file), so it runs on the blocking pool: the runtime
        // keeps polling, and SIGTERM is still heard while a reload is being read.
        let mut reading: Option<tokio::task::JoinHandle<Option<daemon::Reload>>> = None;
        // A SIGHUP during a read asks for the file as it is now, so it is read once more
        // after the current read (more SIGHUPs in the meantime fold into that one).
        let mut again = false;
        loop {
            tokio::select! {
                _ = term.recv() => { tracing::info!("SIGTERM: stopping"); shutdown.cancel(); }
                _ = int.recv() => { tracing::info!("SIGINT: stopping"); shutdown.cancel(); }
                _ = hup.recv() => {
                    if reading.is_some() {
                        again = true;
                    } else {
                        let path = path.clone();
                        reading = Some(tokio::task::spawn_blocking(move || read_reload(&path)));
                    }
                }
                done = async { reading.as_mut().expect("guarded by the condition").await }, if reading.is_some() => {
                    reading = None;
                    match done {
                        Ok(Some(reload)) => { let _ = reloads.send(reload); }
                        Ok(None) => {}
                        Err(e) => tracing::error!(error = %e, "SIGHUP: reading the configuration failed; the previous one keeps running"),
                    }
                    if std::mem::take(&mut again) {
                        let path = path.clone();
                        reading = Some(tokio::task::spawn_blocking(move || read_reload(&path)));
                    }
                }
            }
        }
    }))
}

/// Reads the config file and the credentials again for a reload; a problem is logged and
/// gives `None`, which leaves the running configuration as it is.
fn read_reload(path: &Path) -> Option<daemon::Reload> {
    let config = match Config::load(path) {
        Ok(config) => config,
        Err(e) => {
            tracing::error!(
                problems = %render_config_error(&e),
                "SIGHUP: the new configuration is invalid; the previous one keeps running"
            );
            return None;
        }
    };
    // The credentials are read again too, so a rotated key needs no restart.
    match resolve_credentials(&config.credentials) {
        Ok(credentials) => {
            tracing::info!(config = %path.display(), "SIGHUP: reloading");
            Some(daemon::Reload { config, credentials })
        }
        Err(e) => {
            tracing::error!(error = %e, "SIGHUP: the credentials cannot be read; the previous configuration and keys keep running");
            None
        }
    }
}
