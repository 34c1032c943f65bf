//! Configuration: the TOML file read into raw serde structs, validated completely into
//! [`Config`], and the credentials it points at resolved into [`Secret`]s.
//!
//! Loading never touches the network. Every mistake in a file is reported at once, each
//! with `file:line:col` and the dotted key, and no message ever contains a secret.

mod credentials;
mod diag;
mod fields;
mod load;
mod raw;
mod secret;
mod validate;

#[cfg(test)]
mod proptests;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use credentials::{CredentialError, CredentialSource, Credentials, resolve_credentials};
pub use diag::{Diagnostic, Diagnostics, MAX_PROBLEMS, MORE_PROBLEMS_NOTE};
pub use secret::{Secret, SecretSource};
pub use validate::{CallbackTokenSource, WebhookSecretSource, is_object_key, is_positive_integer, is_workspace_name};

/// Where the config file is read from when neither `-c` nor `$NCP_WATCHD_CONFIG` is given.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/ncp-watchd/config.toml";
/// The largest config file read. The annotated example with every key is 8 KiB; a file
/// a hundred times larger is not a config but a mistake (a log, a database, garbage), and
/// refusing it at once keeps `check` and a SIGHUP reload from spending minutes on it.
pub const MAX_CONFIG_BYTES: u64 = 1024 * 1024;
/// Media Intelligence's public gateway.
pub const DEFAULT_MEDIA_URL: &str = "https://mi.apigw.ntruss.com";
/// VOD Station's public gateway.
pub const DEFAULT_VOD_URL: &str = "https://vodstation.apigw.ntruss.com";
/// NCP documents 1,000 calls per minute for Media Intelligence; staying at it is safe.
pub const DEFAULT_RATE_LIMIT_PER_MINUTE: u32 = 1000;
/// Enough concurrency to hide loopback-to-Korea latency without hammering the gateway.
pub const DEFAULT_MAX_IN_FLIGHT: usize = 8;
/// A gateway call that takes longer than this is stuck, not slow.
pub const DEFAULT_API_TIMEOUT: Duration = Duration::from_secs(10);
/// Imports and encodes take minutes; 15 s notices a change quickly at a modest call rate.
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(15);
/// Long enough to ride out an outage, short enough to notice recovery within minutes.
pub const DEFAULT_MAX_BACKOFF: Duration = Duration::from_secs(600);
/// New assets and encodes appear rarely; once a minute keeps list calls cheap.
pub const DEFAULT_DISCOVERY_INTERVAL: Duration = Duration::from_secs(60);
/// Encodes older than a day are not news.
pub const DEFAULT_VOD_LOOKBACK: Duration = Duration::from_secs(24 * 3600);
/// A search image watched before its file lands answers FILE_NOT_EXIST; an hour covers a
/// slow upload from a phone or a batch job without waiting on a truly missing file forever.
pub const DEFAULT_UPLOAD_GRACE: Duration = Duration::from_secs(3600);
/// Imports take minutes and encodes hours; six hours without any change means nobody is
/// working on the item (an analysis nobody starts stays BEFORE_ANALYZE forever).
pub const DEFAULT_STALL_AFTER: Duration = Duration::from_secs(6 * 3600);
/// A stalled item still gets polled, but at a rate that cannot eat the quota.
pub const DEFAULT_STALLED_INTERVAL: Duration = Duration::from_secs(600);
/// The longest duration any key accepts, ten years as humantime counts them ("10y"): far
/// past any sensible setting, and small enough that adding it to a timestamp never overflows.
pub const MAX_DURATION: Duration = Duration::from_secs(10 * 31_557_600);
/// A week of delivered events is enough to look back at an incident, and bounds the store.
/// A shard lease lasts 15 s unless renewed (SPEC §9): renewed every second, it survives a
/// dozen missed renewals, and a dead replica's shards move within 15 s.
pub const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(15);

/// The shortest lease: three lease rounds, so one slow round never loses a lease.
pub const MIN_LEASE_TTL: Duration = Duration::from_secs(3);

/// The longest lease: past ten minutes a dead replica's shards would go unwatched too long.
pub const MAX_LEASE_TTL: Duration = Duration::from_secs(600);

