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

use super::error::ApiError;
use super::signer::{self, HEADER_ACCESS_KEY, HEADER_SIGNATURE, HEADER_TIMESTAMP};
use super::wire::GatewayError;
use crate::config::{ApiConfig, Credentials, MediaAssetPath, Secret};
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
            paused_until: std::sync::Mutex::new(None),
            turn: tokio::sync::Mutex::new(()),
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
        Ok(Self {
            http,
            access_key: credentials.access_key.clone(),
            secret_key: credentials.secret_key.clone(),
            media_url: api.media_url.clone(),
            vod_url: api.vod_url.clone(),
            asset_path: api.media_asset_path,
            timeout: api.timeout,
            media_gate: Arc::new(HostGate::new(per_minute)),
            vod_gate: Arc::new(HostGate::new(per_minute)),
            in_flight: Arc::new(Semaphore::new(api.max_in_flight.max(1))),
            clock_offset_ms: 0,
        })
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
            let retry_after = response
                .headers()
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(parse_retry_after);
            let mut bytes = Vec::new();
            while let Some(chunk) = response.chunk().await? {
                if bytes.len() + chunk.len() > MAX_BODY_BYTES {
                    return Ok((status, retry_after, None));
                }
                bytes.extend_from_slice(&chunk);
            }
            Ok((status, retry_after, Some(bytes)))
        }
        .await;
        let answer = match result {
            Ok((status, retry_after, Some(bytes))) => {
                let answer = self.scrub(classify(status, retry_after, &bytes));
                if let Err(ApiError::RateLimited { retry_after, .. }) = &answer {
                    gate.pause(retry_after.unwrap_or(DEFAULT_HOST_PAUSE));
                }
                answer
            }
            Ok((status, _, None)) => Err(ApiError::Malformed {
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
            let keys = [self.access_key.expose(), self.secret_key.expose()];
            let clean = |s: &mut String| {
                for k in keys.iter().filter(|k| !k.is_empty()) {
                    *s = s.replace(*k, "<redacted>");
                }
            };
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

/// An error and its sources, joined with `: `.
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
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(
        at.duration_since(std::time::SystemTime::now())
            .unwrap_or(Duration::ZERO),
    )
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
        "300" => ApiError::NotFound { code, message },
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

/// Reads every page: stops on an empty page, or on a short page once the reported total
/// (if any) is reached, or when a page repeats the previous one. The total is a hint only:
/// the documents send it as a number or a string, and a wrong one must neither stop the
/// walk early nor make it run forever.
pub(crate) async fn collect_pages<T, F, Fut>(
    page_size: u32,
    key: impl Fn(&T) -> String,
    mut fetch: F,
) -> Result<Vec<T>, ApiError>
where
    F: FnMut(u32) -> Fut,
    Fut: Future<Output = Result<(Vec<T>, Option<u64>), ApiError>>,
{
    /// Ten million items at the smallest page size the APIs accept is far past any account.
    const MAX_PAGES: u32 = 1_000_000;
    let mut all: Vec<T> = Vec::new();
    let mut previous_first: Option<String> = None;
    for page in 1..=MAX_PAGES {
        let (items, total) = fetch(page).await?;
        let first = items.first().map(&key);
        if items.is_empty() || (first.is_some() && first == previous_first) {
            break;
        }
        let full = items.len() as u64 >= u64::from(page_size);
        all.extend(items);
        let below_total = total.is_some_and(|t| (all.len() as u64) < t);
        if !full && !below_total {
            break;
        }
        previous_first = first;
    }
    Ok(all)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

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

    #[tokio::test]
    async fn pagination_stops_at_the_last_page_whatever_the_total_says() {
        // 25 items, pages of 10: the total is right, a string already parsed, too low, too high or absent.
        for total in [Some(25), Some(5), Some(1000), None] {
            let got = collect_pages(
                10,
                |i: &u32| i.to_string(),
                |page| async move {
                    let start = (page - 1) * 10;
                    let items: Vec<u32> = (start..(start + 10).min(25)).collect();
                    Ok((items, total))
                },
            )
            .await
            .unwrap();
            assert_eq!(got, (0..25).collect::<Vec<_>>(), "total {total:?}");
        }
    }

    #[tokio::test]
    async fn pagination_stops_when_the_server_ignores_the_page_number() {
        let got = collect_pages(2, |i: &u32| i.to_string(), |_| async { Ok((vec![1, 2], Some(10))) })
            .await
            .unwrap();
        assert_eq!(got, vec![1, 2]);
    }

    #[test]
    fn undecodable_bodies_say_where_they_start() {
        let e = decode::<Vec<u32>>(200, json!({"a": 1})).unwrap_err();
        assert!(e.to_string().contains("{\\\"a\\\":1}"), "{e}");
    }
}
