//! How ncp-watchd reaches PostgreSQL: the `[state] url` read the way libpq reads it, TLS
//! through rustls, the password from a file or the environment, and one small pool per
//! process.
//!
//! The store's interface is synchronous (SQLite's is, and the engine commits between
//! polls), while the driver is async. Every statement therefore runs on one runtime of its
//! own, on its own thread, and the caller waits for the answer over a channel: a caller
//! inside the daemon's runtime blocks only itself, exactly as it would on an SQLite commit,
//! and a caller outside any runtime (`status`, `dead-letters`) needs none.

use std::collections::HashMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, SignatureScheme};
use tokio_postgres::config::SslMode;

use crate::config::{PostgresConfig, Secret};
use crate::store::StoreError;

/// How long connecting (TCP, TLS and authentication) may take before the store reports
/// the server unreachable; a URL's own `connect_timeout` wins.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Connections per process: the engine, one per sink and a few for commands and gauges.
const POOL_SIZE: usize = 8;

/// How long the server lets one of our sessions sit idle inside a transaction before it
/// ends it. Our transactions never wait on anything but the server, so only a frozen or
/// vanished process reaches it; below the shortest `lease_ttl` plus a round, so the locks
/// of a replica frozen mid-commit are gone soon after its leases are.
const IDLE_IN_TRANSACTION: Duration = Duration::from_secs(5);

/// How long a statement waits for a free connection before the store reports it.
const POOL_WAIT: Duration = Duration::from_secs(30);

/// TCP keepalive idle time: a server that vanished (a lost network) is noticed in about
/// this long rather than after the kernel's two hours.
const KEEPALIVE_IDLE: Duration = Duration::from_secs(15);

/// A request the server's host has not acknowledged for this long fails the connection
/// (a network that drops packets without a reset): keepalives cover only idle ones.
const TCP_USER_TIMEOUT: Duration = Duration::from_secs(20);

/// A parsed `[state] url`: what to connect to and how, with nothing secret in it.
#[derive(Clone)]
pub struct ConnectSpec {
    /// The driver's settings, the password not yet added.
    pub config: tokio_postgres::Config,
    /// How TLS is used.
    pub tls: Tls,
    /// `postgres://user@host:port/db`, for messages.
    pub display: String,
}

/// `sslmode`, as libpq names it, with the certificate check ncp-watchd makes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Tls {
    /// `disable`: plain TCP.
    Disable,
    /// `prefer` (libpq's default) or `require` and stricter: TLS, with `verify` saying how
    /// the server's certificate is checked. `required` is false only for `prefer`.
    Enabled {
        /// Whether the connection fails when the server does not speak TLS.
        required: bool,
        /// The certificate check.
        verify: Verify,
    },
}

/// How the server's certificate is checked. ncp-watchd always checks the chain (against
/// `sslrootcert`, or the system's roots): unlike libpq's `require`, it never accepts an
/// unverified certificate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verify {
    /// The CA file (`sslrootcert`); the system's roots when absent.
    pub ca_file: Option<PathBuf>,
    /// Whether the certificate must also name the host (`verify-full`).
    pub host_name: bool,
}

impl std::fmt::Debug for ConnectSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectSpec")
            .field("display", &self.display)
            .field("tls", &self.tls)
            .finish()
    }
}

