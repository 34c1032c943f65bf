//! The transport: build the URL once, sign exactly that URL, send it through the host's
//! rate limiter, and classify the answer.

use std::future::Future;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use reqwest::{Method, StatusCode};
use serde_json::Value;
use tokio::sync::Semaphore;
use url::Url;

use super::calls::CallHistory;
use super::error::ApiError;
use super::signer::{self, HEADER_ACCESS_KEY, HEADER_SIGNATURE, HEADER_TIMESTAMP};
use super::wire::GatewayError;
use crate::config::{ApiConfig, Credentials, Endpoints, MediaAssetPath, Secret};
use crate::schedule::RateLimiter;
use crate::text::{error_chain, excerpt};

/// Everything but RFC 3986's unreserved characters is percent-encoded in a path segment or
/// a query value, the most conservative form and the one NCP's SDKs send.
const COMPONENT: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');

/// A body longer than this is not an API answer; stop reading rather than buffer it.
const MAX_BODY_BYTES: usize = 16 * 1024 * 1024;

/// How many bytes of an undecodable body go into the error, to help diagnose it.
const BODY_EXCERPT_BYTES: usize = 200;

/// How long a host is left alone after a 429 that names no `Retry-After`.
const DEFAULT_HOST_PAUSE: Duration = Duration::from_secs(5);

/// The way to one host: its rate limiter, and a pause set by the host's own 429s, so that
/// one item's "slow down" slows every item on that host.
#[derive(Debug)]
struct HostGate {
    limiter: RateLimiter,
    /// The host's whole quota, `[api] rate_limit_per_minute` (a reload may change it).
    quota: std::sync::atomic::AtomicU32,
    paused_until: std::sync::Mutex<Option<tokio::time::Instant>>,
    /// Waiters take turns in arrival order (tokio's mutex is fair): the limiter alone would
    /// let a late caller take a slot before one that has waited longer, which breaks the
    /// scheduler's due order and can starve an unlucky item.
    turn: tokio::sync::Mutex<()>,
}

impl HostGate {
    fn new(per_minute: NonZeroU32) -> Self {
        Self {
            limiter: RateLimiter::per_minute(per_minute),
            quota: per_minute.get().into(),
            paused_until: std::sync::Mutex::new(None),
            turn: tokio::sync::Mutex::new(()),
        }
    }

    /// The host's whole quota, as configured now.
    fn quota(&self) -> u32 {
        self.quota.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// A reload changed the host's quota: the limiter takes it at once.
    fn set_quota(&self, per_minute: u32) {
        if self.quota.swap(per_minute, std::sync::atomic::Ordering::SeqCst) != per_minute {
            self.limiter.set_per_minute(NonZeroU32::new(per_minute));
        }
    }

    /// Waits out any pause, then for the limiter.
    async fn wait(&self, host: Host) {
        let asked = tokio::time::Instant::now();
        let _turn = self.turn.lock().await;
        loop {
            let until = *self.paused_until.lock().unwrap_or_else(|e| e.into_inner());
            match until {
                Some(t) if t > tokio::time::Instant::now() => tokio::time::sleep_until(t).await,
                _ => break,
            }
        }
        self.limiter.acquire().await;
        let waited = asked.elapsed();
        if waited >= Duration::from_millis(1) {
            metrics::counter!("ncp_watchd_rate_limit_waits_total", "host" => host.as_str()).increment(1);
            metrics::histogram!("ncp_watchd_rate_limit_wait_seconds", "host" => host.as_str())
                .record(waited.as_secs_f64());
        }
    }

    /// Keeps every call away from the host for `d` (a longer pause already set stands).
    fn pause(&self, d: Duration) {
        let until = tokio::time::Instant::now() + d;
        let mut slot = self.paused_until.lock().unwrap_or_else(|e| e.into_inner());
        if slot.is_none_or(|t| t < until) {
            *slot = Some(until);
        }
        tracing::warn!(
            pause_secs = d.as_secs_f64(),
            "the API answered 429: pausing every call to this host"
        );
    }
}

impl NcpClient {
    /// This client, sending through `old`'s gates. A reload that remakes the client keeps
    /// one limiter (and one 429 pause) per host: the polls still waiting at the old client
    /// and the new client's take turns at the same limiter, so the quota holds through the
    /// reload instead of being spent twice over while the old queue drains. A changed
    /// quota is applied to the kept limiters.
    pub fn with_gates_of(mut self, old: &NcpClient) -> Self {
        // A gate belongs to a host (scheme, host and port), whichever service it served.
        let kept = |url: &Url| {
            if url.origin() == old.media_url.origin() {
                Some(old.media_gate.clone())
            } else if url.origin() == old.vod_url.origin() {
                Some(old.vod_gate.clone())
            } else {
                None
            }
        };
        let one_host = Arc::ptr_eq(&self.media_gate, &self.vod_gate);
        if let Some(gate) = kept(&self.media_url) {
            gate.set_quota(self.media_gate.quota());
            self.media_gate = gate;
        }
        if one_host {
            self.vod_gate = self.media_gate.clone();
        } else if let Some(gate) = kept(&self.vod_url) {
            gate.set_quota(self.vod_gate.quota());
            self.vod_gate = gate;
        }
        // A host new to the client starts with a gate of its own.
        self
    }

