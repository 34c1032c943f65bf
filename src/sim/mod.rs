//! The NCP API simulator (SPEC §7), served by the `ncp-sim` binary, `ncp-watchd demo` and
//! the tests.
//!
//! It answers the five endpoints with the documents' JSON shapes, checks signature v2 and
//! the 5-minute window the way the gateway does (401, errorCode "200"), enforces a
//! calls-per-minute quota per access key (SPEC §7: Media Intelligence and VOD Station
//! calls to it count together) with 429 and `Retry-After`, plays a
//! [`Scenario`], injects faults on request, and keeps a log of every API request so tests
//! can prove quota compliance. Admin routes live under `/_sim/`.
//!
//! It is meant to be at least as hard to please as NCP (SPEC §8):
//!
//! - The signature is checked by this module's own implementation, written from the spec
//!   (the string to sign is rebuilt from the request line exactly as received, and compared
//!   in constant time), never by calling the client's `ncp::signer`, so a bug the two share
//!   cannot hide.
//! - Every response carries a `Date` header from the simulated gateway's clock, which a
//!   scenario can set ahead or behind ([`Scenario::clock_offset_ms`]); the 5-minute window
//!   is checked against that clock.
//! - Scenario options play NCP's field behaviour: `null` content for empty list pages,
//!   VOD rows newest first, several jobs of one encode identity (re-encodes), and search
//!   images answering `FAILED` + `FILE_NOT_EXIST` before their file exists.
//! - Faults ([`FaultAction`]) add Media Intelligence's own error bodies, extra (undecodable)
//!   rows appended to a list page, and a list that ignores its page number.

mod scenario;
mod world;

pub use scenario::{BUILT_IN, Scenario};
pub use world::SetState;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use base64::Engine as _;
use hmac::{Hmac, KeyInit as _, Mac as _};
use sha2::Sha256;
use world::World;

/// The signature v2 headers (SPEC §1), spelled here rather than borrowed from the client so
/// that the simulator checks what the spec says, not what the client happens to send.
const HEADER_TIMESTAMP: &str = "x-ncp-apigw-timestamp";
/// The access key id header.
const HEADER_ACCESS_KEY: &str = "x-ncp-iam-access-key";
/// The signature header.
const HEADER_SIGNATURE: &str = "x-ncp-apigw-signature-v2";

/// The access key the simulator accepts unless told otherwise (not a secret: printed at start).
pub const DEFAULT_ACCESS_KEY: &str = "NCPSIM0ACCESS0KEY";
/// The secret key the simulator accepts unless told otherwise.
pub const DEFAULT_SECRET_KEY: &str = "ncp-sim-secret-key-for-local-tries";
/// Media Intelligence's documented quota.
pub const DEFAULT_QUOTA_PER_MINUTE: u32 = 1000;
/// Where `ncp-sim` listens by default.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8780";
/// The gateway rejects timestamps further than this from its clock.
pub const MAX_CLOCK_SKEW: Duration = Duration::from_secs(300);

/// How the simulator runs.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// The one access key accepted.
    pub access_key: String,
    /// Its secret key.
    pub secret_key: String,
    /// Calls per minute per access key, Media Intelligence and VOD Station calls together.
    pub quota_per_minute: u32,
    /// What to serve.
    pub scenario: Scenario,
    /// Where VOD Station's callbacks go (SPEC §10): POSTed for every status change of an
    /// encode output but CANCELED, as VOD Station does; none when absent.
    pub vod_callback_url: Option<String>,
}

impl SimConfig {
    /// Default credentials and quota, playing `scenario`.
    pub fn new(scenario: Scenario) -> Self {
        Self {
            access_key: DEFAULT_ACCESS_KEY.to_string(),
            secret_key: DEFAULT_SECRET_KEY.to_string(),
            quota_per_minute: DEFAULT_QUOTA_PER_MINUTE,
            scenario,
            vod_callback_url: None,
        }
    }
}

/// One callback the simulator sent, as VOD Station would.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CallbackRecord {
    /// When it was sent, epoch milliseconds.
    pub at_ms: i64,
    /// The body.
    pub body: Value,
}

