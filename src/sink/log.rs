//! The log sink: one line per event, to stdout or a file, fed from the outbox.
//!
//! For each event: write the line, flush it, then record the cursor. A crash between the
//! write and the record repeats that one line on restart, and nothing else.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::selects;
use crate::config::StateConfig;
use crate::event::CloudEvent;
use crate::store::{OutboxRow, Store, StoreError};

/// How many outbox rows one read takes.
const BATCH: usize = 256;
/// How often the sink looks at the outbox when nobody wakes it (another process may write).
const IDLE_POLL: Duration = Duration::from_secs(1);

/// How a line is rendered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LineFormat {
    /// The CloudEvent as one JSON line.
    Json,
    /// A human one-liner (the demo).
    Human,
}

/// A log sink's settings.
#[derive(Debug, Clone)]
pub struct LogSinkSpec {
    /// The sink's name (its cursor's key).
    pub name: String,
    /// The file, or stdout.
    pub path: Option<PathBuf>,
    /// Event type globs.
    pub events: Vec<String>,
    /// Rendering.
    pub format: LineFormat,
    /// On a cluster, the one shard whose events this part of the sink writes (`None`:
    /// every event).
    pub shard: Option<u16>,
}

/// Why the sink stopped.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The output could not be written.
    #[error("cannot write to {target}: {source}")]
    Write {
        /// Where.
        target: String,
        /// Why.
        source: std::io::Error,
    },
}

/// Delivers everything committed so far, then returns the last position handled.
pub fn drain(spec: &LogSinkSpec, store: &mut Store, out: &mut dyn Write) -> Result<i64, SinkError> {
    let name = cursor_name(&crate::store::shard_sink(&spec.name, spec.shard));
    let mut cursor = store.cursor(&name)?;
    loop {
        let rows = store.outbox_after_in(cursor, BATCH, spec.shard)?;
        if rows.is_empty() {
            return Ok(cursor);
        }
        for row in rows {
            if selects(&spec.events, &row.event_type) {
                // One write per line: on a cluster several shards' parts of a sink share
                // the output, and a line must never be split by another's.
                let mut line = render(spec.format, &row);
                line.push('\n');
                out.write_all(line.as_bytes())
                    .and_then(|_| out.flush())
                    .map_err(|source| SinkError::Write {
                        target: target_name(spec),
                        source,
                    })?;
                metrics::counter!("ncp_watchd_deliveries_total", "sink" => spec.name.clone(), "outcome" => "delivered")
                    .increment(1);
            }
            cursor = row.seq;
            store.set_cursor(&name, cursor)?;
        }
    }
}

/// The key of a log sink's cursor in the store.
pub fn cursor_name(sink: &str) -> String {
    format!("log:{sink}")
}

fn render(format: LineFormat, row: &OutboxRow) -> String {
    match format {
        LineFormat::Json => row.body.clone(),
        LineFormat::Human => match serde_json::from_str::<CloudEvent>(&row.body) {
            Ok(e) => human_line(&e),
            Err(_) => row.body.clone(),
        },
    }
}

fn target_name(spec: &LogSinkSpec) -> String {
    spec.path
        .as_ref()
        .map_or("stdout".to_string(), |p| p.display().to_string())
}

/// Opens the sink's output: the file in append mode, or stdout.
pub fn open_output(spec: &LogSinkSpec) -> Result<Box<dyn Write + Send>, SinkError> {
    match &spec.path {
        None => Ok(Box::new(std::io::stdout())),
        Some(path) => {
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir).map_err(|source| SinkError::Write {
                    target: target_name(spec),
                    source,
                })?;
            }
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|source| SinkError::Write {
                    target: target_name(spec),
                    source,
                })?;
            Ok(Box::new(file))
        }
    }
}

/// An open output and the connection recording its progress.
type Open = (Store, Box<dyn Write + Send>);

/// Runs the sink until `shutdown`: drains whenever woken (or every second), and once more
/// on the way out so everything committed before the stop is written.
#[allow(
    clippy::expect_used,
    reason = "each expect here states an invariant of our own types, never of input"
)]
pub async fn run(spec: LogSinkSpec, store: StateConfig, mut wake: watch::Receiver<u64>, shutdown: CancellationToken) {
    // The series exists from the start, at zero, so a rate over it is defined.
    metrics::counter!("ncp_watchd_deliveries_total", "sink" => spec.name.clone(), "outcome" => "delivered")
        .increment(0);
    let state: Arc<std::sync::Mutex<Option<Open>>> = Arc::default();
    let spec = Arc::new(spec);
    loop {
        let (state, spec2, path) = (state.clone(), spec.clone(), store.clone());
        let result = tokio::task::spawn_blocking(move || -> Result<(), SinkError> {
            let mut guard = state.lock().unwrap_or_else(|e| e.into_inner());
            if guard.is_none() {
                *guard = Some((Store::open_for_progress(&path)?, open_output(&spec2)?));
            }
            let (store, out) = guard.as_mut().expect("opened above");
            let drained = drain(&spec2, store, out.as_mut());
            if drained.is_err() {
                // Reopen on the next round: the file may have been rotated or the disk freed.
                *guard = None;
            }
            drained.map(|_| ())
        })
        .await;
        match result {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!(sink = %spec.name, error = %e, "log sink failed; retrying"),
            Err(e) => tracing::error!(sink = %spec.name, error = %e, "log sink task failed; retrying"),
        }
        if shutdown.is_cancelled() {
            break;
        }
        tokio::select! {
            _ = shutdown.cancelled() => {}
            _ = wake.changed() => {}
            _ = tokio::time::sleep(IDLE_POLL) => {}
        }
    }
}

/// `10:00:00.123  video_asset.import.completed  workspaces/…/5678  IN_PROGRESS → COMPLETED  (launch-trailer)`
pub fn human_line(e: &CloudEvent) -> String {
    let time = e.time.get(11..23).unwrap_or(&e.time);
    let from = e.data.previous.as_deref().unwrap_or("(new)");
    let mut line = format!(
        "{time}  {:<38} {:<64} {from} → {}",
        e.event_type, e.subject, e.data.current
    );
    if let Some(p) = e.data.percent {
        line.push_str(&format!(" {p:.0}%"));
    }
    if let Some(err) = &e.data.error {
        line.push_str(&format!("  [{err}]"));
    }
    if let Some(w) = &e.data.watch {
        line.push_str(&format!("  ({w})"));
    }
    if let Some(hint) = &e.data.hint {
        line.push_str(&format!("  [via {hint}]"));
    }
    line
}