    /// Limits this process to its share of each host's quota when it holds `held` of the
    /// cluster's shards (SPEC §9): the quota is the whole cluster's budget.
    pub fn set_quota_share(&self, held: u16) {
        for (gate, host) in [(&self.media_gate, Host::Media), (&self.vod_gate, Host::Vod)] {
            let share = crate::cluster::quota_share(gate.quota(), held);
            gate.limiter.set_per_minute(share.and_then(NonZeroU32::new));
            metrics::gauge!("ncp_watchd_quota_share_per_minute", "host" => host.as_str())
                .set(f64::from(share.unwrap_or(0)));
        }
    }
}

/// The two API hosts; each has its own rate limiter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Host {
    /// Media Intelligence.
    Media,
    /// VOD Station.
    Vod,
}

impl Host {
    /// A stable name for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Media => "media",
            Self::Vod => "vod",
        }
    }
}

/// A signed client for both NCP APIs. Cheap to clone; clones share limiters.
#[derive(Debug, Clone)]
pub struct NcpClient {
    /// The HTTP client: rustls, no redirects, one connection pool.
    http: reqwest::Client,
    /// Access key id, sent in a header.
    access_key: Secret,
    /// Secret key, used only to sign.
    secret_key: Secret,
    /// Media Intelligence base URL.
    media_url: Url,
    /// VOD Station base URL.
    vod_url: Url,
    /// Import-status path revision.
    pub(crate) asset_path: MediaAssetPath,
    /// Deadline of one call, connect to last byte.
    timeout: Duration,
    /// Media Intelligence's gate: its limiter and pause.
    media_gate: Arc<HostGate>,
    /// VOD Station's gate.
    vod_gate: Arc<HostGate>,
    /// Bounds concurrent calls across both hosts.
    in_flight: Arc<Semaphore>,
    /// Added to the clock when stamping requests; tests use it to send stale timestamps.
    clock_offset_ms: i64,
    /// The longest a 429 may keep every call away from a host (`[poll] max_backoff`).
    max_host_pause: Duration,
    /// Where the keys came from, named (never shown) when the gateway refuses them.
    key_sources: Arc<str>,
    /// Fingerprints of list rows already reported as undecodable, so each is logged once.
    skipped_seen: Arc<std::sync::Mutex<std::collections::HashSet<u64>>>,
    /// Calls sent per host and minute, for the status page (shared across reloads).
    calls: Arc<CallHistory>,
}

/// The most rows remembered as already reported; past it the memory starts afresh (and a
/// row still broken is reported once more), so a hostile list cannot grow it without end.
const MAX_SKIPPED_REMEMBERED: usize = 10_000;

/// The gateway's clock may be this far from ours before a refusal names the skew: the
/// gateway refuses at five minutes, so four is a warning that comes before the failure.
const SKEW_WORTH_NAMING: Duration = Duration::from_secs(4 * 60);

/// The longest `Retry-After` obeyed: an answer asking for longer is read as this, so a
/// wrong or hostile header can neither overflow a deadline nor park a host for years.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

/// One page of a list as decoded: the rows that decoded, and what was skipped.
#[derive(Debug, Clone, PartialEq)]
pub struct ListPage<T> {
    /// The rows that decoded.
    pub items: Vec<T>,
    /// How many rows the page had on the wire, decodable or not.
    pub rows: usize,
    /// The rows that did not decode.
    pub skipped: Vec<SkippedRow>,
    /// The total the page reports (a hint only).
    pub total: Option<u64>,
    /// A hash of the page's rows, to notice a server that answers the same page again.
    pub fingerprint: u64,
}

/// A list row that could not be observed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkippedRow {
    /// A hash of the row, so the same broken row is reported once.
    pub fingerprint: u64,
    /// What was wrong, with the row's start.
    pub reason: String,
}

fn fingerprint(v: &impl std::hash::Hash) -> u64 {
    use std::hash::{BuildHasher, BuildHasherDefault};
    BuildHasherDefault::<std::collections::hash_map::DefaultHasher>::default().hash_one(v)
}

