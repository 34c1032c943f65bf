//! The configuration file as serde reads it, before validation.
//!
//! Every field is optional and spanned: a missing or wrong value becomes a diagnostic that
//! names its line and column during validation, instead of aborting deserialization at the
//! first problem. Integers are read as `i64` so that a zero or negative value is reported in
//! our words ("must be at least 1") rather than as a serde type error.

use serde::Deserialize;
use toml::Spanned;

/// An optional spanned value.
pub type Field<T> = Option<Spanned<T>>;

/// A category given by id (`10019` or `"10019"`) or by name (`"test2"`).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum IdOrName {
    /// A bare integer, always an id.
    Int(i64),
    /// A string: an id or a name.
    Text(String),
}

/// `[credentials]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCredentials {
    /// File holding the access key id; relative paths resolve against `$CREDENTIALS_DIRECTORY`.
    pub access_key_file: Field<String>,
    /// File holding the secret key; relative paths resolve against `$CREDENTIALS_DIRECTORY`.
    pub secret_key_file: Field<String>,
}

/// `[api]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawApi {
    /// `"public"`, `"gov"` or `"fin"`: presets both hosts for that NCP region.
    pub region: Field<String>,
    /// Base URL of Media Intelligence.
    pub media_url: Field<String>,
    /// Base URL of VOD Station.
    pub vod_url: Field<String>,
    /// `"video-assets"` or `"assets"`: which revision of the import-status path to call.
    pub media_asset_path: Field<String>,
    /// Deadline of one API call.
    pub timeout: Field<String>,
    /// Calls per minute allowed per host.
    pub rate_limit_per_minute: Field<i64>,
    /// Concurrent API calls.
    pub max_in_flight: Field<i64>,
}

/// `[poll]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPoll {
    /// How often a non-terminal item is polled.
    pub interval: Field<String>,
    /// Cap of the exponential backoff after errors.
    pub max_backoff: Field<String>,
    /// How often project asset lists and VOD status lists are read.
    pub discovery_interval: Field<String>,
    /// How far back the VOD status list is read.
    pub vod_lookback: Field<String>,
    /// `"off"` or a duration: how often finished items are polled again.
    pub terminal_recheck: Field<String>,
    /// How long a search image answering FAILED + FILE_NOT_EXIST is still waited for.
    pub upload_grace: Field<String>,
    /// How long an item may stay unfinished without a change before it is stalled.
    pub stall_after: Field<String>,
    /// How often a stalled item is polled.
    pub stalled_interval: Field<String>,
}

/// One `[[watch.video_asset]]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawVideoAssetWatch {
    /// Media Intelligence workspace name.
    pub workspace: Field<String>,
    /// Project id.
    pub project_id: Field<IdOrName>,
    /// Video asset id.
    pub asset_id: Field<IdOrName>,
    /// Label copied into events.
    pub name: Field<String>,
    /// Also watch the analysis status once the import completes.
    pub analysis: Field<bool>,
}

/// One `[[watch.project]]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawProjectWatch {
    /// Media Intelligence workspace name.
    pub workspace: Field<String>,
    /// Project id.
    pub project_id: Field<IdOrName>,
    /// Label copied into events.
    pub name: Field<String>,
    /// Also watch the analysis status of every discovered asset once imported.
    pub analysis: Field<bool>,
    /// Record the assets listed at the first read without an event or a status poll.
    pub baseline: Field<bool>,
}

/// One `[[watch.search_image]]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSearchImageWatch {
    /// Object key of the uploaded search image.
    pub asset_key: Field<String>,
    /// Label copied into events.
    pub name: Field<String>,
}

/// One `[[watch.vod]]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawVodWatch {
    /// Category ids or names; absent means every category.
    pub categories: Field<Vec<Spanned<IdOrName>>>,
    /// Percent step for `vod.encode.progress` events; 0 turns them off.
    pub progress_step: Field<i64>,
    /// Record the encodes listed at the first read without an event.
    pub baseline: Field<bool>,
    /// Label copied into events.
    pub name: Field<String>,
}

