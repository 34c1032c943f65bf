//! The daemon: the scheduler loop that polls what is due through the client, applies the
//! results in the engine (state and events in one transaction), and wakes the sinks.
//!
//! `run` is handed its shutdown trigger and its reloads, so tests drive it directly and
//! only `cmd::run` knows about signals.

pub mod engine;
mod replica;
pub mod target;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument as _;

use crate::callbacks::{CallbackGate, LAST_CALLBACK_FACT};
use crate::cluster::ShardSet;
use crate::config::StateConfig;
use crate::config::{Config, Credentials, LogSink};
use crate::event::CloudEvent;
use crate::ncp::{ApiError, CallHistory, NcpClient};
use crate::server::{self, Health, notify};
use crate::sink::log::{self, LineFormat, LogSinkSpec};
use crate::sink::webhook::{self, WebhookSpec};
use crate::status;
use crate::store::{Store, StoreError, WriterLock};
use engine::{Engine, PollResult, PollWindow, now_ms, poll};
use replica::Replica;

/// The whole stop, from SIGTERM to exit, takes at most this long (the promise of SPEC §6,
/// and what `docker stop` waits before it kills).
pub const STOP_DEADLINE: Duration = Duration::from_secs(10);
/// In-flight polls get this much of the stop to answer and be committed; the rest is for
/// the sinks to write what was committed and for the tasks to wind down.
const POLL_STOP_SHARE: Duration = Duration::from_secs(6);
/// What the tasks get after the polls' share, leaving a margin before the deadline.
const TASK_STOP_SHARE: Duration = Duration::from_secs(3);
/// How often the store is checked for watches added by `register --watch`.
const DYNAMIC_WATCH_CHECK: Duration = Duration::from_secs(2);
/// How many polls may be dispatched per allowed concurrent call. Dispatched polls wait at
/// the host's rate limiter and the client bounds concurrent HTTP calls to `max_in_flight`;
/// keeping a few more polls queued at the limiter means a slow commit (a WAL checkpoint's
/// fsync can take a while) never leaves a quota slot unused.
const DISPATCH_AHEAD: usize = 4;
/// Poll results applied in one transaction at most.
const MAX_BATCH: usize = 512;

/// Why the daemon could not run.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// The state store.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The API client could not be built.
    #[error("cannot build the API client: {0}")]
    Client(ApiError),
    /// The health and metrics server could not listen.
    #[error("cannot listen on {addr} ([server] listen): {source}")]
    Listen {
        /// The address.
        addr: std::net::SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// A running daemon did not finish the round `once` asked of it in time.
    #[error("the daemon{} running on this store did not finish the round within {}; it may be far behind its quota: see `ncp-watchd status`", holder.as_ref().map(|h| format!(" ({h})")).unwrap_or_default(), humantime::format_duration(*waited))]
    RoundTimeout {
        /// Who the daemon is (`pid 123`), when known.
        holder: Option<String>,
        /// How long `once` waited.
        waited: Duration,
    },
    /// The callback token could not be read or is not good enough.
    #[error("callbacks: {0}")]
    Callbacks(String),
    /// A webhook sink's secret could not be resolved.
    #[error("sink.webhook `{sink}`: {reason}")]
    Sink {
        /// The sink.
        sink: String,
        /// Why (naming the secret's source, never its value).
        reason: String,
    },
}

/// Resolves every webhook sink's secret.
pub fn webhook_specs(config: &Config) -> Result<Vec<WebhookSpec>, DaemonError> {
    config
        .sinks
        .webhooks
        .iter()
        .map(|w| {
            WebhookSpec::resolve(w).map_err(|reason| DaemonError::Sink {
                sink: w.name.clone(),
                reason,
            })
        })
        .collect()
}

/// Points `gate` at `config`'s callback token (read now) and VOD watches, or turns
/// callbacks off. The token's errors name its source, never its value.
fn configure_callbacks(gate: &CallbackGate, config: &Config) -> Result<(), DaemonError> {
    match &config.callbacks {
        Some(c) => {
            let token = c.vod_token.resolve().map_err(DaemonError::Callbacks)?;
            gate.configure(Some(&token), &config.watches.vods);
        }
        None => gate.configure(None, &[]),
    }
    Ok(())
}

/// Whether two configs run the same sinks (URLs compared without being shown).
fn same_sinks(a: &Config, b: &Config) -> bool {
    let hooks = |c: &Config| -> Vec<String> {
        c.sinks
            .webhooks
            .iter()
            .map(|w| format!("{w:?}{}", w.url.expose()))
            .collect()
    };
    format!("{:?}", a.sinks.logs) == format!("{:?}", b.sinks.logs) && hooks(a) == hooks(b)
}

/// The log sinks of a config, plus any extra ones (the demo's printer).
fn sink_specs(config: &Config, extra: &[LogSinkSpec]) -> Vec<LogSinkSpec> {
    let mut specs: Vec<LogSinkSpec> = config.sinks.logs.iter().map(spec_of).collect();
    specs.extend(extra.iter().cloned());
    specs
}

fn spec_of(l: &LogSink) -> LogSinkSpec {
    LogSinkSpec {
        name: l.name.clone(),
        path: l.path.clone(),
        events: l.events.clone(),
        format: LineFormat::Json,
        shard: None,
    }
}

/// Running sinks and how to stop them.
struct Sinks {
    stop: CancellationToken,
}