impl<T> ListPage<T> {
    /// Decodes each row with `decode`; rows that are not objects or do not decode are
    /// skipped with the reason.
    pub(crate) fn from_rows(
        rows: Vec<Value>,
        total: Option<u64>,
        mut decode: impl FnMut(serde_json::Map<String, Value>) -> Result<T, String>,
    ) -> Self {
        let count = rows.len();
        let mut page_hash = Vec::with_capacity(count);
        let mut items = Vec::with_capacity(count);
        let mut skipped = Vec::new();
        for (i, row) in rows.into_iter().enumerate() {
            let text = row.to_string();
            let hash = fingerprint(&text);
            page_hash.push(hash);
            let result = match row {
                Value::Object(map) => decode(map),
                _ => Err("the row is not an object".to_string()),
            };
            match result {
                Ok(item) => items.push(item),
                Err(why) => skipped.push(SkippedRow {
                    fingerprint: hash,
                    reason: format!(
                        "row {} of the page: {why}; the row starts {:?}",
                        i + 1,
                        excerpt(text.as_bytes(), BODY_EXCERPT_BYTES)
                    ),
                }),
            }
        }
        Self {
            items,
            rows: count,
            skipped,
            total,
            fingerprint: fingerprint(&page_hash),
        }
    }
}

impl NcpClient {
    /// A client for the endpoints and limits of `api`, signing with `credentials`.
    pub fn new(api: &ApiConfig, credentials: &Credentials) -> Result<Self, ApiError> {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("ncp-watchd/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(api.timeout)
            .build()
            .map_err(|e| ApiError::Transport(error_chain(&e)))?;
        let per_minute = NonZeroU32::new(api.rate_limit_per_minute).unwrap_or(NonZeroU32::MIN);
        let (media_url, vod_url) = endpoints(api, credentials);
        let media_gate = Arc::new(HostGate::new(per_minute));
        // `rate_limit_per_minute` is per host: when both services are served by one host
        // (a proxy, the simulator), they share its one limiter and pause.
        let vod_gate = if media_url.origin() == vod_url.origin() {
            media_gate.clone()
        } else {
            Arc::new(HostGate::new(per_minute))
        };
        Ok(Self {
            http,
            access_key: credentials.access_key.clone(),
            secret_key: credentials.secret_key.clone(),
            media_url,
            vod_url,
            asset_path: api.media_asset_path,
            timeout: api.timeout,
            media_gate,
            vod_gate,
            in_flight: Arc::new(Semaphore::new(api.max_in_flight.max(1))),
            clock_offset_ms: 0,
            max_host_pause: MAX_RETRY_AFTER,
            key_sources: key_sources(credentials),
            skipped_seen: Arc::default(),
            calls: Arc::default(),
        })
    }

    /// Logs each skipped row the first time it is seen (at debug after that).
    pub(crate) fn report_skipped(&self, list: &str, skipped: &[SkippedRow]) {
        if skipped.is_empty() {
            return;
        }
        let mut seen = self.skipped_seen.lock().unwrap_or_else(|e| e.into_inner());
        for row in skipped {
            if seen.len() >= MAX_SKIPPED_REMEMBERED {
                seen.clear();
            }
            let reason = self.scrub_text(&row.reason);
            if seen.insert(row.fingerprint) {
                tracing::warn!(list, reason = %reason, "skipping a list row that does not decode; the other rows are still observed");
            } else {
                tracing::debug!(list, reason = %reason, "skipping the undecodable list row again");
            }
        }
    }

    /// `text` with the credentials taken out.
    fn scrub_text(&self, text: &str) -> String {
        let mut out = text.to_string();
        for k in [self.access_key.expose(), self.secret_key.expose()] {
            if !k.is_empty() {
                out = out.replace(k, "<redacted>");
            }
        }
        out
    }

    /// Caps how long one 429 may pause a whole host (the daemon passes `max_backoff`).
    pub fn with_max_host_pause(mut self, max: Duration) -> Self {
        self.max_host_pause = max.min(MAX_RETRY_AFTER);
        self
    }

    /// Records every call sent into `calls` (the daemon keeps one history across reloads).
    pub fn with_call_history(mut self, calls: Arc<CallHistory>) -> Self {
        self.calls = calls;
        self
    }

    /// Stamps requests `offset_ms` away from the local clock (to test the gateway's window).
    pub fn with_clock_offset(mut self, offset_ms: i64) -> Self {
        self.clock_offset_ms = offset_ms;
        self
    }

    /// Signs with other credentials (to test a refused signature).
    pub fn with_credentials(mut self, credentials: &Credentials) -> Self {
        self.access_key = credentials.access_key.clone();
        self.secret_key = credentials.secret_key.clone();
        self.key_sources = key_sources(credentials);
        self
    }

    /// A signed GET of `path` (already encoded, see [`path`]) with `query`.
    pub(crate) async fn get(&self, host: Host, path: &str, query: &[(&str, String)]) -> Result<Value, ApiError> {
        self.send(host, Method::GET, path, query, None).await
    }

    /// A signed POST of a JSON body.
    pub(crate) async fn post(&self, host: Host, path: &str, body: &Value) -> Result<Value, ApiError> {
        self.send(host, Method::POST, path, &[], Some(body)).await
    }

    /// The URL for `path` and `query` on `host`, built once; its own serialization is what
    /// gets signed and sent.
    fn url(&self, host: Host, path: &str, query: &[(&str, String)]) -> Result<Url, ApiError> {
        let base = match host {
            Host::Media => &self.media_url,
            Host::Vod => &self.vod_url,
        };
        let mut text = base.as_str().trim_end_matches('/').to_string();
        text.push_str(path);
        for (i, (k, v)) in query.iter().enumerate() {
            text.push(if i == 0 { '?' } else { '&' });
            text.push_str(k);
            text.push('=');
            text.extend(utf8_percent_encode(v, COMPONENT));
        }
        Url::parse(&text).map_err(|e| ApiError::Transport(format!("cannot build request URL: {e}")))
    }

    #[allow(
        clippy::expect_used,
        reason = "each expect here states an invariant of our own types, never of input"
    )]
    async fn send(
        &self,
        host: Host,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<&Value>,
    ) -> Result<Value, ApiError> {
        let url = self.url(host, path, query)?;
        let target = match url.query() {
            Some(q) => format!("{}?{q}", url.path()),
            None => url.path().to_string(),
        };
        let gate = match host {
            Host::Media => &self.media_gate,
            Host::Vod => &self.vod_gate,
        };
        gate.wait(host).await;
        let _permit = self.in_flight.acquire().await.expect("the semaphore is never closed");
        let started = std::time::Instant::now();
        self.calls.record(host, chrono::Utc::now().timestamp_millis());
        let timestamp = (chrono::Utc::now().timestamp_millis() + self.clock_offset_ms).max(0) as u64;
        let signature = signer::sign(
            method.as_str(),
            &target,
            timestamp,
            self.access_key.expose(),
            self.secret_key.expose(),
        );
        let mut request = self
            .http
            .request(method, url)
            .timeout(self.timeout)
            .header(HEADER_TIMESTAMP, timestamp.to_string())
            .header(HEADER_ACCESS_KEY, self.access_key.expose())
            .header(HEADER_SIGNATURE, signature)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(reqwest::header::ACCEPT, "application/json");
        if let Some(body) = body {
            request = request.body(body.to_string());
        }
        let result = async {
            let mut response = request.send().await?;
            let status = response.status();
            let header = |name| response.headers().get(name).and_then(|v| v.to_str().ok());
            let retry_after = header(reqwest::header::RETRY_AFTER).and_then(parse_retry_after);
            let date = header(reqwest::header::DATE).and_then(|d| httpdate::parse_http_date(d).ok());
            let mut bytes = Vec::new();
            while let Some(chunk) = response.chunk().await? {
                if bytes.len() + chunk.len() > MAX_BODY_BYTES {
                    return Ok((status, retry_after, date, None));
                }
                bytes.extend_from_slice(&chunk);
            }
            Ok((status, retry_after, date, Some(bytes)))
        }
        .await;
        let answer = match result {
            Ok((status, retry_after, date, Some(bytes))) => {
                let answer = self
                    .scrub(classify(status, retry_after, &bytes))
                    .map_err(|e| self.explain_refusal(e, date));
                if let Err(ApiError::RateLimited { retry_after, .. }) = &answer {
                    gate.pause(retry_after.unwrap_or(DEFAULT_HOST_PAUSE).min(self.max_host_pause));
                }
                answer
            }
            Ok((status, _, _, None)) => Err(ApiError::Malformed {
                status: status.as_u16(),
                reason: format!("body larger than {MAX_BODY_BYTES} bytes"),
            }),
            Err(e) => Err(self.transport_error(e)),
        };
        let endpoint = endpoint_name(path);
        let outcome = answer.as_ref().map_or_else(ApiError::class, |_| "ok");
        metrics::counter!("ncp_watchd_api_calls_total", "host" => host.as_str(), "endpoint" => endpoint, "outcome" => outcome)
            .increment(1);
        metrics::histogram!("ncp_watchd_api_call_duration_seconds", "host" => host.as_str(), "endpoint" => endpoint)
            .record(started.elapsed().as_secs_f64());
        answer
    }

    /// Adds to a refusal of the key which credential was used and, from the answer's `Date`,
    /// how far the gateway's clock is from ours when that could be the reason.
    fn explain_refusal(&self, e: ApiError, date: Option<std::time::SystemTime>) -> ApiError {
        let ApiError::AuthRefused {
            status,
            code,
            message,
            hint,
            ..
        } = e
        else {
            return e;
        };
        let mut context = format!("; the request was signed with {}", self.key_sources);
        if let Some(date) = date {
            let now = std::time::SystemTime::now();
            let (ahead, skew) = match date.duration_since(now) {
                Ok(d) => (true, d),
                Err(behind) => (false, behind.duration()),
            };
            if skew > SKEW_WORTH_NAMING {
                // The Date header has whole seconds: round, so 7 minutes reads as 7m.
                let skew = Duration::from_secs(skew.as_secs_f64().round() as u64);
                context.push_str(&format!(
                    "; the gateway's clock is {} {} this machine's (it refuses requests more than 5 minutes off): fix this machine's clock (NTP)",
                    humantime::format_duration(skew),
                    if ahead { "ahead of" } else { "behind" }
                ));
            }
        }
        ApiError::AuthRefused {
            status,
            code,
            message,
            hint,
            context,
        }
    }

    fn transport_error(&self, e: reqwest::Error) -> ApiError {
        if e.is_timeout() {
            ApiError::Timeout(self.timeout)
        } else {
            ApiError::Transport(error_chain(&e.without_url()))
        }
    }

    /// Removes the credentials from any text an error carries, in case a gateway echoes
    /// them back.
    fn scrub(&self, result: Result<Value, ApiError>) -> Result<Value, ApiError> {
        result.map_err(|mut e| {
            let clean = |s: &mut String| *s = self.scrub_text(s);
            match &mut e {
                ApiError::AuthRefused { message, .. }
                | ApiError::BadRequest { message, .. }
                | ApiError::NotFound { message, .. }
                | ApiError::Server { message, .. }
                | ApiError::Rejected { message, .. } => clean(message),
                ApiError::Malformed { reason, .. } => clean(reason),
                ApiError::RateLimited { .. } | ApiError::Timeout(_) | ApiError::Transport(_) => {}
            }
            e
        })
    }
}

