//! Raw sections into a validated [`Config`], recording every problem with its span.

use std::collections::HashMap;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use toml::Spanned;

use super::diag::{Collector, nearest};
use super::raw::*;
use super::*;
use crate::event::{KNOWN_EVENT_TYPES, glob_matches};

/// Where a webhook's signing secret is read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WebhookSecretSource {
    /// A file, path already resolved against the config directory.
    File(PathBuf),
    /// An environment variable.
    Env(String),
}

#[allow(
    clippy::expect_used,
    reason = "each expect here states an invariant of our own types, never of input"
)]
pub(crate) fn validate(raw: RawConfig, path: &Path, base_dir: &Path, d: &mut Collector) -> Config {
    let instance = match &raw.instance {
        Some(v) => {
            let ok = !v.get_ref().is_empty()
                && v.get_ref()
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.:".contains(c));
            if !ok {
                d.push(
                    v.span(),
                    "instance",
                    "must be a non-empty name of letters, digits, `-`, `_`, `.` or `:`",
                );
            }
            v.get_ref().clone()
        }
        None => gethostname::gethostname().to_string_lossy().into_owned(),
    };

    let credentials = CredentialsConfig {
        access_key_file: raw
            .credentials
            .access_key_file
            .as_ref()
            .and_then(|f| non_empty(d, "credentials.access_key_file", f).map(PathBuf::from)),
        secret_key_file: raw
            .credentials
            .secret_key_file
            .as_ref()
            .and_then(|f| non_empty(d, "credentials.secret_key_file", f).map(PathBuf::from)),
        base_dir: base_dir.to_path_buf(),
    };

    let a = &raw.api;
    let region = match choice(d, "api.region", &a.region, &["public", "gov", "fin"]) {
        Some("gov") => Some(Region::Gov),
        Some("fin") => Some(Region::Fin),
        Some(_) => Some(Region::Public),
        None => None,
    };
    let (region_media, region_vod) = region.unwrap_or(Region::Public).urls();
    let endpoints = match (region, a.media_url.is_some() && a.vod_url.is_some()) {
        (_, true) => Endpoints::Explicit,
        (Some(r), false) => Endpoints::Region(r),
        (None, false) if a.media_url.is_some() || a.vod_url.is_some() => Endpoints::Explicit,
        (None, false) => Endpoints::Default,
    };
    let api = ApiConfig {
        endpoints,
        media_url: base_url(d, "api.media_url", &a.media_url, region_media.as_str()),
        vod_url: base_url(d, "api.vod_url", &a.vod_url, region_vod.as_str()),
        media_asset_path: match choice(
            d,
            "api.media_asset_path",
            &a.media_asset_path,
            &["video-assets", "assets"],
        ) {
            Some("assets") => MediaAssetPath::Assets,
            _ => MediaAssetPath::VideoAssets,
        },
        timeout: duration(d, "api.timeout", &a.timeout, DEFAULT_API_TIMEOUT),
        rate_limit_per_minute: int(d, "api.rate_limit_per_minute", &a.rate_limit_per_minute, 1, 1_000_000)
            .map_or(DEFAULT_RATE_LIMIT_PER_MINUTE, |v| v as u32),
        max_in_flight: int(d, "api.max_in_flight", &a.max_in_flight, 1, 1024)
            .map_or(DEFAULT_MAX_IN_FLIGHT, |v| v as usize),
    };

    let p = &raw.poll;
    let poll = PollConfig {
        interval: duration(d, "poll.interval", &p.interval, DEFAULT_POLL_INTERVAL),
        max_backoff: duration(d, "poll.max_backoff", &p.max_backoff, DEFAULT_MAX_BACKOFF),
        discovery_interval: duration(
            d,
            "poll.discovery_interval",
            &p.discovery_interval,
            DEFAULT_DISCOVERY_INTERVAL,
        ),
        vod_lookback: duration(d, "poll.vod_lookback", &p.vod_lookback, DEFAULT_VOD_LOOKBACK),
        terminal_recheck: match &p.terminal_recheck {
            Some(v) if v.get_ref() == "off" => None,
            Some(_) => Some(duration(
                d,
                "poll.terminal_recheck",
                &p.terminal_recheck,
                Duration::ZERO,
            )),
            None => None,
        },
        upload_grace: duration(d, "poll.upload_grace", &p.upload_grace, DEFAULT_UPLOAD_GRACE),
        stall_after: duration(d, "poll.stall_after", &p.stall_after, DEFAULT_STALL_AFTER),
        stalled_interval: duration(
            d,
            "poll.stalled_interval",
            &p.stalled_interval,
            DEFAULT_STALLED_INTERVAL,
        ),
    };

    let watches = watches(&raw, d);
    let declared = raw.video_assets.len() + raw.projects.len() + raw.search_images.len() + raw.vods.len();
    if declared == 0 && !d.reported("watch") {
        d.push(0..0, "watch", "no watches: add at least one [[watch.video_asset]], [[watch.project]], [[watch.search_image]] or [[watch.vod]] table");
    }
    let sinks = sinks(&raw, base_dir, d);

    let state = state(d, &raw.state, base_dir);

    let listen = match &raw.server.listen {
        Some(v) => v.get_ref().parse().unwrap_or_else(|_| {
            d.push(
                v.span(),
                "server.listen",
                "expected an address and port such as \"127.0.0.1:9464\" or \"[::1]:9464\"",
            );
            DEFAULT_LISTEN.parse().expect("default listen address parses")
        }),
        None => DEFAULT_LISTEN.parse().expect("default listen address parses"),
    };

    let callbacks = raw.callbacks.as_ref().and_then(|t| callbacks(d, t, base_dir));

    let level = match &raw.log.level {
        Some(v) => {
            if let Err(message) = log_filter(v.get_ref()) {
                d.push(v.span(), "log.level", message);
            }
            v.get_ref().clone()
        }
        None => "info".to_string(),
    };
    let format = match choice(d, "log.format", &raw.log.format, &["text", "json"]) {
        Some("json") => LogFormat::Json,
        _ => LogFormat::Text,
    };

    Config {
        path: path.to_path_buf(),
        instance,
        credentials,
        api,
        poll,
        watches,
        sinks,
        state,
        state_retention: duration(d, "state.retention", &raw.state.retention, DEFAULT_RETENTION),
        cluster_lease_ttl: lease_ttl(d, &raw.cluster.lease_ttl),
        listen,
        callbacks,
        log: LogConfig { level, format },
    }
}

