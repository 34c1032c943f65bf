//! Replicas sharing one PostgreSQL store (SPEC §9): shards, leases, the rebalancing
//! between replicas, and each replica's share of the quota.
//!
//! A replica runs [`run`] beside its daemon loop. Once a second it renews its leases,
//! looks at who else is alive, and takes or hands over shards so that each live replica
//! holds its fair number. What it holds is published as a [`View`]; the loop works only
//! those shards. The store fences every commit against the same leases
//! (`store::postgres::set_fence`), so a replica that believes in a lease it lost can never
//! write.

mod shard;

pub use shard::{SHARDS, ShardSet, placing_subject, shard_of};

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::store::StoreError;
use crate::store::postgres::{Fence, Leases, Member, set_fence};

/// How often a replica renews its leases and rebalances: well inside any `lease_ttl`
/// (at least 3 s), and soon enough that a shard given up is taken within a second.
pub const TICK: Duration = Duration::from_secs(1);

/// What a replica may work now.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct View {
    /// The shards it polls, commits and delivers.
    pub held: ShardSet,
    /// Shards being handed over: their sinks finish what is in flight, nothing new starts.
    pub draining: ShardSet,
    /// Whether the last lease round trip succeeded within `lease_ttl` (for `/readyz`).
    pub healthy: bool,
}

/// Who this replica is: a fresh id per process (the lease holder), its instance name,
/// host and pid (what operators see).
pub fn member(instance: &str) -> Member {
    let host = gethostname::gethostname().to_string_lossy().into_owned();
    let pid = std::process::id();
    Member {
        id: format!("{instance}/{pid}/{:08x}", fastrand::u32(..)),
        instance: instance.to_string(),
        host,
        pid: i64::from(pid),
    }
}

/// How many shards the replica at `position` among `live` replicas should hold: an even
/// split, the first replicas (by id) taking one more when it does not divide.
pub fn fair_share(position: usize, live: usize) -> u16 {
    let live = live.max(1);
    let base = usize::from(SHARDS) / live;
    let extra = usize::from(SHARDS) % live;
    (base + usize::from(position < extra)) as u16
}

/// A replica's share of a host's `rate_limit_per_minute` when it holds `held` shards: in
/// proportion, less a reserve of `2 × (burst + 1)` calls that covers the limiter being
/// remade at a share change (a new limiter cannot know the old one's last calls, so up to
/// its burst plus one call more may fall into one window per change). The shares of
/// replicas holding disjoint shards never add up to more than the quota. A share is at
/// least one call a minute, so a quota too small to split (under 200 a minute over many
/// replicas) is best served by one replica. `None`: no share at all (no shard held), so
/// no call is made.
pub fn quota_share(per_minute: u32, held: u16) -> Option<u32> {
    if held == 0 {
        return None;
    }
    let proportional = u64::from(per_minute) * u64::from(held.min(SHARDS)) / u64::from(SHARDS);
    let reserve = 2 * (u64::from(crate::schedule::burst(per_minute)) + 1);
    Some(proportional.saturating_sub(reserve).max(1) as u32)
}

/// The lease loop's own state.
struct Holder {
    leases: Leases,
    me: Member,
    ttl: Duration,
    held: HashMap<u16, i64>,
    draining: HashMap<u16, i64>,
    /// The local deadline of the leases last renewed: past it, nothing is believed held.
    valid_until: Option<std::time::Instant>,
}

impl Holder {
    fn view(&self) -> View {
        View {
            held: ShardSet::of(self.held.keys().copied()),
            draining: ShardSet::of(self.draining.keys().copied()),
            healthy: self.valid_until.is_some_and(|t| t > std::time::Instant::now()),
        }
    }

    fn fence(&self) -> Fence {
        Fence {
            holder: self.me.id.clone(),
            held: self.held.clone(),
            draining: self.draining.clone(),
        }
    }