/// The base URLs to call: the config's, unless it chose neither a region nor a URL and the
/// keys came from the NCP CLI's file with an `ncloud_api_url`. A gateway URL of the form
/// `https://ncloud.apigw.{domain}` gives that domain's Media Intelligence and VOD Station
/// hosts; any other URL (a proxy, a simulator) serves both APIs itself.
pub fn endpoints(api: &ApiConfig, credentials: &Credentials) -> (Url, Url) {
    let from_cli = credentials
        .api_url
        .as_ref()
        .filter(|_| api.endpoints == Endpoints::Default);
    let Some(url) = from_cli else {
        return (api.media_url.clone(), api.vod_url.clone());
    };
    let host = url.host_str().unwrap_or_default();
    match host.find("apigw.") {
        Some(i) if url.path() == "/" || url.path().is_empty() => crate::config::gateway_urls(&host[i..]),
        _ => (url.clone(), url.clone()),
    }
}

/// Where each key came from, for a refusal's message.
fn key_sources(credentials: &Credentials) -> Arc<str> {
    if credentials.access_key_source == credentials.secret_key_source {
        format!("the access key and secret key from {}", credentials.access_key_source).into()
    } else {
        format!(
            "the access key from {} and the secret key from {}",
            credentials.access_key_source, credentials.secret_key_source
        )
        .into()
    }
}

