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

use lru::LruCache;

use crate::balancers::hash::hash_ip;

/// Shards per table: enough that worker threads rarely meet on one lock.
pub const SHARDS: usize = 16;

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
        let i = (hash_ip(ip, false) as usize) % SHARDS;
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
}