/// `[cluster] lease_ttl`, between [`MIN_LEASE_TTL`] and [`MAX_LEASE_TTL`].
fn lease_ttl(d: &mut Collector, v: &Field<String>) -> Duration {
    let ttl = duration(d, "cluster.lease_ttl", v, DEFAULT_LEASE_TTL);
    if let Some(v) = v
        && !(MIN_LEASE_TTL..=MAX_LEASE_TTL).contains(&ttl)
    {
        d.push(
            v.span(),
            "cluster.lease_ttl",
            format!(
                "`{}` is out of range: a lease must last from {} (leases are renewed every second) to {}",
                v.get_ref(),
                humantime::format_duration(MIN_LEASE_TTL),
                humantime::format_duration(MAX_LEASE_TTL)
            ),
        );
        return DEFAULT_LEASE_TTL;
    }
    ttl
}

/// `[callbacks]`: exactly one token source, and the fallback interval.
fn callbacks(d: &mut Collector, t: &Spanned<RawCallbacks>, base_dir: &Path) -> Option<CallbacksConfig> {
    let r = t.get_ref();
    let fallback_interval = duration(
        d,
        "callbacks.fallback_interval",
        &r.fallback_interval,
        DEFAULT_CALLBACK_FALLBACK_INTERVAL,
    );
    let vod_token = match (&r.vod_token_file, &r.vod_token_env) {
        (Some(_), Some(env)) => {
            d.push(
                env.span(),
                "callbacks.vod_token_env",
                "set either `vod_token_file` or `vod_token_env`, not both",
            );
            None
        }
        (Some(f), None) => non_empty(d, "callbacks.vod_token_file", f)
            .map(|p| CallbackTokenSource::File(secret_path(Path::new(&p), base_dir))),
        (None, Some(e)) => non_empty(d, "callbacks.vod_token_env", e).map(CallbackTokenSource::Env),
        (None, None) => {
            d.push(
                t.span(),
                "callbacks.vod_token_file",
                format!(
                    "missing the callback token: set `vod_token_file` or `vod_token_env` to a random string of at least {MIN_CALLBACK_TOKEN_CHARS} characters (such as the output of `openssl rand -hex 32`), or remove [callbacks]"
                ),
            );
            None
        }
    };
    Some(CallbacksConfig {
        vod_token: vod_token?,
        fallback_interval,
    })
}

/// Where the callback URL's token is read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallbackTokenSource {
    /// A file, path already resolved (against `$CREDENTIALS_DIRECTORY` or the config's directory).
    File(PathBuf),
    /// An environment variable.
    Env(String),
}

/// A token file larger than this is not a token.
const MAX_TOKEN_FILE_BYTES: u64 = 4096;