/// The `endpoint` label of a call, from its path.
fn endpoint_name(path: &str) -> &'static str {
    if path.ends_with("/import-status") {
        "import_status"
    } else if path.ends_with("/index/status") {
        "analysis_status"
    } else if path.ends_with("/uploads/complete") {
        "search_image_status"
    } else if path.ends_with("/object-storage") {
        "register"
    } else if path.ends_with("/assets") {
        "asset_list"
    } else if path.ends_with("/api/v2/status") {
        "vod_status_list"
    } else {
        "other"
    }
}

/// A path from raw segments, each percent-encoded: `path(&["api", "v1", ws])`.
pub fn path(segments: &[&str]) -> String {
    let mut out = String::new();
    for s in segments {
        out.push('/');
        out.extend(utf8_percent_encode(s, COMPONENT));
    }
    out
}

/// `Retry-After` as delay-seconds or an HTTP date.
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    let value = value.trim();
    let wait = if value.bytes().all(|b| b.is_ascii_digit()) && !value.is_empty() {
        // Digits beyond u64 are just a very long wait.
        value.parse::<u64>().map_or(MAX_RETRY_AFTER, Duration::from_secs)
    } else {
        let at = httpdate::parse_http_date(value).ok()?;
        at.duration_since(std::time::SystemTime::now())
            .unwrap_or(Duration::ZERO)
    };
    Some(wait.min(MAX_RETRY_AFTER))
}