    /// Forgets every lease (they could not be renewed in time).
    fn drop_all(&mut self) {
        if !self.held.is_empty() || !self.draining.is_empty() {
            tracing::error!(
                shards = %ShardSet::of(self.held.keys().chain(self.draining.keys()).copied()),
                "cannot renew the shard leases in time: this replica stops working its shards until the store answers again"
            );
            metrics::counter!("ncp_watchd_lease_renewals_total", "outcome" => "lost")
                .increment((self.held.len() + self.draining.len()) as u64);
        }
        self.held.clear();
        self.draining.clear();
        self.valid_until = None;
    }

    /// One round: heartbeat, renew, hand over what the loop has drained, take or give
    /// shards toward a fair split.
    fn tick(&mut self, drained: ShardSet) -> Result<(), StoreError> {
        let started = std::time::Instant::now();
        self.leases.heartbeat(&self.me)?;
        let mut all = self.held.clone();
        all.extend(self.draining.iter().map(|(s, e)| (*s, *e)));
        let renewed = self.leases.renew(&self.me.id, &all, self.ttl)?;
        self.valid_until = Some(started + self.ttl);
        let lost: Vec<u16> = all.keys().filter(|s| !renewed.contains_key(s)).copied().collect();
        if !lost.is_empty() {
            tracing::warn!(shards = %ShardSet::of(lost.iter().copied()), "leases lost (expired or taken over): no longer working these shards");
            metrics::counter!("ncp_watchd_lease_renewals_total", "outcome" => "lost").increment(lost.len() as u64);
        }
        metrics::counter!("ncp_watchd_lease_renewals_total", "outcome" => "renewed").increment(renewed.len() as u64);
        self.held.retain(|s, _| renewed.contains_key(s));
        self.draining.retain(|s, _| renewed.contains_key(s));

        // Shards whose sinks have stopped go back to the pool.
        let handed: ShardSet = ShardSet::of(self.draining.keys().copied().filter(|s| drained.contains(*s)));
        if !handed.is_empty() {
            self.leases.release(&self.me.id, handed)?;
            self.draining.retain(|s, _| !handed.contains(*s));
            tracing::info!(shards = %handed, "handed shards over");
        }

        let live = self.leases.live(self.ttl)?;
        let position = live.iter().position(|m| m.id == self.me.id).unwrap_or(live.len());
        let count = live.len().max(position + 1);
        let target = fair_share(position, count);
        let mine = (self.held.len() + self.draining.len()) as u16;
        if mine < target {
            let got = self.leases.acquire(&self.me.id, target - mine, self.ttl)?;
            if !got.is_empty() {
                tracing::info!(shards = %ShardSet::of(got.keys().copied()), "took shards");
                self.held.extend(got);
            }
        } else if self.held.len() as u16 > target {
            // Hand shards over only to a replica that is short and finds none free.
            let holdings = self.leases.holdings()?;
            let held_total: u16 = holdings.values().sum();
            let free = SHARDS.saturating_sub(held_total);
            let short: u16 = live
                .iter()
                .enumerate()
                .map(|(i, m)| fair_share(i, count).saturating_sub(holdings.get(&m.id).copied().unwrap_or(0)))
                .sum();
            if short > free {
                let excess = (self.held.len() as u16 - target).min(short - free);
                let mut shards: Vec<u16> = self.held.keys().copied().collect();
                shards.sort_unstable();
                for s in shards.into_iter().rev().take(usize::from(excess)) {
                    if let Some(epoch) = self.held.remove(&s) {
                        self.draining.insert(s, epoch);
                    }
                }
                tracing::info!(shards = %ShardSet::of(self.draining.keys().copied()), replicas = count, "handing shards over to rebalance");
            }
        }
        Ok(())
    }
}

/// What the loop tells the lease task: the draining shards whose sinks have stopped.
pub type Drained = Arc<Mutex<ShardSet>>;