/// How long the simulator waits for a callback's receiver; VOD Station does not retry.
const CALLBACK_TIMEOUT: Duration = Duration::from_secs(5);

/// One API request as the simulator saw it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestRecord {
    /// Arrival, epoch milliseconds.
    pub at_ms: i64,
    /// HTTP method.
    pub method: String,
    /// Path and query as received.
    pub target: String,
    /// `media` or `vod`: the service called.
    pub service: String,
    /// The access key header, if any.
    pub access_key: Option<String>,
    /// The status answered.
    pub status: u16,
}

/// A fault to inject into the next matching requests.
#[derive(Debug, Clone, Deserialize)]
pub struct Fault {
    /// Only requests whose path contains this (all when absent).
    #[serde(default)]
    pub path_contains: Option<String>,
    /// How many requests it applies to.
    #[serde(default = "one")]
    pub count: u32,
    /// What happens.
    #[serde(flatten)]
    pub action: FaultAction,
}

fn one() -> u32 {
    1
}

/// What an injected fault does.
///
/// As JSON (POST /_sim/faults), tagged by `fault`, beside `path_contains` and `count`:
/// `{"fault":"error","status":503,"error_code":"500","retry_after":2,"shape":"mi"}`,
/// `{"fault":"malformed","body":"..."}`, `{"fault":"stall","ms":3000}`,
/// `{"fault":"extra_row","row":{"filePath":null}}`, `{"fault":"repeat_page"}`.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "fault", rename_all = "snake_case")]
pub enum FaultAction {
    /// Answer with this HTTP status and an error body of `shape`.
    Error {
        /// HTTP status.
        status: u16,
        /// errorCode (or `code`); defaults to the gateway's code for the status.
        #[serde(default)]
        error_code: Option<String>,
        /// `Retry-After` seconds.
        #[serde(default)]
        retry_after: Option<u64>,
        /// Which service's error body to answer; the gateway's when absent.
        #[serde(default)]
        shape: ErrorShape,
    },
    /// Answer 200 with a body that is not what the documents describe.
    Malformed {
        /// The body; a truncated envelope when absent.
        #[serde(default)]
        body: Option<String>,
    },
    /// Wait this long before answering normally.
    Stall {
        /// Milliseconds.
        ms: u64,
    },
    /// Answer normally, then append `row` to the list page's content (`result.content` of
    /// the asset list, `content` of the VOD status list; made an array when `null`), to play
    /// a row that does not decode (a VOD row with `"filePath": null`, an asset without
    /// `assetId`). Only list requests match it.
    ExtraRow {
        /// The row, verbatim.
        row: Value,
    },
    /// Answer page 1 whatever page was asked for: a list that ignores its page number.
    /// Only list requests match it.
    RepeatPage,
}

impl FaultAction {
    /// Whether the fault can only apply to a list request (it changes a list page).
    fn needs_list(&self) -> bool {
        matches!(self, FaultAction::ExtraRow { .. } | FaultAction::RepeatPage)
    }
}

/// Whose error body an injected error answers with.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorShape {
    /// The API gateway's `{"error":{"errorCode","message","details"}}`.
    #[default]
    Gateway,
    /// Media Intelligence's own `{"code","message"}`.
    Mi,
    /// Media Intelligence's `{"responseError":{"code","message"}}`.
    ResponseError,
}

impl ErrorShape {
    /// The body for an injected error with `code`.
    fn body(self, code: &str) -> Value {
        const MESSAGE: &str = "Injected Fault";
        match self {
            ErrorShape::Gateway => {
                json!({"error": {"errorCode": code, "message": MESSAGE, "details": "injected by /_sim/faults"}})
            }
            ErrorShape::Mi => json!({"code": code, "message": MESSAGE}),
            ErrorShape::ResponseError => json!({"responseError": {"code": code, "message": MESSAGE}}),
        }
    }
}