/// Classifies an answer by HTTP status, then by the gateway's errorCode (SPEC §1).
pub fn classify(status: StatusCode, retry_after: Option<Duration>, body: &[u8]) -> Result<Value, ApiError> {
    let parsed = super::wire::parse_json(body);
    let code = status.as_u16();
    if status.is_success() {
        let value = parsed.map_err(|e| malformed(code, &format!("not JSON ({e})"), body))?;
        // The gateway has been seen to wrap an error in a 200; its errorCode decides then.
        if let Some(e) = value
            .get("error")
            .filter(|e| e.is_object())
            .and_then(|_| GatewayError::parse(&value))
        {
            return Err(by_error_code(code, e, retry_after));
        }
        return Ok(value);
    }
    let gateway = parsed.ok().as_ref().and_then(GatewayError::parse).unwrap_or_default();
    let GatewayError {
        code: error_code,
        message,
    } = gateway.clone();
    Err(match code {
        400 => ApiError::BadRequest {
            code: error_code,
            message,
        },
        401 | 403 => auth(code, error_code, message),
        404 => ApiError::NotFound {
            code: error_code,
            message,
            hint: "",
        },
        429 => ApiError::RateLimited {
            code: error_code,
            retry_after,
        },
        408 | 500..=599 => ApiError::Server {
            status: code,
            code: error_code,
            message,
        },
        _ if !error_code.is_empty() => by_error_code(code, gateway, retry_after),
        _ => ApiError::Rejected {
            status: code,
            code: error_code,
            message,
        },
    })
}

fn by_error_code(status: u16, e: GatewayError, retry_after: Option<Duration>) -> ApiError {
    let GatewayError { code, message } = e;
    match code.as_str() {
        "100" => ApiError::BadRequest { code, message },
        "200" | "210" => auth(status, code, message),
        "300" => ApiError::NotFound {
            code,
            message,
            hint: "",
        },
        "400" | "410" | "420" => ApiError::RateLimited { code, retry_after },
        "500" | "510" | "900" => ApiError::Server { status, code, message },
        _ => ApiError::Rejected { status, code, message },
    }
}

fn auth(status: u16, code: String, message: String) -> ApiError {
    let hint = if code == "210" {
        "the key is valid but lacks permission: subscribe the account to the API or grant the sub account access"
    } else {
        "check that the access key and secret key belong together and that the clock is within 5 minutes of UTC"
    };
    ApiError::AuthRefused {
        status,
        code,
        message,
        hint,
        context: String::new(),
    }
}

fn malformed(status: u16, what: &str, body: &[u8]) -> ApiError {
    let excerpt = excerpt(body, BODY_EXCERPT_BYTES);
    ApiError::Malformed {
        status,
        reason: format!("{what}; body starts {excerpt:?}"),
    }
}

/// Decodes `value` as `T`, or says which field did not fit.
pub(crate) fn decode<T: serde::de::DeserializeOwned>(status: u16, value: Value) -> Result<T, ApiError> {
    let text = value.to_string();
    serde_json::from_value(value).map_err(|e| malformed(status, &format!("unexpected shape ({e})"), text.as_bytes()))
}

/// Reads every page. It stops on an empty page; on a short page once the reported total
/// (if any) is reached; when a page repeats the previous one (a server that ignores the
/// page number); [`PAGES_PAST_TOTAL`] pages past the pages the total allows; and at
/// [`MAX_LIST_ROWS`]. The
/// total is a hint only: the documents send it as a number or a string, and a wrong one
/// must neither stop the walk early nor make it run forever. Rows that did not decode
/// still count toward a page being full.
pub(crate) async fn collect_pages<T, F, Fut>(page_size: u32, mut fetch: F) -> Result<Vec<T>, ApiError>
where
    F: FnMut(u32) -> Fut,
    Fut: Future<Output = Result<ListPage<T>, ApiError>>,
{
    let mut all: Vec<T> = Vec::new();
    let mut rows_read: u64 = 0;
    let mut previous: Option<u64> = None;
    let size = u64::from(page_size.max(1));
    let mut page: u32 = 1;
    loop {
        let got = fetch(page).await?;
        if got.rows == 0 || previous == Some(got.fingerprint) {
            break;
        }
        rows_read += got.rows as u64;
        all.extend(got.items);
        let full = got.rows as u64 >= size;
        let below_total = got.total.is_some_and(|t| rows_read < t);
        if !full && !below_total {
            break;
        }
        let allowed_pages = got.total.map_or(u64::MAX, |t| t.div_ceil(size) + PAGES_PAST_TOTAL);
        if rows_read >= MAX_LIST_ROWS || u64::from(page) >= allowed_pages || page == u32::MAX {
            tracing::warn!(
                pages = page,
                rows = rows_read,
                total = ?got.total,
                "a list kept answering full pages past its total or the row cap; stopping the walk here"
            );
            break;
        }
        previous = Some(got.fingerprint);
        page += 1;
    }
    Ok(all)
}