fn start_sinks(
    specs: Vec<LogSinkSpec>,
    webhooks: Vec<WebhookSpec>,
    state: &StateConfig,
    wake: &watch::Sender<u64>,
    tracker: &TaskTracker,
) -> Sinks {
    let stop = CancellationToken::new();
    // Each sink's cursor exists before the next poll commits anything: a new sink starts
    // at this moment's end of the outbox, not at whatever its task finds when it first runs.
    match Store::open_for_progress(state) {
        Ok(mut store) => {
            let names = specs
                .iter()
                .map(|s| log::cursor_name(&s.name))
                .chain(webhooks.iter().map(WebhookSpec::cursor_name));
            for name in names {
                if let Err(e) = store.cursor(&name) {
                    tracing::error!(sink = %name, error = %e, "cannot record the sink's starting point");
                }
            }
        }
        Err(e) => tracing::error!(error = %e, "cannot open the state store for the sinks"),
    }
    for spec in specs {
        tracing::info!(sink = %spec.name, output = %spec.path.as_ref().map_or("stdout".to_string(), |p| p.display().to_string()), "log sink started");
        tracker.spawn(log::run(spec, state.clone(), wake.subscribe(), stop.clone()));
    }
    for spec in webhooks {
        tracing::info!(sink = %spec.sink.name, receiver = %spec.sink.url_display, "webhook sink started");
        tracker.spawn(webhook::run(spec, state.clone(), wake.subscribe(), stop.clone()));
    }
    Sinks { stop }
}

/// A reload: the new configuration and the credentials read again with it (a rotated key
/// needs no restart).
#[derive(Debug)]
pub struct Reload {
    /// The new configuration, validated.
    pub config: Config,
    /// The credentials as resolved now.
    pub credentials: Credentials,
}