/// One `[[sink.webhook]]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawWebhookSink {
    /// Name used in logs, metrics and dead letters.
    pub name: Field<String>,
    /// Receiver URL (a secret: only scheme and host are ever shown).
    pub url: Field<String>,
    /// File holding `whsec_<base64>`.
    pub secret_file: Field<String>,
    /// Environment variable holding `whsec_<base64>`.
    pub secret_env: Field<String>,
    /// Event type globs.
    pub events: Field<Vec<Spanned<String>>>,
    /// `"cloudevents"`, `"slack"`, `"discord"`, `"teams"` or `"google_chat"`.
    pub format: Field<String>,
    /// A MiniJinja template producing the body (instead of `format`).
    pub template: Field<String>,
    /// A file holding such a template.
    pub template_file: Field<String>,
    /// Deadline of one delivery attempt.
    pub timeout: Field<String>,
    /// Attempts before a delivery becomes a dead letter.
    pub max_attempts: Field<i64>,
    /// First retry delay.
    pub retry_initial: Field<String>,
    /// Largest retry delay.
    pub retry_max: Field<String>,
}

/// One `[[sink.log]]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLogSink {
    /// Name used in logs and metrics.
    pub name: Field<String>,
    /// File to append to; absent means stdout.
    pub path: Field<String>,
    /// Event type globs.
    pub events: Field<Vec<Spanned<String>>>,
}

/// `[state]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawState {
    /// SQLite database file.
    pub path: Field<String>,
    /// PostgreSQL URL, instead of `path` (SPEC §9).
    pub url: Field<String>,
    /// File holding the PostgreSQL password.
    pub password_file: Field<String>,
    /// Environment variable holding the PostgreSQL password.
    pub password_env: Field<String>,
    /// How long delivered events stay in the outbox before they are pruned.
    pub retention: Field<String>,
}

/// `[server]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawServer {
    /// Address of the health and metrics server.
    pub listen: Field<String>,
}

/// `[cluster]`: replicas sharing a PostgreSQL store (SPEC §9).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCluster {
    /// How long a shard lease lasts unless renewed; a dead replica's shards are taken
    /// over this long after its last renewal.
    pub lease_ttl: Field<String>,
}

/// `[callbacks]`: VOD Station's callbacks taken as hints (SPEC §10).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCallbacks {
    /// File holding the token of the callback URL's path; relative paths resolve against
    /// `$CREDENTIALS_DIRECTORY`.
    pub vod_token_file: Field<String>,
    /// Environment variable holding the token.
    pub vod_token_env: Field<String>,
    /// How often the VOD list is still read while a watched encode runs.
    pub fallback_interval: Field<String>,
}

/// `[log]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLog {
    /// Level filter (`RUST_LOG` overrides).
    pub level: Field<String>,
    /// `"text"` or `"json"`.
    pub format: Field<String>,
}

/// The whole file, assembled section by section by the loader.
#[derive(Debug, Default)]
pub struct RawConfig {
    /// `instance = "..."`.
    pub instance: Field<String>,
    /// `[credentials]`.
    pub credentials: RawCredentials,
    /// `[api]`.
    pub api: RawApi,
    /// `[poll]`.
    pub poll: RawPoll,
    /// `[[watch.video_asset]]`.
    pub video_assets: Vec<Spanned<RawVideoAssetWatch>>,
    /// `[[watch.project]]`.
    pub projects: Vec<Spanned<RawProjectWatch>>,
    /// `[[watch.search_image]]`.
    pub search_images: Vec<Spanned<RawSearchImageWatch>>,
    /// `[[watch.vod]]`.
    pub vods: Vec<Spanned<RawVodWatch>>,
    /// `[[sink.webhook]]`.
    pub webhooks: Vec<Spanned<RawWebhookSink>>,
    /// `[[sink.log]]`.
    pub logs: Vec<Spanned<RawLogSink>>,
    /// `[state]`.
    pub state: RawState,
    /// `[server]`.
    pub server: RawServer,
    /// `[cluster]`.
    pub cluster: RawCluster,
    /// `[callbacks]`, with the table's span (absent: callbacks are off).
    pub callbacks: Option<Spanned<RawCallbacks>>,
    /// `[log]`.
    pub log: RawLog,
}