impl CallbackTokenSource {
    /// Reads the token and checks it: at least [`MIN_CALLBACK_TOKEN_CHARS`] characters,
    /// all of them allowed in a URL path unencoded. Errors name the source, never the value.
    pub fn resolve(&self) -> Result<Secret, String> {
        use std::io::Read as _;
        let value = match self {
            Self::File(p) => {
                let mut bytes = Vec::new();
                std::fs::File::open(p)
                    .and_then(|f| f.take(MAX_TOKEN_FILE_BYTES + 1).read_to_end(&mut bytes))
                    .map_err(|e| format!("cannot read the callback token file {}: {e}", p.display()))?;
                if bytes.len() as u64 > MAX_TOKEN_FILE_BYTES {
                    return Err(format!(
                        "the callback token file {} is larger than {MAX_TOKEN_FILE_BYTES} bytes; is it the right file?",
                        p.display()
                    ));
                }
                String::from_utf8(bytes).map_err(|_| format!("the callback token from {self} is not UTF-8"))?
            }
            Self::Env(var) => std::env::var(var).map_err(|_| format!("environment variable {var} is not set"))?,
        };
        let token = value.trim();
        if token.chars().count() < MIN_CALLBACK_TOKEN_CHARS {
            return Err(format!(
                "the callback token from {self} is {} characters; it must be at least {MIN_CALLBACK_TOKEN_CHARS} (such as the output of `openssl rand -hex 32`), as it is the callback URL's only authentication",
                token.chars().count()
            ));
        }
        if !token.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b)) {
            return Err(format!(
                "the callback token from {self} must be letters, digits, `-`, `_`, `.` or `~` only, so it goes into the URL path as it is"
            ));
        }
        Ok(Secret::new(token))
    }
}

impl std::fmt::Display for CallbackTokenSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::File(p) => write!(f, "file {}", p.display()),
            Self::Env(v) => write!(f, "environment variable {v}"),
        }
    }
}

/// Levels a `[log] level` directive may name, as tracing spells them.
const LOG_LEVELS: &[&str] = &["error", "warn", "info", "debug", "trace", "off"];

/// Checks a `[log] level` filter: comma-separated directives, each a level or
/// `target=level` / `target[span]=level`. `EnvFilter` alone is not enough: it reads a bare
/// word it does not know (`warnn`) as a target name, which silences every log line.
fn log_filter(filter: &str) -> Result<(), String> {
    let level = |word: &str| -> Result<(), String> {
        let lower = word.trim().to_ascii_lowercase();
        if LOG_LEVELS.contains(&lower.as_str()) {
            return Ok(());
        }
        let word = word.trim().escape_default();
        Err(match nearest(&lower, LOG_LEVELS.iter().copied()) {
            Some(near) => format!("`{word}` is not a log level; did you mean `{near}`?"),
            None => format!(
                "`{word}` is not a log level: expected error, warn, info, debug, trace or off, or target=level such as \"ncp_watchd=debug\""
            ),
        })
    };
    let directives: Vec<&str> = filter.split(',').map(str::trim).filter(|d| !d.is_empty()).collect();
    if directives.is_empty() {
        return Err(
            "expected a level (error, warn, info, debug, trace or off) or a filter such as \"ncp_watchd=debug\""
                .to_string(),
        );
    }
    for directive in directives {
        match directive.rsplit_once('=') {
            // A span's field filter (`target[span{field=value}]=level`) has `=` inside the
            // brackets; the level is after the last one.
            Some((target, lvl)) if !lvl.contains(']') => {
                level(lvl)?;
                let name = target.split('[').next().unwrap_or_default().trim();
                let brackets_ok = !target.contains('[') || target.trim_end().ends_with(']');
                if (name.is_empty() && !target.trim_start().starts_with('[')) || !brackets_ok {
                    return Err(format!(
                        "`{}` is not a filter directive: write target=level such as \"ncp_watchd=debug\" or target[span]=level",
                        directive.escape_default()
                    ));
                }
            }
            _ => level(directive)?,
        }
    }
    // What is left (span and field syntax) is for tracing itself to judge.
    tracing_subscriber::EnvFilter::try_new(filter).map(drop).map_err(|e| {
        format!(
            "not a valid log filter ({e}); write a level such as \"info\" or target=level such as \"ncp_watchd=debug\""
        )
    })
}

/// A path where a file is to be written must not be a directory, and its directory, when
/// it exists, must be one. A path whose directory does not exist yet is left to the
/// component that creates it.
fn writable_file(d: &mut Collector, key: &str, span: Range<usize>, path: &Path, what: &str, example: &str) {
    if path.is_dir() {
        d.push(
            span,
            key,
            format!(
                "{} is a directory; name a file for {what} inside it, such as {}",
                path.display(),
                path.join(example).display()
            ),
        );
        return;
    }
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty())
        && parent.exists()
        && !parent.is_dir()
    {
        d.push(
            span,
            key,
            format!(
                "{} is not a directory, so {what} cannot be created in it",
                parent.display()
            ),
        );
    }
}