pub const DEFAULT_RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);
/// A webhook body template is a page of text, not a program: 64 KiB is plenty.
pub const MAX_TEMPLATE_BYTES: usize = 64 * 1024;
/// Systemd's StateDirectory for a unit named ncp-watchd.
pub const DEFAULT_STATE_PATH: &str = "/var/lib/ncp-watchd/state.db";
/// The port Prometheus exporters conventionally take near 9464, on loopback only.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:9464";
/// Receivers should answer well within 10 s; Standard Webhooks suggests short timeouts.
pub const DEFAULT_WEBHOOK_TIMEOUT: Duration = Duration::from_secs(10);
/// Ten attempts with backoff up to an hour cover most receiver outages in a day.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 10;
/// First webhook retry delay.
pub const DEFAULT_RETRY_INITIAL: Duration = Duration::from_secs(5);
/// Largest webhook retry delay.
pub const DEFAULT_RETRY_MAX: Duration = Duration::from_secs(3600);
/// With callbacks on, a running encode's end normally arrives within a second; the list is
/// still read this often in case a callback is lost (VOD Station does not retry them), so
/// a lost one costs at most five minutes, at a twentieth of the calls of a 15 s poll.
pub const DEFAULT_CALLBACK_FALLBACK_INTERVAL: Duration = Duration::from_secs(300);
/// The token is the callback URL's only authentication (VOD Station cannot sign): 32
/// characters of a random hex or base64url string are 128 bits or more, beyond guessing.
pub const MIN_CALLBACK_TOKEN_CHARS: usize = 32;

/// The validated configuration. It has no `Default`: it only comes from [`Config::load`].
#[derive(Debug, Clone)]
pub struct Config {
    /// The file this was read from.
    pub path: PathBuf,
    /// Goes into every event's `source` as `ncp-watchd/{instance}`.
    pub instance: String,
    /// Where the NCP credentials are to be found.
    pub credentials: CredentialsConfig,
    /// NCP endpoints and call limits.
    pub api: ApiConfig,
    /// Poll timing.
    pub poll: PollConfig,
    /// What to watch.
    pub watches: Watches,
    /// Where events go.
    pub sinks: Sinks,
    /// Where state lives: an SQLite file or a PostgreSQL database.
    pub state: StateConfig,
    /// How long events every sink has passed stay in the outbox.
    pub state_retention: Duration,
    /// `[cluster] lease_ttl`: how long a shard lease lasts unless renewed (PostgreSQL).
    pub cluster_lease_ttl: Duration,
    /// Address of the health and metrics server.
    pub listen: SocketAddr,
    /// VOD Station callbacks as hints; `None` when `[callbacks]` is absent.
    pub callbacks: Option<CallbacksConfig>,
    /// The daemon's own logging.
    pub log: LogConfig,
}

/// `[state]`: exactly one of `path` (SQLite) and `url` (PostgreSQL, SPEC §9).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StateConfig {
    /// One SQLite file, written by one process.
    Sqlite {
        /// The file, resolved (against `$STATE_DIRECTORY` or the config's directory).
        path: PathBuf,
    },
    /// A PostgreSQL database that replicas share.
    Postgres(PostgresConfig),
}

impl StateConfig {
    /// An SQLite store at `path`.
    pub fn sqlite(path: impl Into<PathBuf>) -> Self {
        Self::Sqlite { path: path.into() }
    }

    /// The SQLite file, when the store is one.
    pub fn sqlite_path(&self) -> Option<&Path> {
        match self {
            Self::Sqlite { path } => Some(path),
            Self::Postgres(_) => None,
        }
    }
}

impl std::fmt::Display for StateConfig {
    /// The store as an operator names it, with nothing secret in it.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Sqlite { path } => write!(f, "{}", path.display()),
            Self::Postgres(pg) => match crate::store::postgres::parse_url(&pg.url, &pg.base_dir) {
                Ok(spec) => f.write_str(&spec.display),
                Err(_) => f.write_str("postgres://(invalid [state] url)"),
            },
        }
    }
}

