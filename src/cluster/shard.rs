//! Shards: which part of the work a subject belongs to (SPEC §9).
//!
//! The work is split into [`SHARDS`] shards by a hash of the subject. Everything one poll
//! touches must be in one shard, so that one lease fences the whole commit: the items a
//! list feeds (the assets a project list finds, the encodes of the VOD status list) count
//! as their list's subject. Everything else — a video asset's import and analysis, a
//! search image, an account — is its own subject.

use sha2::{Digest, Sha256};

/// How many shards the work is split into. Fixed: changing it would move almost every
/// subject to another shard. Sixteen lets up to sixteen replicas share the work (more are
/// standbys) and keeps each replica's per-shard sink tasks few.
pub const SHARDS: u16 = 16;

/// A set of shards, one bit each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub struct ShardSet(u64);

impl ShardSet {
    /// No shard.
    pub const EMPTY: Self = Self(0);

    /// Every shard.
    pub fn all() -> Self {
        Self((1u64 << SHARDS) - 1)
    }

    /// The set of the given shards (out-of-range numbers are ignored).
    pub fn of(shards: impl IntoIterator<Item = u16>) -> Self {
        let mut set = Self::EMPTY;
        for s in shards {
            set.insert(s);
        }
        set
    }

    /// Adds `shard`.
    pub fn insert(&mut self, shard: u16) {
        if shard < SHARDS {
            self.0 |= 1 << shard;
        }
    }

    /// Whether `shard` is in the set.
    pub fn contains(self, shard: u16) -> bool {
        shard < SHARDS && self.0 & (1 << shard) != 0
    }

    /// How many shards the set holds.
    pub fn len(self) -> u16 {
        self.0.count_ones() as u16
    }

    /// Whether the set is empty.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The shards in `self` and not in `other`.
    pub fn minus(self, other: Self) -> Self {
        Self(self.0 & !other.0)
    }

    /// The set as a bit mask (bit `n` for shard `n`), as the store keeps it.
    pub fn bits(self) -> i64 {
        self.0 as i64
    }

    /// The shards, in order.
    pub fn iter(self) -> impl Iterator<Item = u16> {
        (0..SHARDS).filter(move |s| self.contains(*s))
    }
}

impl std::fmt::Display for ShardSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let list: Vec<String> = self.iter().map(|s| s.to_string()).collect();
        write!(f, "[{}]", list.join(","))
    }
}

/// The subject whose hash places `subject`: its list's, for what a list feeds.
pub fn placing_subject(subject: &str) -> &str {
    // Encodes (`vodstation/categories/…`) are fed by the one VOD status list.
    if subject == "vodstation" || subject.starts_with("vodstation/") {
        return "vodstation";
    }
    // A project's listed assets (`workspaces/W/projects/P/assets/A`) are fed by its list.
    let mut parts = subject.splitn(6, '/');
    if let (Some("workspaces"), Some(_), Some("projects"), Some(_), Some("assets")) =
        (parts.next(), parts.next(), parts.next(), parts.next(), parts.next())
        && let Some(cut) = subject.find("/assets/")
    {
        return &subject[..cut];
    }
    subject
}

/// The shard of `subject`: the first eight bytes of the SHA-256 of its placing subject,
/// big-endian, modulo [`SHARDS`]. Stable across versions, platforms and processes.
pub fn shard_of(subject: &str) -> u16 {
    let digest = Sha256::digest(placing_subject(subject).as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    (u64::from_be_bytes(first) % u64::from(SHARDS)) as u16
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_a_list_feeds_lives_in_the_lists_shard() {
        let project = "workspaces/ws/projects/12";
        assert_eq!(shard_of("workspaces/ws/projects/12/assets/99"), shard_of(project));
        assert_eq!(
            placing_subject("vodstation/categories/7/files/a/b.mp4/outputs/hls"),
            "vodstation"
        );
        assert_eq!(
            placing_subject("workspaces/ws/projects/12/video-assets/99"),
            "workspaces/ws/projects/12/video-assets/99"
        );
        // A file path holding `/assets/` is still the VOD list's.
        assert_eq!(
            placing_subject("vodstation/categories/1/files/x/assets/y/outputs/hls"),
            "vodstation"
        );
    }

    #[test]
    fn the_hash_is_the_documented_one() {
        // SHA-256("accounts/AKIA1234") = 5e0c…, written out so a change of function fails here.
        let digest = Sha256::digest(b"accounts/AKIA1234");
        let expected = (u64::from_be_bytes(digest[..8].try_into().unwrap()) % 16) as u16;
        assert_eq!(shard_of("accounts/AKIA1234"), expected);
        assert!(shard_of("query-assets/x.jpg") < SHARDS);
    }

    #[test]
    fn subjects_spread_over_every_shard() {
        let mut counts = [0u32; SHARDS as usize];
        for i in 0..10_000 {
            counts[shard_of(&format!("workspaces/w/projects/1/video-assets/{i}")) as usize] += 1;
        }
        // 625 each on average; a fair hash stays well within a fifth of that.
        assert!(counts.iter().all(|&c| (500..=750).contains(&c)), "{counts:?}");
    }

    #[test]
    fn sets_hold_what_was_put_in() {
        let set = ShardSet::of([0, 3, 15, 16, 99]);
        assert_eq!(set.iter().collect::<Vec<_>>(), vec![0, 3, 15]);
        assert_eq!(set.len(), 3);
        assert_eq!(ShardSet::all().len(), SHARDS);
        assert_eq!(ShardSet::all().minus(set).len(), SHARDS - 3);
        assert_eq!(set.to_string(), "[0,3,15]");
    }
}