/// A relative secret file resolves against systemd's `$CREDENTIALS_DIRECTORY` when set
/// (`LoadCredential=`), like the NCP keys, else against the config file's directory.
fn secret_path(path: &Path, base_dir: &Path) -> PathBuf {
    if path.is_absolute() {
        return path.to_path_buf();
    }
    match std::env::var_os("CREDENTIALS_DIRECTORY").filter(|d| !d.is_empty()) {
        Some(dir) => PathBuf::from(dir).join(path),
        None => base_dir.join(path),
    }
}

/// `[state]`: exactly one of `path` and `url`; a password source only with `url`.
fn state(d: &mut Collector, raw: &RawState, base_dir: &Path) -> StateConfig {
    let password = match (&raw.password_file, &raw.password_env) {
        (Some(_), Some(env)) => {
            d.push(
                env.span(),
                "state.password_env",
                "set either `password_file` or `password_env`, not both",
            );
            None
        }
        (Some(f), None) => {
            non_empty(d, "state.password_file", f).map(|p| SecretSource::File(secret_path(Path::new(&p), base_dir)))
        }
        (None, Some(e)) => non_empty(d, "state.password_env", e).map(SecretSource::Env),
        (None, None) => None,
    };
    match (&raw.path, &raw.url) {
        (Some(_), Some(url)) => {
            d.push(
                url.span(),
                "state.url",
                "set either `path` (SQLite) or `url` (PostgreSQL), not both",
            );
            StateConfig::Sqlite {
                path: PathBuf::from(DEFAULT_STATE_PATH),
            }
        }
        (None, Some(url)) => {
            if let Some(text) = non_empty(d, "state.url", url)
                && let Err(reason) = crate::store::postgres::parse_url(&text, base_dir)
            {
                d.push(url.span(), "state.url", reason);
            }
            StateConfig::Postgres(PostgresConfig {
                url: url.get_ref().clone(),
                password,
                base_dir: base_dir.to_path_buf(),
            })
        }
        (path, None) => {
            if let Some(p) = raw.password_file.as_ref().or(raw.password_env.as_ref()) {
                d.push(
                    p.span(),
                    "state.password_file",
                    "a password is only for a PostgreSQL store: set [state] url, or remove it",
                );
            }
            let path = match path {
                Some(v) => match non_empty(d, "state.path", v) {
                    Some(p) => {
                        let path = resolve_state_path(Path::new(&p), base_dir);
                        writable_file(d, "state.path", v.span(), &path, "the state store", "state.db");
                        path
                    }
                    None => PathBuf::from(DEFAULT_STATE_PATH),
                },
                None => PathBuf::from(DEFAULT_STATE_PATH),
            };
            StateConfig::Sqlite { path }
        }
    }
}

/// Relative state paths go under systemd's `$STATE_DIRECTORY` when set, else beside the config.
fn resolve_state_path(path: &Path, base_dir: &Path) -> PathBuf {
    if path.is_absolute() {
        return path.to_path_buf();
    }
    match std::env::var_os("STATE_DIRECTORY") {
        // systemd may list several directories separated by colons; the first is ours.
        Some(dirs) => {
            let first = dirs.to_string_lossy().split(':').next().unwrap_or_default().to_string();
            PathBuf::from(first).join(path)
        }
        None => base_dir.join(path),
    }
}