/// `[state] url` and its password.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PostgresConfig {
    /// `postgres://USER@HOST:PORT/DB?sslmode=…`, checked to hold no password.
    pub url: String,
    /// Where the password is read from; `None` when the server needs none (trust, peer).
    pub password: Option<SecretSource>,
    /// The config's directory, against which a relative `sslrootcert` resolves.
    pub base_dir: PathBuf,
}

/// `[callbacks]` (SPEC §10): VOD Station's callbacks, taken as hints that make the VOD list
/// due now, never as state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallbacksConfig {
    /// Where the token of `POST /callbacks/vod/{token}` is read from.
    pub vod_token: CallbackTokenSource,
    /// How often the VOD list is still read while a watched encode runs, in case a
    /// callback is lost (instead of `[poll] interval`).
    pub fallback_interval: Duration,
}

/// `[credentials]`: explicit files; absent means the next source in the resolution order.
#[derive(Debug, Clone, Default)]
pub struct CredentialsConfig {
    /// Access key file as written (relative paths resolve at resolution time).
    pub access_key_file: Option<PathBuf>,
    /// Secret key file as written.
    pub secret_key_file: Option<PathBuf>,
    /// The directory of the config file, for relative paths outside systemd.
    pub base_dir: PathBuf,
}

/// Which revision of the Media Intelligence import-status path to call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MediaAssetPath {
    /// `…/video-assets/{id}/import-status`, as the seed document says.
    VideoAssets,
    /// `…/assets/{id}/import-status`, the newer revision.
    Assets,
}

impl WebhookFormat {
    /// The config value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::CloudEvents => "cloudevents",
            Self::Slack => "slack",
            Self::Discord => "discord",
            Self::Teams => "teams",
            Self::GoogleChat => "google_chat",
        }
    }
}

impl MediaAssetPath {
    /// The path segment.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::VideoAssets => "video-assets",
            Self::Assets => "assets",
        }
    }
}

/// An NCP region: its API gateways live under their own domain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Region {
    /// The public (commercial) region: `apigw.ntruss.com`.
    Public,
    /// The government region: `apigw.gov-ntruss.com`.
    Gov,
    /// The financial region: `apigw.fin-ntruss.com`.
    Fin,
}

impl Region {
    /// The API gateway domain of the region.
    pub fn gateway_domain(self) -> &'static str {
        match self {
            Self::Public => "apigw.ntruss.com",
            Self::Gov => "apigw.gov-ntruss.com",
            Self::Fin => "apigw.fin-ntruss.com",
        }
    }

    /// The config value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Public => "public",
            Self::Gov => "gov",
            Self::Fin => "fin",
        }
    }

    /// Media Intelligence's and VOD Station's base URLs in this region.
    pub fn urls(self) -> (url::Url, url::Url) {
        gateway_urls(self.gateway_domain())
    }
}

/// The two base URLs under one gateway domain such as `apigw.ntruss.com`.
#[allow(
    clippy::expect_used,
    reason = "each expect here states an invariant of our own types, never of input"
)]
pub fn gateway_urls(domain: &str) -> (url::Url, url::Url) {
    let parse = |host: &str| url::Url::parse(&format!("https://{host}.{domain}")).expect("gateway URLs parse");
    (parse("mi"), parse("vodstation"))
}

/// Where the API base URLs came from, so credentials from the NCP CLI's file can still
/// bring that file's `ncloud_api_url` when nothing in the config chose.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoints {
    /// Neither `region` nor a URL was set: the public region, unless the NCP CLI's file says otherwise.
    Default,
    /// `[api] region` chose them (URLs set explicitly still win, host by host).
    Region(Region),
    /// Both URLs were set explicitly.
    Explicit,
}

/// `[api]`.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiConfig {
    /// Where the base URLs came from.
    pub endpoints: Endpoints,
    /// Media Intelligence base URL (scheme, host, optional path prefix).
    pub media_url: url::Url,
    /// VOD Station base URL.
    pub vod_url: url::Url,
    /// Import-status path revision.
    pub media_asset_path: MediaAssetPath,
    /// Deadline of one call.
    pub timeout: Duration,
    /// Calls per minute per host, never exceeded.
    pub rate_limit_per_minute: u32,
    /// Concurrent calls.
    pub max_in_flight: usize,
}

