//! Shard leases and the fence every commit passes (SPEC §9).
//!
//! A lease is a row of `leases`: the shard, its holder, an epoch that grows by one each
//! time the shard changes hands, and an expiry in the server's clock. The holder renews it
//! well inside `lease_ttl`; a lease not renewed in time may be taken by any replica, which
//! raises the epoch. Every time is the server's (`now()`), so replicas' clocks never meet.
//!
//! The fence: this process's leases as it believes them, kept in [`set_fence`]. Every
//! commit of state or events, and every record of a sink's progress in a shard, checks in
//! the same transaction (rows locked `FOR SHARE`) that each shard it touches is still held
//! by this process, at the epoch it believes, unexpired. A replica that was paused past its
//! lease (SIGSTOP, a stall, a partition) finds a raised epoch or an expired lease and its
//! commit is refused whole: it can never write a stale state or an event twice.

use std::collections::HashMap;
use std::sync::RwLock;

use super::{Fail, PgStore, p};
use crate::cluster::{SHARDS, ShardSet};
use crate::config::PostgresConfig;
use crate::store::StoreError;

/// This process's leases: `held` may be committed to, `draining` only has its sinks
/// finish (the shard is being handed over).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Fence {
    /// This replica's id, the `holder` in `leases`.
    pub holder: String,
    /// Shards this replica works, with their epochs.
    pub held: HashMap<u16, i64>,
    /// Shards being handed over: their sinks may still record progress.
    pub draining: HashMap<u16, i64>,
}

static FENCE: RwLock<Option<Fence>> = RwLock::new(None);

/// Sets (or, with `None`, clears) this process's fence. Until it is set, the store is
/// not fenced: commands that only read or leave requests need no lease.
pub fn set_fence(fence: Option<Fence>) {
    *FENCE.write().unwrap_or_else(std::sync::PoisonError::into_inner) = fence;
}

/// This process's fence, if it has one.
pub(super) fn fence() -> Option<Fence> {
    FENCE.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
}

/// Checks, inside `tx`, that every shard in `shards` is held by `fence` at its epoch and
/// unexpired (`sinks`: draining shards count too). The rows stay locked until `tx` ends,
/// so no takeover can slip between the check and the commit.
pub(super) async fn check(
    tx: &tokio_postgres::Transaction<'_>,
    fence: &Fence,
    shards: ShardSet,
    sinks: bool,
) -> Result<(), Fail> {
    if shards.is_empty() {
        return Ok(());
    }
    let wanted: Vec<i32> = shards.iter().map(i32::from).collect();
    let rows = tx
        .query(
            "SELECT shard, holder, epoch, expires_at > clock_timestamp() FROM leases \
             WHERE shard = ANY($1) FOR SHARE",
            &[&wanted],
        )
        .await?;
    let mut refused = Vec::new();
    for shard in shards.iter() {
        let ours = fence
            .held
            .get(&shard)
            .or_else(|| if sinks { fence.draining.get(&shard) } else { None });
        let row = rows.iter().find(|r| r.get::<_, i32>(0) == i32::from(shard));
        let ok = match (ours, row) {
            (Some(epoch), Some(r)) => {
                r.get::<_, Option<String>>(1).as_deref() == Some(fence.holder.as_str())
                    && r.get::<_, i64>(2) == *epoch
                    && r.get::<_, Option<bool>>(3) == Some(true)
            }
            _ => false,
        };
        if !ok {
            refused.push(shard);
        }
    }
    if refused.is_empty() {
        Ok(())
    } else {
        metrics::counter!("ncp_watchd_fenced_commits_total").increment(1);
        Err(Fail::Store(StoreError::Fenced {
            shards: ShardSet::of(refused).to_string(),
        }))
    }
}

/// A replica as the `replicas` table knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// The replica's id (the lease holder).
    pub id: String,
    /// Its `instance`.
    pub instance: String,
    /// Its host.
    pub host: String,
    /// Its process id.
    pub pid: i64,
}

