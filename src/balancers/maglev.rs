//! The consistent table behind every hash algorithm (sh, dh, uri, url_param):
//! Maglev hashing (Eisenbud et al., NSDI 2016), weighted.
//!
//! Each server with weight > 0 claims table slots along its own permutation of the
//! table, in turns proportional to its weight, until every slot is taken; a key
//! goes to the server of slot `hash % M`. Servers are ordered by name before the
//! fill, so two instances given the same servers (in any order) build the same
//! table and agree on every key. Removing one of N servers moves about 1/N of the
//! keys. The table size `M` is a prime that depends only on the size class of N
//! (so removing a server does not resize the table): 4093 slots up to 40 servers
//! (16 KiB), 65521 up to 650 (256 KiB), 1048573 beyond (4 MiB), at least 100 slots
//! per server so weights are honoured within about 1 %. Built once per snapshot.
//!
//! At pick time a server that is unavailable (down, draining, full), the one to
//! avoid, or — with bounded loads — one above `factor × average in-flight` is passed
//! over by walking to the next slots; the walk is deterministic per key, so the
//! rest of the keys never move.

use super::hash::{hash_bytes, mix};
use crate::server::Server;

/// Slots walked before falling back to a scan of the servers.
const WALK: usize = 64;

#[derive(Debug)]
pub struct Maglev {
    table: Box<[u32]>,
    /// Servers that had weight at build time (the denominator of the bound).
    weighted: u32,
    /// `hash_balance_factor` as a fraction of 100 (125 = 1.25); 0 = unbounded.
    factor_pct: u32,
}

fn is_prime(n: usize) -> bool {
    n >= 2
        && (2..)
            .take_while(|d| d * d <= n)
            .all(|d| !n.is_multiple_of(d))
}

fn table_size(n: usize) -> usize {
    let mut m = match n {
        0..=40 => 4093,
        41..=650 => 65521,
        _ => 1_048_573,
    };
    while !is_prime(m) {
        m += 1;
    }
    m
}