/// `[poll]`.
#[derive(Debug, Clone)]
pub struct PollConfig {
    /// Poll period of a non-terminal item.
    pub interval: Duration,
    /// Cap of the error backoff.
    pub max_backoff: Duration,
    /// Period of list reads.
    pub discovery_interval: Duration,
    /// VOD list window.
    pub vod_lookback: Duration,
    /// Re-poll period of finished items; `None` stops polling them.
    pub terminal_recheck: Option<Duration>,
    /// How long a search image's FAILED + FILE_NOT_EXIST is not taken as final.
    pub upload_grace: Duration,
    /// How long an unfinished item may go without a change before `watch.stalled`.
    pub stall_after: Duration,
    /// Poll period of a stalled item.
    pub stalled_interval: Duration,
}

/// All configured watches, by kind.
#[derive(Debug, Clone, Default)]
pub struct Watches {
    /// `[[watch.video_asset]]`.
    pub video_assets: Vec<VideoAssetWatch>,
    /// `[[watch.project]]`.
    pub projects: Vec<ProjectWatch>,
    /// `[[watch.search_image]]`.
    pub search_images: Vec<SearchImageWatch>,
    /// `[[watch.vod]]`.
    pub vods: Vec<VodWatch>,
}

impl Watches {
    /// Number of configured watches of all kinds.
    pub fn len(&self) -> usize {
        self.video_assets.len() + self.projects.len() + self.search_images.len() + self.vods.len()
    }

    /// Whether no watch is configured.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One video asset's import (and optionally analysis) status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VideoAssetWatch {
    /// Workspace name.
    pub workspace: String,
    /// Project id.
    pub project_id: String,
    /// Asset id.
    pub asset_id: String,
    /// Label for events.
    pub name: Option<String>,
    /// Also watch the analysis status.
    pub analysis: bool,
}

/// Every asset of one project.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProjectWatch {
    /// Workspace name.
    pub workspace: String,
    /// Project id.
    pub project_id: String,
    /// Label for events.
    pub name: Option<String>,
    /// Also watch the analysis status of discovered assets.
    pub analysis: bool,
    /// Record what the first read lists without events or status polls.
    pub baseline: bool,
}

/// One search image upload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SearchImageWatch {
    /// Object key.
    pub asset_key: String,
    /// Label for events.
    pub name: Option<String>,
}

/// VOD Station encodes, optionally of some categories only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VodWatch {
    /// Category ids or names; empty means every category.
    pub categories: Vec<String>,
    /// Percent step for progress events; 0 is off.
    pub progress_step: u8,
    /// Record what the first read lists without events.
    pub baseline: bool,
    /// Label for events.
    pub name: Option<String>,
}

impl VodWatch {
    /// Whether an encode of this category is watched (matched by id or by name).
    pub fn matches(&self, category_id: &str, category_name: Option<&str>) -> bool {
        self.categories.is_empty()
            || self
                .categories
                .iter()
                .any(|c| c == category_id || Some(c.as_str()) == category_name)
    }
}

/// All configured sinks.
#[derive(Debug, Clone, Default)]
pub struct Sinks {
    /// `[[sink.webhook]]`.
    pub webhooks: Vec<WebhookSink>,
    /// `[[sink.log]]`.
    pub logs: Vec<LogSink>,
}

/// How a webhook body is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WebhookFormat {
    /// CloudEvents structured JSON with Standard Webhooks signatures.
    CloudEvents,
    /// `{"text": ...}` for Slack-compatible incoming webhooks.
    Slack,
    /// `{"content": ...}` for Discord's incoming webhooks.
    Discord,
    /// An Adaptive Card message for a Microsoft Teams Workflows ("Post to a channel when a
    /// webhook request is received") webhook.
    Teams,
    /// `{"text": ...}` for a Google Chat space's incoming webhook.
    GoogleChat,
}

