//! The least-loaded scan shared by `lc`, `wlc`, `lblc` and `lblcr`: under 1 ns
//! per server, so a pick over 100 servers stays under 100 ns.
//!
//! How: the balancer keeps its servers' live states in one compact array (built
//! with the snapshot), each server's state is one atomic word whose unusable
//! flags sit above its in-flight count (`server.rs`), and the scan turns every
//! word into one integer holding the load key, a rotation bit and the server's
//! index, with a few branch-free operations, reduced by four independent
//! minimums (no loop-carried compare chain, no unpredictable branch). Ties
//! rotate: the rotation bit says whether the server comes before the rotating
//! start, so the minimum is the first least-loaded server at or after the start.
//!
//! `wlc`'s key is exact: `⌊(in-flight + 1) × 2^16 / weight⌋`, computed as
//! `(in-flight + 1) × ⌈2^48 / weight⌉ >> 32` (one multiply; the rounding of the
//! reciprocal stays below 2^-16, too small to move the floor). Equal ratios give
//! equal keys (ties rotate); different ratios differ by at least 1/(w1×w2) ≥
//! 2^-16 for weights up to 256 (the maximum), so their keys differ, in order: the
//! same order as the cross-multiplication `(a+1)×wb < (b+1)×wa`, for up to 65534
//! in flight per server (beyond, the count is taken as 65534).
//!
//! The fast scan does not look at `maxconn` or `avoid`; when one of them matters
//! (a retry, or the winner is full) the caller falls back to the exact scan.

use std::sync::Arc;

use crate::server::{INFLIGHT_SHIFT, Load, Server, ServerState, UNUSABLE_MASK};

/// `wlc`'s key of an unusable server (usable keys are below it).
const UNUSABLE: u64 = 1 << 42;
/// `lc`'s keys at or above this are unusable servers (a flag bit is set).
pub(crate) const LC_LIMIT: u64 = 1 << 32;
pub(crate) const WLC_LIMIT: u64 = UNUSABLE;
/// Bits of the packed scan value below the key: rotation bit, then the index.
const IDX_BITS: u32 = 16;
const PACK: u32 = IDX_BITS + 1;
/// The fast scan handles backends up to this many servers.
const MAX_SERVERS: usize = 1 << IDX_BITS;
/// `in-flight + 1` is capped here inside `wlc` keys (keeps the product in 64 bits).
const LOAD_CAP: u64 = (1 << 16) - 1;
/// The reciprocal table covers every 9-bit weight (effective weights are at most 256).
const TABLE_MAX: usize = 511;

/// `R[w] = ⌈2^48 / w⌉` for every 9-bit w (`R[0]` is never used: weight 0 is flagged).
const RECIP: [u64; TABLE_MAX + 1] = recip_table();

const fn recip_table() -> [u64; TABLE_MAX + 1] {
    let mut t = [0u64; TABLE_MAX + 1];
    let mut w = 1;
    while w <= TABLE_MAX {
        t[w] = (1u64 << 48).div_ceil(w as u64);
        w += 1;
    }
    t
}

/// `lc`'s key for one state word: the in-flight count, with the unusable flags
/// above it (so any flag makes the key at least `LC_LIMIT`).
#[inline(always)]
pub(crate) fn lc_key(raw: u64) -> u64 {
    raw >> INFLIGHT_SHIFT
}

/// `wlc`'s key for one state word: `⌊(in-flight + 1) × 2^16 / weight⌋`, or `UNUSABLE`.
#[inline(always)]
pub(crate) fn wlc_key(raw: u64) -> u64 {
    let a = (((raw >> INFLIGHT_SHIFT) & 0xffff_ffff) + 1).min(LOAD_CAP);
    // Effective weights are capped at 256 (`server.rs`), so 9 bits index the table.
    let key = (a * RECIP[(raw & TABLE_MAX as u64) as usize]) >> 32;
    if raw & UNUSABLE_MASK != 0 {
        UNUSABLE
    } else {
        key
    }
}

/// A balancer's compact view of its servers' live states.
#[derive(Debug)]
pub(crate) struct Least {
    states: Box<[Arc<ServerState>]>,
}

impl Least {
    pub fn new(servers: &[Server]) -> Least {
        Least {
            states: servers.iter().map(|s| s.state.clone()).collect(),
        }
    }

    /// Whether this view was built over `servers` (same length; callers pass the
    /// list the balancer was built with).
    #[inline]
    pub fn covers(&self, servers: &[Server]) -> bool {
        self.states.len() == servers.len() && servers.len() <= MAX_SERVERS
    }

    /// Index of the server with the smallest `key`, first at or after `start` on
    /// ties; `None` when every key is at least `limit` (unusable).
    #[inline]
    pub fn min_by(
        &self,
        start: usize,
        key: impl Fn(u64) -> u64 + Copy,
        limit: u64,
    ) -> Option<usize> {
        let n = self.states.len();
        if n == 0 || n > MAX_SERVERS {
            return None;
        }
        let start = start % n;
        let mut best = [u64::MAX; 4];
        // Servers from the start on, then the ones before it (rotation bit set).
        reduce(&self.states[start..], start, 0, key, &mut best);
        reduce(&self.states[..start], 0, 1 << IDX_BITS, key, &mut best);
        let m = best[0].min(best[1]).min(best[2]).min(best[3]);
        ((m >> PACK) < limit).then_some((m & (MAX_SERVERS as u64 - 1)) as usize)
    }
}