fn watches(raw: &RawConfig, d: &mut Collector) -> Watches {
    let mut w = Watches::default();
    // Identity of each watch → the key path that first declared it, to report duplicates.
    let mut seen: HashMap<String, String> = HashMap::new();
    let mut dup = |d: &mut Collector, identity: String, key: &str, span: Range<usize>| {
        if let Some(first) = seen.get(&identity) {
            d.push(
                span,
                key,
                format!("duplicate watch: {first} already watches {identity}; remove one of them"),
            );
        } else {
            seen.insert(identity, key.to_string());
        }
    };

    for (i, t) in raw.video_assets.iter().enumerate() {
        let key = format!("watch.video_asset[{i}]");
        let r = t.get_ref();
        let workspace = required_workspace(d, &key, &r.workspace, t.span());
        let project_id = required_id(d, &key, "project_id", &r.project_id, t.span());
        let asset_id = required_id(d, &key, "asset_id", &r.asset_id, t.span());
        let name = r.name.as_ref().and_then(|n| non_empty(d, &format!("{key}.name"), n));
        let analysis = r.analysis.as_ref().is_some_and(|a| *a.get_ref());
        if let (Some(workspace), Some(project_id), Some(asset_id)) = (workspace, project_id, asset_id) {
            let identity = format!("video asset {workspace}/{project_id}/{asset_id}");
            dup(d, identity, &key, t.span());
            w.video_assets.push(VideoAssetWatch {
                workspace,
                project_id,
                asset_id,
                name,
                analysis,
            });
        }
    }
    for (i, t) in raw.projects.iter().enumerate() {
        let key = format!("watch.project[{i}]");
        let r = t.get_ref();
        let workspace = required_workspace(d, &key, &r.workspace, t.span());
        let project_id = required_id(d, &key, "project_id", &r.project_id, t.span());
        let name = r.name.as_ref().and_then(|n| non_empty(d, &format!("{key}.name"), n));
        let analysis = r.analysis.as_ref().is_some_and(|a| *a.get_ref());
        let baseline = r.baseline.as_ref().is_some_and(|b| *b.get_ref());
        if let (Some(workspace), Some(project_id)) = (workspace, project_id) {
            dup(d, format!("project {workspace}/{project_id}"), &key, t.span());
            w.projects.push(ProjectWatch {
                workspace,
                project_id,
                name,
                analysis,
                baseline,
            });
        }
    }
    for (i, t) in raw.search_images.iter().enumerate() {
        let key = format!("watch.search_image[{i}]");
        let r = t.get_ref();
        let asset_key = required_text(d, &key, "asset_key", &r.asset_key, t.span()).filter(|k| {
            object_key(
                d,
                &format!("{key}.asset_key"),
                k,
                r.asset_key.as_ref().map_or(t.span(), Spanned::span),
            )
        });
        let name = r.name.as_ref().and_then(|n| non_empty(d, &format!("{key}.name"), n));
        if let Some(asset_key) = asset_key {
            dup(d, format!("search image {asset_key}"), &key, t.span());
            w.search_images.push(SearchImageWatch { asset_key, name });
        }
    }
    // VOD watches are filters over one shared list: two that overlap would report the same
    // encode twice, so every category (and "all categories") may be claimed once.
    for (i, t) in raw.vods.iter().enumerate() {
        let key = format!("watch.vod[{i}]");
        let r = t.get_ref();
        let mut categories = Vec::new();
        match &r.categories {
            Some(list) if list.get_ref().is_empty() => d.push(
                list.span(),
                format!("{key}.categories"),
                "empty list watches nothing: list category ids or names, or remove the key to watch every category",
            ),
            Some(list) => {
                for c in list.get_ref() {
                    let text = match c.get_ref() {
                        IdOrName::Int(n) => n.to_string(),
                        IdOrName::Text(s) => s.trim().to_string(),
                    };
                    if text.is_empty() {
                        d.push(
                            c.span(),
                            format!("{key}.categories"),
                            "a category must be a non-empty id or name",
                        );
                        continue;
                    }
                    dup(
                        d,
                        format!("VOD category {text}"),
                        &format!("{key}.categories"),
                        c.span(),
                    );
                    categories.push(text);
                }
            }
            None => dup(d, "every VOD category".to_string(), &key, t.span()),
        }
        let progress_step = int(d, &format!("{key}.progress_step"), &r.progress_step, 0, 100).unwrap_or(0) as u8;
        let name = r.name.as_ref().and_then(|n| non_empty(d, &format!("{key}.name"), n));
        w.vods.push(VodWatch {
            categories,
            progress_step,
            name,
            baseline: r.baseline.as_ref().is_some_and(|b| *b.get_ref()),
        });
    }
    let all = raw.vods.iter().position(|t| t.get_ref().categories.is_none());
    if let (Some(all), true) = (all, raw.vods.len() > 1) {
        let t = &raw.vods[all];
        d.push(
            t.span(),
            format!("watch.vod[{all}]"),
            "a VOD watch without `categories` already watches every category, so the other [[watch.vod]] tables would report encodes twice; give each watch its categories or keep only this one",
        );
    }
    w
}

