//! A bounded table keyed by client address: shards of LRU lists (the `lru`
//! crate), so insert, lookup and eviction are O(1) whatever the number of
//! distinct sources — a flood of new addresses costs each request one hash,
//! one short lock and at most one eviction, never a scan.
//!
//! Each shard is a `Mutex` held for one map operation; only the request path
//! and the stats' size reads take it. Shards are picked with a fixed-seed hash
//! of the address; within a shard the `lru` crate's own (per-process seeded)
//! hasher keeps attacker-chosen addresses from colliding.

use std::net::IpAddr;
use std::num::NonZeroUsize;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use lru::LruCache;

/// Shards per table: enough that worker threads rarely meet on one lock.
pub const SHARDS: usize = 16;

/// Which shard an address goes to: a multiply-shift over its bits (fixed,
/// so two tables agree; within a shard the map's own hasher is seeded).
fn shard_hash(ip: IpAddr) -> u64 {
    let bits: u128 = match ip {
        IpAddr::V4(a) => u128::from(u32::from(a)),
        IpAddr::V6(a) => u128::from(a),
    };
    let folded = (bits as u64) ^ ((bits >> 64) as u64);
    folded.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32
}

/// Address → `V`, at most about `capacity` entries, least recently used first out.
pub struct SourceTable<V> {
    shards: Box<[Mutex<LruCache<IpAddr, V>>]>,
}

impl<V> std::fmt::Debug for SourceTable<V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SourceTable")
            .field("len", &self.len())
            .finish()
    }
}

impl<V> SourceTable<V> {
    /// A table of `capacity` entries in all (rounded up to a multiple of the shards).
    pub fn new(capacity: usize) -> Self {
        let per = NonZeroUsize::new(capacity.div_ceil(SHARDS).max(1)).unwrap_or(NonZeroUsize::MIN);
        SourceTable {
            shards: (0..SHARDS)
                .map(|_| Mutex::new(LruCache::new(per)))
                .collect(),
        }
    }

    /// The shard holding `ip`, locked.
    pub fn shard(&self, ip: IpAddr) -> MutexGuard<'_, LruCache<IpAddr, V>> {
        let i = (shard_hash(ip) as usize) % SHARDS;
        self.shards[i].lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Entries now (takes every shard's lock in turn: for stats, not per request).
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().map_or(0, |m| m.len()))
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    server: u64,
    seen: Instant,
}

/// Source persistence (`persist = { source = true }`): address → server id, bounded: at `size` entries the least recently
/// seen goes, in O(1) (`crate::table`). Each lock is held for one map operation;
/// no other path takes it.
#[derive(Debug)]
pub struct Sticky {
    table: SourceTable<Entry>,
    size: u32,
}

impl Default for Sticky {
    fn default() -> Self {
        Sticky::new(1)
    }
}

impl Sticky {
    pub fn new(size: u32) -> Self {
        Sticky {
            table: SourceTable::new(size as usize),
            size,
        }
    }

    /// The size it was built for (a reload that changes it builds a new table).
    pub fn size(&self) -> u32 {
        self.size
    }

    /// The server remembered for `ip`, unless the entry is older than `expire`.
    pub fn get(&self, ip: IpAddr, expire: Duration, now: Instant) -> Option<u64> {
        let mut m = self.table.shard(ip);
        match m.peek(&ip) {
            Some(e) if now.saturating_duration_since(e.seen) <= expire => Some(e.server),
            Some(_) => {
                m.pop(&ip);
                None
            }
            None => None,
        }
    }

    /// Remember (or refresh) `ip` → `server`; a full shard drops its least
    /// recently seen entry.
    pub fn put(&self, ip: IpAddr, server: u64, now: Instant) {
        self.table.shard(ip).put(ip, Entry { server, seen: now });
    }

    pub fn len(&self) -> usize {
        self.table.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_and_least_recently_used_out() {
        let t: SourceTable<u32> = SourceTable::new(32);
        for i in 0..10_000u32 {
            let ip = IpAddr::from(i.to_be_bytes());
            t.shard(ip).put(ip, i);
        }
        assert!(t.len() <= 32, "{}", t.len());
        let last = IpAddr::from(9_999u32.to_be_bytes());
        assert_eq!(t.shard(last).get(&last), Some(&9_999));
        let first = IpAddr::from(0u32.to_be_bytes());
        assert_eq!(t.shard(first).get(&first), None);
    }
    #[test]
    fn source_table_expires_and_bounds() {
        let t = Sticky::new(32);
        let now = Instant::now();
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let exp = Duration::from_secs(10);
        assert_eq!(t.get(ip, exp, now), None);
        t.put(ip, 7, now);
        assert_eq!(t.get(ip, exp, now + Duration::from_secs(5)), Some(7));
        assert_eq!(t.get(ip, exp, now + Duration::from_secs(11)), None);
        assert!(t.is_empty());
        // Size bound: never more than size (rounded up to the shards) entries,
        // the most recent kept.
        for i in 0..1000u32 {
            let ip = IpAddr::V4((0x0a00_0000 + i).into());
            t.put(ip, 1, now + Duration::from_millis(u64::from(i)));
        }
        assert!(t.len() <= 32, "{}", t.len());
        let last = IpAddr::V4((0x0a00_0000 + 999u32).into());
        assert_eq!(t.get(last, exp, now + Duration::from_secs(1)), Some(1));
    }
}
