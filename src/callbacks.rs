//! VOD Station callbacks taken as hints, never as state (SPEC §10).
//!
//! VOD Station POSTs an unsigned callback to a category's URL on each status change of an
//! encoding option. The HTTP handler ([`handle`]) checks the token in the path, the size and
//! the shape of the body, and, for a category some watch claims, raises a hint in the
//! [`CallbackGate`]; the daemon loop takes it and makes the VOD status list due now. The
//! handler never touches the store or the engine: the state change and its event come only
//! from the list read, so a forged or replayed callback can cause at most one extra call,
//! never a false event, and a lost one only waits for the fallback read.

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, RwLock};

use axum::body::Bytes;
use axum::http::StatusCode;
use sha2::{Digest as _, Sha256};
use tokio::sync::Notify;

use crate::config::{Secret, VodWatch};

/// The largest callback body read. VOD Station's is a few hundred bytes; anything near
/// this is not a callback.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// The store's `daemon_facts` key under which the daemon records when the last callback
/// came (epoch milliseconds), for `status`.
pub const LAST_CALLBACK_FACT: &str = "last_vod_callback_ms";

/// The store's `daemon_facts` key under which a replica that took a callback but does not
/// hold the VOD list records when (epoch milliseconds); the replica holding it reads the
/// key once a second and takes it as its own hint (SPEC §9 with §10): a callback reaches
/// whichever replica the load balancer picks.
pub const VOD_HINT_FACT: &str = "vod_hint_ms";

/// What became of one callback: the `outcome` label of `ncp_watchd_callbacks_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A valid callback for a watched category: the VOD list is due now.
    Accepted,
    /// A valid callback for a category no watch claims (or callbacks are not configured
    /// for any VOD watch): nothing to do.
    Ignored,
    /// The token in the path is wrong: 404, as if there were no such URL.
    BadToken,
    /// The body is over [`MAX_BODY_BYTES`]: 413.
    TooLarge,
    /// The body does not decode as a callback: 400.
    Malformed,
}

impl Outcome {
    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Accepted => "accepted",
            Self::Ignored => "ignored",
            Self::BadToken => "bad_token",
            Self::TooLarge => "too_large",
            Self::Malformed => "malformed",
        }
    }

    /// The HTTP answer.
    pub fn status(self) -> StatusCode {
        match self {
            Self::Accepted | Self::Ignored => StatusCode::NO_CONTENT,
            Self::BadToken => StatusCode::NOT_FOUND,
            Self::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::Malformed => StatusCode::BAD_REQUEST,
        }
    }
}

/// What the handler checks against, replaced as a whole on a reload.
struct Settings {
    /// SHA-256 of the token: only a digest is kept here, and comparing digests takes the
    /// same time whatever the presented token's length or content.
    token_digest: [u8; 32],
    /// The VOD watches, to tell a watched category from one nobody claims.
    vods: Vec<VodWatch>,
}

/// Shared by the HTTP handler (which raises hints) and the daemon loop (which takes them).
#[derive(Default)]
pub struct CallbackGate {
    /// `None` while callbacks are off: every callback URL is then a 404.
    settings: RwLock<Option<Settings>>,
    /// A hint was raised and not yet taken.
    pending: AtomicBool,
    /// Wakes the loop when a hint is raised.
    notify: Notify,
    /// When the last valid callback came, epoch milliseconds (0: none yet).
    last_ms: AtomicI64,
}