/// Runs until `shutdown` is cancelled: polls what is due within the limits, commits
/// changes and events, feeds the sinks, applies each config from `reloads`. After the stop,
/// in-flight polls get [`STOP_DEADLINE`] to finish and be committed, and sinks write what
/// was committed.
pub async fn run(
    config: Config,
    credentials: Credentials,
    shutdown: CancellationToken,
    mut reloads: mpsc::UnboundedReceiver<Reload>,
    extra_sinks: Vec<LogSinkSpec>,
) -> Result<(), DaemonError> {
    let webhooks = webhook_specs(&config)?;
    let callbacks = CallbackGate::new();
    configure_callbacks(&callbacks, &config)?;
    // SQLite: one writer per store, for the daemon's whole life (the kernel drops it on
    // any exit). PostgreSQL: any number of replicas, each working the shards it leases.
    let (_lock, mut replica) = match &config.state {
        StateConfig::Postgres(pg) => (None, Some(Replica::join(pg, &config.instance)?)),
        StateConfig::Sqlite { .. } => (Some(WriterLock::acquire(&config.state)?), None),
    };
    let store = Store::open(&config.state)?;
    let state = config.state.clone();
    let mut engine = Engine::open_sharded(config, store, replica.as_ref().map(|_| ShardSet::EMPTY))?;
    let mut credentials = credentials;
    engine.set_account(credentials.access_key.expose());
    // The calls per host and minute, for the status page: one history for the daemon's
    // life, handed to every client a reload builds.
    let calls = Arc::new(CallHistory::default());
    let mut client = NcpClient::new(&engine.config().api, &credentials)
        .map_err(DaemonError::Client)?
        .with_max_host_pause(engine.config().poll.max_backoff)
        .with_call_history(calls.clone());
    let status_source = Arc::new(status::Source::new(
        state.clone(),
        status::View::of(engine.config()),
        calls.clone(),
    ));
    let tracker = TaskTracker::new();
    let (wake, _) = watch::channel(0u64);
    // On a cluster, each shard's part of every sink starts when the shard is taken.
    let mut sinks = match &replica {
        None => start_sinks(
            sink_specs(engine.config(), &extra_sinks),
            webhooks.clone(),
            &state,
            &wake,
            &tracker,
        ),
        Some(_) => Sinks {
            stop: CancellationToken::new(),
        },
    };
    let mut webhooks = webhooks;
    let mut views = match &mut replica {
        Some(r) => {
            client.set_quota_share(0);
            Some(r.start(engine.config().cluster_lease_ttl, &tracker))
        }
        None => None,
    };
    // The server is bound before READY=1, so systemd's "started" means "answering".
    let listen = engine.config().listen;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|source| DaemonError::Listen { addr: listen, source })?;
    let bound = listener
        .local_addr()
        .map_err(|source| DaemonError::Listen { addr: listen, source })?;
    let health = Arc::new(Health::default());
    health.tick();
    // A replica is ready once it holds valid leases (or is a healthy standby). The lease
    // task's verdict reaches /readyz on its own, even while the loop below waits on a
    // store that stopped answering.
    health.set_leases_healthy(replica.is_none());
    // So is a lapse of every lease: the quota share drops to nothing at once (the loop
    // below grows it again, in order, when shards come back).
    if let Some(mut leases) = views.clone() {
        let health = health.clone();
        let gates = client.clone();
        tracker.spawn(async move {
            while leases.changed().await.is_ok() {
                let view = *leases.borrow_and_update();
                health.set_leases_healthy(view.healthy);
                if !view.healthy && view.held.is_empty() && view.draining.is_empty() {
                    gates.set_quota_share(0);
                }
            }
        });
    }
    let server_stop = CancellationToken::new();
    tracker.spawn(server::serve(
        listener,
        health.clone(),
        server::metrics_handle(),
        Some(callbacks.clone()),
        Some(status_source.clone()),
        server_stop.clone(),
    ));
    tracing::info!(address = %bound, "health and metrics server listening on http://{bound}");
    tracing::info!("status page on http://{bound}/ (read-only; JSON at /api/status)");
    if let Some(c) = &engine.config().callbacks {
        tracing::info!(token = %c.vod_token, fallback = %humantime::format_duration(c.fallback_interval), "VOD Station callbacks on: POST /callbacks/vod/<token> on the same listener");
    }
    // When the last callback was recorded in the store, for `status`.
    let mut callback_recorded: Option<i64> = None;
    // Callback hints passed between replicas through the store.
    let mut hints = RelayedHints::default();
    // The key's state passed to and from the holder of the account's shard.
    let mut account_relay = AccountRelay::default();
    // The gauges are there from the start, before /readyz first answers 200.
    let mut gauge_store = Store::open_for_progress(&state).ok();
    update_gauges(&engine, gauge_store.as_ref());
    // The first round: every item due now. /readyz answers 200 once each has been polled.
    let mut first_round: HashSet<Arc<str>> = engine.due_keys(now_ms());
    if first_round.is_empty() {
        health.set_ready();
    }
    notify::ready();
    let mut heartbeat = tokio::time::interval(Duration::from_secs(1));
    let watchdog_every = notify::watchdog_interval();
    let mut last_watchdog = tokio::time::Instant::now();
    let mut gauges_at = tokio::time::Instant::now();
    // The first prune comes a minute in, off the busy start.
    let mut pruned_at = tokio::time::Instant::now();
    let (results_tx, mut results) = mpsc::channel::<PollResult>(1024);
    let mut dynamic_check = tokio::time::interval(DYNAMIC_WATCH_CHECK);
    let mut rounds = Rounds::default();
    tracing::info!(
        pid = std::process::id(),
        items = engine.items().count(),
        state = %state,
        "ncp-watchd running"
    );

    let polls_stop = CancellationToken::new();
    loop {
        dispatch(&mut engine, &client, &results_tx, &tracker, &polls_stop);
        let capacity = engine.in_flight() < engine.config().api.max_in_flight * DISPATCH_AHEAD;
        let sleep = engine
            .next_wakeup()
            .map(|due| Duration::from_millis((due - now_ms()).max(0) as u64))
            .unwrap_or(Duration::from_secs(3600));
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => break,
            Some(first) = results.recv() => {
                let mut batch = vec![first];
                while batch.len() < MAX_BATCH {
                    match results.try_recv() {
                        Ok(r) => batch.push(r),
                        Err(_) => break,
                    }
                }
                if !first_round.is_empty() {
                    for r in &batch {
                        first_round.remove(&r.key);
                    }
                    if first_round.is_empty() {
                        health.set_ready();
                        tracing::info!("first poll round done: ready");
                    }
                }
                rounds.observe(&batch);
                apply(&mut engine, batch, &wake, &health);
                rounds.finish_done(gauge_store.as_mut());
            }
            Ok(()) = async { match views.as_mut() { Some(v) => v.changed().await.map_err(|_| ()), None => Err(()) } } => {
                let view = views.as_mut().map(|v| *v.borrow_and_update()).unwrap_or_default();
                if let Some(r) = replica.as_mut() {
                    let specs = sink_specs(engine.config(), &extra_sinks);
                    r.apply_view(view, &mut engine, &client, &specs, &webhooks, &state, &wake);
                }
            }
            _ = callbacks.notified() => {
                let now = now_ms();
                if callbacks.take() && !engine.hint_vod_list(now) {
                    if replica.is_some() && !engine.config().watches.vods.is_empty() {
                        hints.relay(now, gauge_store.as_mut());
                    } else {
                        tracing::debug!("a VOD Station callback came, but no VOD list is watched");
                    }
                }
            }
            _ = heartbeat.tick() => {
                // The loop's own heartbeat: /healthz and systemd's watchdog hear from it only
                // while it turns.
                health.tick();
                if let Some(r) = replica.as_mut() {
                    r.report_drained();
                    if engine.config().callbacks.is_some() && engine.owns(&target::Target::VodList.subject()) {
                        hints.take_relayed(&mut engine, gauge_store.as_ref());
                    }
                    account_relay.run(&mut engine, gauge_store.as_mut(), &wake, &health);
                }
                // When the last callback came, for `status`: at most one write a second.
                if let Some(at) = callbacks.last_callback_ms().filter(|at| callback_recorded != Some(*at))
                    && let Some(store) = gauge_store.as_mut()
                {
                    match store.set_fact(LAST_CALLBACK_FACT, &at.to_string()) {
                        Ok(()) => callback_recorded = Some(at),
                        Err(e) => tracing::warn!(error = %e, "cannot record when the last callback came"),
                    }
                }
                if let Some(every) = watchdog_every
                    && last_watchdog.elapsed() >= every
                {
                    notify::watchdog();
                    last_watchdog = tokio::time::Instant::now();
                }
                if gauges_at.elapsed() >= GAUGE_EVERY {
                    gauges_at = tokio::time::Instant::now();
                    update_gauges(&engine, gauge_store.as_ref());
                }
                if pruned_at.elapsed() >= PRUNE_EVERY {
                    pruned_at = tokio::time::Instant::now();
                    let cursors = cursor_names(engine.config(), &extra_sinks);
                    prune(gauge_store.as_mut(), &cursors, engine.config().state_retention);
                }
            }
            Some(Reload { config: new_config, credentials: new_credentials }) = reloads.recv() => {
                notify::reloading();
                let keys_changed = new_credentials.access_key.expose() != credentials.access_key.expose()
                    || new_credentials.secret_key.expose() != credentials.secret_key.expose();
                let api_changed = new_config.api != engine.config().api || keys_changed;
                let sinks_changed = !same_sinks(&new_config, engine.config());
                webhooks = match webhook_specs(&new_config) {
                    Ok(mut w) => {
                        // Sinks that keep running keep their one client and in-flight bound,
                        // which the parts started later for shards taken must share.
                        if !sinks_changed {
                            for spec in &mut w {
                                if let Some(old) = webhooks.iter().find(|o| o.sink.name == spec.sink.name) {
                                    spec.share_with(old);
                                }
                            }
                        }
                        w
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "reload refused: the previous configuration keeps running");
                        notify::ready();
                        continue;
                    }
                };
                // The callback token is read again too (a rotated token needs no restart).
                if let Err(e) = configure_callbacks(&callbacks, &new_config) {
                    tracing::error!(error = %e, "reload refused: the previous configuration keeps running");
                    notify::ready();
                    continue;
                }
                // A reload resumes sinks paused by a 410 Gone.
                if let Err(e) = Store::open_for_progress(&state).and_then(|mut s| s.clear_sink_pauses()) {
                    tracing::warn!(error = %e, "cannot lift sink pauses");
                }
                match engine.reconcile(new_config) {
                    Ok(()) => {
                        if api_changed {
                            match NcpClient::new(&engine.config().api, &new_credentials) {
                                Ok(c) => {
                                    client = c
                                        .with_gates_of(&client)
                                        .with_max_host_pause(engine.config().poll.max_backoff)
                                        .with_call_history(calls.clone());
                                    // A replica's new limiters take its share, not the whole quota.
                                    if let Some(r) = &replica {
                                        client.set_quota_share(r.held().len());
                                    }
                                    if keys_changed {
                                        tracing::info!(access_key = %new_credentials.access_key_source, secret_key = %new_credentials.secret_key_source, "credentials read again: the new keys sign from now on");
                                    }
                                    credentials = new_credentials;
                                    engine.set_account(credentials.access_key.expose());
                                    if keys_changed {
                                        engine.retry_refused_now();
                                    }
                                }
                                Err(e) => tracing::error!(error = %e, "cannot rebuild the API client; keeping the old one"),
                            }
                        }
                        if sinks_changed {
                            sinks.stop.cancel();
                            match replica.as_mut() {
                                None => sinks = start_sinks(sink_specs(engine.config(), &extra_sinks), webhooks.clone(), &state, &wake, &tracker),
                                Some(r) => r.restart_sinks(&sink_specs(engine.config(), &extra_sinks), &webhooks, &state, &wake),
                            }
                        }
                        status_source.set_view(status::View::of(engine.config()));
                        tracing::info!(items = engine.items().filter(|i| i.active).count(), "configuration reloaded");
                    }
                    Err(e) => tracing::error!(error = %e, "reload failed while saving; the previous watches keep running"),
                }
                notify::ready();
            }
            _ = dynamic_check.tick() => {
                match engine.load_dynamic_watches() {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(added = n, "picked up watches added by `register --watch`"),
                    Err(e) => tracing::warn!(error = %e, "cannot read dynamic watches"),
                }
                // On a cluster: items other replicas created in this replica's shards (an
                // asset one of their project lists found).
                match engine.pick_up_created() {
                    Ok(0) => {}
                    Ok(n) => tracing::debug!(added = n, "picked up items other replicas created in this replica's shards"),
                    Err(e) => tracing::warn!(error = %e, "cannot read items created by other replicas"),
                }
                rounds.take_requests(&mut engine, gauge_store.as_ref());
                rounds.finish_done(gauge_store.as_mut());
            }
            _ = tokio::time::sleep(sleep), if capacity => {}
        }
    }

    notify::stopping();
    tracing::info!(
        in_flight = engine.in_flight(),
        "stopping: no new polls; waiting for those in flight"
    );
    let stop_started = tokio::time::Instant::now();
    let polls_deadline = stop_started + POLL_STOP_SHARE;
    while engine.in_flight() > 0 {
        tokio::select! {
            Some(r) = results.recv() => apply(&mut engine, vec![r], &wake, &health),
            _ = tokio::time::sleep_until(polls_deadline) => {
                tracing::warn!(abandoned = engine.in_flight(), "polls still in flight at the deadline are abandoned; their items keep their old state");
                break;
            }
        }
    }
    // Polls still out are cancelled (their HTTP calls dropped), so nothing waits on them.
    polls_stop.cancel();
    sinks.stop.cancel();
    if let Some(r) = &replica {
        r.stop_sinks();
    }
    server_stop.cancel();
    drop(gauge_store.take());
    tracker.close();
    let tasks_deadline =
        (tokio::time::Instant::now() + TASK_STOP_SHARE).min(stop_started + STOP_DEADLINE - Duration::from_millis(500));
    let sinks_done = async {
        if let Some(r) = &replica {
            r.sinks_stopped().await;
        }
    };
    if tokio::time::timeout_at(tasks_deadline, sinks_done).await.is_err() {
        tracing::warn!("some sinks did not finish before the deadline; they are dropped with the process");
    }
    // Only once every sink has stopped are the shards handed over, so no event of theirs
    // is in flight here while their next holder delivers it.
    if let Some(r) = replica.take() {
        r.leave();
    }
    if tokio::time::timeout_at(tasks_deadline, tracker.wait()).await.is_err() {
        tracing::warn!("some tasks did not finish before the deadline; they are dropped with the process");
    }
    tracing::info!("stopped");
    Ok(())
}