/// Parses a `[state] url`. `base_dir` resolves a relative `sslrootcert`. The errors say
/// what to change; none of them repeats the URL (a password could be in it).
pub fn parse_url(url: &str, base_dir: &Path) -> Result<ConnectSpec, String> {
    let parsed =
        url::Url::parse(url).map_err(|e| format!("not a URL ({e}); write it as postgres://USER@HOST:PORT/DATABASE"))?;
    if !matches!(parsed.scheme(), "postgres" | "postgresql") {
        return Err("must start with postgres:// (or give [state] path for SQLite instead)".into());
    }
    if parsed.password().is_some() {
        return Err("must not hold the password: put it in [state] password_file or password_env".into());
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err("names no host: write it as postgres://USER@HOST:PORT/DATABASE".into());
    }
    if parsed.username().is_empty() {
        return Err("names no user: write it as postgres://USER@HOST:PORT/DATABASE".into());
    }
    let mut mode = "prefer".to_string();
    let mut root: Option<String> = None;
    let mut rest = parsed.clone();
    rest.set_query(None);
    {
        let mut kept = rest.query_pairs_mut();
        for (k, v) in parsed.query_pairs() {
            match k.as_ref() {
                "sslmode" => mode = v.into_owned(),
                "sslrootcert" => root = Some(v.into_owned()),
                "password" => {
                    return Err("must not hold the password: put it in [state] password_file or password_env".into());
                }
                "sslcert" | "sslkey" | "sslcrl" | "sslpassword" | "host" | "hostaddr" | "port" | "user" | "dbname" => {
                    return Err(format!(
                        "the parameter `{k}` is not supported here: give the host, port, user and database in the URL itself"
                    ));
                }
                _ => {
                    kept.append_pair(&k, &v);
                }
            }
        }
    }
    // The pairs were written form-encoded, a space as `+`; PostgreSQL's URLs are
    // percent-encoded (a `+` stays a plus), and a real `+` was written as `%2B`.
    let mut rest = match rest.query() {
        Some(q) => {
            let q = q.replace('+', "%20");
            rest.set_query(Some(&q));
            rest.to_string()
        }
        None => rest.to_string(),
    };
    if rest.ends_with('?') {
        rest.pop();
    }
    let mut config: tokio_postgres::Config = rest
        .parse()
        .map_err(|e: tokio_postgres::Error| format!("is not a PostgreSQL connection URL: {e}"))?;
    let ca_file = root.map(|r| {
        let p = PathBuf::from(r);
        if p.is_absolute() { p } else { base_dir.join(p) }
    });
    let verify = |host_name| Verify {
        ca_file: ca_file.clone(),
        host_name,
    };
    let tls = match mode.as_str() {
        "disable" => Tls::Disable,
        "prefer" | "allow" => Tls::Enabled {
            required: false,
            verify: verify(false),
        },
        "require" | "verify-ca" => Tls::Enabled {
            required: true,
            verify: verify(false),
        },
        "verify-full" => Tls::Enabled {
            required: true,
            verify: verify(true),
        },
        other => {
            return Err(format!(
                "sslmode `{other}` is not one of disable, prefer, require, verify-ca, verify-full"
            ));
        }
    };
    config.ssl_mode(match tls {
        Tls::Disable => SslMode::Disable,
        Tls::Enabled { required: false, .. } => SslMode::Prefer,
        Tls::Enabled { required: true, .. } => SslMode::Require,
    });
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(DEFAULT_CONNECT_TIMEOUT);
    }
    if config.get_application_name().is_none() {
        config.application_name("ncp-watchd");
    }
    config.keepalives_idle(KEEPALIVE_IDLE);
    config.tcp_user_timeout(TCP_USER_TIMEOUT);
    // A process frozen inside a transaction (SIGSTOP, a stall) would hold its locks, the
    // commit lock every replica takes included, for as long as it stays frozen: the server
    // ends such a session after this long, so one frozen replica never stalls the others.
    // Options the URL gives (`options=-c ...`) are kept; ours come after them and win.
    let ours = format!(
        "-c idle_in_transaction_session_timeout={}",
        IDLE_IN_TRANSACTION.as_millis()
    );
    let options = match config.get_options() {
        Some(given) if !given.trim().is_empty() => format!("{given} {ours}"),
        _ => ours,
    };
    config.options(options);
    let host = parsed.host_str().unwrap_or_default();
    let port = parsed.port().unwrap_or(5432);
    let db = parsed.path().trim_start_matches('/');
    let db = if db.is_empty() { parsed.username() } else { db };
    let display = format!("postgres://{}@{host}:{port}/{db}", parsed.username());
    Ok(ConnectSpec { config, tls, display })
}

/// The runtime every PostgreSQL statement runs on.
fn runtime() -> Result<&'static tokio::runtime::Runtime, StoreError> {
    static RUNTIME: OnceLock<Result<tokio::runtime::Runtime, String>> = OnceLock::new();
    RUNTIME
        .get_or_init(|| {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .thread_name("ncp-watchd-postgres")
                .enable_all()
                .build()
                .map_err(|e| e.to_string())
        })
        .as_ref()
        .map_err(|e| StoreError::Postgres(format!("cannot start the PostgreSQL runtime: {e}")))
}

