//! The operations surface: the status page (`/`) and its data (`/api/status`, see
//! [`crate::status`]), `/healthz`, `/readyz`, `/metrics`, VOD Station's callbacks
//! (`POST /callbacks/vod/{token}`, see [`crate::callbacks`]), and systemd's notify protocol.
//!
//! The status routes only read: they answer GET (and HEAD) alone, from a read-only store
//! handle, with a Content-Security-Policy that lets the page run nothing but its own
//! inline script.
//!
//! The daemon loop calls [`Health::tick`] every second; `/healthz` fails when it has not
//! for [`STALL_AFTER`], so a wedged daemon is restarted. `/readyz` answers 200 once the store
//! is open and the first poll round is done.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};

use crate::callbacks::{self, CallbackGate};
use crate::status;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio_util::sync::CancellationToken;

/// `/healthz` fails when the daemon loop has not ticked for this long.
pub const STALL_AFTER: Duration = Duration::from_secs(30);

/// `/healthz` fails too when the store has refused every commit for this long (a full
/// disk): a restart may not help, but an operator must hear of it, not read "ok".
pub const STORE_FAILING_AFTER: Duration = Duration::from_secs(120);

/// What the loop reports and the server reads.
#[derive(Debug, Default)]
pub struct Health {
    last_tick_ms: AtomicI64,
    ready: AtomicBool,
    /// Since when every commit has failed (epoch ms); 0 while commits succeed.
    store_failing_since_ms: AtomicI64,
    /// A replica on a cluster whose leases could not be renewed in time (SPEC §9): it
    /// works nothing until the store answers again. Always false on SQLite.
    leases_lapsed: AtomicBool,
}

impl Health {
    /// The loop is alive.
    pub fn tick(&self) {
        self.last_tick_ms
            .store(chrono::Utc::now().timestamp_millis(), Ordering::Relaxed);
    }

    /// The first poll round is done.
    pub fn set_ready(&self) {
        self.ready.store(true, Ordering::Relaxed);
    }

    /// A commit succeeded (`true`) or failed (`false`).
    pub fn store_committed(&self, ok: bool) {
        if ok {
            self.store_failing_since_ms.store(0, Ordering::Relaxed);
        } else {
            let now = chrono::Utc::now().timestamp_millis();
            let _ = self
                .store_failing_since_ms
                .compare_exchange(0, now, Ordering::Relaxed, Ordering::Relaxed);
        }
    }

    /// How long every commit has been failing, if they are.
    fn store_failing_for_ms(&self) -> Option<i64> {
        let since = self.store_failing_since_ms.load(Ordering::Relaxed);
        (since != 0).then(|| chrono::Utc::now().timestamp_millis() - since)
    }

    /// Whether the loop ticked recently, and the store has not refused commits for long.
    pub fn live(&self) -> bool {
        let last = self.last_tick_ms.load(Ordering::Relaxed);
        let ticking = chrono::Utc::now().timestamp_millis() - last < STALL_AFTER.as_millis() as i64;
        ticking
            && self
                .store_failing_for_ms()
                .is_none_or(|ms| ms < STORE_FAILING_AFTER.as_millis() as i64)
    }

    /// Whether the replica's leases are renewed (`true`) or lapsed (`false`).
    pub fn set_leases_healthy(&self, healthy: bool) {
        self.leases_lapsed.store(!healthy, Ordering::Relaxed);
    }

    /// Whether the first round is done, the store takes commits and, on a cluster, the
    /// replica holds valid leases or is a healthy standby.
    pub fn ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
            && self.store_failing_for_ms().is_none()
            && !self.leases_lapsed.load(Ordering::Relaxed)
    }
}

#[derive(Clone)]
struct AppState {
    health: Arc<Health>,
    metrics: Option<PrometheusHandle>,
    /// Where callbacks raise their hints; `None` answers every callback 404.
    callbacks: Option<Arc<CallbackGate>>,
    /// Where the status page reads; `None` answers `/` and `/api/status` 404.
    status: Option<Arc<status::Source>>,
}

/// Serves until `shutdown` on an already bound listener.
pub async fn serve(
    listener: tokio::net::TcpListener,
    health: Arc<Health>,
    metrics: Option<PrometheusHandle>,
    callbacks: Option<Arc<CallbackGate>>,
    status: Option<Arc<status::Source>>,
    shutdown: CancellationToken,
) {
    let app = Router::new()
        .route("/", get(status_page))
        .route("/api/status", get(status_json))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .route(
            "/callbacks/vod/{token}",
            // One byte over the limit is enough to tell a body that is too large.
            post(vod_callback).layer(DefaultBodyLimit::max(callbacks::MAX_BODY_BYTES)),
        )
        .with_state(AppState {
            health,
            metrics,
            callbacks,
            status,
        });
    if let Err(e) = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
    {
        tracing::error!(error = %e, "the health and metrics server stopped");
    }
}