/// VOD Station callback hints passed between replicas: a callback reaches whichever
/// replica the operator's proxy picks, and only the one holding the VOD list can act on it.
#[derive(Default)]
struct RelayedHints {
    /// When this replica last handed a hint over (epoch ms).
    relayed_ms: Option<i64>,
    /// The newest handed-over hint this replica has taken (epoch ms, at most its time).
    taken_ms: Option<i64>,
    /// The stamp of that hint as written, so one stamp is taken once.
    taken_stamp: Option<i64>,
}

/// A hint handed over longer ago than this when the holder first looks is stale: the
/// list read it asked for has long been done by whoever held the list then.
const RELAYED_HINT_FRESH: Duration = Duration::from_secs(5);

impl RelayedHints {
    /// Hands a hint to the holder of the VOD list: at most one store write per
    /// [`engine::HINT_COALESCE`], however many callbacks come.
    fn relay(&mut self, now: i64, store: Option<&mut Store>) {
        let every = engine::HINT_COALESCE.as_millis() as i64;
        if self.relayed_ms.is_some_and(|t| now - t < every) {
            return;
        }
        let Some(store) = store else { return };
        match store.set_fact(crate::callbacks::VOD_HINT_FACT, &now.to_string()) {
            Ok(()) => {
                self.relayed_ms = Some(now);
                tracing::debug!("a VOD Station callback came to a replica without the VOD list: handed to its holder");
            }
            Err(e) => tracing::warn!(error = %e, "cannot hand a callback's hint to the replica holding the VOD list"),
        }
    }