/// Runs `work` on the PostgreSQL runtime and waits for its answer.
pub fn block<T: Send + 'static>(work: impl Future<Output = T> + Send + 'static) -> Result<T, StoreError> {
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    runtime()?.spawn(async move {
        let _ = tx.send(work.await);
    });
    let wait = move || {
        rx.recv()
            .map_err(|_| StoreError::Postgres("a PostgreSQL statement's task ended without an answer".into()))
    };
    // Called from a task of the daemon's own multi-threaded runtime (the loop, a sink), the
    // wait hands the worker's other tasks to another thread first: a round trip to the
    // server never holds up the HTTP calls and timers of the tasks beside it.
    match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => tokio::task::block_in_place(wait),
        _ => wait(),
    }
}

/// The store's `[state] url`, parsed (config validation has already accepted it).
pub fn spec(pg: &PostgresConfig) -> Result<ConnectSpec, StoreError> {
    parse_url(&pg.url, &pg.base_dir).map_err(|reason| StoreError::Connect {
        store: "[state] url".into(),
        reason: format!("[state] url {reason}"),
    })
}

/// The connection settings with the password added, read now from its file or variable.
pub fn with_password(spec: &ConnectSpec, pg: &PostgresConfig) -> Result<tokio_postgres::Config, StoreError> {
    let mut config = spec.config.clone();
    if let Some(source) = &pg.password {
        let secret: Secret = source
            .read("the PostgreSQL password")
            .map_err(|reason| StoreError::Connect {
                store: spec.display.clone(),
                reason,
            })?;
        config.password(secret.expose());
    }
    Ok(config)
}

/// The pool of the store at `pg`, made on first use and shared by every handle of the
/// process. The password is read when the pool is made.
pub fn pool(pg: &PostgresConfig) -> Result<(Pool, ConnectSpec), StoreError> {
    static POOLS: OnceLock<Mutex<HashMap<String, (Pool, ConnectSpec)>>> = OnceLock::new();
    let pools = POOLS.get_or_init(Default::default);
    let mut pools = pools.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(found) = pools.get(&pg.url) {
        return Ok(found.clone());
    }
    let spec = spec(pg)?;
    let config = with_password(&spec, pg)?;
    let manager_config = ManagerConfig {
        recycling_method: RecyclingMethod::Fast,
    };
    let manager = match &spec.tls {
        Tls::Disable => Manager::from_config(config, tokio_postgres::NoTls, manager_config),
        Tls::Enabled { verify, .. } => {
            Manager::from_config(config, tls_connector(verify, &spec.display)?, manager_config)
        }
    };
    let pool = Pool::builder(manager)
        .max_size(POOL_SIZE)
        .runtime(deadpool_postgres::Runtime::Tokio1)
        .wait_timeout(Some(POOL_WAIT))
        .create_timeout(Some(DEFAULT_CONNECT_TIMEOUT))
        .recycle_timeout(Some(DEFAULT_CONNECT_TIMEOUT))
        .build()
        .map_err(|e| StoreError::Connect {
            store: spec.display.clone(),
            reason: e.to_string(),
        })?;
    pools.insert(pg.url.clone(), (pool.clone(), spec.clone()));
    Ok((pool, spec))
}

/// A driver error as one line: the server's own message and SQLSTATE when it sent one.
pub fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{} (SQLSTATE {})", db.message(), db.code().code()),
        None => {
            let mut text = e.to_string();
            let mut source = std::error::Error::source(e);
            while let Some(s) = source {
                text.push_str(": ");
                text.push_str(&s.to_string());
                source = s.source();
            }
            text
        }
    }
}

