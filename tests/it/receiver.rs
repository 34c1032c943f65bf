//! A real webhook receiver on loopback, scripted per request; a flooding receiver whose
//! error body is far larger than memory should hold; and a Standard Webhooks verifier
//! written from the specification (not from the sink's code).

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use hmac::{KeyInit as _, Mac as _};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::time::Instant;

/// What the receiver does with one request.
#[derive(Debug, Clone, Copy)]
pub enum Reply {
    /// Answer with this status.
    Status(u16),
    /// Answer with this status and `Retry-After` seconds.
    RetryAfter(u16, u64),
    /// Answer with this status and this `Retry-After` text, verbatim.
    RetryAfterText(u16, &'static str),
    /// Wait this long (ms), then answer 200.
    Stall(u64),
    /// Wait this long (ms), then answer with the status (recorded as answered, unlike
    /// `Stall`).
    Slow(u16, u64),
    /// Answer with this status and a body that echoes the request's method and path, as
    /// many web servers' default error pages do.
    EchoPath(u16),
}

/// One request as received.
#[derive(Debug, Clone)]
pub struct Received {
    pub headers: HeaderMap,
    pub body: String,
    pub status: u16,
    /// When the request came in (before any scripted wait).
    pub arrived: Instant,
    /// When the answer went out.
    pub answered: Instant,
}

impl Received {
    /// The CloudEvent `type` of the delivered body.
    pub fn event_type(&self) -> String {
        let v: serde_json::Value = serde_json::from_str(&self.body).expect("a JSON body");
        v["type"].as_str().unwrap_or_default().to_string()
    }

    /// The `webhook-id` header.
    pub fn webhook_id(&self) -> String {
        self.headers
            .get("webhook-id")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    }
}

struct Inner {
    script: VecDeque<Reply>,
    /// What to do once the script is used up.
    fallback: Reply,
    received: Vec<Received>,
    /// Requests that have arrived, answered or not.
    arrivals: usize,
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
            fallback: Reply::Status(200),
            received: Vec::new(),
            arrivals: 0,
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