impl Maglev {
    /// Build over `servers`; `factor` is the bounded-load factor (≥ 1), if any.
    pub fn new(servers: &[Server], factor: Option<f64>) -> Maglev {
        let mut order: Vec<usize> = (0..servers.len())
            .filter(|&i| servers[i].weight > 0)
            .collect();
        order.sort_by(|&a, &b| servers[a].name.cmp(&servers[b].name));
        let factor_pct = factor.map_or(0, |f| (f * 100.0).round() as u32);
        if order.is_empty() {
            return Maglev {
                table: Box::new([]),
                weighted: 0,
                factor_pct,
            };
        }
        let m = table_size(order.len());
        let perm: Vec<(usize, usize)> = order
            .iter()
            .map(|&i| {
                let name = servers[i].name.as_bytes();
                let offset = (hash_bytes(1, name) % m as u64) as usize;
                let skip = (hash_bytes(2, name) % (m as u64 - 1)) as usize + 1;
                (offset, skip)
            })
            .collect();
        let wmax = order.iter().map(|&i| servers[i].weight).max().unwrap_or(1);
        let mut table = vec![u32::MAX; m];
        let mut next = vec![0usize; order.len()];
        let mut credit = vec![0u32; order.len()];
        let mut filled = 0;
        'fill: loop {
            for (k, &i) in order.iter().enumerate() {
                credit[k] += servers[i].weight;
                while credit[k] >= wmax {
                    credit[k] -= wmax;
                    let (offset, skip) = perm[k];
                    let mut slot = (offset + next[k] * skip) % m;
                    while table[slot] != u32::MAX {
                        next[k] += 1;
                        slot = (offset + next[k] * skip) % m;
                    }
                    table[slot] = i as u32;
                    next[k] += 1;
                    filled += 1;
                    if filled == m {
                        break 'fill;
                    }
                }
            }
        }
        Maglev {
            table: table.into_boxed_slice(),
            weighted: order.len() as u32,
            factor_pct,
        }
    }

    /// Largest in-flight count a server may have before the bound passes it over.
    #[inline]
    fn cap(&self, servers: &[Server]) -> u32 {
        if self.factor_pct == 0 {
            return u32::MAX;
        }
        let total = servers.first().map_or(0, |s| s.state.pool().inflight()) as u64 + 1;
        // ceil(factor × (total + 1) / n), in integers.
        let cap = (total * self.factor_pct as u64).div_ceil(100 * self.weighted.max(1) as u64);
        cap.max(1) as u32
    }

    /// The server for `key`, skipping unavailable ones, `avoid` (if anything else
    /// is available) and, with a bound, servers at their bounded load.
    #[inline]
    pub fn lookup(&self, servers: &[Server], key: u64, avoid: Option<usize>) -> Option<usize> {
        let m = self.table.len();
        if m == 0 {
            return None;
        }
        let cap = self.cap(servers);
        let start = (mix(key) % m as u64) as usize;
        let mut fallback = None;
        for k in 0..WALK.min(m) {
            let i = self.table[(start + k) % m] as usize;
            let s = &servers[i];
            if !s.eligible() {
                continue;
            }
            if Some(i) == avoid || s.state.inflight() >= cap {
                fallback = fallback.or(Some(i));
                continue;
            }
            return Some(i);
        }
        // Most servers unavailable or at the bound: scan, from a key-dependent start.
        let n = servers.len();
        for k in 0..n {
            let i = (start + k) % n;
            let s = &servers[i];
            if s.weight > 0 && s.eligible() {
                if Some(i) == avoid || s.state.inflight() >= cap {
                    fallback = fallback.or(Some(i));
                    continue;
                }
                return Some(i);
            }
        }
        fallback
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balancers::testing::servers_named;
    use crate::server::Status;

    fn keys() -> impl Iterator<Item = u64> {
        (0..100_000u64).map(|k| hash_bytes(9, &k.to_le_bytes()))
    }

    #[test]
    fn spreads_by_weight() {
        let s = servers_named(&[("a", 1), ("b", 2), ("c", 1), ("z", 0)]);
        let t = Maglev::new(&s, None);
        let mut count = [0usize; 4];
        for k in keys() {
            count[t.lookup(&s, k, None).unwrap()] += 1;
        }
        assert_eq!(count[3], 0, "weight 0 gets nothing");
        let share = |i: usize| count[i] as f64 / 100_000.0;
        assert!((share(0) - 0.25).abs() < 0.02, "{count:?}");
        assert!((share(1) - 0.50).abs() < 0.02, "{count:?}");
        assert!((share(2) - 0.25).abs() < 0.02, "{count:?}");
    }

    #[test]
    fn removing_one_of_ten_moves_about_a_tenth() {
        let names: Vec<(String, u32)> = (0..10).map(|i| (format!("srv{i}"), 1)).collect();
        let all: Vec<(&str, u32)> = names.iter().map(|(n, w)| (n.as_str(), *w)).collect();
        let s10 = servers_named(&all);
        let s9 = servers_named(&all[..9]);
        let (t10, t9) = (Maglev::new(&s10, None), Maglev::new(&s9, None));
        let moved = keys()
            .filter(|&k| {
                let before = &s10[t10.lookup(&s10, k, None).unwrap()].name;
                let after = &s9[t9.lookup(&s9, k, None).unwrap()].name;
                before != after
            })
            .count();
        let frac = moved as f64 / 100_000.0;
        assert!((0.08..0.14).contains(&frac), "moved {frac}");
    }

    #[test]
    fn the_first_slots_are_golden() {
        // Fixed values: two instances, and two versions, must build the same
        // table. A change here moves clients between servers on upgrade.
        let s = servers_named(&[("a", 1), ("b", 2), ("c", 1)]);
        let t = Maglev::new(&s, None);
        assert_eq!(
            t.table[..16],
            [0, 2, 0, 1, 2, 1, 1, 2, 0, 0, 1, 0, 1, 1, 1, 0]
        );
    }

    #[test]
    fn independent_builds_agree_whatever_the_order() {
        let a = servers_named(&[("x", 1), ("y", 3), ("z", 2)]);
        let b = servers_named(&[("z", 2), ("x", 1), ("y", 3)]);
        let (ta, tb) = (Maglev::new(&a, None), Maglev::new(&b, None));
        for k in keys().take(20_000) {
            assert_eq!(
                a[ta.lookup(&a, k, None).unwrap()].name,
                b[tb.lookup(&b, k, None).unwrap()].name
            );
        }
    }

    #[test]
    fn a_down_server_moves_only_its_own_keys() {
        let s = servers_named(&[("a", 1), ("b", 1), ("c", 1), ("d", 1)]);
        let t = Maglev::new(&s, None);
        let before: Vec<usize> = keys()
            .take(20_000)
            .map(|k| t.lookup(&s, k, None).unwrap())
            .collect();
        s[1].state.set_status(Status::Down);
        for (k, b) in keys().take(20_000).zip(before) {
            let now = t.lookup(&s, k, None).unwrap();
            assert_ne!(now, 1);
            if b != 1 {
                assert_eq!(now, b);
            }
        }
    }

    #[test]
    fn bounded_load_walks_past_a_hot_server() {
        let s = servers_named(&[("a", 1), ("b", 1), ("c", 1), ("d", 1)]);
        let t = Maglev::new(&s, Some(1.25));
        let key = keys().next().unwrap();
        let home = t.lookup(&s, key, None).unwrap();
        // 8 in flight over 4 servers, all on `home`: cap = ceil(1.25 × 9 / 4) = 3.
        s[home].state.set_inflight(8);
        let other = t.lookup(&s, key, None).unwrap();
        assert_ne!(other, home);
        // Unbounded, the key stays home however loaded it is.
        let t2 = Maglev::new(&s, None);
        assert_eq!(t2.lookup(&s, key, None), Some(home));
    }
}