    /// On the replica holding the VOD list: takes a hint another replica handed over.
    fn take_relayed(&mut self, engine: &mut Engine, store: Option<&Store>) {
        let Some(store) = store else { return };
        let at = match store.fact(crate::callbacks::VOD_HINT_FACT) {
            Ok(v) => v.and_then(|v| v.parse::<i64>().ok()),
            Err(e) => {
                tracing::debug!(error = %e, "cannot read the hints other replicas handed over");
                return;
            }
        };
        let now = now_ms();
        let since = self.taken_ms.unwrap_or(now - RELAYED_HINT_FRESH.as_millis() as i64);
        if let Some(at) = at.filter(|at| *at > since && Some(*at) != self.taken_stamp) {
            // Capped at now: a hint stamped in the future by a replica whose clock runs
            // ahead is taken once and must not hide the hints after it.
            self.taken_ms = Some(at.min(now));
            self.taken_stamp = Some(at);
            if engine.hint_vod_list(now) {
                tracing::debug!("took a VOD Station callback another replica received: the VOD list is due now");
            }
        }
    }
}

/// Rounds that `once` asked of this daemon through the store, being polled.
#[derive(Default)]
struct Rounds {
    /// The newest request taken.
    seen: i64,
    /// Each round in progress: its id, the items still to answer, and the failures so far.
    open: Vec<(i64, HashSet<Arc<str>>, Vec<String>)>,
}

impl Rounds {
    /// Takes the rounds asked for since the last look: every item is due now, and the
    /// round is done when each of them has answered.
    fn take_requests(&mut self, engine: &mut Engine, store: Option<&Store>) {
        let Some(store) = store else { return };
        let ids = match store.open_round_requests(self.seen) {
            Ok(ids) => ids,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the rounds asked for by `once`");
                return;
            }
        };
        for id in ids {
            self.seen = self.seen.max(id);
            engine.schedule_all_now();
            let keys = engine.due_keys(now_ms());
            tracing::info!(
                round = id,
                items = keys.len(),
                "`once` asked for a round: polling every watch now"
            );
            self.open.push((id, keys, Vec::new()));
        }
    }

    fn observe(&mut self, batch: &[PollResult]) {
        for (_, keys, failures) in &mut self.open {
            for r in batch {
                if keys.remove(&r.key)
                    && let Err(e) = &r.outcome
                {
                    failures.push(format!("{}: {e}", r.key));
                }
            }
        }
    }

    /// Records the rounds whose items have all answered (after their results committed).
    fn finish_done(&mut self, store: Option<&mut Store>) {
        if !self.open.iter().any(|(_, keys, _)| keys.is_empty()) {
            return;
        }
        let Some(store) = store else { return };
        self.open.retain(|(id, keys, failures)| {
            if !keys.is_empty() {
                return true;
            }
            if let Err(e) = store.finish_round(*id, failures) {
                tracing::warn!(round = id, error = %e, "cannot record a finished round");
                return true;
            }
            false
        });
    }
}

/// How often the outbox is pruned of events every sink has passed, past the retention.
const PRUNE_EVERY: Duration = Duration::from_secs(60);
/// Outbox rows deleted per statement: short write locks, so commits never wait long.
const PRUNE_BATCH: usize = 1000;
/// Statements per prune: 10,000 rows a minute outpaces any event rate the quota allows.
const PRUNE_BATCHES: usize = 10;

/// The cursor of every sink that runs: the outbox is kept until all of them passed it.
fn cursor_names(config: &Config, extra: &[LogSinkSpec]) -> Vec<String> {
    sink_specs(config, extra)
        .iter()
        .map(|s| log::cursor_name(&s.name))
        .chain(
            config
                .sinks
                .webhooks
                .iter()
                .map(|w| crate::store::webhook_cursor(&w.name)),
        )
        .collect()
}

