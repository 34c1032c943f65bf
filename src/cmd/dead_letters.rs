//! `ncp-watchd dead-letters list|replay`: read and re-queue dead letters in the state
//! store; a running daemon's sinks pick replays up within a second.

use std::fmt::Write as _;

use crate::cli::{DeadLetterAction, DeadLetterArgs};
use crate::sink::webhook::UrlScrubber;
use crate::store::Store;

use super::{Failure, load_config};

/// Lists or replays.
#[allow(
    clippy::expect_used,
    reason = "each expect here states an invariant of our own types, never of input"
)]
pub async fn run(args: &DeadLetterArgs) -> Result<(), Failure> {
    let config = load_config(&args.config)?;
    if !Store::exists(&config.state) {
        return Err(Failure::Runtime(format!(
            "no state yet at {}: nothing was ever delivered",
            config.state
        )));
    }
    let mut store = Store::open(&config.state).map_err(|e| Failure::Runtime(e.to_string()))?;
    match &args.action {
        DeadLetterAction::List { json } => {
            let mut letters = store.dead_letters(None).map_err(|e| Failure::Runtime(e.to_string()))?;
            // The sink scrubs its URL from every error before storing it; scrubbing again
            // here keeps letters recorded by an older version, or under an older URL that is
            // still configured on another sink, from showing a token.
            let scrubbers: Vec<UrlScrubber> = config.sinks.webhooks.iter().map(|w| UrlScrubber::new(&w.url)).collect();
            for letter in &mut letters {
                if let Some(error) = &mut letter.last_error {
                    for scrubber in &scrubbers {
                        *error = scrubber.scrub(error);
                    }
                }
            }
            if *json {
                let rows: Vec<_> = letters
                    .iter()
                    .map(|l| {
                        serde_json::json!({
                            "id": l.event_id, "sink": l.sink, "subject": l.subject, "type": l.event_type,
                            "attempts": l.attempts, "last_error": l.last_error,
                        })
                    })
                    .collect();
                println!("{}", serde_json::to_string_pretty(&rows).expect("JSON serializes"));
                return Ok(());
            }
            let mut s = String::new();
            let _ = writeln!(
                s,
                "{:<36}  {:<12} {:<8} {:<34} SUBJECT / LAST ERROR",
                "ID", "SINK", "ATTEMPTS", "TYPE"
            );
            for l in &letters {
                let _ = writeln!(
                    s,
                    "{:<36}  {:<12} {:<8} {:<34} {}",
                    l.event_id, l.sink, l.attempts, l.event_type, l.subject
                );
                if let Some(e) = &l.last_error {
                    let _ = writeln!(s, "{:>38}last error: {e}", "");
                }
            }
            let _ = writeln!(s, "{} dead letters", letters.len());
            print!("{s}");
            Ok(())
        }
        DeadLetterAction::Replay { id, all } => {
            let which = if *all { None } else { id.as_deref() };
            let n = store
                .replay_dead_letters(which)
                .map_err(|e| Failure::Runtime(e.to_string()))?;
            match (n, which) {
                (0, Some(id)) => Err(Failure::Runtime(format!(
                    "no dead letter with event id {id}; `dead-letters list` shows them"
                ))),
                (n, _) => {
                    println!("{n} dead letters re-queued; the daemon delivers them (or `ncp-watchd once` does)");
                    Ok(())
                }
            }
        }
    }
}