fn tls_connector(verify: &Verify, store: &str) -> Result<tokio_postgres_rustls::MakeRustlsConnect, StoreError> {
    let fail = |reason: String| StoreError::Connect {
        store: store.to_string(),
        reason,
    };
    let mut roots = rustls::RootCertStore::empty();
    match &verify.ca_file {
        Some(path) => {
            use rustls::pki_types::pem::PemObject as _;
            let certs = CertificateDer::pem_file_iter(path)
                .map_err(|e| fail(format!("cannot read sslrootcert {}: {e}", path.display())))?
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| {
                    fail(format!(
                        "sslrootcert {} is not a PEM certificate file: {e}",
                        path.display()
                    ))
                })?;
            let (added, _) = roots.add_parsable_certificates(certs);
            if added == 0 {
                return Err(fail(format!(
                    "sslrootcert {} holds no usable certificate",
                    path.display()
                )));
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            roots.add_parsable_certificates(found.certs);
        }
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let webpki = rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|e| fail(format!("cannot use the CA certificates: {e}")))?;
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| fail(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(ChainVerifier {
            inner: webpki,
            host_name: verify.host_name,
        }))
        .with_no_client_auth();
    Ok(tokio_postgres_rustls::MakeRustlsConnect::new(config))
}

/// The chain check of `require` and `verify-ca`, and the full one of `verify-full`:
/// rustls's own verifier, with only the name mismatch forgiven when the host name is not
/// to be checked.
#[derive(Debug)]
struct ChainVerifier {
    /// rustls's verifier against the configured roots.
    inner: Arc<rustls::client::WebPkiServerVerifier>,
    /// Whether the certificate must name the host.
    host_name: bool,
}

impl ServerCertVerifier for ChainVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .inner
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) if !self.host_name => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(url: &str) -> Result<ConnectSpec, String> {
        parse_url(url, Path::new("/etc/ncp-watchd"))
    }

    #[test]
    fn a_session_left_idle_inside_a_transaction_is_ended_by_the_server() {
        let spec = parse("postgres://u@db/x?sslmode=disable").unwrap();
        assert_eq!(
            spec.config.get_options(),
            Some("-c idle_in_transaction_session_timeout=5000")
        );
        let spec = parse("postgres://u@db/x?sslmode=disable&options=-c%20search_path%3Dw").unwrap();
        assert_eq!(
            spec.config.get_options(),
            Some("-c search_path=w -c idle_in_transaction_session_timeout=5000")
        );
    }

    #[test]
    fn the_spec_example_parses_and_shows_no_secret() {
        let spec = parse("postgres://ncp_watchd@db.internal:5432/ncp_watchd?sslmode=require").unwrap();
        assert_eq!(spec.display, "postgres://ncp_watchd@db.internal:5432/ncp_watchd");
        assert_eq!(
            spec.tls,
            Tls::Enabled {
                required: true,
                verify: Verify {
                    ca_file: None,
                    host_name: false
                }
            }
        );
        assert_eq!(spec.config.get_user(), Some("ncp_watchd"));
        assert_eq!(spec.config.get_dbname(), Some("ncp_watchd"));
    }

    #[test]
    fn a_password_in_the_url_is_refused_without_repeating_it() {
        for url in [
            "postgres://u:hunter2hunter2@h/db",
            "postgres://u@h/db?password=hunter2hunter2",
        ] {
            let err = parse(url).unwrap_err();
            assert!(err.contains("password_file"), "{err}");
            assert!(!err.contains("hunter2"), "{err}");
        }
    }

    #[test]
    fn sslrootcert_resolves_against_the_config_directory_and_modes_map_as_libpq_names_them() {
        let spec = parse("postgresql://u@h:6543/d?sslmode=verify-full&sslrootcert=ca.pem").unwrap();
        assert_eq!(
            spec.tls,
            Tls::Enabled {
                required: true,
                verify: Verify {
                    ca_file: Some(PathBuf::from("/etc/ncp-watchd/ca.pem")),
                    host_name: true
                }
            }
        );
        assert_eq!(spec.display, "postgres://u@h:6543/d");
        assert_eq!(parse("postgres://u@h/d?sslmode=disable").unwrap().tls, Tls::Disable);
        assert!(parse("postgres://u@h/d?sslmode=maybe").unwrap_err().contains("sslmode"));
        assert!(parse("mysql://u@h/d").is_err());
        assert!(parse("postgres://h/d").unwrap_err().contains("user"));
        assert!(parse("postgres://u@h/d?connect_timeout=3").is_ok());
        assert!(parse("postgres://u@h/d?bogus=1").is_err());
    }
}