/// Deletes, in small batches, the outbox events every sink has passed that are older than
/// `retention`.
fn prune(store: Option<&mut Store>, cursors: &[String], retention: Duration) {
    let Some(store) = store else { return };
    let cut = now_ms().saturating_sub(retention.as_millis().min(i64::MAX as u128) as i64);
    let mut total = 0;
    for _ in 0..PRUNE_BATCHES {
        match store.prune_outbox(cursors, cut, PRUNE_BATCH) {
            Ok(n) => {
                total += n;
                if n < PRUNE_BATCH {
                    break;
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot prune the outbox; it grows until the next try");
                break;
            }
        }
    }
    if total > 0 {
        metrics::counter!("ncp_watchd_outbox_pruned_total").increment(total as u64);
        tracing::debug!(
            pruned = total,
            "pruned delivered events past the retention from the outbox"
        );
    }
}

/// How often the gauges (watches, outbox depth, dead letters) are recomputed.
const GAUGE_EVERY: Duration = Duration::from_secs(5);

fn update_gauges(engine: &Engine, store: Option<&Store>) {
    let mut counts: std::collections::HashMap<(&'static str, &'static str), f64> = std::collections::HashMap::new();
    for item in engine.items() {
        let state = if !item.active {
            "removed"
        } else if item.failing {
            "failing"
        } else if item.terminal {
            "final"
        } else {
            "watching"
        };
        *counts.entry((item.target.kind(), state)).or_default() += 1.0;
    }
    for kind in [
        "import",
        "analysis",
        "upload",
        "listing",
        "encode",
        "project_list",
        "vod_list",
    ] {
        for state in ["watching", "final", "failing", "removed"] {
            let n = counts.get(&(kind, state)).copied().unwrap_or(0.0);
            metrics::gauge!("ncp_watchd_watches", "kind" => kind, "state" => state).set(n);
        }
    }
    let Some(store) = store else { return };
    if let Ok(sinks) = store.sink_summaries() {
        let now = now_ms();
        for s in sinks {
            // Labelled by the sink's name, as `ncp_watchd_deliveries_total` is (sink names
            // are unique across kinds; the cursor is `log:NAME` or `webhook:NAME`).
            let name = s
                .cursor_name
                .split_once(':')
                .map_or(s.cursor_name.as_str(), |(_, name)| name)
                .to_string();
            metrics::gauge!("ncp_watchd_outbox_pending", "sink" => name.clone()).set(s.behind as f64);
            metrics::gauge!("ncp_watchd_dead_letters", "sink" => name.clone()).set(s.dead_letters as f64);
            metrics::gauge!("ncp_watchd_sink_paused", "sink" => name.clone()).set(if s.paused.is_some() {
                1.0
            } else {
                0.0
            });
            let age = s.oldest_pending_ms.map_or(0.0, |t| (now - t).max(0) as f64 / 1000.0);
            metrics::gauge!("ncp_watchd_outbox_oldest_pending_seconds", "sink" => name).set(age);
        }
    }
}

/// The store fact through which replicas hand the key's state to the holder of the
/// account's shard: `{"at": ms, "refused": "error" | null}`.
const ACCOUNT_FACT: &str = "account_key_state";

/// On a cluster: hands what this replica's polls say of the key to the holder of the
/// account's shard, and, on that holder, takes it. One bad key is one `account.failing`
/// (SPEC §8) even when the holder has no watch of its own to be refused on. The state lives
/// in the store, so a restart or a hand-over of the account's shard loses nothing: a
/// replica writes when its own view changes (or differs from the store's after a restart),
/// and the holder acts on a state newer than the account's last change, once.
#[derive(Default)]
struct AccountRelay {
    /// The state this replica last wrote (`true`: refused).
    written: Option<bool>,
    /// The stamp of the state this replica last acted on as the holder: a state stamped
    /// ahead by a replica whose clock runs fast stays "newer", and must not be taken again
    /// after the holder's own polls have moved the account on.
    taken: Option<i64>,
}

impl AccountRelay {
    fn run(&mut self, engine: &mut Engine, store: Option<&mut Store>, wake: &watch::Sender<u64>, health: &Health) {
        let Some(store) = store else { return };
        let stored = match store.fact(ACCOUNT_FACT) {
            Ok(v) => v.and_then(|v| serde_json::from_str::<serde_json::Value>(&v).ok()),
            Err(e) => {
                tracing::debug!(error = %e, "cannot read the key's state other replicas handed over");
                return;
            }
        };
        let stored_refused = stored.as_ref().map(|v| !v["refused"].is_null());
        if let Some(mine) = engine.key_seen() {
            let refused = mine.is_some();
            let differs = stored_refused.map_or(refused, |r| r != refused);
            if differs && self.written != Some(refused) {
                let value = serde_json::json!({ "at": now_ms(), "refused": mine }).to_string();
                match store.set_fact(ACCOUNT_FACT, &value) {
                    Ok(()) => {
                        self.written = Some(refused);
                        tracing::debug!(refused, "handed the key's state to the replica holding the account");
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot hand the key's state to the replica holding the account")
                    }
                }
            }
        } else if engine.owns_account()
            && let Some(state) = stored
            && let Some(at) = state["at"].as_i64()
            && self.taken != Some(at)
        {
            let result = engine.apply_relayed_account(state["refused"].as_str(), at);
            if result.is_ok() {
                self.taken = Some(at);
            }
            announce(result, wake, health);
        }
    }
}

fn apply(engine: &mut Engine, batch: Vec<PollResult>, wake: &watch::Sender<u64>, health: &Health) {
    announce(engine.apply(batch), wake, health);
}

/// Logs and counts committed events and wakes the sinks; reports a failed commit.
fn announce(result: Result<Vec<CloudEvent>, StoreError>, wake: &watch::Sender<u64>, health: &Health) {
    // A fenced commit is this replica's lost lease, not a failing store.
    health.store_committed(!matches!(result, Err(ref e) if !matches!(e, StoreError::Fenced { .. })));
    match result {
        Ok(events) => {
            for e in &events {
                metrics::counter!("ncp_watchd_events_total", "type" => e.event_type.clone()).increment(1);
                tracing::info!(event_id = %e.id, subject = %e.subject, r#type = %e.event_type, "event");
            }
            if !events.is_empty() {
                wake.send_modify(|n| *n += 1);
            }
        }
        Err(e @ StoreError::Fenced { .. }) => {
            tracing::warn!(error = %e, "poll results dropped: another replica works these shards now")
        }
        Err(e) => {
            tracing::error!(error = %e, "CANNOT COMMIT poll results: nothing is being recorded (is the disk full?); /readyz is failing, the items will be polled again")
        }
    }
}

/// Starts polls for due items while there is capacity.
fn dispatch(
    engine: &mut Engine,
    client: &NcpClient,
    results: &mpsc::Sender<PollResult>,
    tracker: &TaskTracker,
    stop: &CancellationToken,
) {
    let max = engine.config().api.max_in_flight * DISPATCH_AHEAD;
    while engine.in_flight() < max {
        let Some((key, target)) = engine.next_due(now_ms()) else {
            break;
        };
        let window = window_for(engine, &target);
        let (client, results, stop) = (client.clone(), results.clone(), stop.clone());
        let span = tracing::debug_span!("poll", subject = %target.subject(), kind = target.kind());
        tracker.spawn(
            async move {
                let at_ms = now_ms();
                tokio::select! {
                    outcome = guarded_poll(client, target, window) => {
                        let _ = results.send(PollResult { key, outcome, at_ms }).await;
                    }
                    // Past the stop's share for polls: the answer would not be committed anyway.
                    _ = stop.cancelled() => {}
                }
            }
            .instrument(span),
        );
    }
}

/// Polls `target` in a task of its own, so that a panic (a bug, or an answer nobody
/// foresaw) is one failed poll of one item, retried with backoff, never a stuck item or a
/// dead daemon. The task is awaited here, never left behind.
async fn guarded_poll(
    client: NcpClient,
    target: target::Target,
    window: PollWindow,
) -> Result<engine::Polled, ApiError> {
    let task =
        tokio_util::task::AbortOnDropHandle::new(tokio::spawn(async move { poll(&client, &target, window).await }));
    match task.await {
        Ok(outcome) => outcome,
        Err(e) if e.is_panic() => {
            let panic = e.into_panic();
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "no message".to_string());
            let what = crate::text::scrub(&what).into_owned();
            tracing::error!(panic = %what, "a poll task panicked; the poll counts as failed and is retried");
            Err(ApiError::Transport(format!(
                "the poll failed inside ncp-watchd ({what}); please report it"
            )))
        }
        Err(_) => Err(ApiError::Transport("the poll was cancelled".to_string())),
    }
}

/// The VOD window is worked out only for the VOD list: it looks at every encode item.
fn window_for(engine: &Engine, target: &target::Target) -> PollWindow {
    match target {
        target::Target::VodList => engine.poll_window(),
        _ => PollWindow { vod_from_ms: 0 },
    }
}

/// A round of `once` smaller than this finishes too soon for progress to matter.
const PROGRESS_FROM: u64 = 100;

/// `once`'s progress over a large backlog, on stderr: a bar with an ETA on a terminal, a
/// plain line every tenth of the way otherwise (cron mail, CI logs).
struct Progress {
    bar: Option<indicatif::ProgressBar>,
    total: u64,
    next_line: u64,
    started: std::time::Instant,
}

impl Progress {
    fn new(total: u64) -> Self {
        let terminal = std::io::IsTerminal::is_terminal(&std::io::stderr());
        let bar = (terminal && total >= PROGRESS_FROM).then(|| {
            let bar = indicatif::ProgressBar::new(total);
            let style = indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} polls, {per_sec}, ETA {eta}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar());
            bar.set_style(style);
            bar
        });
        Self {
            bar,
            total,
            next_line: total / 10,
            started: std::time::Instant::now(),
        }
    }

    fn polled(&mut self, done: u64) {
        if let Some(bar) = &self.bar {
            // Items found on the way (a project's new assets) grow the round.
            bar.set_length(self.total.max(done));
            bar.set_position(done);
        } else if self.total >= PROGRESS_FROM && done >= self.next_line && done < self.total {
            let rate = done as f64 / self.started.elapsed().as_secs_f64().max(0.001);
            let left = self.total.saturating_sub(done) as f64 / rate.max(0.001);
            eprintln!(
                "polled {done} of {} ({:.0}/s, about {} left)",
                self.total,
                rate,
                humantime::format_duration(Duration::from_secs(left.round() as u64))
            );
            self.next_line = done + (self.total / 10).max(1);
        }
    }

    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