/// State shared by the handlers.
struct Shared {
    config: SimConfig,
    started: Instant,
    world: Mutex<World>,
    quota: Mutex<HashMap<String, VecDeque<i64>>>,
    faults: Mutex<Vec<Fault>>,
    log: Mutex<Vec<RequestRecord>>,
    /// Where callbacks go, changeable while running (a daemon's port is known late).
    callback_url: Mutex<Option<String>>,
    /// Callbacks sent.
    callbacks: Mutex<Vec<CallbackRecord>>,
    /// Wakes the callback sender when a status is set through the admin API.
    changed: tokio::sync::Notify,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panicking handler must not take the simulator down with it.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn epoch_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

impl Shared {
    /// The simulated gateway's clock, epoch milliseconds: the real clock plus the scenario's
    /// offset.
    fn gateway_now_ms(&self) -> i64 {
        epoch_ms().saturating_add(self.config.scenario.clock_offset_ms)
    }
}

/// Adds the gateway clock's `Date` header (IMF-fixdate) to every response, as NCP does; the
/// daemon reads it to tell a clock skew from a bad key.
async fn add_date(State(s): State<Arc<Shared>>, mut response: Response) -> Response {
    let ms = u64::try_from(s.gateway_now_ms()).unwrap_or(0);
    let date = httpdate::fmt_http_date(std::time::UNIX_EPOCH + Duration::from_millis(ms));
    if let Ok(value) = HeaderValue::from_str(&date) {
        response.headers_mut().insert("date", value);
    }
    response
}

/// A running simulator.
pub struct SimHandle {
    addr: SocketAddr,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl SimHandle {
    /// Binds `listen` (port 0 picks a free port) and serves until [`SimHandle::stop`].
    pub async fn start(config: SimConfig, listen: SocketAddr) -> std::io::Result<Self> {
        let listener = tokio::net::TcpListener::bind(listen).await?;
        let addr = listener.local_addr()?;
        let world = World::new(&config.scenario, epoch_ms());
        let shared = Arc::new(Shared {
            callback_url: Mutex::new(config.vod_callback_url.clone()),
            config,
            started: Instant::now(),
            world: Mutex::new(world),
            quota: Mutex::new(HashMap::new()),
            faults: Mutex::new(Vec::new()),
            log: Mutex::new(Vec::new()),
            callbacks: Mutex::new(Vec::new()),
            changed: tokio::sync::Notify::new(),
        });
        let app = Router::new()
            .route("/_sim/requests", get(admin_requests).delete(admin_clear_requests))
            .route("/_sim/state", post(admin_set_state))
            .route("/_sim/faults", post(admin_add_fault).delete(admin_clear_faults))
            .route("/_sim/status", get(admin_status))
            .fallback(api)
            .layer(axum::middleware::map_response_with_state(shared.clone(), add_date))
            .with_state(shared.clone());
        let shutdown = CancellationToken::new();
        let stop = shutdown.clone();
        // The world as found is no change; taken now, before any `set` can come.
        let found = lock(&shared.world).encode_statuses(shared.started.elapsed());
        let sender = send_callbacks(shared.clone(), found, shutdown.clone());
        let task = tokio::spawn(async move {
            let serve = axum::serve(listener, app).with_graceful_shutdown(stop.cancelled_owned());
            let _ = tokio::join!(serve.into_future(), sender);
        });
        Ok(Self {
            addr,
            shared,
            shutdown,
            task,
        })
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://{addr}`, the base URL for both APIs.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every API request so far.
    pub fn requests(&self) -> Vec<RequestRecord> {
        lock(&self.shared.log).clone()
    }

    /// Changes an item's status now.
    pub fn set(&self, change: SetState) {
        lock(&self.shared.world).set(change, self.shared.started.elapsed());
        self.shared.changed.notify_one();
    }

    /// Sends VOD Station's callbacks to `url` from now on (`None`: sends none).
    pub fn set_vod_callback_url(&self, url: Option<String>) {
        *lock(&self.shared.callback_url) = url;
    }

    /// Every callback sent so far.
    pub fn callbacks(&self) -> Vec<CallbackRecord> {
        lock(&self.shared.callbacks).clone()
    }

    /// Injects a fault into the next matching requests.
    pub fn inject(&self, fault: Fault) {
        lock(&self.shared.faults).push(fault);
    }

    /// Whether every scheduled step of the scenario has happened.
    pub fn done(&self) -> bool {
        lock(&self.shared.world).done(self.shared.started.elapsed())
    }

    /// Stops serving and waits for the server task.
    pub async fn stop(self) {
        self.shutdown.cancel();
        let _ = self.task.await;
    }
}

async fn admin_requests(State(s): State<Arc<Shared>>) -> Response {
    axum::Json(lock(&s.log).clone()).into_response()
}

async fn admin_clear_requests(State(s): State<Arc<Shared>>) -> StatusCode {
    lock(&s.log).clear();
    StatusCode::NO_CONTENT
}

async fn admin_set_state(State(s): State<Arc<Shared>>, body: Bytes) -> Response {
    match serde_json::from_slice::<SetState>(&body) {
        Ok(change) => {
            lock(&s.world).set(change, s.started.elapsed());
            s.changed.notify_one();
            StatusCode::NO_CONTENT.into_response()
        }
        Err(e) => (StatusCode::BAD_REQUEST, format!("bad state change: {e}\n")).into_response(),
    }
}

async fn admin_add_fault(State(s): State<Arc<Shared>>, body: Bytes) -> Response {
    match serde_json::from_slice::<Fault>(&body) {
        Ok(fault) => {
            lock(&s.faults).push(fault);
            StatusCode::NO_CONTENT.into_response()
        }
        Err(e) => (StatusCode::BAD_REQUEST, format!("bad fault: {e}\n")).into_response(),
    }
}

async fn admin_clear_faults(State(s): State<Arc<Shared>>) -> StatusCode {
    lock(&s.faults).clear();
    StatusCode::NO_CONTENT
}

async fn admin_status(State(s): State<Arc<Shared>>) -> Response {
    let elapsed = s.started.elapsed();
    axum::Json(json!({
        "elapsed_ms": elapsed.as_millis() as u64,
        "done": lock(&s.world).done(elapsed),
        "requests": lock(&s.log).len(),
    }))
    .into_response()
}

/// Plays VOD Station's callbacks until `stop`: whenever an encode output's status changes
/// (a scenario step comes due, or the admin API sets one), POSTs the callback body for it,
/// one per output, except for CANCELED, which VOD Station never sends. Unsigned and never
/// retried, as VOD Station's are. Statuses at start are the world as found, not changes.
async fn send_callbacks(s: Arc<Shared>, found: Vec<Option<String>>, stop: CancellationToken) {
    let Ok(http) = reqwest::Client::builder().timeout(CALLBACK_TIMEOUT).build() else {
        return;
    };
    let mut last = found;
    let mut sending = tokio::task::JoinSet::new();
    loop {
        let t = s.started.elapsed();
        let wait = lock(&s.world)
            .next_encode_step_after(t)
            .map_or(Duration::from_secs(1), |next| next - t)
            .min(Duration::from_secs(1));
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = s.changed.notified() => {}
            _ = tokio::time::sleep(wait) => {}
        }
        while sending.try_join_next().is_some() {}
        let t = s.started.elapsed();
        let bodies: Vec<Value> = {
            let world = lock(&s.world);
            let now = world.encode_statuses(t);
            let changed: Vec<usize> = (0..now.len())
                .filter(|&i| now[i].is_some() && last.get(i).is_none_or(|l| *l != now[i]))
                .collect();
            let bodies = changed
                .iter()
                .filter(|&&i| now[i].as_deref() != Some("CANCELED"))
                .filter_map(|&i| world.callback_body(i, t))
                .collect();
            last = now;
            bodies
        };
        let Some(url) = lock(&s.callback_url).clone() else {
            continue;
        };
        for body in bodies {
            lock(&s.callbacks).push(CallbackRecord {
                at_ms: epoch_ms(),
                body: body.clone(),
            });
            let request = http.post(&url).json(&body);
            sending.spawn(async move {
                let _ = request.send().await;
            });
        }
    }
    sending.abort_all();
}

/// The string signature v2 signs (SPEC §1): method, a space, the path and query exactly as
/// received on the request line, then the timestamp header and the access key, each after a
/// newline.
fn string_to_sign(method: &str, target: &str, timestamp: &str, access_key: &str) -> String {
    format!("{method} {target}\n{timestamp}\n{access_key}")
}

/// Whether `signature` (Base64) is HMAC-SHA256 of `string_to_sign` under `secret_key`,
/// compared in constant time.
#[allow(
    clippy::expect_used,
    reason = "each expect here states an invariant of our own types, never of input"
)]
fn signature_matches(secret_key: &str, string_to_sign: &str, signature: &str) -> bool {
    let Ok(tag) = base64::engine::general_purpose::STANDARD.decode(signature) else {
        return false;
    };
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret_key.as_bytes()).expect("HMAC-SHA256 accepts keys of any length");
    mac.update(string_to_sign.as_bytes());
    mac.verify_slice(&tag).is_ok()
}

