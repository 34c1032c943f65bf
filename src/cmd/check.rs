//! `ncp-watchd check`: validate the config and find the credentials, offline.

use std::fmt::Write as _;

use crate::cli::ConfigArg;
use crate::config::{Config, Credentials, Endpoints, resolve_credentials};

use super::{Failure, load_config};

/// Validates, resolves every secret's presence, and prints a summary on stdout.
pub async fn run(args: &ConfigArg) -> Result<(), Failure> {
    let config = load_config(args)?;
    let mut problems = Vec::new();
    let credentials = match resolve_credentials(&config.credentials) {
        Ok(c) => Some(c),
        Err(e) => {
            problems.push(format!("error: {e}"));
            None
        }
    };
    for sink in &config.sinks.webhooks {
        if let Some(Err(e)) = sink.secret.as_ref().map(|source| source.resolve()) {
            problems.push(format!("error: sink.webhook `{}`: {e}", sink.name));
        }
    }
    if let Some(Err(e)) = config.callbacks.as_ref().map(|c| c.vod_token.resolve()) {
        problems.push(format!("error: callbacks: {e}"));
    }
    if !problems.is_empty() {
        return Err(Failure::Config(problems.join("\n")));
    }
    print!("{}", summary(&config, credentials.as_ref()));
    Ok(())
}

/// The summary `check` prints: what would run, and where each secret comes from (never
/// its value, and of a webhook URL only scheme and host).
pub fn summary(config: &Config, credentials: Option<&Credentials>) -> String {
    let w = &config.watches;
    let mut s = String::new();
    let _ = writeln!(s, "config {}: ok", config.path.display());
    let _ = writeln!(
        s,
        "instance: {} (events have source ncp-watchd/{})",
        config.instance, config.instance
    );
    let _ = writeln!(
        s,
        "watches: {} video_asset, {} project, {} search_image, {} vod",
        w.video_assets.len(),
        w.projects.len(),
        w.search_images.len(),
        w.vods.len()
    );
    let label = |n: &Option<String>| n.as_ref().map(|n| format!(" \"{n}\"")).unwrap_or_default();
    for v in &w.video_assets {
        let analysis = if v.analysis { " +analysis" } else { "" };
        let _ = writeln!(
            s,
            "  video_asset  workspaces/{}/projects/{}/video-assets/{}{}{analysis}",
            v.workspace,
            v.project_id,
            v.asset_id,
            label(&v.name)
        );
    }
    for p in &w.projects {
        let analysis = if p.analysis { " +analysis" } else { "" };
        let baseline = if p.baseline { " +baseline" } else { "" };
        let _ = writeln!(
            s,
            "  project      workspaces/{}/projects/{}{}{analysis}{baseline}",
            p.workspace,
            p.project_id,
            label(&p.name)
        );
    }
    for i in &w.search_images {
        let _ = writeln!(s, "  search_image query-assets/{}{}", i.asset_key, label(&i.name));
    }
    for v in &w.vods {
        let cats = if v.categories.is_empty() {
            "every category".to_string()
        } else {
            format!("categories {}", v.categories.join(", "))
        };
        let step = if v.progress_step > 0 {
            format!(", progress every {}%", v.progress_step)
        } else {
            String::new()
        };
        let baseline = if v.baseline { ", baseline" } else { "" };
        let _ = writeln!(s, "  vod          {cats}{step}{baseline}{}", label(&v.name));
    }
    let sinks = &config.sinks;
    let _ = writeln!(s, "sinks: {} webhook, {} log", sinks.webhooks.len(), sinks.logs.len());
    for h in &sinks.webhooks {
        let format = h.format.as_str();
        let signing = match &h.secret {
            Some(source) => format!("signed with the secret from {source}"),
            None => "unsigned".to_string(),
        };
        let _ = writeln!(
            s,
            "  webhook {} -> {} ({format}, {signing}; events {}; {} attempts, timeout {})",
            h.name,
            h.url_display,
            h.events.join(" "),
            h.max_attempts,
            humantime::format_duration(h.timeout)
        );
    }
    for l in &sinks.logs {
        let target = l
            .path
            .as_ref()
            .map_or("stdout".to_string(), |p| p.display().to_string());
        let _ = writeln!(s, "  log {} -> {target} (events {})", l.name, l.events.join(" "));
    }
    let a = &config.api;
    let (media_url, vod_url) = match credentials {
        Some(c) => crate::ncp::endpoints(a, c),
        None => (a.media_url.clone(), a.vod_url.clone()),
    };
    let from = match a.endpoints {
        Endpoints::Explicit => "from [api] media_url and vod_url".to_string(),
        Endpoints::Region(r) => format!("region {}", r.as_str()),
        Endpoints::Default if media_url != a.media_url => "from ncloud_api_url in the NCP CLI's file".to_string(),
        Endpoints::Default => "region public, the default".to_string(),
    };
    let _ = writeln!(s, "endpoints ({from}):");
    let _ = writeln!(
        s,
        "  media {} (import status under {}/)",
        crate::config::redact_url(&media_url),
        a.media_asset_path.as_str()
    );
    let _ = writeln!(s, "  vod   {}", crate::config::redact_url(&vod_url));
    let _ = writeln!(
        s,
        "  at most {} calls/min per host, {} in flight, timeout {}",
        a.rate_limit_per_minute,
        a.max_in_flight,
        humantime::format_duration(a.timeout)
    );
    let p = &config.poll;
    let recheck = p
        .terminal_recheck
        .map_or("off".to_string(), |d| humantime::format_duration(d).to_string());
    let _ = writeln!(
        s,
        "poll: every {}, discovery every {}, VOD lookback {}, backoff up to {}, terminal recheck {recheck}",
        humantime::format_duration(p.interval),
        humantime::format_duration(p.discovery_interval),
        humantime::format_duration(p.vod_lookback),
        humantime::format_duration(p.max_backoff),
    );
    let _ = writeln!(
        s,
        "      upload grace {}, stalled after {} unchanged, then every {}",
        humantime::format_duration(p.upload_grace),
        humantime::format_duration(p.stall_after),
        humantime::format_duration(p.stalled_interval),
    );
    if let Some(c) = credentials {
        let _ = writeln!(s, "credentials:");
        let _ = writeln!(s, "  access key from {}", c.access_key_source);
        let _ = writeln!(s, "  secret key from {}", c.secret_key_source);
    }
    match &config.callbacks {
        Some(c) => {
            let _ = writeln!(
                s,
                "callbacks: VOD Station at POST http://{}/callbacks/vod/<the token from {}>; running encodes are still read every {} in case one is lost",
                config.listen,
                c.vod_token,
                humantime::format_duration(c.fallback_interval)
            );
        }
        None => {
            let _ = writeln!(s, "callbacks: off (encodes are seen by polling only)");
        }
    }
    let _ = writeln!(s, "state: {}", config.state);
    let _ = writeln!(s, "server: http://{}", config.listen);
    s
}