fn sinks(raw: &RawConfig, base_dir: &Path, d: &mut Collector) -> Sinks {
    let mut s = Sinks::default();
    let mut names: HashMap<String, String> = HashMap::new();
    let mut unique_name = |d: &mut Collector, name: &str, key: &str, span: Range<usize>| {
        if name.contains('#') {
            d.push(
                span.clone(),
                key,
                "a sink name may not hold `#` (the store marks a shard's part of a sink with it); choose another name",
            );
        }
        if let Some(first) = names.get(name) {
            d.push(
                span,
                key,
                format!("sink name `{name}` is already used by {first}; sink names must be unique"),
            );
        } else {
            names.insert(name.to_string(), key.to_string());
        }
    };

    for (i, t) in raw.webhooks.iter().enumerate() {
        let key = format!("sink.webhook[{i}]");
        let r = t.get_ref();
        let name = required_text(d, &key, "name", &r.name, t.span());
        if let (Some(n), Some(field)) = (&name, &r.name) {
            unique_name(d, n, &format!("{key}.name"), field.span());
        }
        let url = match &r.url {
            Some(u) => webhook_url(d, &format!("{key}.url"), u),
            None => {
                d.push(
                    t.span(),
                    format!("{key}.url"),
                    "missing required key `url`: the receiver's http or https URL",
                );
                None
            }
        };
        let secret = match (&r.secret_file, &r.secret_env) {
            (Some(_), Some(env)) => {
                d.push(
                    env.span(),
                    format!("{key}.secret_env"),
                    "set either `secret_file` or `secret_env`, not both",
                );
                None
            }
            (Some(f), None) => non_empty(d, &format!("{key}.secret_file"), f)
                .map(|p| WebhookSecretSource::File(secret_path(Path::new(&p), base_dir))),
            (None, Some(e)) => non_empty(d, &format!("{key}.secret_env"), e).map(WebhookSecretSource::Env),
            (None, None) => None,
        };
        let format = match choice(
            d,
            &format!("{key}.format"),
            &r.format,
            &["cloudevents", "slack", "discord", "teams", "google_chat"],
        ) {
            Some("slack") => WebhookFormat::Slack,
            Some("discord") => WebhookFormat::Discord,
            Some("teams") => WebhookFormat::Teams,
            Some("google_chat") => WebhookFormat::GoogleChat,
            _ => WebhookFormat::CloudEvents,
        };
        let retry_initial = duration(
            d,
            &format!("{key}.retry_initial"),
            &r.retry_initial,
            DEFAULT_RETRY_INITIAL,
        );
        let retry_max = duration(d, &format!("{key}.retry_max"), &r.retry_max, DEFAULT_RETRY_MAX);
        if retry_max < retry_initial {
            let span = r
                .retry_max
                .as_ref()
                .or(r.retry_initial.as_ref())
                .map_or(t.span(), Spanned::span);
            d.push(
                span,
                format!("{key}.retry_max"),
                format!(
                    "retry_max ({}) is shorter than retry_initial ({}); raise retry_max or lower retry_initial",
                    humantime::format_duration(retry_max),
                    humantime::format_duration(retry_initial)
                ),
            );
        }
        let template = match (&r.template, &r.template_file) {
            (Some(_), Some(f)) => {
                d.push(
                    f.span(),
                    format!("{key}.template_file"),
                    "set either `template` or `template_file`, not both",
                );
                None
            }
            (Some(t), None) => Some((t.get_ref().clone(), t.span(), format!("{key}.template"))),
            (None, Some(f)) => {
                let path = base_dir.join(f.get_ref());
                match std::fs::read_to_string(&path) {
                    Ok(text) if text.len() <= MAX_TEMPLATE_BYTES => {
                        Some((text, f.span(), format!("{key}.template_file")))
                    }
                    Ok(_) => {
                        d.push(
                            f.span(),
                            format!("{key}.template_file"),
                            format!("{} is larger than {MAX_TEMPLATE_BYTES} bytes", path.display()),
                        );
                        None
                    }
                    Err(e) => {
                        d.push(
                            f.span(),
                            format!("{key}.template_file"),
                            format!("cannot read {}: {e}", path.display()),
                        );
                        None
                    }
                }
            }
            (None, None) => None,
        };
        if let (Some(_), Some(f)) = (&template, &r.format) {
            d.push(
                f.span(),
                format!("{key}.format"),
                "a template makes the body itself: remove `format` or the template",
            );
        }
        let template = template.and_then(|(text, span, field)| match crate::sink::encode::check_template(&text) {
            Ok(()) => Some(text),
            Err(why) => {
                d.push(span, field, why);
                None
            }
        });
        let sink = WebhookSink {
            name: name.unwrap_or_default(),
            url: url
                .as_ref()
                .map(|u| Secret::new(u.as_str()))
                .unwrap_or_else(|| Secret::new("")),
            url_display: url.as_ref().map(redact_url).unwrap_or_default(),
            secret,
            events: events(d, &key, &r.events),
            format,
            template,
            timeout: duration(d, &format!("{key}.timeout"), &r.timeout, DEFAULT_WEBHOOK_TIMEOUT),
            max_attempts: int(d, &format!("{key}.max_attempts"), &r.max_attempts, 1, 1000)
                .map_or(DEFAULT_MAX_ATTEMPTS, |v| v as u32),
            retry_initial,
            retry_max,
        };
        s.webhooks.push(sink);
    }

    let mut paths: HashMap<Option<PathBuf>, String> = HashMap::new();
    for (i, t) in raw.logs.iter().enumerate() {
        let key = format!("sink.log[{i}]");
        let r = t.get_ref();
        let path = r
            .path
            .as_ref()
            .and_then(|p| non_empty(d, &format!("{key}.path"), p))
            .map(|p| base_dir.join(p));
        // An unnamed sink is named after its output, so its progress survives edits that
        // add or remove other sinks.
        let name = match &r.name {
            Some(n) => non_empty(d, &format!("{key}.name"), n).unwrap_or_default(),
            None => path.as_ref().map_or("stdout".to_string(), |p| p.display().to_string()),
        };
        // A defaulted name repeats only when the output does, which is reported below.
        if r.name.is_some() || !paths.contains_key(&path) {
            unique_name(
                d,
                &name,
                &format!("{key}.name"),
                r.name.as_ref().map_or(t.span(), Spanned::span),
            );
        }
        let span = r.path.as_ref().map_or(t.span(), Spanned::span);
        if let Some(p) = &path {
            writable_file(
                d,
                &format!("{key}.path"),
                span.clone(),
                p,
                "the event log",
                "events.jsonl",
            );
        }
        if let Some(first) = paths.get(&path) {
            let target = path.as_ref().map_or("stdout".to_string(), |p| p.display().to_string());
            d.push(
                span,
                format!("{key}.path"),
                format!("{first} already writes to {target}; two sinks would interleave lines"),
            );
        } else {
            paths.insert(path.clone(), key.clone());
        }
        s.logs.push(LogSink {
            name,
            path,
            events: events(d, &key, &r.events),
        });
    }
    s
}

