//! The NCP API simulator (SPEC §7), served by the `ncp-sim` binary, `ncp-watchd demo` and
//! the tests.
//!
//! It answers the five endpoints with the documents' JSON shapes, checks signature v2 and
//! the 5-minute window the way the gateway does (401, errorCode "200"), enforces a
//! calls-per-minute quota per access key and service with 429 and `Retry-After`, plays a
//! [`Scenario`], injects faults on request, and keeps a log of every API request so tests
//! can prove quota compliance. Admin routes live under `/_sim/`.

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

use crate::ncp::signer;
use world::World;

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
    /// Calls per minute per access key and service (Media Intelligence, VOD Station).
    pub quota_per_minute: u32,
    /// What to serve.
    pub scenario: Scenario,
}

impl SimConfig {
    /// Default credentials and quota, playing `scenario`.
    pub fn new(scenario: Scenario) -> Self {
        Self {
            access_key: DEFAULT_ACCESS_KEY.to_string(),
            secret_key: DEFAULT_SECRET_KEY.to_string(),
            quota_per_minute: DEFAULT_QUOTA_PER_MINUTE,
            scenario,
        }
    }
}

/// One API request as the simulator saw it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestRecord {
    /// Arrival, epoch milliseconds.
    pub at_ms: i64,
    /// HTTP method.
    pub method: String,
    /// Path and query as received.
    pub target: String,
    /// `media` or `vod`: the quota bucket.
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
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "fault", rename_all = "snake_case")]
pub enum FaultAction {
    /// Answer with this HTTP status and the gateway's error body.
    Error {
        /// HTTP status.
        status: u16,
        /// errorCode; defaults to the gateway's code for the status.
        #[serde(default)]
        error_code: Option<String>,
        /// `Retry-After` seconds.
        #[serde(default)]
        retry_after: Option<u64>,
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
}

/// State shared by the handlers.
struct Shared {
    config: SimConfig,
    started: Instant,
    world: Mutex<World>,
    quota: Mutex<HashMap<(String, &'static str), VecDeque<i64>>>,
    faults: Mutex<Vec<Fault>>,
    log: Mutex<Vec<RequestRecord>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panicking handler must not take the simulator down with it.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn epoch_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
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
            config,
            started: Instant::now(),
            world: Mutex::new(world),
            quota: Mutex::new(HashMap::new()),
            faults: Mutex::new(Vec::new()),
            log: Mutex::new(Vec::new()),
        });
        let app = Router::new()
            .route("/_sim/requests", get(admin_requests).delete(admin_clear_requests))
            .route("/_sim/state", post(admin_set_state))
            .route("/_sim/faults", post(admin_add_fault).delete(admin_clear_faults))
            .route("/_sim/status", get(admin_status))
            .fallback(api)
            .with_state(shared.clone());
        let shutdown = CancellationToken::new();
        let stop = shutdown.clone();
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(stop.cancelled_owned())
                .await;
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
    let access_key = header(signer::HEADER_ACCESS_KEY);

    let decision = decide(
        &s,
        &method,
        &uri,
        &target,
        service,
        at_ms,
        access_key.as_deref(),
        &header,
        &body,
    );
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
fn decide(
    s: &Shared,
    method: &Method,
    uri: &Uri,
    target: &str,
    service: &'static str,
    at_ms: i64,
    access_key: Option<&str>,
    header: &dyn Fn(&str) -> Option<String>,
    body: &[u8],
) -> Decision {
    let refuse = |details: &str| {
        let (st, b) = gateway_error(401, "200", "Authentication Failed", details);
        Decision::Json(st, b, None)
    };
    let (Some(access_key), Some(timestamp), Some(signature)) = (
        access_key,
        header(signer::HEADER_TIMESTAMP),
        header(signer::HEADER_SIGNATURE),
    ) else {
        return refuse(
            "the x-ncp-apigw-timestamp, x-ncp-iam-access-key and x-ncp-apigw-signature-v2 headers are required",
        );
    };
    let Ok(timestamp_ms) = timestamp.parse::<i64>() else {
        return refuse("the timestamp is not epoch milliseconds");
    };
    if (at_ms - timestamp_ms).unsigned_abs() > MAX_CLOCK_SKEW.as_millis() as u64 {
        return refuse("the timestamp is more than 5 minutes from the gateway's clock");
    }
    if access_key != s.config.access_key {
        return refuse("unknown access key");
    }
    let expected = signer::sign(
        method.as_str(),
        target,
        timestamp_ms as u64,
        &s.config.access_key,
        &s.config.secret_key,
    );
    if signature != expected {
        return refuse("the signature does not match");
    }

    {
        let mut quota = lock(&s.quota);
        let window = quota.entry((access_key.to_string(), service)).or_default();
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

    let fault = {
        let mut faults = lock(&s.faults);
        let hit = faults
            .iter_mut()
            .position(|f| f.count > 0 && f.path_contains.as_deref().is_none_or(|p| target.contains(p)));
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
    match fault {
        Some(FaultAction::Error {
            status,
            error_code,
            retry_after,
        }) => {
            let code = error_code.unwrap_or_else(|| default_error_code(status).to_string());
            let (st, b) = gateway_error(status, &code, "Injected Fault", "injected by /_sim/faults");
            return Decision::Json(st, b, retry_after);
        }
        Some(FaultAction::Malformed { body }) => {
            return Decision::Raw(
                200,
                body.unwrap_or_else(|| r#"{"code":"0","message":"success","result":{"uploadStat"#.to_string()),
            );
        }
        Some(FaultAction::Stall { ms }) => stall = Some(Duration::from_millis(ms)),
        None => {}
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
    let query: BTreeMap<String, String> = url::form_urlencoded::parse(uri.query().unwrap_or_default().as_bytes())
        .into_owned()
        .collect();
    let (status, answer) = lock(&s.world).answer(method.as_str(), &segments, &query, body, s.started.elapsed());
    match stall {
        Some(delay) => Decision::StallThen(delay, status, answer),
        None => Decision::Json(status, answer, None),
    }
}