/// One webhook receiver.
#[derive(Debug, Clone)]
pub struct WebhookSink {
    /// Unique sink name.
    pub name: String,
    /// Receiver URL; a secret because chat webhooks carry a token in the path.
    pub url: Secret,
    /// Scheme and host of `url`, the only part ever shown.
    pub url_display: String,
    /// Where the signing secret comes from, if signed.
    pub secret: Option<WebhookSecretSource>,
    /// Event type globs.
    pub events: Vec<String>,
    /// Body encoding.
    pub format: WebhookFormat,
    /// A MiniJinja template whose output is the body, replacing `format`'s encoding.
    pub template: Option<String>,
    /// Deadline of one attempt.
    pub timeout: Duration,
    /// Attempts before dead-lettering.
    pub max_attempts: u32,
    /// First retry delay.
    pub retry_initial: Duration,
    /// Largest retry delay.
    pub retry_max: Duration,
}

/// One JSON-lines event log.
#[derive(Debug, Clone)]
pub struct LogSink {
    /// Unique sink name.
    pub name: String,
    /// Output file; `None` is stdout.
    pub path: Option<PathBuf>,
    /// Event type globs.
    pub events: Vec<String>,
}

/// The daemon's own log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, for journald and container log collectors.
    Json,
}

/// `[log]`.
#[derive(Debug, Clone)]
pub struct LogConfig {
    /// A tracing filter directive such as `info` or `ncp_watchd=debug`.
    pub level: String,
    /// Output format.
    pub format: LogFormat,
}

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {}: {source}; pass -c FILE or set NCP_WATCHD_CONFIG", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is larger than [`MAX_CONFIG_BYTES`], so it is not read at all.
    #[error(
        "config file {} is larger than the limit of 1 MiB ({MAX_CONFIG_BYTES} bytes); is it the right file?",
        path.display()
    )]
    TooLarge {
        /// The file.
        path: PathBuf,
    },
    /// The file has mistakes; the first [`MAX_PROBLEMS`] of them are listed.
    #[error("{0}")]
    Invalid(Diagnostics),
}

impl Config {
    /// Reads and validates the file at `path`.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        use std::io::Read as _;
        let read_error = |source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        };
        let file = std::fs::File::open(path).map_err(read_error)?;
        // Reading one byte past the limit, rather than trusting the file's size, also
        // bounds what a pipe or a file that grows while it is read can make us hold.
        let mut bytes = Vec::new();
        file.take(MAX_CONFIG_BYTES + 1)
            .read_to_end(&mut bytes)
            .map_err(read_error)?;
        if bytes.len() as u64 > MAX_CONFIG_BYTES {
            return Err(ConfigError::TooLarge {
                path: path.to_path_buf(),
            });
        }
        let source = String::from_utf8(bytes)
            .map_err(|e| read_error(std::io::Error::new(std::io::ErrorKind::InvalidData, e.utf8_error())))?;
        Self::parse(path, &source)
    }

    /// Validates `source` as if read from `path` (which names it in messages and anchors
    /// relative paths).
    pub fn parse(path: &Path, source: &str) -> Result<Self, ConfigError> {
        if source.len() as u64 > MAX_CONFIG_BYTES {
            return Err(ConfigError::TooLarge {
                path: path.to_path_buf(),
            });
        }
        let mut diags = diag::Collector::default();
        let base_dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
        let config = load::parse(source, &mut diags).map(|raw| validate::validate(raw, path, &base_dir, &mut diags));
        match config {
            Some(config) if diags.is_empty() => Ok(config),
            _ => Err(ConfigError::Invalid(diags.finish(path, source))),
        }
    }
}

/// The config file path: `-c`, else `$NCP_WATCHD_CONFIG`, else the default.
pub fn config_path(cli: Option<&Path>) -> PathBuf {
    cli.map(Path::to_path_buf)
        .or_else(|| std::env::var_os("NCP_WATCHD_CONFIG").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG_PATH))
}

/// Scheme and host (and port) of a URL: what may be shown of a URL that could hold a token.
pub fn redact_url(url: &url::Url) -> String {
    match (url.host_str(), url.port()) {
        (Some(host), Some(port)) => format!("{}://{host}:{port}", url.scheme()),
        (Some(host), None) => format!("{}://{host}", url.scheme()),
        _ => format!("{}://", url.scheme()),
    }
}
