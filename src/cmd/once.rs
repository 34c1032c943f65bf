//! `ncp-watchd once`: poll every watch once and print each observation as an event.
//!
//! Without the state store every item is a first sight, so every event has
//! `previous: null`. Output is in config order whatever order the calls finish in.

use std::collections::HashSet;
use std::io::Write as _;

use tokio::task::JoinSet;

use crate::cli::ConfigArg;
use crate::config::{Config, resolve_credentials};
use crate::event::CloudEvent;
use crate::ncp::{ApiError, NcpClient};
use crate::watch::{Observation, detect};

use super::{Failure, load_config};

/// What one round of polling saw.
#[derive(Debug, Default)]
pub struct Round {
    /// Each observation with the name of the watch it came through, in config order.
    pub observations: Vec<(Observation, Option<String>)>,
    /// Each failed poll: what was polled, and why it failed.
    pub failures: Vec<(String, ApiError)>,
}

impl Round {
    /// One event per observation, each a first sight (`previous: null`).
    pub fn first_sight_events(&self, instance: &str) -> Vec<CloudEvent> {
        let now = chrono::Utc::now();
        self.observations
            .iter()
            .flat_map(|(o, name)| {
                detect(None, o, 0)
                    .into_iter()
                    .map(move |c| CloudEvent::from_change(&c, instance, name.as_deref(), now))
            })
            .collect()
    }
}

/// Polls, prints events on stdout and failures on stderr; fails if any poll failed.
pub async fn run(args: &ConfigArg) -> Result<(), Failure> {
    let config = load_config(args)?;
    let credentials = resolve_credentials(&config.credentials).map_err(|e| Failure::Config(format!("error: {e}")))?;
    let client = NcpClient::new(&config.api, &credentials).map_err(|e| Failure::Runtime(e.to_string()))?;
    let round = poll_round(&config, &client).await;
    let mut out = std::io::stdout().lock();
    for event in &round.first_sight_events(&config.instance) {
        let line = serde_json::to_string(event).expect("events always serialize");
        writeln!(out, "{line}").map_err(|e| Failure::Runtime(format!("cannot write to stdout: {e}")))?;
    }
    out.flush()
        .map_err(|e| Failure::Runtime(format!("cannot write to stdout: {e}")))?;
    if round.failures.is_empty() {
        return Ok(());
    }
    for (what, e) in &round.failures {
        eprintln!("error: polling {what} failed: {e}");
    }
    Err(Failure::Runtime(format!(
        "{} of the polls failed",
        round.failures.len()
    )))
}

/// The outcome of one watch's polls: observations with their watch name, and failures.
type WatchResult = (Vec<(Observation, Option<String>)>, Vec<(String, ApiError)>);

/// Polls every configured watch once, concurrently within the client's limits.
pub async fn poll_round(config: &Config, client: &NcpClient) -> Round {
    let w = &config.watches;
    // Assets watched explicitly are polled by their own watch; a project watch lists them
    // (and reports them discovered) but does not poll them a second time.
    let explicit: HashSet<(String, String, String)> = w
        .video_assets
        .iter()
        .map(|v| (v.workspace.clone(), v.project_id.clone(), v.asset_id.clone()))
        .collect();
    let mut tasks: JoinSet<(usize, WatchResult)> = JoinSet::new();
    let mut slot = 0;
    for v in w.video_assets.clone() {
        let client = client.clone();
        tasks.spawn(async move {
            let mut r = WatchResult::default();
            poll_asset(
                &client,
                &v.workspace,
                &v.project_id,
                &v.asset_id,
                v.analysis,
                &v.name,
                &mut r,
            )
            .await;
            (slot, r)
        });
        slot += 1;
    }
    for p in w.projects.clone() {
        let client = client.clone();
        let explicit = explicit.clone();
        tasks.spawn(async move {
            let mut r = WatchResult::default();
            match client.list_assets(&p.workspace, &p.project_id).await {
                Ok(assets) => {
                    for a in &assets {
                        r.0.push((a.observation(&p.workspace, &p.project_id), p.name.clone()));
                    }
                    for a in &assets {
                        let key = (p.workspace.clone(), p.project_id.clone(), a.asset_id.clone());
                        if !explicit.contains(&key) {
                            poll_asset(
                                &client,
                                &p.workspace,
                                &p.project_id,
                                &a.asset_id,
                                p.analysis,
                                &p.name,
                                &mut r,
                            )
                            .await;
                        }
                    }
                }
                Err(e) => r.1.push((format!("project {}/{}", p.workspace, p.project_id), e)),
            }
            (slot, r)
        });
        slot += 1;
    }
    for i in w.search_images.clone() {
        let client = client.clone();
        tasks.spawn(async move {
            let mut r = WatchResult::default();
            match client.search_image_status(&i.asset_key).await {
                Ok(s) => r.0.push((s.observation(&i.asset_key), i.name.clone())),
                Err(e) => r.1.push((format!("search image {}", i.asset_key), e)),
            }
            (slot, r)
        });
        slot += 1;
    }
    if !w.vods.is_empty() {
        let client = client.clone();
        let vods = w.vods.clone();
        let lookback = chrono::Duration::from_std(config.poll.vod_lookback).unwrap_or(chrono::Duration::days(1));
        tasks.spawn(async move {
            let mut r = WatchResult::default();
            let now = chrono::Utc::now();
            match client
                .vod_statuses((now - lookback).timestamp_millis(), now.timestamp_millis())
                .await
            {
                Ok(encodes) => {
                    for e in &encodes {
                        if let Some(watch) = vods
                            .iter()
                            .find(|v| v.matches(&e.category_id, e.category_name.as_deref()))
                        {
                            r.0.push((e.observation(), watch.name.clone()));
                        }
                    }
                }
                Err(e) => r.1.push(("the VOD Station status list".to_string(), e)),
            }
            (slot, r)
        });
    }
    let mut results: Vec<(usize, WatchResult)> = tasks.join_all().await;
    results.sort_by_key(|(slot, _)| *slot);
    let mut round = Round::default();
    for (_, (observations, failures)) in results {
        round.observations.extend(observations);
        round.failures.extend(failures);
    }
    round
}

/// Polls one asset's import status, and its analysis status once imported.
async fn poll_asset(
    client: &NcpClient,
    workspace: &str,
    project_id: &str,
    asset_id: &str,
    analysis: bool,
    name: &Option<String>,
    r: &mut WatchResult,
) {
    let what = || format!("video asset {workspace}/{project_id}/{asset_id}");
    match client.import_status(workspace, project_id, asset_id).await {
        Ok(s) => {
            let imported = s.upload_status == "COMPLETED";
            r.0.push((s.observation(workspace, project_id, asset_id), name.clone()));
            if analysis && imported {
                match client.analysis_status(workspace, project_id, asset_id).await {
                    Ok(a) => r.0.push((a.observation(workspace, project_id, asset_id), name.clone())),
                    Err(e) => r.1.push((format!("analysis of {}", what()), e)),
                }
            }
        }
        Err(e) => r.1.push((what(), e)),
    }
}