async fn healthz(State(s): State<AppState>) -> Response {
    if s.health.live() {
        (StatusCode::OK, "ok\n").into_response()
    } else if s.health.store_failing_for_ms().is_some() {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "the state store has refused every commit for minutes (a full disk?): nothing is being recorded\n",
        )
            .into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "the scheduler loop has stopped ticking\n",
        )
            .into_response()
    }
}

async fn readyz(State(s): State<AppState>) -> Response {
    if s.health.ready() {
        (StatusCode::OK, "ready\n").into_response()
    } else if s.health.leases_lapsed.load(Ordering::Relaxed) {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "this replica cannot renew its shard leases (is the database reachable?): it works no shard\n",
        )
            .into_response()
    } else if s.health.store_failing_for_ms().is_some() {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "the state store refuses commits (a full disk?): changes are not being recorded\n",
        )
            .into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "the first poll round is not done yet\n",
        )
            .into_response()
    }
}

/// `POST /callbacks/vod/{token}`: 404 for a wrong token, 413 over 64 KiB, 400 for a body
/// that does not decode, else 204 at once (the list read it asks for happens in the loop).
async fn vod_callback(
    State(s): State<AppState>,
    token: Result<Path<String>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> StatusCode {
    let token = token.ok().map(|Path(t)| t);
    let body = body.map_err(|e| e.status());
    callbacks::handle(s.callbacks.as_deref(), token.as_deref(), body)
}

/// Makes the status report off the async threads (the store is synchronous).
async fn status_report(s: &AppState) -> Result<status::StatusReport, Response> {
    let Some(source) = s.status.clone() else {
        return Err((StatusCode::NOT_FOUND, "no status page here\n").into_response());
    };
    match tokio::task::spawn_blocking(move || source.report()).await {
        Ok(Ok(report)) => Ok(report),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "cannot read the state store for the status page");
            Err((
                StatusCode::SERVICE_UNAVAILABLE,
                format!("cannot read the state store: {e}\n"),
            )
                .into_response())
        }
        Err(e) => {
            tracing::error!(error = %e, "making the status report failed");
            Err((StatusCode::INTERNAL_SERVER_ERROR, "the status report failed\n").into_response())
        }
    }
}

/// Headers every status answer carries: no sniffing, no caching, no framing, no referrer.
fn harden(mut response: Response, content_type: &'static str) -> Response {
    let headers = response.headers_mut();
    headers.insert("content-type", HeaderValue::from_static(content_type));
    headers.insert("x-content-type-options", HeaderValue::from_static("nosniff"));
    headers.insert("cache-control", HeaderValue::from_static("no-store"));
    headers.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
    headers.insert("x-frame-options", HeaderValue::from_static("DENY"));
    response
}

/// `GET /`: the status page, complete without script; its script refreshes it in place.
async fn status_page(State(s): State<AppState>) -> Response {
    let report = match status_report(&s).await {
        Ok(r) => r,
        Err(response) => return response,
    };
    let mut response = harden(
        (StatusCode::OK, status::html::render(&report)).into_response(),
        "text/html; charset=utf-8",
    );
    if let Ok(policy) = HeaderValue::from_str(status::html::content_security_policy()) {
        response.headers_mut().insert("content-security-policy", policy);
    }
    response
}

/// `GET /api/status`: the same report as JSON.
async fn status_json(State(s): State<AppState>) -> Response {
    let report = match status_report(&s).await {
        Ok(r) => r,
        Err(response) => return response,
    };
    let response = match serde_json::to_string(&report) {
        Ok(body) => (StatusCode::OK, body).into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot encode the report: {e}\n"),
        )
            .into_response(),
    };
    let mut response = harden(response, "application/json");
    response.headers_mut().insert(
        "content-security-policy",
        HeaderValue::from_static("default-src 'none'; frame-ancestors 'none'"),
    );
    response
}

async fn metrics_text(State(s): State<AppState>) -> Response {
    let body = s.metrics.as_ref().map(PrometheusHandle::render).unwrap_or_default();
    let mut response = (StatusCode::OK, body).into_response();
    response.headers_mut().insert(
        "content-type",
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    response
}

/// Installs the process-wide Prometheus recorder, once; later calls get the same handle.
pub fn metrics_handle() -> Option<PrometheusHandle> {
    static HANDLE: std::sync::OnceLock<Option<PrometheusHandle>> = std::sync::OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let handle = metrics_exporter_prometheus::PrometheusBuilder::new()
                .set_buckets(&[0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0])
                .ok()?
                .install_recorder()
                .ok()?;
            describe_metrics();
            metrics::gauge!("ncp_watchd_build_info", "version" => env!("CARGO_PKG_VERSION")).set(1.0);
            Some(handle)
        })
        .clone()
}

