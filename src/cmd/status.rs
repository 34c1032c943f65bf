//! `ncp-watchd status`: what each item last showed, read from the state store.

use std::fmt::Write as _;

use serde_json::json;

use crate::cli::StatusArgs;
use crate::status::{self, ItemStatus};
use crate::store::Store;

use super::{Failure, load_config};

/// Prints a table, or JSON with `--json`: the items of the same report the status page
/// and `/api/status` show (an array, as `status --json` has always printed), every item
/// listed.
#[allow(
    clippy::expect_used,
    reason = "each expect here states an invariant of our own types, never of input"
)]
pub async fn run(args: &StatusArgs) -> Result<(), Failure> {
    let config = load_config(&args.config)?;
    if !Store::exists(&config.state) {
        return Err(Failure::Runtime(format!(
            "no state yet at {}: run `ncp-watchd once` or start the daemon first",
            config.state
        )));
    }
    let store = Store::open_read_only(&config.state).map_err(|e| Failure::Runtime(e.to_string()))?;
    let now = chrono::Utc::now().timestamp_millis();
    let report = status::build(&store, &status::View::of(&config), None, now, None)
        .map_err(|e| Failure::Runtime(e.to_string()))?;
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report.items).expect("JSON serializes")
        );
    } else {
        print!("{}", table(&report.items, now));
        for s in &report.sinks {
            let state = s
                .paused
                .as_ref()
                .map_or("running".to_string(), |why| format!("PAUSED ({why})"));
            println!(
                "sink {}: {state}; {} events behind, {} retrying, {} dead letters",
                s.cursor, s.pending, s.retrying, s.dead_letters
            );
        }
        for r in &report.replicas {
            let shards: Vec<String> = r.shards.iter().map(u16::to_string).collect();
            // A lease's age is how long ago its holder last renewed it (with its heartbeat,
            // once a second while it is alive).
            let seen = r
                .last_seen
                .as_deref()
                .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
                .map(|t| t.timestamp_millis().min(now));
            let heard = relative(seen, now);
            let lease = match r.lease_expires_in_ms {
                Some(ms) => format!("leases renewed {heard}, expire {}", relative(Some(now + ms), now)),
                None => format!("no lease (standby), heard from {heard}"),
            };
            println!(
                "replica {} ({} pid {}): shards [{}], {lease}",
                r.instance,
                r.host,
                r.pid,
                shards.join(", ")
            );
        }
        let last = report
            .last_callback
            .as_deref()
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
            .map(|t| t.timestamp_millis());
        if let Some(line) = callbacks_line(report.callbacks, last, now) {
            println!("{line}");
        }
    }
    Ok(())
}

/// What `status` says about VOD Station callbacks: when the last one came.
fn callbacks_line(configured: bool, last_ms: Option<i64>, now: i64) -> Option<String> {
    match (configured, last_ms) {
        (_, Some(at)) => Some(format!(
            "callbacks: last VOD Station callback {} ({})",
            relative(Some(at), now),
            time(Some(at)).as_str().unwrap_or_default()
        )),
        (true, None) => Some("callbacks: no VOD Station callback has come yet".to_string()),
        (false, None) => None,
    }
}

fn time(ms: Option<i64>) -> serde_json::Value {
    ms.and_then(chrono::DateTime::from_timestamp_millis)
        .map_or(serde_json::Value::Null, |t| {
            json!(t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        })
}

/// `12s ago`, `in 3m`.
fn relative(ms: Option<i64>, now: i64) -> String {
    let Some(ms) = ms else { return "-".to_string() };
    let d = std::time::Duration::from_secs(((ms - now).unsigned_abs() + 500) / 1000);
    let text = humantime::format_duration(d).to_string();
    let short = text.split(' ').next().unwrap_or("0s").to_string();
    if ms >= now {
        format!("in {short}")
    } else {
        format!("{short} ago")
    }
}

fn table(items: &[ItemStatus], now: i64) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{:<12} {:<18} {:<8} {:<9} {:<9} {:<4} SUBJECT",
        "KIND", "STATUS", "STATE", "POLLED", "NEXT", "FAIL"
    );
    for i in items {
        // The table keeps its four states; stalled and retrying items are still watched.
        let state = match i.state {
            "stalled" | "retrying" if i.terminal => "final",
            "stalled" | "retrying" => "watching",
            s => s,
        };
        let mut status = i.status.clone().unwrap_or_else(|| "-".into());
        if let Some(p) = i.percent.filter(|_| i.kind == "encode") {
            status = format!("{status} {p:.0}%");
        }
        let _ = write!(
            s,
            "{:<12} {:<18} {:<8} {:<9} {:<9} {:<4} {}",
            i.kind,
            status,
            state,
            relative(i.last_polled_ms, now),
            relative(i.next_due_ms, now),
            i.failures,
            i.subject
        );
        if let Some(w) = &i.watch {
            let _ = write!(s, " ({w})");
        }
        if let Some(e) = i.last_error.as_ref().filter(|_| i.failures > 0) {
            let _ = write!(s, "\n{:>12} last error: {e}", "");
        }
        s.push('\n');
    }
    let _ = writeln!(s, "{} items", items.len());
    s
}
