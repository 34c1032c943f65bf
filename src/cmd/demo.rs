//! `ncp-watchd demo`: the bundled simulator, a local webhook receiver, the daemon with the
//! demo configuration, and the events it commits, printed live as one-liners. No NCP
//! account, no files kept, no network beyond loopback.

use std::collections::HashSet;
use std::io::Write as _;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::{HeaderMap, StatusCode};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::config::{CallbackTokenSource, CallbacksConfig, Config, CredentialSource, Credentials, Secret, StateConfig};
use crate::daemon;
use crate::sim::{Scenario, SimConfig, SimHandle};
use crate::sink::log::{LineFormat, LogSinkSpec};
use crate::store::Store;

use super::Failure;

/// The demo configuration, embedded so the demo runs from any directory.
pub const DEMO_CONFIG: &str = include_str!("../../config/demo.toml");

/// The demo's VOD list is read at the discovery rate anyway; callbacks bring each change
/// before that, and this fallback would catch one that is lost.
const DEMO_CALLBACK_FALLBACK: Duration = Duration::from_secs(30);

/// The demo stops after this long, whatever the scenario does.
const DEMO_DEADLINE: Duration = Duration::from_secs(30);

/// What the demo's receiver has seen.
#[derive(Debug, Default)]
struct Received {
    /// Distinct `webhook-id`s whose signature checked out.
    valid: HashSet<String>,
    /// Deliveries whose signature did not.
    bad: usize,
}