/// Runs the lease loop until `stop`, publishing what this replica may work on `view`.
/// Leaves the cluster (releasing every lease at once) when stopped.
pub async fn run(
    leases: Leases,
    me: Member,
    ttl: Duration,
    view: watch::Sender<View>,
    drained: Drained,
    stop: CancellationToken,
) {
    let holder = Arc::new(Mutex::new(Holder {
        leases,
        me,
        ttl,
        held: HashMap::new(),
        draining: HashMap::new(),
        valid_until: None,
    }));
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // One round at a time; when the leases run out while a round is stuck (a store that
    // stopped answering without closing the connection), this replica stops working its
    // shards at once, without waiting for the round: others take them when they expire.
    let mut round: Option<tokio::task::JoinHandle<(View, Option<std::time::Instant>)>> = None;
    let mut valid_until: Option<tokio::time::Instant> = None;
    let publish = |v: View| {
        metrics::gauge!("ncp_watchd_shards_owned").set(f64::from(v.held.len()));
        view.send_if_modified(|old| {
            let changed = *old != v;
            *old = v;
            changed
        });
    };
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tick.tick(), if round.is_none() => {
                let done = *drained.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                let h = holder.clone();
                round = Some(tokio::task::spawn_blocking(move || {
                    let mut h = h.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                    let result = h.tick(done);
                    if let Err(e) = &result {
                        tracing::warn!(error = %e, "lease round failed; retrying");
                        metrics::counter!("ncp_watchd_lease_renewals_total", "outcome" => "error").increment(1);
                    }
                    // A round that failed, or took longer than the leases last, leaves
                    // nothing this replica may still work: others may have taken it.
                    if h.valid_until.is_none_or(|t| t <= std::time::Instant::now()) {
                        h.drop_all();
                    }
                    set_fence(Some(h.fence()));
                    (h.view(), h.valid_until)
                }));
            }
            done = async {
                match round.as_mut() {
                    Some(r) => r.await,
                    None => std::future::pending().await,
                }
            }, if round.is_some() => {
                round = None;
                if let Ok((v, until)) = done {
                    valid_until = until.map(tokio::time::Instant::from_std);
                    publish(v);
                }
            }
            _ = tokio::time::sleep_until(valid_until.unwrap_or_else(tokio::time::Instant::now)), if round.is_some() && valid_until.is_some() => {
                valid_until = None;
                tracing::error!("the lease round is stuck past the leases' expiry: working no shard until the store answers");
                publish(View::default());
            }
        }
    }
}

/// Leaves the cluster: every lease released, so the others take the shards on their next
/// round instead of after `lease_ttl`.
pub fn leave(leases: &Leases, me: &Member) {
    set_fence(None);
    match leases.leave(&me.id) {
        Ok(()) => tracing::info!("left the cluster: shards handed over"),
        Err(e) => tracing::warn!(error = %e, "cannot release the leases; the others take them when they expire"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fair_shares_add_up_to_every_shard() {
        for live in 1..=20 {
            let total: u16 = (0..live).map(|i| fair_share(i, live)).sum();
            assert_eq!(total, SHARDS, "{live} replicas");
        }
        assert_eq!(fair_share(0, 3), 6);
        assert_eq!(fair_share(2, 3), 5);
        assert_eq!(fair_share(17, 20), 0);
    }

    #[test]
    fn quota_shares_never_add_up_to_more_than_the_quota() {
        for per_minute in [1u32, 10, 60, 199, 200, 1000, 6000, 60_000] {
            for live in 1..=17usize {
                let total: u64 = (0..live)
                    .filter_map(|i| quota_share(per_minute, fair_share(i, live)))
                    .map(u64::from)
                    .sum();
                let reserves = (0..live).filter(|i| fair_share(*i, live) > 0).count() as u64
                    * 2
                    * (u64::from(crate::schedule::burst(per_minute)) + 1);
                // Each share covers the remade limiter's overshoot with its own reserve,
                // wherever the quota is large enough to split (a share never drops below
                // one call a minute, so a tiny quota over many replicas cannot be split).
                if per_minute >= 200 {
                    assert!(
                        total + reserves <= u64::from(per_minute),
                        "{per_minute}/min over {live}: {total} + {reserves}"
                    );
                }
                assert!(
                    total <= u64::from(per_minute).max(live as u64),
                    "{per_minute}/min over {live}: {total}"
                );
            }
        }
        assert_eq!(quota_share(1000, 0), None);
        assert_eq!(quota_share(6000, SHARDS), Some(6000 - 2 * (2 + 6 + 1)));
    }
}