/// The gateway's error body.
fn gateway_error(status: u16, code: &str, message: &str, details: &str) -> (u16, Value) {
    (
        status,
        json!({"error": {"errorCode": code, "message": message, "details": details}}),
    )
}

/// What the gateway would answer for `status` when a fault names no errorCode.
fn default_error_code(status: u16) -> &'static str {
    match status {
        400 => "100",
        401 | 403 => "200",
        404 => "300",
        429 => "400",
        503 => "500",
        504 => "510",
        _ => "900",
    }
}

/// The decision for one request, made under the locks and acted on outside them.
enum Decision {
    Json(u16, Value, Option<u64>),
    Raw(u16, String),
    StallThen(Duration, u16, Value),
}

/// Every API request: authenticate, apply the quota, apply faults, answer from the world.
async fn api(State(s): State<Arc<Shared>>, method: Method, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    let at_ms = epoch_ms();
    let target = uri
        .path_and_query()
        .map_or_else(|| uri.path().to_string(), |p| p.as_str().to_string());
    let service: &'static str = if uri.path().starts_with("/api/v2/") {
        "vod"
    } else {
        "media"
    };
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_string);
    let access_key = header(HEADER_ACCESS_KEY);

    let decision = decide(&s, &method, &uri, &target, at_ms, access_key.as_deref(), &header, &body);
    let status = match &decision {
        Decision::Json(st, _, _) | Decision::Raw(st, _) | Decision::StallThen(_, st, _) => *st,
    };
    lock(&s.log).push(RequestRecord {
        at_ms,
        method: method.to_string(),
        target,
        service: service.to_string(),
        access_key,
        status,
    });
    match decision {
        Decision::Json(status, body, retry_after) => {
            let mut response = json_response(status, &body);
            if let Some(secs) = retry_after {
                response.headers_mut().insert("retry-after", HeaderValue::from(secs));
            }
            response
        }
        Decision::Raw(status, body) => {
            let mut response = (StatusCode::from_u16(status).unwrap_or(StatusCode::OK), body).into_response();
            response.headers_mut().insert(
                "content-type",
                HeaderValue::from_static("application/json;charset=utf-8"),
            );
            response
        }
        Decision::StallThen(delay, status, body) => {
            tokio::time::sleep(delay).await;
            json_response(status, &body)
        }
    }
}

