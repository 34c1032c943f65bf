//! `ncp-watchd once`: poll every watch once, commit what changed since the last run,
//! deliver it, print it, exit (cron mode).

use std::io::Write as _;

use crate::cli::ConfigArg;
use crate::config::resolve_credentials;
use crate::daemon;

use super::{Failure, load_config};

/// Polls, delivers to the log sinks, prints the new events on stdout (unless a log sink
/// already writes there), reports failures on stderr; fails if any poll failed.
#[allow(
    clippy::expect_used,
    reason = "each expect here states an invariant of our own types, never of input"
)]
pub async fn run(args: &ConfigArg) -> Result<(), Failure> {
    let config = load_config(args)?;
    let credentials = resolve_credentials(&config.credentials).map_err(|e| Failure::Config(format!("error: {e}")))?;
    let report = daemon::once(config, credentials).await.map_err(|e| match e {
        daemon::DaemonError::Sink { .. } => Failure::Config(format!("error: {e}")),
        other => Failure::Runtime(other.to_string()),
    })?;
    if !report.stdout_sink {
        let mut out = std::io::stdout().lock();
        for event in &report.events {
            let line = serde_json::to_string(event).expect("events always serialize");
            writeln!(out, "{line}").map_err(|e| Failure::Runtime(format!("cannot write to stdout: {e}")))?;
        }
        out.flush()
            .map_err(|e| Failure::Runtime(format!("cannot write to stdout: {e}")))?;
    }
    for (what, e) in &report.failures {
        eprintln!("error: polling {what} failed: {}", crate::text::scrub(e));
    }
    for failure in &report.delivery_failures {
        eprintln!("error: {}", crate::text::scrub(failure));
    }
    match (report.failures.len(), report.delivery_failures.len()) {
        (0, 0) => Ok(()),
        (polls, 0) => Err(Failure::Runtime(format!("{polls} of the polls failed"))),
        (0, sinks) => Err(Failure::Runtime(format!("deliveries to {sinks} sink(s) failed"))),
        (polls, sinks) => Err(Failure::Runtime(format!(
            "{polls} of the polls and deliveries to {sinks} sink(s) failed"
        ))),
    }
}