impl std::fmt::Debug for CallbackGate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallbackGate")
            .field("pending", &self.pending.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

fn digest(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

/// Whether two digests are equal, looking at every byte whatever the first difference.
fn same_digest(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl CallbackGate {
    /// A gate with callbacks off.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Turns callbacks on with `token` for the VOD watches `vods`, or off with `None`.
    pub fn configure(&self, token: Option<&Secret>, vods: &[VodWatch]) {
        let settings = token.map(|t| Settings {
            token_digest: digest(t.expose().as_bytes()),
            vods: vods.to_vec(),
        });
        *self.settings.write().unwrap_or_else(|e| e.into_inner()) = settings;
    }

    /// Waits until a hint is raised (at once when one is pending).
    pub async fn notified(&self) {
        if self.pending.load(Ordering::Acquire) {
            return;
        }
        self.notify.notified().await;
    }

    /// Takes the pending hint, if any.
    pub fn take(&self) -> bool {
        self.pending.swap(false, Ordering::AcqRel)
    }

    /// When the last valid callback came, epoch milliseconds.
    pub fn last_callback_ms(&self) -> Option<i64> {
        Some(self.last_ms.load(Ordering::Relaxed)).filter(|ms| *ms > 0)
    }

    /// Judges one callback: the token first (a wrong one learns nothing else), then the
    /// body's size and shape, then whether a watch claims its category.
    pub fn judge(&self, token: Option<&str>, body: Result<Bytes, StatusCode>) -> Outcome {
        let settings = self.settings.read().unwrap_or_else(|e| e.into_inner());
        let Some(settings) = settings.as_ref() else {
            return Outcome::BadToken;
        };
        let presented = digest(token.unwrap_or_default().as_bytes());
        if token.is_none() || !same_digest(&presented, &settings.token_digest) {
            return Outcome::BadToken;
        }
        let body = match body {
            Ok(b) if b.len() <= MAX_BODY_BYTES => b,
            Err(StatusCode::PAYLOAD_TOO_LARGE) | Ok(_) => return Outcome::TooLarge,
            Err(_) => return Outcome::Malformed,
        };
        let callback = match crate::ncp::vod::decode_vod_callback(&body) {
            Ok(c) => c,
            Err(why) => {
                tracing::debug!(error = %why, "a VOD Station callback that does not decode: answered 400");
                return Outcome::Malformed;
            }
        };
        self.last_ms
            .store(chrono::Utc::now().timestamp_millis(), Ordering::Relaxed);
        let watched = settings
            .vods
            .iter()
            .any(|v| v.matches(&callback.category_id, callback.category_name.as_deref()));
        if !watched {
            tracing::debug!(category = %callback.category_id, status = %callback.status, "a VOD Station callback for a category no watch claims: ignored");
            return Outcome::Ignored;
        }
        tracing::debug!(category = %callback.category_id, status = %callback.status, "a VOD Station callback: the VOD list is due now");
        self.pending.store(true, Ordering::Release);
        self.notify.notify_one();
        Outcome::Accepted
    }
}

/// Answers `POST /callbacks/vod/{token}`, counting the outcome; the token is never logged.
pub fn handle(gate: Option<&CallbackGate>, token: Option<&str>, body: Result<Bytes, StatusCode>) -> StatusCode {
    let outcome = gate.map_or(Outcome::BadToken, |g| g.judge(token, body));
    metrics::counter!("ncp_watchd_callbacks_total", "outcome" => outcome.as_str()).increment(1);
    outcome.status()
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &str = "0123456789abcdef0123456789abcdef";
    const BODY: &[u8] = br#"{"categoryId":7,"categoryName":"news","fileId":1,"filePath":"a.mp4","encodingOptionId":2,"outputType":"hls","link":"","status":"RUNNING"}"#;

    fn gate(categories: &[&str]) -> Arc<CallbackGate> {
        let g = CallbackGate::new();
        let vod = VodWatch {
            categories: categories.iter().map(|c| c.to_string()).collect(),
            progress_step: 0,
            baseline: false,
            name: None,
        };
        g.configure(Some(&Secret::new(TOKEN)), &[vod]);
        g
    }

    #[test]
    fn each_kind_of_callback_gets_its_outcome() {
        let g = gate(&["7"]);
        let ok = || Ok(Bytes::from_static(BODY));
        assert_eq!(g.judge(Some(TOKEN), ok()), Outcome::Accepted);
        assert!(g.take(), "an accepted callback raises a hint");
        assert!(!g.take(), "taken once");
        assert_eq!(
            g.judge(Some("0123456789abcdef0123456789abcdeX"), ok()),
            Outcome::BadToken
        );
        assert_eq!(g.judge(Some(""), ok()), Outcome::BadToken);
        assert_eq!(g.judge(None, ok()), Outcome::BadToken);
        assert_eq!(g.judge(Some(&TOKEN[..31]), ok()), Outcome::BadToken);
        assert_eq!(
            g.judge(Some(TOKEN), Err(StatusCode::PAYLOAD_TOO_LARGE)),
            Outcome::TooLarge
        );
        assert_eq!(
            g.judge(Some(TOKEN), Ok(Bytes::from_static(b"{\"categoryId\":7}"))),
            Outcome::Malformed
        );
        // A wrong token learns nothing about the body, not even that it is too large.
        assert_eq!(
            g.judge(Some("nope"), Err(StatusCode::PAYLOAD_TOO_LARGE)),
            Outcome::BadToken
        );
        assert!(!g.take(), "nothing but an accepted callback raises a hint");
        let other = gate(&["8"]);
        assert_eq!(other.judge(Some(TOKEN), ok()), Outcome::Ignored);
        assert!(!other.take());
        assert!(other.last_callback_ms().is_some(), "an ignored callback still came");
    }

    #[test]
    fn with_callbacks_off_every_token_is_wrong() {
        let g = CallbackGate::new();
        assert_eq!(g.judge(Some(TOKEN), Ok(Bytes::from_static(BODY))), Outcome::BadToken);
        let g = gate(&[]);
        g.configure(None, &[]);
        assert_eq!(g.judge(Some(TOKEN), Ok(Bytes::from_static(BODY))), Outcome::BadToken);
    }

    #[test]
    fn digests_compare_equal_only_when_every_byte_does() {
        let a = digest(b"x");
        let mut b = a;
        assert!(same_digest(&a, &b));
        b[31] ^= 1;
        assert!(!same_digest(&a, &b));
    }
}