/// Every metric's help text and unit, as Prometheus tooling expects.
fn describe_metrics() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    // Series a dashboard rates over exist from the start, at zero.
    for host in [crate::ncp::Host::Media, crate::ncp::Host::Vod] {
        metrics::counter!("ncp_watchd_rate_limit_waits_total", "host" => host.as_str()).increment(0);
    }
    describe_gauge!("ncp_watchd_build_info", "The running version (always 1).");
    describe_counter!(
        "ncp_watchd_api_calls_total",
        "NCP API calls by host, endpoint and outcome."
    );
    describe_histogram!(
        "ncp_watchd_api_call_duration_seconds",
        Unit::Seconds,
        "NCP API call latency."
    );
    describe_counter!(
        "ncp_watchd_outbox_pruned_total",
        "Delivered events pruned from the outbox past [state] retention."
    );
    describe_counter!(
        "ncp_watchd_rate_limit_waits_total",
        "Calls that waited for the host's rate limiter."
    );
    describe_histogram!(
        "ncp_watchd_rate_limit_wait_seconds",
        Unit::Seconds,
        "Time spent waiting for the rate limiter."
    );
    describe_gauge!(
        "ncp_watchd_watches",
        "Watched items by kind and state (watching, final, failing, removed)."
    );
    describe_counter!("ncp_watchd_events_total", "Events committed to the outbox, by type.");
    describe_counter!("ncp_watchd_deliveries_total", "Delivery attempts by sink and outcome.");
    describe_gauge!("ncp_watchd_outbox_pending", "Outbox events past each sink's cursor.");
    describe_gauge!(
        "ncp_watchd_outbox_oldest_pending_seconds",
        Unit::Seconds,
        "Age of the oldest outbox event each sink has not handled."
    );
    describe_gauge!("ncp_watchd_dead_letters", "Dead letters per sink.");
    describe_counter!(
        "ncp_watchd_callbacks_total",
        "VOD Station callbacks by outcome (accepted, ignored, bad_token, too_large, malformed)."
    );
    describe_gauge!(
        "ncp_watchd_sink_paused",
        "Whether a sink is paused by a 410 Gone (1) or not (0)."
    );
}

/// `GET http://{addr}/healthz` within 2 s: `Ok` on 200, else why not (for `healthcheck`).
pub async fn check_health(addr: SocketAddr) -> Result<(), String> {
    let addr = match addr.ip() {
        ip if ip.is_unspecified() => SocketAddr::new(std::net::Ipv4Addr::LOCALHOST.into(), addr.port()),
        _ => addr,
    };
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .map_err(|e| e.to_string())?;
    match client.get(format!("http://{addr}/healthz")).send().await {
        Ok(r) if r.status().is_success() => Ok(()),
        Ok(r) => Err(format!("http://{addr}/healthz answered {}", r.status())),
        Err(e) if e.is_timeout() => Err(format!("http://{addr}/healthz did not answer within 2 s")),
        Err(_) => Err(format!(
            "nothing answers at http://{addr}/healthz: is ncp-watchd running?"
        )),
    }
}

/// systemd's notify protocol: no-ops without `$NOTIFY_SOCKET`.
pub mod notify {
    use sd_notify::NotifyState;

    fn send(states: &[NotifyState]) {
        if let Err(e) = sd_notify::notify(states) {
            tracing::warn!(error = %e, "cannot notify systemd");
        }
    }

    /// READY=1.
    pub fn ready() {
        send(&[NotifyState::Ready]);
    }

    /// WATCHDOG=1.
    pub fn watchdog() {
        send(&[NotifyState::Watchdog]);
    }

    /// RELOADING=1 with MONOTONIC_USEC, as `Type=notify-reload` expects too.
    pub fn reloading() {
        match NotifyState::monotonic_usec_now() {
            Ok(now) => send(&[NotifyState::Reloading, now]),
            Err(_) => send(&[NotifyState::Reloading]),
        }
    }

    /// STOPPING=1.
    pub fn stopping() {
        send(&[NotifyState::Stopping]);
    }

    /// Half the watchdog interval systemd asked for, if it asked.
    pub fn watchdog_interval() -> Option<std::time::Duration> {
        sd_notify::watchdog_enabled().map(|d| d / 2)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_fails_once_the_loop_stops_ticking() {
        let h = Health::default();
        assert!(!h.live(), "never ticked");
        h.tick();
        assert!(h.live());
        let stale = chrono::Utc::now().timestamp_millis() - STALL_AFTER.as_millis() as i64 - 1;
        h.last_tick_ms.store(stale, Ordering::Relaxed);
        assert!(!h.live(), "a wedged loop is not live");
        assert!(!h.ready());
        h.set_ready();
        assert!(h.ready());
    }
}