/// What `once` did.
#[derive(Debug, Default)]
pub struct OnceReport {
    /// The events committed in this run (changes since the last run).
    pub events: Vec<CloudEvent>,
    /// Each failed poll: the item's subject and kind, and why.
    pub failures: Vec<(String, String)>,
    /// Whether some log sink writes to stdout.
    pub stdout_sink: bool,
    /// Webhook sinks whose deliveries failed in this run.
    pub delivery_failures: Vec<String>,
}

/// Polls every active item once (items discovered on the way included), commits the
/// changes, and delivers them to the log sinks.
///
/// When a daemon is running on the same store, `once` never polls or delivers on its own
/// (two writers would detect every change twice): it asks the daemon for a round through
/// the store, waits for it, and reports the events that round committed.
#[allow(
    clippy::expect_used,
    reason = "each expect here states an invariant of our own types, never of input"
)]
pub async fn once(config: Config, credentials: Credentials) -> Result<OnceReport, DaemonError> {
    let webhooks = webhook_specs(&config)?;
    let _lock = match WriterLock::acquire(&config.state) {
        Ok(lock) => lock,
        Err(StoreError::Locked(crate::store::LockError::Held { holder, .. })) => {
            return once_through_daemon(&config, holder).await;
        }
        Err(e) => return Err(e.into()),
    };
    let store = Store::open(&config.state)?;
    let state = config.state.clone();
    let mut engine = Engine::open(config, store)?;
    let client = NcpClient::new(&engine.config().api, &credentials)
        .map_err(DaemonError::Client)?
        .with_max_host_pause(engine.config().poll.max_backoff);
    engine.set_account(credentials.access_key.expose());
    engine.schedule_all_now();
    // On a cluster store each shard's part of a sink has its own cursor.
    let (specs, webhooks) = match &state {
        StateConfig::Postgres(_) => {
            let shards = 0..crate::cluster::SHARDS;
            let logs: Vec<LogSinkSpec> = sink_specs(engine.config(), &[])
                .into_iter()
                .flat_map(|l| {
                    shards.clone().map(move |s| LogSinkSpec {
                        shard: Some(s),
                        ..l.clone()
                    })
                })
                .collect();
            let hooks: Vec<WebhookSpec> = webhooks
                .iter()
                .flat_map(|w| shards.clone().map(|s| w.for_shard(s)))
                .collect();
            (logs, hooks)
        }
        StateConfig::Sqlite { .. } => (sink_specs(engine.config(), &[]), webhooks),
    };
    // Cursors first, so a sink configured since the last run gets this run's events.
    let mut progress = Store::open_for_progress(&state)?;
    for spec in &specs {
        progress.cursor(&log::cursor_name(&crate::store::shard_sink(&spec.name, spec.shard)))?;
    }
    for spec in &webhooks {
        progress.cursor(&spec.cursor_name())?;
    }
    let max = engine.config().api.max_in_flight;
    let mut polled: HashSet<Arc<str>> = HashSet::new();
    let mut running = tokio::task::JoinSet::new();
    let mut report = OnceReport::default();
    let mut shown = Progress::new(engine.due_keys(now_ms()).len() as u64);
    loop {
        while running.len() < max {
            let Some((key, target)) = engine.next_due(now_ms()) else {
                break;
            };
            if !polled.insert(key.clone()) {
                // Polled already in this run (a quick retry after a failure): leave it for the next run.
                engine.release(&key);
                continue;
            }
            let client = client.clone();
            let window = window_for(&engine, &target);
            running.spawn(async move {
                let at_ms = now_ms();
                let outcome = guarded_poll(client, target.clone(), window).await;
                (PollResult { key, outcome, at_ms }, target)
            });
        }
        let Some(done) = running.join_next().await else { break };
        let (result, target) = done.expect("poll tasks do not panic");
        if let Err(e) = &result.outcome {
            report
                .failures
                .push((format!("{} {}", target.kind(), target.subject()), e.to_string()));
        }
        report.events.extend(engine.apply(vec![result])?);
        shown.polled(polled.len() as u64);
    }
    shown.finish();
    report.stdout_sink = specs.iter().any(|s| s.path.is_none());
    for spec in &webhooks {
        let delivered = webhook::deliver_pending(spec, &state).await?;
        if delivered.failed > 0
            && !report
                .delivery_failures
                .iter()
                .any(|f| f.contains(&format!("`{}`", spec.sink.name)))
        {
            report.delivery_failures.push(format!(
                "sink.webhook `{}`: {} delivery attempts to {} failed; they are retried on the next run",
                spec.sink.name, delivered.failed, spec.sink.url_display
            ));
        }
    }
    for spec in specs {
        let mut out = log::open_output(&spec).map_err(|e| DaemonError::Store(sink_error_to_store(e)))?;
        log::drain(&spec, &mut progress, out.as_mut()).map_err(|e| DaemonError::Store(sink_error_to_store(e)))?;
    }
    Ok(report)
}

