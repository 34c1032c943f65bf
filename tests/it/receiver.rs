//! A real webhook receiver on loopback, scripted per request, and a Standard Webhooks
//! verifier written from the specification (not from the sink's code).

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use hmac::{KeyInit as _, Mac as _};

/// What the receiver does with one request.
#[derive(Debug, Clone, Copy)]
pub enum Reply {
    /// Answer with this status.
    Status(u16),
    /// Answer with this status and `Retry-After` seconds.
    RetryAfter(u16, u64),
    /// Wait this long (ms), then answer 200.
    Stall(u64),
}

/// One request as received.
#[derive(Debug, Clone)]
pub struct Received {
    pub headers: HeaderMap,
    pub body: String,
    pub status: u16,
}

impl Received {
    /// The CloudEvent `type` of the delivered body.
    pub fn event_type(&self) -> String {
        let v: serde_json::Value = serde_json::from_str(&self.body).expect("a JSON body");
        v["type"].as_str().unwrap_or_default().to_string()
    }
}

#[derive(Default)]
struct Inner {
    script: VecDeque<Reply>,
    received: Vec<Received>,
}

/// The receiver.
pub struct Receiver {
    pub addr: SocketAddr,
    inner: Arc<Mutex<Inner>>,
    stop: tokio_util::sync::CancellationToken,
}

impl Receiver {
    /// Starts on `addr` (port 0 for any) answering 200 unless scripted otherwise.
    pub async fn start(addr: SocketAddr, script: Vec<Reply>) -> Self {
        let inner = Arc::new(Mutex::new(Inner {
            script: script.into(),
            received: Vec::new(),
        }));
        let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = axum::Router::new().fallback(handle).with_state(inner.clone());
        let stop = tokio_util::sync::CancellationToken::new();
        let token = stop.clone();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(token.cancelled_owned())
                .await;
        });
        Self { addr, inner, stop }
    }

    /// The URL with a path that holds a token (it must never be logged).
    pub fn url(&self) -> String {
        format!("http://{}/hooks/T0KEN-SENTINEL-123", self.addr)
    }

    /// Every request so far.
    pub fn received(&self) -> Vec<Received> {
        self.inner.lock().unwrap().received.clone()
    }

    /// Requests answered 2xx.
    pub fn delivered(&self) -> Vec<Received> {
        self.received()
            .into_iter()
            .filter(|r| (200..300).contains(&r.status))
            .collect()
    }

    /// Waits until `n` requests were answered 2xx, or fails after `within`.
    pub async fn wait_delivered(&self, n: usize, within: Duration) -> Vec<Received> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let got = self.delivered();
            if got.len() >= n {
                return got;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "only {} of {n} deliveries arrived",
                got.len()
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn handle(State(inner): State<Arc<Mutex<Inner>>>, headers: HeaderMap, body: Bytes) -> Response {
    let reply = inner.lock().unwrap().script.pop_front().unwrap_or(Reply::Status(200));
    let (status, retry_after) = match reply {
        Reply::Status(s) => (s, None),
        Reply::RetryAfter(s, secs) => (s, Some(secs)),
        Reply::Stall(ms) => {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            (200, None)
        }
    };
    inner.lock().unwrap().received.push(Received {
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
        status: if matches!(reply, Reply::Stall(_)) { 0 } else { status },
    });
    let mut response = (StatusCode::from_u16(status).unwrap(), "receiver says no thanks").into_response();
    if let Some(secs) = retry_after {
        response.headers_mut().insert("retry-after", secs.into());
    }
    response
}

/// Verifies a delivery as the Standard Webhooks specification describes: the signed content
/// is `{webhook-id}.{webhook-timestamp}.{body}`, the key is the base64-decoded part of the
/// secret after `whsec_`, and `webhook-signature` holds space-separated `v1,<base64>`
/// signatures, any of which may match.
pub fn verify(secret: &str, headers: &HeaderMap, body: &str) -> bool {
    let header = |n: &str| {
        headers
            .get(n)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    };
    let (id, timestamp, signatures) = (
        header("webhook-id"),
        header("webhook-timestamp"),
        header("webhook-signature"),
    );
    let Some(encoded) = secret.strip_prefix("whsec_") else {
        return false;
    };
    let Ok(key) = base64::engine::general_purpose::STANDARD.decode(encoded) else {
        return false;
    };
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(&key).unwrap();
    mac.update(format!("{id}.{timestamp}.{body}").as_bytes());
    let expected = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    signatures
        .split(' ')
        .any(|s| s.strip_prefix("v1,") == Some(expected.as_str()))
}

#[test]
fn the_verifier_accepts_the_specification_vector() {
    let mut headers = HeaderMap::new();
    headers.insert("webhook-id", "msg_27UH4WbU6Z5A5EzD8u03UvzRbpk".parse().unwrap());
    headers.insert("webhook-timestamp", "1649367553".parse().unwrap());
    headers.insert(
        "webhook-signature",
        "v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw=".parse().unwrap(),
    );
    let body = r#"{"email":"test@example.com","username":"test_user"}"#;
    assert!(verify("whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD", &headers, body));
    assert!(
        !verify("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", &headers, body),
        "a wrong secret fails"
    );
    assert!(!verify(
        "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD",
        &headers,
        &body.replace("test_user", "x")
    ));
}