/// `events = [...]`: each glob must match some documented event type, so a typo that
/// would silently deliver nothing is caught here. (A status NCP adds later still reaches
/// sinks whose globs cover its family, such as `vod.encode.*`.)
fn events(d: &mut Collector, key: &str, field: &Field<Vec<Spanned<String>>>) -> Vec<String> {
    let Some(list) = field else {
        return vec!["*".to_string()];
    };
    let key = format!("{key}.events");
    if list.get_ref().is_empty() {
        d.push(
            list.span(),
            &key,
            "empty list delivers nothing: use [\"*\"] for every event, or remove the sink",
        );
        return Vec::new();
    }
    let mut out = Vec::new();
    for g in list.get_ref() {
        let glob = g.get_ref();
        if !KNOWN_EVENT_TYPES.iter().any(|t| glob_matches(glob, t)) {
            let hint = match nearest(glob, KNOWN_EVENT_TYPES.iter().copied()) {
                Some(near) => format!("; did you mean `{near}`?"),
                None => "; event types look like `video_asset.import.completed` or `vod.encode.*`".to_string(),
            };
            d.push(g.span(), &key, format!("`{glob}` matches no event type{hint}"));
        }
        out.push(glob.clone());
    }
    out
}

fn non_empty(d: &mut Collector, key: &str, v: &Spanned<String>) -> Option<String> {
    let s = v.get_ref().trim();
    if s.is_empty() {
        d.push(v.span(), key, "must not be empty");
        None
    } else {
        Some(s.to_string())
    }
}

fn required_text(
    d: &mut Collector,
    table: &str,
    field: &str,
    v: &Field<String>,
    table_span: Range<usize>,
) -> Option<String> {
    let key = format!("{table}.{field}");
    match v {
        Some(v) => non_empty(d, &key, v),
        None => {
            if !d.reported(&key) {
                d.push(table_span, &key, format!("missing required key `{field}`"));
            }
            None
        }
    }
}

fn required_id(
    d: &mut Collector,
    table: &str,
    field: &str,
    v: &Field<IdOrName>,
    table_span: Range<usize>,
) -> Option<String> {
    let key = format!("{table}.{field}");
    match v {
        Some(v) => {
            let text = match v.get_ref() {
                IdOrName::Int(n) if *n >= 0 => n.to_string(),
                IdOrName::Int(_) => String::new(),
                IdOrName::Text(s) => s.trim().to_string(),
            };
            if is_positive_integer(&text) {
                Some(text)
            } else {
                d.push(
                    v.span(),
                    &key,
                    format!(
                        "`{}` is not an id: NCP's {} are positive integers such as 1234",
                        text.escape_default(),
                        field.replace('_', " ").replace(" id", " ids")
                    ),
                );
                None
            }
        }
        None => {
            if !d.reported(&key) {
                d.push(table_span, &key, format!("missing required key `{field}`"));
            }
            None
        }
    }
}

/// Whether `s` is a positive decimal integer that fits NCP's 64-bit ids.
pub fn is_positive_integer(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) && s.parse::<u64>().is_ok_and(|n| n > 0)
}

