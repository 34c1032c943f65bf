//! `ncp-watchd tail`: follow committed events as they happen, from the outbox, like
//! `kubectl logs -f`. It only reads the store, so it works beside a running daemon (or
//! several `tail`s), and never delivers or marks anything.

use std::io::Write as _;
use std::time::Duration;

use crate::cli::TailArgs;
use crate::event::glob_matches;
use crate::store::Store;

use super::{Failure, load_config};

/// How often the outbox is read for new events while following.
const FOLLOW_EVERY: Duration = Duration::from_millis(250);
/// Events read per look.
const BATCH: usize = 500;

/// Prints matching events, one CloudEvent JSON line each, until interrupted.
pub async fn run(args: &TailArgs) -> Result<(), Failure> {
    let config = load_config(&args.config)?;
    if !Store::exists(&config.state) {
        return Err(Failure::Runtime(format!(
            "no state yet at {}: start the daemon (or run `ncp-watchd once`) first",
            config.state
        )));
    }
    let store = Store::open_read_only(&config.state).map_err(|e| Failure::Runtime(e.to_string()))?;
    let runtime = |e: crate::store::StoreError| Failure::Runtime(e.to_string());
    let mut seq = match args.since {
        Some(since) => {
            let cut = chrono::Utc::now().timestamp_millis() - since.as_millis().min(i64::MAX as u128) as i64;
            store.seq_before_time(cut).map_err(runtime)?
        }
        None => store.last_seq().map_err(runtime)?,
    };
    let matches = |pattern: &Option<String>, value: &str| pattern.as_deref().is_none_or(|g| glob_matches(g, value));
    let mut stop = Box::pin(stop_signal());
    loop {
        let rows = store.outbox_after(seq, BATCH).map_err(runtime)?;
        {
            let mut out = std::io::stdout().lock();
            for row in &rows {
                seq = row.seq;
                if matches(&args.event_type, &row.event_type) && matches(&args.subject, &row.subject) {
                    // A closed pipe (`tail | head`) ends the command quietly.
                    if writeln!(out, "{}", row.body).and_then(|()| out.flush()).is_err() {
                        return Ok(());
                    }
                }
            }
        }
        if rows.len() == BATCH {
            continue;
        }
        if args.no_follow {
            return Ok(());
        }
        tokio::select! {
            _ = &mut stop => return Ok(()),
            _ = tokio::time::sleep(FOLLOW_EVERY) => {}
        }
    }
}

/// Ctrl-C or SIGTERM.
async fn stop_signal() {
    let term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate());
    match term {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