/// The demo's webhook receiver on loopback: it checks every delivery's Standard Webhooks
/// signature with the sink's secret, as a user's receiver would, and keeps count.
async fn start_receiver(key: Vec<u8>) -> std::io::Result<(String, Arc<Mutex<Received>>, CancellationToken)> {
    let received: Arc<Mutex<Received>> = Arc::default();
    let seen = received.clone();
    let app = axum::Router::new().route(
        "/webhook",
        axum::routing::post(move |headers: HeaderMap, body: axum::body::Bytes| {
            let seen = seen.clone();
            let key = key.clone();
            async move {
                let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default();
                let id = header("webhook-id");
                let valid = header("webhook-timestamp").parse::<i64>().is_ok_and(|ts| {
                    let want = crate::sink::encode::signature(&key, id, ts, &body);
                    header("webhook-signature").split(' ').any(|s| s == want)
                });
                let mut seen = seen.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                if valid {
                    seen.valid.insert(id.to_string());
                    StatusCode::NO_CONTENT
                } else {
                    seen.bad += 1;
                    StatusCode::UNAUTHORIZED
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/webhook", listener.local_addr()?);
    let stop = CancellationToken::new();
    let stopped = stop.clone();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(async move { stopped.cancelled().await })
            .await;
    });
    Ok((url, received, stop))
}

/// Runs the demo until the scenario has played out and every item has reached its end.
#[allow(
    clippy::expect_used,
    reason = "each expect here states an invariant of our own types, never of input"
)]
pub async fn run() -> Result<(), Failure> {
    let runtime = |what: &str, e: &dyn std::fmt::Display| Failure::Runtime(format!("{what}: {e}"));
    let state_dir = std::env::temp_dir().join(format!("ncp-watchd-demo-{}", std::process::id()));
    std::fs::create_dir_all(&state_dir).map_err(|e| runtime("cannot create the demo's state directory", &e))?;
    // The local receiver, and a signed webhook sink to it: a random secret in a file.
    let key: Vec<u8> = (0..24).map(|_| fastrand::u8(..)).collect();
    let secret = format!(
        "whsec_{}",
        base64::Engine::encode(&base64::engine::general_purpose::STANDARD, &key)
    );
    let secret_file = state_dir.join("webhook_secret");
    std::fs::write(&secret_file, &secret).map_err(|e| runtime("cannot write the demo's webhook secret", &e))?;
    let (receiver_url, received, receiver_stop) = start_receiver(key)
        .await
        .map_err(|e| runtime("cannot start the demo's webhook receiver on loopback", &e))?;
    let text = format!(
        "{DEMO_CONFIG}\n[[sink.webhook]]\nname = \"demo-receiver\"\nurl = \"{receiver_url}\"\nsecret_file = {}\nevents = [\"*\"]\n",
        toml::Value::String(secret_file.to_string_lossy().into_owned())
    );
    let mut config = Config::parse(Path::new("config/demo.toml"), &text)
        .map_err(|e| runtime("the embedded demo config is invalid", &e))?;
    // VOD Station's callbacks, played by the simulator: a random token in a file, and the
    // daemon's listener on a port picked now, so the simulator knows where to send them.
    let token: String = (0..32).map(|_| format!("{:02x}", fastrand::u8(..))).collect();
    let token_file = state_dir.join("vod_callback_token");
    std::fs::write(&token_file, &token).map_err(|e| runtime("cannot write the demo's callback token", &e))?;
    let listen = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| runtime("cannot find a free port on loopback", &e))?;
    config.listen = listen;
    config.callbacks = Some(CallbacksConfig {
        vod_token: CallbackTokenSource::File(token_file),
        fallback_interval: DEMO_CALLBACK_FALLBACK,
    });
    let mut sim_config = SimConfig::new(Scenario::built_in());
    sim_config.vod_callback_url = Some(format!("http://{listen}/callbacks/vod/{token}"));
    let credentials = Credentials {
        access_key: Secret::new(sim_config.access_key.clone()),
        secret_key: Secret::new(sim_config.secret_key.clone()),
        access_key_source: CredentialSource::BuiltIn,
        secret_key_source: CredentialSource::BuiltIn,
        api_url: None,
    };
    let sim = SimHandle::start(sim_config, "127.0.0.1:0".parse().expect("a valid address"))
        .await
        .map_err(|e| runtime("cannot start the simulator on loopback", &e))?;
    let url: url::Url = sim.url().parse().expect("the simulator's URL parses");
    config.api.media_url = url.clone();
    config.api.vod_url = url;
    config.state = StateConfig::Sqlite {
        path: state_dir.join("state.db"),
    };
    // The demo prints readable lines instead of the config's JSON log sink.
    config.sinks.logs.clear();
    let printer = LogSinkSpec {
        name: "demo".into(),
        path: None,
        events: vec!["*".into()],
        format: LineFormat::Human,
        shard: None,
    };

    println!(
        "ncp-sim is serving the built-in scenario at {} and sends VOD Station's callbacks to the daemon; the daemon watches it:",
        sim.url()
    );
    println!("status page: http://{listen}/ (JSON at http://{listen}/api/status) while the demo runs");
    println!("every event is also POSTed, signed, to a local receiver at {receiver_url}, which checks each signature");
    let _ = std::io::stdout().flush();
    let shutdown = CancellationToken::new();
    let (_reloads, reload_rx) = mpsc::unbounded_channel();
    let state = config.state.clone();
    let settle = config.poll.discovery_interval + config.poll.interval;
    let daemon = tokio::spawn(daemon::run(
        config,
        credentials,
        shutdown.clone(),
        reload_rx,
        vec![printer],
    ));

    // Done when the scenario has played out, a discovery round has seen its end, and
    // nothing the daemon watches is still moving.
    let started = tokio::time::Instant::now();
    let mut done_since: Option<tokio::time::Instant> = None;
    let mut ticker = tokio::time::interval(Duration::from_millis(250));
    loop {
        ticker.tick().await;
        if started.elapsed() > DEMO_DEADLINE {
            println!("the demo ran out of time ({}s); stopping", DEMO_DEADLINE.as_secs());
            break;
        }
        if !sim.done() {
            continue;
        }
        let since = *done_since.get_or_insert_with(tokio::time::Instant::now);
        let (pending, committed) = Store::open(&state)
            .and_then(|s| Ok((s.pending_items()?, s.outbox_len()?)))
            .unwrap_or((i64::MAX, i64::MAX));
        let delivered = lock(&received).valid.len() as i64;
        if pending == 0 && delivered >= committed && since.elapsed() >= settle {
            break;
        }
    }
    shutdown.cancel();
    let outcome = daemon.await;
    let (events, calls) = (
        Store::open(&state).and_then(|s| s.outbox_len()).unwrap_or(0),
        sim.requests().len(),
    );
    let hinted = Store::open(&state)
        .and_then(|s| s.outbox_after(0, 100_000))
        .map(|rows| rows.iter().filter(|r| r.body.contains("\"hint\":\"callback\"")).count())
        .unwrap_or(0);
    let callbacks = sim.callbacks().len();
    sim.stop().await;
    receiver_stop.cancel();
    let (delivered, bad) = {
        let r = lock(&received);
        (r.valid.len(), r.bad)
    };
    let _ = std::fs::remove_dir_all(&state_dir);
    match outcome {
        Ok(Ok(())) => {
            println!(
                "scenario done: {events} events from {calls} API calls, in {:.1}s; {callbacks} VOD Station callbacks brought {hinted} encode events before their scheduled poll",
                started.elapsed().as_secs_f64()
            );
            println!(
                "the local receiver got {delivered} of the {events} events as signed webhooks{}",
                if bad == 0 {
                    ", every signature valid".to_string()
                } else {
                    format!("; {bad} deliveries had a bad signature")
                }
            );
            Ok(())
        }
        Ok(Err(e)) => Err(runtime("the daemon failed", &e)),
        Err(e) => Err(runtime("the daemon task failed", &e)),
    }
}

fn lock(received: &Mutex<Received>) -> std::sync::MutexGuard<'_, Received> {
    received.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