fn json_response(status: u16, body: &Value) -> Response {
    let mut response = (StatusCode::from_u16(status).unwrap_or(StatusCode::OK), body.to_string()).into_response();
    response.headers_mut().insert(
        "content-type",
        HeaderValue::from_static("application/json;charset=utf-8"),
    );
    response
}

#[allow(clippy::too_many_arguments)]
#[allow(
    clippy::expect_used,
    reason = "each expect here states an invariant of our own types, never of input"
)]
fn decide(
    s: &Shared,
    method: &Method,
    uri: &Uri,
    target: &str,
    at_ms: i64,
    access_key: Option<&str>,
    header: &dyn Fn(&str) -> Option<String>,
    body: &[u8],
) -> Decision {
    let refuse = |details: &str| {
        let (st, b) = gateway_error(401, "200", "Authentication Failed", details);
        Decision::Json(st, b, None)
    };
    let (Some(access_key), Some(timestamp), Some(signature)) =
        (access_key, header(HEADER_TIMESTAMP), header(HEADER_SIGNATURE))
    else {
        return refuse(
            "the x-ncp-apigw-timestamp, x-ncp-iam-access-key and x-ncp-apigw-signature-v2 headers are required",
        );
    };
    let Ok(timestamp_ms) = timestamp.parse::<i64>() else {
        return refuse("the timestamp is not epoch milliseconds");
    };
    let gateway_ms = at_ms.saturating_add(s.config.scenario.clock_offset_ms);
    if gateway_ms.abs_diff(timestamp_ms) > MAX_CLOCK_SKEW.as_millis() as u64 {
        return refuse("the timestamp is more than 5 minutes from the gateway's clock");
    }
    if access_key != s.config.access_key {
        return refuse("unknown access key");
    }
    let signed = string_to_sign(method.as_str(), target, &timestamp, access_key);
    if !signature_matches(&s.config.secret_key, &signed, &signature) {
        return refuse("the signature does not match");
    }

    {
        let mut quota = lock(&s.quota);
        let window = quota.entry(access_key.to_string()).or_default();
        while window.front().is_some_and(|t| *t <= at_ms - 60_000) {
            window.pop_front();
        }
        if window.len() as u64 >= u64::from(s.config.quota_per_minute) {
            let oldest = *window.front().expect("a full window is not empty");
            let wait_ms = (oldest + 60_000 - at_ms).max(1);
            let (st, b) = gateway_error(429, "400", "Quota Exceeded", "calls per minute exceeded");
            return Decision::Json(st, b, Some((wait_ms as u64).div_ceil(1000)));
        }
        window.push_back(at_ms);
    }

    let segments: Vec<String> = uri
        .path()
        .split('/')
        .skip(1)
        .map(|seg| {
            percent_encoding::percent_decode_str(seg)
                .decode_utf8_lossy()
                .into_owned()
        })
        .collect();
    let mut query: BTreeMap<String, String> = url::form_urlencoded::parse(uri.query().unwrap_or_default().as_bytes())
        .into_owned()
        .collect();
    let page_key = World::list_page_key(method.as_str(), &segments);

    let fault = {
        let mut faults = lock(&s.faults);
        let hit = faults.iter_mut().position(|f| {
            f.count > 0
                && f.path_contains.as_deref().is_none_or(|p| target.contains(p))
                && (page_key.is_some() || !f.action.needs_list())
        });
        hit.map(|i| {
            faults[i].count -= 1;
            let action = faults[i].action.clone();
            if faults[i].count == 0 {
                faults.remove(i);
            }
            action
        })
    };
    let mut stall = None;
    let mut extra_row = None;
    match fault {
        Some(FaultAction::Error {
            status,
            error_code,
            retry_after,
            shape,
        }) => {
            let code = error_code.unwrap_or_else(|| default_error_code(status).to_string());
            return Decision::Json(status, shape.body(&code), retry_after);
        }
        Some(FaultAction::Malformed { body }) => {
            return Decision::Raw(
                200,
                body.unwrap_or_else(|| r#"{"code":"0","message":"success","result":{"uploadStat"#.to_string()),
            );
        }
        Some(FaultAction::Stall { ms }) => stall = Some(Duration::from_millis(ms)),
        Some(FaultAction::ExtraRow { row }) => extra_row = Some(row),
        Some(FaultAction::RepeatPage) => {
            if let Some(key) = page_key {
                query.insert(key.to_string(), "1".to_string());
            }
        }
        None => {}
    }

    let (status, mut answer) = lock(&s.world).answer(method.as_str(), &segments, &query, body, s.started.elapsed());
    if let Some(row) = extra_row
        && status == 200
    {
        World::append_row(&mut answer, row);
    }
    match stall {
        Some(delay) => Decision::StallThen(delay, status, answer),
        None => Decision::Json(status, answer, None),
    }
}

#[cfg(test)]
mod tests {
    use super::{signature_matches, string_to_sign};

    /// (method, target as on the wire, timestamp, access key, secret key, signature). The
    /// first is the published vector the client's signer is tested with; the others were
    /// computed independently with `openssl dgst -sha256 -hmac` and Python's `hmac` module.
    const VECTORS: [(&str, &str, &str, &str, &str, &str); 4] = [
        (
            "GET",
            "/vserver/v2/getServerInstanceList?responseFormatType=json",
            "1234567890123",
            "TestAccessKey",
            "TestSecretKey",
            "FPsYYX8fuMAgi+cue3eACOW0dNtIwu1LYWfg/megA2M=",
        ),
        // A space in a path segment, percent-encoded as it goes on the wire.
        (
            "GET",
            "/api/v1/workspaces/my%20workspace/projects/1/assets?pageNum=1&pageSize=100",
            "1700000000000",
            "TestAccessKey",
            "TestSecretKey",
            "plOOTijtlm/fA5vRpJpBjM0wrwY5nEN5gUWsa5UptxE=",
        ),
        // A Korean path segment (영상), percent-encoded UTF-8.
        (
            "GET",
            "/api/v1/workspaces/%EC%98%81%EC%83%81/projects/1/assets?pageNum=1&pageSize=100",
            "1700000000000",
            "TestAccessKey",
            "TestSecretKey",
            "LeJx07xVkpdSoc36brNlhzFd88RF39ulHAmYgWEsjkw=",
        ),
        // A query value holding `+ / = %`, each percent-encoded.
        (
            "GET",
            "/api/v2/status?pageNo=1&pageSizeNo=10&q=a%2Bb%2Fc%3Dd%25e",
            "1700000000000",
            "TestAccessKey",
            "TestSecretKey",
            "4A6iF2r0gAFLrNzcLZIY5aEz/2tpVmZYn1pptyPwqc8=",
        ),
    ];

    #[test]
    fn the_simulator_accepts_every_known_signature_vector() {
        for (method, target, timestamp, access, secret, signature) in VECTORS {
            let signed = string_to_sign(method, target, timestamp, access);
            assert!(signature_matches(secret, &signed, signature), "{target}");
        }
    }

    #[test]
    fn the_clients_signer_agrees_with_the_simulator_on_every_vector() {
        for (method, target, timestamp, access, secret, signature) in VECTORS {
            let ms: u64 = timestamp.parse().unwrap();
            assert_eq!(
                crate::ncp::signer::sign(method, target, ms, access, secret),
                signature,
                "{target}"
            );
        }
    }

    #[test]
    fn the_simulator_refuses_a_signature_over_anything_else() {
        let (method, target, timestamp, access, secret, signature) = VECTORS[1];
        let ok = |m: &str, t: &str, ts: &str, a: &str, k: &str, sig: &str| {
            signature_matches(k, &string_to_sign(m, t, ts, a), sig)
        };
        assert!(ok(method, target, timestamp, access, secret, signature));
        // The decoded form of the same target is a different string to sign.
        let decoded = target.replace("%20", " ");
        assert!(!ok(method, &decoded, timestamp, access, secret, signature));
        assert!(!ok("POST", target, timestamp, access, secret, signature));
        assert!(!ok(method, target, "1700000000001", access, secret, signature));
        assert!(!ok(method, target, timestamp, "OtherKey", secret, signature));
        assert!(!ok(method, target, timestamp, access, "OtherSecret", signature));
        assert!(!ok(method, target, timestamp, access, secret, "not base64!"));
        assert!(!ok(method, target, timestamp, access, secret, ""));
        // A truncated tag is refused, not compared as a prefix.
        let mut short = base64::Engine::decode(&base64::engine::general_purpose::STANDARD, signature).unwrap();
        short.truncate(16);
        let short = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, short);
        assert!(!ok(method, target, timestamp, access, secret, &short));
    }
}