/// The most rows one list walk reads: far past any project's assets or any window of
/// encodes, and a bound on the memory a server that never stops answering can take.
pub const MAX_LIST_ROWS: u64 = 200_000;

/// How many full pages past the reported total are still read: a total that lags (new
/// rows arrived during the walk, or the total is simply wrong) must not cut the walk
/// short, and a server that answers full pages for ever must not hold it for ever.
pub const PAGES_PAST_TOTAL: u64 = 10;

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn client_of(media: &str, vod: &str) -> NcpClient {
        let text =
            format!("[api]\nmedia_url = \"{media}\"\nvod_url = \"{vod}\"\n[[watch.search_image]]\nasset_key = \"x\"\n");
        let config = crate::config::Config::parse(std::path::Path::new("t.toml"), &text).unwrap();
        let credentials = crate::config::Credentials {
            access_key: crate::config::Secret::new("gates-test-access-key-7f3a"),
            secret_key: crate::config::Secret::new("gates-test-secret-key-9c1d"),
            access_key_source: crate::config::CredentialSource::BuiltIn,
            secret_key_source: crate::config::CredentialSource::BuiltIn,
            api_url: None,
        };
        NcpClient::new(&config.api, &credentials).unwrap()
    }

    #[test]
    fn each_host_has_one_limiter_whichever_services_it_serves_through_reloads() {
        let shared = |c: &NcpClient| Arc::ptr_eq(&c.media_gate, &c.vod_gate);
        assert!(shared(&client_of("http://127.0.0.1:8780", "http://127.0.0.1:8780/")));
        assert!(!shared(&client_of("http://127.0.0.1:8780", "http://127.0.0.1:8781")));
        assert!(!shared(&client_of("https://a.example.com", "https://b.example.com")));
        // A reload keeps the gates of the hosts it keeps, and no host shares another's.
        let before = client_of("http://127.0.0.1:8780", "http://127.0.0.1:8780");
        let same = client_of("http://127.0.0.1:8780", "http://127.0.0.1:8780").with_gates_of(&before);
        assert!(shared(&same) && Arc::ptr_eq(&same.media_gate, &before.media_gate));
        let split = client_of("http://127.0.0.1:8780", "http://127.0.0.1:8781").with_gates_of(&before);
        assert!(!shared(&split) && Arc::ptr_eq(&split.media_gate, &before.media_gate));
        let joined = client_of("http://127.0.0.1:8780", "http://127.0.0.1:8780").with_gates_of(&split);
        assert!(shared(&joined) && Arc::ptr_eq(&joined.media_gate, &before.media_gate));
        // A gate follows its host, not its service.
        let swapped = client_of("http://127.0.0.1:8781", "http://127.0.0.1:8780").with_gates_of(&split);
        assert!(Arc::ptr_eq(&swapped.media_gate, &split.vod_gate));
        assert!(Arc::ptr_eq(&swapped.vod_gate, &split.media_gate));
        let moved = client_of("http://127.0.0.1:8782", "http://127.0.0.1:8781").with_gates_of(&split);
        assert!(Arc::ptr_eq(&moved.vod_gate, &split.vod_gate));
        assert!(!Arc::ptr_eq(&moved.media_gate, &split.media_gate) && !Arc::ptr_eq(&moved.media_gate, &split.vod_gate));
    }

    fn err(status: u16, body: &str) -> ApiError {
        classify(StatusCode::from_u16(status).unwrap(), None, body.as_bytes()).unwrap_err()
    }

    #[test]
    fn each_gateway_error_class_is_recognised() {
        let body = |code: &str| format!(r#"{{"error":{{"errorCode":"{code}","message":"m","details":"d"}}}}"#);
        assert!(matches!(err(400, &body("100")), ApiError::BadRequest { .. }));
        assert!(matches!(err(401, &body("200")), ApiError::AuthRefused { .. }));
        assert!(matches!(err(401, &body("210")), ApiError::AuthRefused { .. }));
        assert!(matches!(err(404, &body("300")), ApiError::NotFound { .. }));
        for c in ["400", "410", "420"] {
            assert!(matches!(err(429, &body(c)), ApiError::RateLimited { .. }));
        }
        assert!(matches!(err(503, &body("500")), ApiError::Server { status: 503, .. }));
        assert!(matches!(err(504, &body("510")), ApiError::Server { status: 504, .. }));
        assert!(matches!(err(500, &body("900")), ApiError::Server { status: 500, .. }));
        assert!(matches!(
            err(502, "<html>bad gateway</html>"),
            ApiError::Server { status: 502, .. }
        ));
        assert!(matches!(err(200, "{not json"), ApiError::Malformed { status: 200, .. }));
        assert!(matches!(err(200, &body("420")), ApiError::RateLimited { .. }));
    }

    #[test]
    fn each_class_says_whether_and_when_to_retry() {
        use super::super::error::Retry;
        let limited = classify(StatusCode::TOO_MANY_REQUESTS, Some(Duration::from_secs(7)), b"{}").unwrap_err();
        assert_eq!(limited.retry(), Retry::After(Duration::from_secs(7)));
        assert!(limited.slows_host());
        let auth = err(
            401,
            r#"{"error":{"errorCode":"200","message":"Authentication Failed"}}"#,
        );
        assert_eq!(auth.retry(), Retry::NotSoon);
        assert!(auth.fails_watch_at_once());
        assert_eq!(err(400, "{}").retry(), Retry::NotSoon);
        assert_eq!(err(503, "{}").retry(), Retry::Backoff);
        assert_eq!(err(404, "{}").retry(), Retry::Backoff);
        assert!(!err(404, "{}").fails_watch_at_once());
    }

    #[test]
    fn retry_after_reads_seconds_and_dates() {
        assert_eq!(parse_retry_after("30"), Some(Duration::from_secs(30)));
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), Some(Duration::ZERO));
        let later = httpdate::fmt_http_date(std::time::SystemTime::now() + Duration::from_secs(120));
        let d = parse_retry_after(&later).unwrap();
        assert!(d > Duration::from_secs(100) && d <= Duration::from_secs(120), "{d:?}");
        assert_eq!(parse_retry_after("soon"), None);
    }

    #[test]
    fn paths_encode_everything_but_unreserved_characters() {
        assert_eq!(path(&["api", "my ws", "a/b", "é"]), "/api/my%20ws/a%2Fb/%C3%A9");
    }

    fn page_of(items: Vec<u32>, total: Option<u64>) -> ListPage<u32> {
        let rows = items.iter().map(|i| json!({ "i": i })).collect();
        ListPage::from_rows(rows, total, |m| Ok(m["i"].as_u64().unwrap() as u32))
    }

    #[tokio::test]
    async fn pagination_stops_at_the_last_page_whatever_the_total_says() {
        // 25 items, pages of 10: the total is right, a string already parsed, too low, too high or absent.
        for total in [Some(25), Some(5), Some(1000), None] {
            let got = collect_pages(10, |page| async move {
                let start = (page - 1) * 10;
                Ok(page_of((start..(start + 10).min(25)).collect(), total))
            })
            .await
            .unwrap();
            assert_eq!(got, (0..25).collect::<Vec<_>>(), "total {total:?}");
        }
    }

    #[tokio::test]
    async fn pagination_stops_when_the_server_ignores_the_page_number() {
        let got = collect_pages(2, |_| async { Ok(page_of(vec![1, 2], Some(10))) })
            .await
            .unwrap();
        assert_eq!(got, vec![1, 2]);
    }

    #[tokio::test]
    async fn pagination_of_endless_distinct_full_pages_stops_past_the_total() {
        let calls = std::sync::atomic::AtomicU32::new(0);
        let got = collect_pages(2, |page| {
            calls.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            async move { Ok(page_of(vec![page * 2, page * 2 + 1], Some(6))) }
        })
        .await
        .unwrap();
        assert_eq!(got.len(), 26, "three pages for the total, ten more to be sure");
        assert_eq!(calls.into_inner(), 13);
    }

    #[tokio::test]
    async fn skipped_rows_still_make_a_page_full() {
        let got = collect_pages(2, |page| async move {
            let rows = match page {
                1 => vec![json!({"i": 1}), json!({"bad": true})],
                2 => vec![json!({"i": 3})],
                _ => vec![],
            };
            Ok(ListPage::from_rows(rows, None, |m| {
                m.get("i")
                    .and_then(Value::as_u64)
                    .map(|i| i as u32)
                    .ok_or_else(|| "no i".to_string())
            }))
        })
        .await
        .unwrap();
        assert_eq!(got, vec![1, 3]);
    }

    #[test]
    fn retry_after_is_capped() {
        assert_eq!(parse_retry_after("18446744073709551615"), Some(MAX_RETRY_AFTER));
        assert_eq!(parse_retry_after("99999999999999999999999"), Some(MAX_RETRY_AFTER));
        assert_eq!(parse_retry_after("99999999999"), Some(MAX_RETRY_AFTER));
        assert_eq!(parse_retry_after("-5"), None);
    }

    #[test]
    fn undecodable_bodies_say_where_they_start() {
        let e = decode::<Vec<u32>>(200, json!({"a": 1})).unwrap_err();
        assert!(e.to_string().contains("{\\\"a\\\":1}"), "{e}");
    }
}