/// Fold `states` (indices from `base`) into four running minimums of
/// `key << PACK | rot | index`: one integer each, so no branch per server.
#[inline(always)]
fn reduce(
    states: &[Arc<ServerState>],
    base: usize,
    rot: u64,
    key: impl Fn(u64) -> u64,
    best: &mut [u64; 4],
) {
    let mut i = (base as u64) | rot;
    let mut chunks = states.chunks_exact(4);
    for c in &mut chunks {
        for j in 0..4 {
            best[j] = best[j].min((key(c[j].load().raw()) << PACK) | (i + j as u64));
        }
        i += 4;
    }
    for s in chunks.remainder() {
        best[0] = best[0].min((key(s.load().raw()) << PACK) | i);
        i += 1;
    }
}

/// A least-loaded pick: the fast scan, or the exact one (`scan_min` with
/// `better`) when a server must be avoided or the fast winner is at maxconn.
#[inline]
pub(crate) fn pick(
    least: &Least,
    servers: &[Server],
    start: usize,
    avoid: Option<usize>,
    key: impl Fn(u64) -> u64 + Copy,
    limit: u64,
    better: impl Fn(Load, Load) -> bool,
) -> Option<usize> {
    if avoid.is_none() && least.covers(servers) {
        let i = least.min_by(start, key, limit)?;
        let s = &servers[i];
        if s.maxconn.is_none_or(|m| s.state.inflight() < m) {
            return Some(i);
        }
    }
    super::scan_min(servers, start, avoid, better)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balancers::testing::servers;
    use crate::server::Status;

    #[test]
    fn wlc_key_orders_like_cross_multiplication() {
        let raw = |inflight: u64, w: u64| (inflight << INFLIGHT_SHIFT) | w;
        let mut cases = Vec::new();
        for a in [0u64, 1, 2, 3, 5, 8, 99, 100, 255, 1000, 40_000, 65_533] {
            for w in [1u64, 2, 3, 5, 7, 9, 100, 255, 256] {
                cases.push((a, w));
            }
        }
        for &(a, wa) in &cases {
            for &(b, wb) in &cases {
                let exact = ((a + 1) * wb).cmp(&((b + 1) * wa));
                let keys = wlc_key(raw(a, wa)).cmp(&wlc_key(raw(b, wb)));
                assert_eq!(keys, exact, "({a}+1)/{wa} vs ({b}+1)/{wb}");
            }
        }
        assert_eq!(wlc_key(raw(0, 0) | (1 << 56)), UNUSABLE);
        assert!(lc_key(raw(3, 1) | (1 << 48)) >= LC_LIMIT);
        assert!(lc_key(raw(0, 0) | (1 << 56)) >= LC_LIMIT);
        assert!(lc_key(raw(u64::from(u32::MAX), 1)) < LC_LIMIT);
    }

    #[test]
    fn fast_scan_agrees_with_the_exact_scan() {
        let mut x = 7u64;
        let mut next = |m: u64| {
            x = crate::balancers::hash::mix(x);
            x % m
        };
        for round in 0..300 {
            let n = 1 + next(40) as usize;
            let weights: Vec<u32> = (0..n)
                .map(|_| next(5) as u32 + u32::from(round % 2 == 0))
                .collect();
            let s = servers(&weights);
            for srv in &s {
                srv.state.set_inflight(next(6) as u32);
                if next(10) == 0 {
                    srv.state.set_status(Status::Down);
                }
            }
            let l = Least::new(&s);
            for start in 0..n + 2 {
                let exact =
                    crate::balancers::scan_min(&s, start, None, |a, b| a.inflight() < b.inflight());
                assert_eq!(
                    l.min_by(start, lc_key, LC_LIMIT),
                    exact,
                    "lc round {round} start {start}"
                );
                let exact =
                    crate::balancers::scan_min(&s, start, None, crate::balancers::lighter_load);
                assert_eq!(
                    l.min_by(start, wlc_key, WLC_LIMIT),
                    exact,
                    "wlc round {round} start {start}"
                );
            }
        }
    }

    #[test]
    fn scan_finds_the_first_minimum_from_the_start() {
        let s = servers(&[1; 11]);
        for (i, n) in [5, 3, 7, 3, 9, 8, 3, 4, 6, 5, 3].into_iter().enumerate() {
            s[i].state.set_inflight(n);
        }
        let l = Least::new(&s);
        assert_eq!(l.min_by(0, lc_key, LC_LIMIT), Some(1));
        assert_eq!(l.min_by(2, lc_key, LC_LIMIT), Some(3));
        assert_eq!(l.min_by(4, lc_key, LC_LIMIT), Some(6));
        assert_eq!(l.min_by(7, lc_key, LC_LIMIT), Some(10));
        assert_eq!(l.min_by(11 + 7, lc_key, LC_LIMIT), Some(10));
        s[10].state.set_status(Status::Down);
        assert_eq!(l.min_by(7, lc_key, LC_LIMIT), Some(1));
        s[1].state.set_effective_weight(0);
        assert_eq!(l.min_by(7, lc_key, LC_LIMIT), Some(3));
        for x in s.iter() {
            x.state.set_status(Status::Maint);
        }
        assert_eq!(l.min_by(0, lc_key, LC_LIMIT), None);
        assert_eq!(l.min_by(0, wlc_key, WLC_LIMIT), None);
    }
}