/// What `status` shows of one live replica.
#[derive(Debug, Clone, PartialEq)]
pub struct ReplicaView {
    /// The replica.
    pub member: Member,
    /// The shards it holds.
    pub shards: ShardSet,
    /// How long until its earliest lease expires (milliseconds; negative: expired).
    pub lease_expires_in_ms: Option<i64>,
    /// How long ago it was last heard from (milliseconds).
    pub seen_ms_ago: i64,
}

/// The lease operations of one replica, on the store's pool. Each is one short statement
/// or transaction; the caller (the cluster module) decides when to call which.
pub struct Leases {
    store: PgStore,
}

impl std::fmt::Debug for Leases {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Leases").field("store", &self.store.display).finish()
    }
}

fn ttl_ms(ttl: std::time::Duration) -> f64 {
    ttl.as_secs_f64() * 1000.0
}

fn shard_pairs(rows: &[tokio_postgres::Row]) -> HashMap<u16, i64> {
    rows.iter()
        .filter_map(|r| Some((u16::try_from(r.get::<_, i32>(0)).ok()?, r.get::<_, i64>(1))))
        .filter(|(s, _)| *s < SHARDS)
        .collect()
}

impl Leases {
    /// Opens the store (migrating it) for lease work.
    pub fn open(pg: &PostgresConfig) -> Result<Self, StoreError> {
        Ok(Self {
            store: PgStore::open(pg)?,
        })
    }

    /// The store as an operator names it.
    pub fn describe(&self) -> String {
        self.store.display.clone()
    }

    /// Records that `me` is alive (and, the first time, who it is).
    pub fn heartbeat(&self, me: &Member) -> Result<(), StoreError> {
        self.store.execute(
            "INSERT INTO replicas (id, instance, host, pid, started_at, seen_at) \
             VALUES ($1, $2, $3, $4, now(), now()) \
             ON CONFLICT (id) DO UPDATE SET seen_at = now()",
            vec![p(me.id.clone()), p(me.instance.clone()), p(me.host.clone()), p(me.pid)],
        )?;
        Ok(())
    }

    /// The replicas heard from within `ttl`, by id.
    pub fn live(&self, ttl: std::time::Duration) -> Result<Vec<Member>, StoreError> {
        self.store.query(
            "SELECT id, instance, host, pid FROM replicas \
             WHERE seen_at > now() - make_interval(secs => $1::float8 / 1000) ORDER BY id",
            vec![p(ttl_ms(ttl))],
            |r| Member {
                id: r.get(0),
                instance: r.get(1),
                host: r.get(2),
                pid: r.get(3),
            },
        )
    }

    /// Renews the leases `me` holds at the epochs given; returns those still held (a lease
    /// that expired or changed hands is not renewed).
    pub fn renew(
        &self,
        me: &str,
        held: &HashMap<u16, i64>,
        ttl: std::time::Duration,
    ) -> Result<HashMap<u16, i64>, StoreError> {
        if held.is_empty() {
            return Ok(HashMap::new());
        }
        let shards: Vec<i32> = held.keys().map(|s| i32::from(*s)).collect();
        let epochs: Vec<i64> = held.keys().map(|s| held[s]).collect();
        let me = me.to_string();
        let ttl = ttl_ms(ttl);
        self.store.run(move |c| async move {
            let rows = c
                .query(
                    "UPDATE leases SET expires_at = now() + make_interval(secs => $4::float8 / 1000) \
                     WHERE holder = $1 AND expires_at > now() \
                       AND (shard, epoch) IN (SELECT * FROM unnest($2::int[], $3::bigint[])) \
                     RETURNING shard, epoch",
                    &[&me, &shards, &epochs, &ttl],
                )
                .await?;
            Ok(shard_pairs(&rows))
        })
    }