/// How long `once` waits for a running daemon's round at least; more when the store holds
/// more items than the quota polls in that time.
const ROUND_WAIT_MIN: Duration = Duration::from_secs(60);

/// `once` beside a running daemon: asks it for a round, waits until the round is done,
/// and reports what it committed. The daemon's sinks deliver those events.
async fn once_through_daemon(config: &Config, holder: Option<String>) -> Result<OnceReport, DaemonError> {
    let mut store = Store::open_for_progress(&config.state)?;
    let items = store.pending_items()?.max(0) as u64;
    let per_minute = u64::from(config.api.rate_limit_per_minute.max(1));
    let wait = ROUND_WAIT_MIN + Duration::from_secs(items.saturating_mul(2 * 60) / per_minute);
    let id = store.request_round()?;
    tracing::info!(
        daemon = holder.as_deref().unwrap_or("unknown"),
        round = id,
        "a daemon is running on this store: asking it for a round instead of polling alongside it"
    );
    let deadline = tokio::time::Instant::now() + wait;
    let report = loop {
        if let Some(report) = store.round(id)? {
            break report;
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(DaemonError::RoundTimeout { holder, waited: wait });
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let mut events = Vec::new();
    let mut seq = report.first_seq;
    while seq < report.last_seq {
        let rows = store.outbox_after(seq, 1000)?;
        let Some(last) = rows.last() else { break };
        seq = last.seq;
        events.extend(
            rows.iter()
                .filter(|r| r.seq <= report.last_seq)
                .filter_map(|r| serde_json::from_str::<CloudEvent>(&r.body).ok()),
        );
    }
    Ok(OnceReport {
        events,
        failures: report
            .failures
            .iter()
            .map(|f| match f.split_once(": ") {
                Some((what, why)) => (what.replace(':', " "), why.to_string()),
                None => (f.clone(), String::new()),
            })
            .collect(),
        stdout_sink: false,
        delivery_failures: Vec::new(),
    })
}

fn sink_error_to_store(e: log::SinkError) -> StoreError {
    match e {
        log::SinkError::Store(s) => s,
        log::SinkError::Write { target, source } => StoreError::Directory {
            path: target.into(),
            source,
        },
    }
}
