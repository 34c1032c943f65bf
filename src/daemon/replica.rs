//! One replica of a cluster sharing a PostgreSQL store (SPEC §9), as the daemon loop sees
//! it: the lease task's [`View`] applied to the engine, the quota share and the sinks.
//!
//! The order of a change is what keeps the promises:
//! - a shard taken: the quota share grows, each sink's cursor for the shard exists, the
//!   shard's sinks start, then the engine loads its items and polls them;
//! - a shard lost or handed over: the quota share shrinks, the engine drops its items, its
//!   sinks are stopped, and only when they have stopped is the shard reported drained, so
//!   the lease task releases it with nothing of it in flight here.

use std::collections::HashMap;
use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::engine::Engine;
use super::{DaemonError, start_sinks};
use crate::cluster::{self, Drained, ShardSet, View};
use crate::config::{PostgresConfig, StateConfig};
use crate::ncp::NcpClient;
use crate::sink::log::LogSinkSpec;
use crate::sink::webhook::WebhookSpec;
use crate::store::postgres::{Leases, Member};

/// A shard's part of the sinks: stopped by its token, finished when its tracker is empty.
struct ShardSinks {
    stop: CancellationToken,
    tracker: TaskTracker,
}

/// This process as a member of the cluster.
pub(super) struct Replica {
    me: Member,
    /// Lease statements for leaving (the lease task has its own handle).
    leases: Leases,
    /// The lease task's handle, until [`Replica::start`] hands it over.
    task_leases: Option<Leases>,
    drained: Drained,
    /// Stops the lease task (after the sinks, when leaving).
    lease_stop: CancellationToken,
    /// The sinks of each shard worked or still finishing.
    sinks: HashMap<u16, ShardSinks>,
    /// What the engine works now.
    held: ShardSet,
}

impl Replica {
    /// Joins the cluster of the store at `pg` as `instance` (its leases come with the
    /// lease task's first rounds).
    pub(super) fn join(pg: &PostgresConfig, instance: &str) -> Result<Self, DaemonError> {
        let me = cluster::member(instance);
        tracing::info!(replica = %me.id, "joining the cluster of replicas sharing the store");
        Ok(Self {
            me,
            leases: Leases::open(pg)?,
            task_leases: Some(Leases::open(pg)?),
            drained: Drained::default(),
            lease_stop: CancellationToken::new(),
            sinks: HashMap::new(),
            held: ShardSet::EMPTY,
        })
    }

    /// Starts the lease task on `tracker`; returns the views it publishes.
    pub(super) fn start(&mut self, ttl: Duration, tracker: &TaskTracker) -> watch::Receiver<View> {
        let (tx, rx) = watch::channel(View::default());
        if let Some(leases) = self.task_leases.take() {
            tracker.spawn(cluster::run(
                leases,
                self.me.clone(),
                ttl,
                tx,
                self.drained.clone(),
                self.lease_stop.clone(),
            ));
        }
        rx
    }

    /// The shards the engine works now.
    pub(super) fn held(&self) -> ShardSet {
        self.held
    }

    /// Applies a new view: see the module's note for the order.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn apply_view(
        &mut self,
        view: View,
        engine: &mut Engine,
        client: &NcpClient,
        logs: &[LogSinkSpec],
        webhooks: &[WebhookSpec],
        state: &StateConfig,
        wake: &watch::Sender<u64>,
    ) {
        let (gained, lost) = (view.held.minus(self.held), self.held.minus(view.held));
        if gained.is_empty() && lost.is_empty() {
            return;
        }
        // Shrink first, grow last: the cluster's shares never add up past the quota.
        if !lost.is_empty() {
            client.set_quota_share(view.held.len());
            for s in lost.iter() {
                if let Some(sinks) = self.sinks.get(&s) {
                    sinks.stop.cancel();
                }
            }
        }
        for s in gained.iter() {
            self.start_shard_sinks(s, logs, webhooks, state, wake);
        }
        match engine.set_shards(view.held) {
            Ok(loaded) => {
                self.held = view.held;
                tracing::info!(
                    shards = %view.held,
                    gained = %gained,
                    lost = %lost,
                    loaded,
                    "working shards"
                );
            }
            Err(e) => {
                // The engine keeps what it had; the next view change tries again.
                tracing::error!(error = %e, "cannot load the items of the shards taken; retrying at the next lease round");
                self.held = engine.shards().unwrap_or(ShardSet::EMPTY);
            }
        }
        client.set_quota_share(self.held.len());
        self.report_drained();
    }

    /// Starts one shard's part of every sink, its cursors made first (so the shard's
    /// first events are after them).
    fn start_shard_sinks(
        &mut self,
        shard: u16,
        logs: &[LogSinkSpec],
        webhooks: &[WebhookSpec],
        state: &StateConfig,
        wake: &watch::Sender<u64>,
    ) {
        if let Some(old) = self.sinks.remove(&shard) {
            old.stop.cancel();
        }
        let logs: Vec<LogSinkSpec> = logs
            .iter()
            .map(|l| LogSinkSpec {
                shard: Some(shard),
                ..l.clone()
            })
            .collect();
        let webhooks: Vec<WebhookSpec> = webhooks.iter().map(|w| w.for_shard(shard)).collect();
        let tracker = TaskTracker::new();
        let started = start_sinks(logs, webhooks, state, wake, &tracker);
        tracker.close();
        self.sinks.insert(
            shard,
            ShardSinks {
                stop: started.stop,
                tracker,
            },
        );
    }

    /// Restarts the sinks of every shard worked (a reload changed the sinks).
    pub(super) fn restart_sinks(
        &mut self,
        logs: &[LogSinkSpec],
        webhooks: &[WebhookSpec],
        state: &StateConfig,
        wake: &watch::Sender<u64>,
    ) {
        for s in self.held.iter() {
            self.start_shard_sinks(s, logs, webhooks, state, wake);
        }
    }

    /// Tells the lease task which shards not worked any more have no sink running.
    pub(super) fn report_drained(&mut self) {
        self.sinks
            .retain(|s, sinks| self.held.contains(*s) || !(sinks.stop.is_cancelled() && sinks.tracker.is_empty()));
        let running = ShardSet::of(self.sinks.keys().copied());
        *self.drained.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = ShardSet::all().minus(running);
    }

    /// Stops every shard's sinks (the daemon is stopping).
    pub(super) fn stop_sinks(&self) {
        for sinks in self.sinks.values() {
            sinks.stop.cancel();
        }
    }

    /// Waits until every shard's sinks have stopped.
    pub(super) async fn sinks_stopped(&self) {
        for sinks in self.sinks.values() {
            sinks.tracker.wait().await;
        }
    }

    /// Leaves the cluster: the lease task stops and every lease is released.
    pub(super) fn leave(self) {
        self.lease_stop.cancel();
        cluster::leave(&self.leases, &self.me);
    }
}
