//! `ncp-watchd demo`: the bundled simulator, the demo configuration, and the events it
//! produces, printed live as one-liners. No NCP account, no files, no network.
//!
//! Until the daemon and its state store exist, the demo polls in rounds and remembers
//! what it saw in memory, so it prints only changes; it stops once the scenario has played
//! out and a last round has seen it.

use std::collections::HashMap;
use std::io::Write as _;
use std::path::Path;
use std::time::Duration;

use crate::config::{Config, CredentialSource, Credentials, Secret};
use crate::event::CloudEvent;
use crate::ncp::NcpClient;
use crate::sim::{Scenario, SimConfig, SimHandle};
use crate::watch::{Aspect, Seen, detect};

use super::Failure;
use super::once::poll_round;

/// The demo configuration, embedded so the demo runs from any directory.
pub const DEMO_CONFIG: &str = include_str!("../../config/demo.toml");

/// The demo gives up after this long, whatever the scenario does.
const DEMO_DEADLINE: Duration = Duration::from_secs(60);

/// Runs the demo to the end of the scenario.
pub async fn run() -> Result<(), Failure> {
    let mut config = Config::parse(Path::new("config/demo.toml"), DEMO_CONFIG)
        .map_err(|e| Failure::Runtime(format!("the embedded demo config is invalid: {e}")))?;
    let sim_config = SimConfig::new(Scenario::built_in());
    let credentials = Credentials {
        access_key: Secret::new(sim_config.access_key.clone()),
        secret_key: Secret::new(sim_config.secret_key.clone()),
        access_key_source: CredentialSource::BuiltIn,
        secret_key_source: CredentialSource::BuiltIn,
    };
    let sim = SimHandle::start(sim_config, "127.0.0.1:0".parse().expect("a valid address"))
        .await
        .map_err(|e| Failure::Runtime(format!("cannot start the simulator on loopback: {e}")))?;
    let url: url::Url = sim.url().parse().expect("the simulator's URL parses");
    config.api.media_url = url.clone();
    config.api.vod_url = url;
    let client = NcpClient::new(&config.api, &credentials).map_err(|e| Failure::Runtime(e.to_string()))?;

    let mut out = std::io::stdout().lock();
    let _ = writeln!(
        out,
        "ncp-sim serving the built-in scenario at {}; watching {} items",
        sim.url(),
        config.watches.len()
    );
    let step_of = |name: &Option<String>| {
        config
            .watches
            .vods
            .iter()
            .find(|v| &v.name == name)
            .map_or(0, |v| v.progress_step)
    };
    let mut seen: HashMap<(String, Aspect), Seen> = HashMap::new();
    let started = tokio::time::Instant::now();
    let mut events = 0usize;
    loop {
        let finished = sim.done();
        let round = poll_round(&config, &client).await;
        for (o, name) in &round.observations {
            let key = (o.resource.subject().to_string(), o.aspect);
            for change in detect(seen.get(&key), o, step_of(name)) {
                let event = CloudEvent::from_change(&change, &config.instance, name.as_deref(), chrono::Utc::now());
                let _ = writeln!(out, "{}", one_line(&event));
                events += 1;
            }
            seen.insert(
                key,
                Seen {
                    status: o.status.clone(),
                    percent: o.percent,
                },
            );
        }
        for (what, e) in &round.failures {
            let _ = writeln!(out, "{:>12}  poll of {what} failed: {e}", "");
        }
        let _ = out.flush();
        if finished || started.elapsed() > DEMO_DEADLINE {
            break;
        }
        tokio::time::sleep(config.poll.interval).await;
    }
    let _ = writeln!(
        out,
        "scenario done: {events} events from {} API calls",
        sim.requests().len()
    );
    sim.stop().await;
    Ok(())
}

/// `10:00:00.123  video_asset.import.completed  workspaces/…/5678  IN_PROGRESS → COMPLETED  (launch-trailer)`
pub fn one_line(e: &CloudEvent) -> String {
    let time = e.time.get(11..23).unwrap_or(&e.time);
    let from = e.data.previous.as_deref().unwrap_or("(new)");
    let mut line = format!(
        "{time}  {:<38} {:<64} {from} → {}",
        e.event_type, e.subject, e.data.current
    );
    if let Some(p) = e.data.percent {
        line.push_str(&format!(" {p:.0}%"));
    }
    if let Some(w) = &e.data.watch {
        line.push_str(&format!("  ({w})"));
    }
    line
}