    /// This receiver's URL with `path` (which starts with `/`).
    pub fn url_with_path(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// What to answer once the script is used up (200 unless set).
    pub fn set_fallback(&self, reply: Reply) {
        self.inner.lock().unwrap().fallback = reply;
    }

    /// How many requests have arrived, including those not answered yet.
    pub fn arrivals(&self) -> usize {
        self.inner.lock().unwrap().arrivals
    }

    /// Every request answered so far.
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

async fn handle(State(inner): State<Arc<Mutex<Inner>>>, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    let arrived = Instant::now();
    let reply = {
        let mut inner = inner.lock().unwrap();
        inner.arrivals += 1;
        let fallback = inner.fallback;
        inner.script.pop_front().unwrap_or(fallback)
    };
    let mut text = "receiver says no thanks".to_string();
    let (status, retry_after) = match reply {
        Reply::Status(s) => (s, None),
        Reply::RetryAfter(s, secs) => (s, Some(secs.to_string())),
        Reply::RetryAfterText(s, value) => (s, Some(value.to_string())),
        Reply::Stall(ms) => {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            (200, None)
        }
        Reply::Slow(s, ms) => {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            (s, None)
        }
        Reply::EchoPath(s) => {
            text = format!("Cannot POST {uri}: no such route");
            (s, None)
        }
    };
    inner.lock().unwrap().received.push(Received {
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
        status: if matches!(reply, Reply::Stall(_)) { 0 } else { status },
        arrived,
        answered: Instant::now(),
    });
    let mut response = (StatusCode::from_u16(status).unwrap(), text).into_response();
    if let Some(value) = retry_after {
        response.headers_mut().insert("retry-after", value.parse().unwrap());
    }
    response
}

/// What a [`Flood`] receiver saw of one request.
#[derive(Debug, Clone, Copy)]
pub struct Flooded {
    /// When the request came in.
    pub arrived: Instant,
    /// When the client stopped taking the body (or the whole body was written).
    pub ended: Instant,
    /// Body bytes written before then.
    pub sent: u64,
}

/// A receiver that answers every request with one status and a body of `len` bytes,
/// generated while it is written (one small buffer, reused: the body is never held) and
/// paced, so that reading all of it takes a while. It speaks just enough HTTP/1.1 over a
/// raw socket for that: the in-process HTTP server above has no streaming body type this
/// crate can build without another dependency.
pub struct Flood {
    pub addr: SocketAddr,
    /// Requests whose answer has ended, in the order they ended.
    ended: Arc<Mutex<Vec<Flooded>>>,
    requests: Arc<AtomicUsize>,
    stop: tokio_util::sync::CancellationToken,
}

/// The size of each write of a flood body.
const FLOOD_CHUNK: usize = 64 * 1024;

impl Flood {
    /// Starts on any loopback port. The body begins with `start`, then `y` to `len` bytes;
    /// each chunk of 64 KiB waits `pace` before it is written.
    pub async fn start(status: u16, start: &'static str, len: u64, pace: Duration) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let ended = Arc::new(Mutex::new(Vec::new()));
        let requests = Arc::new(AtomicUsize::new(0));
        let stop = tokio_util::sync::CancellationToken::new();
        let (token, log, count) = (stop.clone(), ended.clone(), requests.clone());
        tokio::spawn(async move {
            loop {
                let (mut socket, _) = tokio::select! {
                    _ = token.cancelled() => return,
                    accepted = listener.accept() => match accepted { Ok(a) => a, Err(_) => return },
                };
                let (token, log, count) = (token.clone(), log.clone(), count.clone());
                tokio::spawn(async move {
                    if !read_request(&mut socket).await {
                        return;
                    }
                    count.fetch_add(1, Ordering::SeqCst);
                    let arrived = Instant::now();
                    let head = format!(
                        "HTTP/1.1 {status} Flood\r\ncontent-type: text/plain\r\ncontent-length: {len}\r\nconnection: close\r\n\r\n"
                    );
                    let mut sent = 0u64;
                    if socket.write_all(head.as_bytes()).await.is_ok() {
                        let mut chunk = vec![b'y'; FLOOD_CHUNK];
                        let n = start.len().min(FLOOD_CHUNK);
                        chunk[..n].copy_from_slice(&start.as_bytes()[..n]);
                        while sent < len && !token.is_cancelled() {
                            let take = (len - sent).min(FLOOD_CHUNK as u64) as usize;
                            if socket.write_all(&chunk[..take]).await.is_err() {
                                break;
                            }
                            sent += take as u64;
                            if sent == take as u64 {
                                chunk[..n].fill(b'y');
                            }
                            tokio::time::sleep(pace).await;
                        }
                    }
                    log.lock().unwrap().push(Flooded {
                        arrived,
                        ended: Instant::now(),
                        sent,
                    });
                });
            }
        });
        Self {
            addr,
            ended,
            requests,
            stop,
        }
    }

    /// Requests read so far.
    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }

    /// Waits until `n` answers have ended, or fails after `within`.
    pub async fn wait_ended(&self, n: usize, within: Duration) -> Vec<Flooded> {
        let deadline = Instant::now() + within;
        loop {
            let got = self.ended.lock().unwrap().clone();
            if got.len() >= n {
                return got;
            }
            assert!(
                Instant::now() < deadline,
                "{} of {n} flood answers ended ({} requests)",
                got.len(),
                self.requests()
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
}

impl Drop for Flood {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// Reads one HTTP/1.1 request (head and `content-length` body); false when the client went
/// away first.
async fn read_request(socket: &mut tokio::net::TcpStream) -> bool {
    let mut buf = Vec::new();
    let mut byte = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        match socket.read(&mut byte).await {
            Ok(0) | Err(_) => return false,
            Ok(n) => buf.extend_from_slice(&byte[..n]),
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    while buf.len() < head_end + length {
        match socket.read(&mut byte).await {
            Ok(0) | Err(_) => return false,
            Ok(n) => buf.extend_from_slice(&byte[..n]),
        }
    }
    true
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