    /// Takes up to `n` shards that nobody holds (free or expired), raising each one's
    /// epoch; returns them.
    pub fn acquire(&self, me: &str, n: u16, ttl: std::time::Duration) -> Result<HashMap<u16, i64>, StoreError> {
        if n == 0 {
            return Ok(HashMap::new());
        }
        let me = me.to_string();
        let ttl = ttl_ms(ttl);
        let n = i64::from(n);
        self.store.run(move |c| async move {
            let rows = c
                .query(
                    "UPDATE leases SET holder = $1, epoch = epoch + 1, acquired_at = now(), \
                       expires_at = now() + make_interval(secs => $3::float8 / 1000) \
                     WHERE shard IN (SELECT shard FROM leases \
                                     WHERE holder IS NULL OR expires_at IS NULL OR expires_at <= now() \
                                     ORDER BY shard LIMIT $2 FOR UPDATE SKIP LOCKED) \
                     RETURNING shard, epoch",
                    &[&me, &n, &ttl],
                )
                .await?;
            Ok(shard_pairs(&rows))
        })
    }

    /// Gives back `shards` (a clean hand-over): another replica may take them at once.
    pub fn release(&self, me: &str, shards: ShardSet) -> Result<(), StoreError> {
        if shards.is_empty() {
            return Ok(());
        }
        let list: Vec<i32> = shards.iter().map(i32::from).collect();
        self.store.execute(
            "UPDATE leases SET holder = NULL, expires_at = now() WHERE holder = $1 AND shard = ANY($2)",
            vec![p(me.to_string()), p(list)],
        )?;
        Ok(())
    }

    /// Leaves the cluster: every lease of `me` released and its row gone, so the others
    /// rebalance on their next tick instead of waiting for the leases to expire.
    pub fn leave(&self, me: &str) -> Result<(), StoreError> {
        self.release(me, ShardSet::all())?;
        self.store
            .execute("DELETE FROM replicas WHERE id = $1", vec![p(me.to_string())])?;
        Ok(())
    }

    /// How many unexpired leases each holder has.
    pub fn holdings(&self) -> Result<HashMap<String, u16>, StoreError> {
        let rows = self.store.query(
            "SELECT holder, COUNT(*) FROM leases WHERE holder IS NOT NULL AND expires_at > now() GROUP BY holder",
            vec![],
            |r| (r.get::<_, String>(0), r.get::<_, i64>(1)),
        )?;
        Ok(rows
            .into_iter()
            .map(|(h, n)| (h, u16::try_from(n).unwrap_or(u16::MAX)))
            .collect())
    }

    /// Forgets replicas not heard from for a day (their leases long expired).
    pub fn forget_departed(&self) -> Result<(), StoreError> {
        self.store
            .execute("DELETE FROM replicas WHERE seen_at < now() - interval '1 day'", vec![])?;
        Ok(())
    }
}

/// Every live replica (heard from within `ttl`) with its shards and lease age, for
/// `status`, `/api/status` and the status page.
pub fn replicas(store: &PgStore, ttl: std::time::Duration) -> Result<Vec<ReplicaView>, StoreError> {
    let rows = store.query(
        "SELECT r.id, r.instance, r.host, r.pid, \
           (EXTRACT(EPOCH FROM (now() - r.seen_at)) * 1000)::bigint, \
           COALESCE(array_agg(l.shard ORDER BY l.shard) FILTER (WHERE l.shard IS NOT NULL), '{}'), \
           (EXTRACT(EPOCH FROM (MIN(l.expires_at) - now())) * 1000)::bigint \
         FROM replicas r LEFT JOIN leases l ON l.holder = r.id AND l.expires_at > now() \
         WHERE r.seen_at > now() - make_interval(secs => $1::float8 / 1000) \
         GROUP BY r.id, r.instance, r.host, r.pid, r.seen_at ORDER BY r.instance, r.id",
        vec![p(ttl_ms(ttl))],
        |r| ReplicaView {
            member: Member {
                id: r.get(0),
                instance: r.get(1),
                host: r.get(2),
                pid: r.get(3),
            },
            seen_ms_ago: r.get(4),
            shards: ShardSet::of(
                r.get::<_, Vec<i32>>(5)
                    .into_iter()
                    .filter_map(|s| u16::try_from(s).ok()),
            ),
            lease_expires_in_ms: r.get(6),
        },
    )?;
    Ok(rows)
}
