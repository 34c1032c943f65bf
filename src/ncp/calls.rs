//! How many calls went to each NCP host in each of the last 60 minutes, for the status
//! page's chart of calls against the quota.
//!
//! The client records every request it sends ([`CallHistory::record`]); the history lives
//! in memory only, one fixed ring of 60 one-minute slots per host, so it costs the same
//! however long the daemon runs and however many calls it makes.

use std::sync::Mutex;

use super::Host;

/// Minutes kept per host.
pub const MINUTES: usize = 60;

/// A slot of the ring: which minute (since the epoch) it counts, and how many calls.
#[derive(Debug, Clone, Copy, Default)]
struct Slot {
    minute: i64,
    calls: u32,
}

/// Calls per minute per host over the last hour. Shared (in an `Arc`) by every client the
/// daemon builds, so a reload that rebuilds the client keeps the history.
#[derive(Debug)]
pub struct CallHistory {
    /// Media Intelligence's ring, then VOD Station's, indexed by minute modulo [`MINUTES`].
    rings: Mutex<[[Slot; MINUTES]; 2]>,
}

impl Default for CallHistory {
    fn default() -> Self {
        Self {
            rings: Mutex::new([[Slot::default(); MINUTES]; 2]),
        }
    }
}

fn index(host: Host) -> usize {
    match host {
        Host::Media => 0,
        Host::Vod => 1,
    }
}

impl CallHistory {
    /// Counts one call to `host` sent at `at_ms` (epoch milliseconds).
    pub fn record(&self, host: Host, at_ms: i64) {
        let minute = at_ms.div_euclid(60_000);
        let mut rings = self.rings.lock().unwrap_or_else(|e| e.into_inner());
        let slot = &mut rings[index(host)][minute.rem_euclid(MINUTES as i64) as usize];
        if slot.minute != minute {
            *slot = Slot { minute, calls: 0 };
        }
        slot.calls = slot.calls.saturating_add(1);
    }

    /// The calls to `host` in each of the [`MINUTES`] minutes up to and including the one
    /// holding `now_ms`, oldest first (the last entry is the minute in progress).
    pub fn per_minute(&self, host: Host, now_ms: i64) -> Vec<u32> {
        let now = now_ms.div_euclid(60_000);
        let rings = self.rings.lock().unwrap_or_else(|e| e.into_inner());
        let ring = &rings[index(host)];
        (now - MINUTES as i64 + 1..=now)
            .map(|minute| {
                let slot = ring[minute.rem_euclid(MINUTES as i64) as usize];
                if slot.minute == minute { slot.calls } else { 0 }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_are_counted_per_host_and_minute_and_forgotten_after_an_hour() {
        let h = CallHistory::default();
        let t0 = 1_800_000_000_000; // a minute boundary
        h.record(Host::Media, t0);
        h.record(Host::Media, t0 + 59_999);
        h.record(Host::Media, t0 + 60_000);
        h.record(Host::Vod, t0 + 1);
        let media = h.per_minute(Host::Media, t0 + 60_000);
        assert_eq!(media.len(), MINUTES);
        assert_eq!(&media[MINUTES - 2..], &[2, 1]);
        assert_eq!(media.iter().sum::<u32>(), 3);
        assert_eq!(h.per_minute(Host::Vod, t0 + 60_000)[MINUTES - 2], 1);
        // An hour later the old minutes are gone, though their slots were never reused.
        let later = h.per_minute(Host::Media, t0 + 60 * 60_000 + 1);
        assert_eq!(later.iter().sum::<u32>(), 1, "only the minute t0+1m is within the hour");
        // A slot reused by a later minute starts from zero.
        h.record(Host::Media, t0 + 60 * 60_000);
        assert_eq!(*h.per_minute(Host::Media, t0 + 60 * 60_000).last().unwrap(), 1);
    }
}
