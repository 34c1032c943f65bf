//! The API gateway's answers, classified by what the caller does next.

use std::time::Duration;

/// Why a call failed. Every variant says, through [`ApiError::retry`], whether and when to
/// try again. No variant carries a credential.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ApiError {
    /// 401/403, gateway errorCode 200 or 210: the credentials or the subscription.
    #[error("authentication refused (HTTP {status}, errorCode {code}: {message}); {hint}{context}")]
    AuthRefused {
        /// HTTP status.
        status: u16,
        /// Gateway errorCode.
        code: String,
        /// Gateway message.
        message: String,
        /// What to check.
        hint: &'static str,
        /// Which credential was used and, when the gateway's clock is far off, by how much
        /// (never a credential's value); empty until the client adds it.
        context: String,
    },
    /// 400, errorCode 100.
    #[error("bad request (HTTP 400, errorCode {code}: {message}); check the watch's identifiers")]
    BadRequest {
        /// Gateway errorCode.
        code: String,
        /// Gateway message.
        message: String,
    },
    /// 404, errorCode 300.
    #[error("not found (HTTP 404, errorCode {code}: {message}); check the workspace, project and asset ids{hint}")]
    NotFound {
        /// Gateway errorCode.
        code: String,
        /// Gateway message.
        message: String,
        /// What else to check, for the endpoint called (empty when nothing more is known).
        hint: &'static str,
    },
    /// 429, errorCode 400/410/420.
    #[error("rate limited (HTTP 429, errorCode {code}){}", retry_after.map(|d| format!("; retry after {}s", d.as_secs())).unwrap_or_default())]
    RateLimited {
        /// Gateway errorCode.
        code: String,
        /// The `Retry-After` header, when present.
        retry_after: Option<Duration>,
    },
    /// 5xx (and 408): errorCode 500/510/900.
    #[error("server error (HTTP {status}, errorCode {code}: {message})")]
    Server {
        /// HTTP status.
        status: u16,
        /// Gateway errorCode, or empty.
        code: String,
        /// Gateway message.
        message: String,
    },
    /// A 2xx answer whose body says the call failed (Media Intelligence `code` not "0"), or
    /// another 4xx the table does not name.
    #[error("request refused (HTTP {status}, code {code}: {message})")]
    Rejected {
        /// HTTP status.
        status: u16,
        /// The service's code.
        code: String,
        /// The service's message.
        message: String,
    },
    /// A body that does not decode as the documents describe.
    #[error("malformed response (HTTP {status}): {reason}")]
    Malformed {
        /// HTTP status.
        status: u16,
        /// What did not decode, and the body's start.
        reason: String,
    },
    /// No complete answer within the timeout.
    #[error("no answer within {}s", .0.as_secs_f64())]
    Timeout(Duration),
    /// Connection refused, reset, DNS, TLS.
    #[error("transport error: {0}")]
    Transport(String),
}

/// What to do after a failed call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// Try again after an exponential backoff with full jitter.
    Backoff,
    /// Try again no sooner than this; the whole host should slow down.
    After(Duration),
    /// Not soon: a person must fix something; retry only at the longest backoff.
    NotSoon,
}

impl ApiError {
    /// Whether and when to try again.
    pub fn retry(&self) -> Retry {
        match self {
            Self::AuthRefused { .. } | Self::BadRequest { .. } => Retry::NotSoon,
            Self::RateLimited {
                retry_after: Some(d), ..
            } => Retry::After(*d),
            Self::RateLimited { retry_after: None, .. } => Retry::Backoff,
            Self::NotFound { .. }
            | Self::Server { .. }
            | Self::Rejected { .. }
            | Self::Malformed { .. }
            | Self::Timeout(_)
            | Self::Transport(_) => Retry::Backoff,
        }
    }

    /// Whether this failure should slow every call to the host, not just this item's.
    pub fn slows_host(&self) -> bool {
        matches!(self, Self::RateLimited { .. })
    }

    /// Whether the watch is failing at once rather than after repeated failures: a bad
    /// request will not get better by itself, nor will a missing permission.
    pub fn fails_watch_at_once(&self) -> bool {
        matches!(self, Self::BadRequest { .. } | Self::AuthRefused { .. })
    }

    /// Whether the account's key itself was refused (errorCode 200, or a 401 naming no
    /// code): every watch is affected alike, so it is one `account.failing`, not one
    /// `watch.failing` per watch. A permission refusal (210) concerns one API and stays
    /// with the watch.
    pub fn is_account_failure(&self) -> bool {
        matches!(self, Self::AuthRefused { code, .. } if code != "210")
    }

    /// A short name of the class, for metrics and logs.
    pub fn class(&self) -> &'static str {
        match self {
            Self::AuthRefused { .. } => "auth_refused",
            Self::BadRequest { .. } => "bad_request",
            Self::NotFound { .. } => "not_found",
            Self::RateLimited { .. } => "rate_limited",
            Self::Server { .. } => "server_error",
            Self::Rejected { .. } => "rejected",
            Self::Malformed { .. } => "malformed",
            Self::Timeout(_) => "timeout",
            Self::Transport(_) => "transport",
        }
    }
}