/// Whether `s` is a Media Intelligence workspace name: lowercase letters, digits and `-`.
pub fn is_workspace_name(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// Whether `s` is an object key every segment of which can go into a path and a subject:
/// no empty, `.` or `..` segment, no control character.
pub fn is_object_key(s: &str) -> bool {
    !s.chars().any(char::is_control) && s.split('/').all(|seg| !seg.is_empty() && seg != "." && seg != "..")
}

fn required_workspace(d: &mut Collector, table: &str, v: &Field<String>, table_span: Range<usize>) -> Option<String> {
    let name = required_text(d, table, "workspace", v, table_span)?;
    if is_workspace_name(&name) {
        return Some(name);
    }
    let span = v.as_ref().map_or(0..0, Spanned::span);
    d.push(
        span,
        format!("{table}.workspace"),
        format!(
            "`{}` is not a workspace name: NCP's workspace names are lowercase letters, digits and `-`",
            name.escape_default()
        ),
    );
    None
}

fn object_key(d: &mut Collector, key: &str, value: &str, span: Range<usize>) -> bool {
    if is_object_key(value) {
        return true;
    }
    d.push(
        span,
        key,
        "an object key has no empty, `.` or `..` segment and no control character, such as \"images/2026/11/query.jpg\"",
    );
    false
}

fn duration(d: &mut Collector, key: &str, v: &Field<String>, default: Duration) -> Duration {
    let Some(v) = v else { return default };
    match humantime::parse_duration(v.get_ref()) {
        Ok(dur) if dur.is_zero() => {
            d.push(v.span(), key, "must be longer than zero");
            default
        }
        Ok(dur) if dur > MAX_DURATION => {
            d.push(
                v.span(),
                key,
                format!(
                    "`{}` is too long: the most any duration may be is 10 years",
                    v.get_ref()
                ),
            );
            default
        }
        Ok(dur) => dur,
        Err(e) => {
            d.push(
                v.span(),
                key,
                format!(
                    "`{}` is not a duration ({e}); write it like \"30s\", \"10m\" or \"1h 30m\"",
                    v.get_ref()
                ),
            );
            default
        }
    }
}

fn int(d: &mut Collector, key: &str, v: &Field<i64>, min: i64, max: i64) -> Option<i64> {
    let v = v.as_ref()?;
    let n = *v.get_ref();
    if n < min || n > max {
        d.push(
            v.span(),
            key,
            format!("{n} is out of range: must be from {min} to {max}"),
        );
        None
    } else {
        Some(n)
    }
}

fn choice<'a>(d: &mut Collector, key: &str, v: &Field<String>, options: &[&'a str]) -> Option<&'a str> {
    let v = v.as_ref()?;
    let found = options.iter().copied().find(|o| *o == v.get_ref());
    if found.is_none() {
        let opts = options
            .iter()
            .map(|o| format!("\"{o}\""))
            .collect::<Vec<_>>()
            .join(" or ");
        d.push(
            v.span(),
            key,
            format!("`{}` is not valid: expected {opts}", v.get_ref()),
        );
    }
    found
}

fn http_url(d: &mut Collector, key: &str, v: &Spanned<String>, what: &str) -> Option<url::Url> {
    let url = match url::Url::parse(v.get_ref().trim()) {
        Ok(u) => u,
        Err(e) => {
            // The URL parser's message never includes the input, so no token can leak here.
            d.push(v.span(), key, format!("not a valid URL ({e}); expected {what}"));
            return None;
        }
    };
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        d.push(v.span(), key, format!("expected {what}"));
        return None;
    }
    Some(url)
}

#[allow(
    clippy::expect_used,
    reason = "each expect here states an invariant of our own types, never of input"
)]
fn base_url(d: &mut Collector, key: &str, v: &Field<String>, default: &str) -> url::Url {
    let fallback = || url::Url::parse(default).expect("default URL parses");
    let Some(v) = v else { return fallback() };
    let Some(url) = http_url(
        d,
        key,
        v,
        "an http or https base URL such as \"https://mi.apigw.ntruss.com\"",
    ) else {
        return fallback();
    };
    if url.query().is_some() || url.fragment().is_some() || !url.username().is_empty() {
        d.push(v.span(), key, "a base URL takes no query, fragment or user name");
        return fallback();
    }
    url
}

fn webhook_url(d: &mut Collector, key: &str, v: &Spanned<String>) -> Option<url::Url> {
    http_url(d, key, v, "an http or https URL of the receiver")
}

impl WebhookSecretSource {
    /// Reads the secret and checks its `whsec_<base64>` form. Errors name the source,
    /// never the value.
    pub fn resolve(&self) -> Result<Secret, String> {
        use base64::Engine as _;
        let value = match self {
            Self::File(p) => std::fs::read_to_string(p)
                .map_err(|e| format!("cannot read the webhook secret file {}: {e}", p.display()))?,
            Self::Env(var) => std::env::var(var).map_err(|_| format!("environment variable {var} is not set"))?,
        };
        let value = value.trim();
        let Some(encoded) = value.strip_prefix("whsec_") else {
            return Err(format!("the webhook secret from {self} must look like whsec_<base64>"));
        };
        match base64::engine::general_purpose::STANDARD.decode(encoded) {
            Ok(key) if !key.is_empty() => Ok(Secret::new(value)),
            _ => Err(format!(
                "the webhook secret from {self} is not valid base64 after whsec_"
            )),
        }
    }
}

impl std::fmt::Display for WebhookSecretSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::File(p) => write!(f, "file {}", p.display()),
            Self::Env(v) => write!(f, "environment variable {v}"),
        }
    }
}
