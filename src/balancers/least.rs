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
//! `wlc`'s key is exact: `⌊(in-flight + 1) × 2^16 / weight⌋`, kept in each
//! server's word by every change of its count or weight (`server.rs`), so the
//! scan only reads it. Equal ratios give equal keys (ties rotate); different
//! ratios differ by at least 1/(w1×w2) ≥ 2^-16 for weights up to 256 (the
//! maximum), so their keys differ, in order: the same order as the
//! cross-multiplication `(a+1)×wb < (b+1)×wa`. The key has 25 bits, so it
//! saturates past 511 in flight per unit of weight; when the winner's key is
//! saturated, the exact scan decides.
//!
//! The fast scan does not look at `maxconn` or `avoid`; when one of them matters
//! (a retry, or the winner is full) the caller falls back to the exact scan.

use std::sync::Arc;

use crate::server::{INFLIGHT_SHIFT, KEY_MAX, KEY_SHIFT, Load, Server, ServerState};

/// Bits of the packed scan value below the key: rotation bit, then the index.
const IDX_BITS: u32 = 16;
const POS_MASK: u64 = (1 << (IDX_BITS + 1)) - 1;
/// The fast scan handles backends up to this many servers.
const MAX_SERVERS: usize = 1 << IDX_BITS;
/// Where `wlc_key` puts the key.
const WLC_AT: u32 = 36;

/// Keys (as the key functions place them) at or above this are unusable servers:
/// a flag bit is set.
pub(crate) const UNUSABLE_FROM: u64 = 1 << 61;
/// A `wlc` key this large may be saturated: the exact scan decides.
pub(crate) const WLC_EXACT_FROM: u64 = KEY_MAX << WLC_AT;

/// `lc`'s key for one state word, in place: the word's in-flight count with the
/// flags above it (bits 37..64), the bits below cleared for the scan position.
#[inline(always)]
pub(crate) fn lc_key(raw: u64) -> u64 {
    raw & !((1 << INFLIGHT_SHIFT) - 1)
}

/// `wlc`'s key for one state word: the maintained `⌊(in-flight + 1) × 2^16 /
/// weight⌋` and the flag copy above it, rotated up to bits 36..64.
#[inline(always)]
pub(crate) fn wlc_key(raw: u64) -> u64 {
    raw.rotate_left(WLC_AT - KEY_SHIFT) & !((1 << WLC_AT) - 1)
}

thread_local! {
    /// The rotating start of this worker thread's scans: per thread, so no
    /// shared cursor bounces between cores on every pick.
    static ROTOR: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
}

/// Where this thread's next scan starts (ties rotate from one pick to the next).
#[inline]
pub(crate) fn next_start() -> usize {
    ROTOR.with(|r| {
        let v = r.get();
        r.set(v.wrapping_add(1));
        v as usize
    })
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
    ) -> Option<(usize, u64)> {
        let n = self.states.len();
        if n == 0 || n > MAX_SERVERS {
            return None;
        }
        // n ≤ 2^16: a 32-bit remainder is enough (and cheaper).
        let start = (start as u32 % n as u32) as usize;
        let mut best = [u64::MAX; 4];
        // Servers from the start on, then the ones before it (rotation bit set).
        reduce(&self.states[start..], start, 0, key, &mut best);
        reduce(&self.states[..start], 0, 1 << IDX_BITS, key, &mut best);
        let m = best[0].min(best[1]).min(best[2]).min(best[3]);
        let k = m & !POS_MASK;
        (k < limit).then_some(((m & (MAX_SERVERS as u64 - 1)) as usize, k))
    }
}

/// Fold `states` (indices from `base`) into four running minimums of
/// `key | rot | index` (keys leave the low 17 bits clear): one integer each, so
/// no branch per server.
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
            best[j] = best[j].min(key(c[j].load().raw()) | (i + j as u64));
        }
        i += 4;
    }
    for s in chunks.remainder() {
        best[0] = best[0].min(key(s.load().raw()) | i);
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
    (limit, exact_from): (u64, u64),
    better: impl Fn(Load, Load) -> bool,
) -> Option<usize> {
    if avoid.is_none() && least.covers(servers) {
        let (i, k) = least.min_by(start, key, limit)?;
        let s = &servers[i];
        if k < exact_from && s.maxconn.is_none_or(|m| s.state.inflight() < m) {
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
        let word = |inflight: u32, w: u32| {
            let s = servers(&[w]);
            s[0].state.set_inflight(inflight);
            s[0].state.load().raw()
        };
        let mut cases = Vec::new();
        for a in [
            0u32, 1, 2, 3, 5, 8, 99, 100, 255, 510, 1000, 2046, 40_000, 65_533, 70_000,
        ] {
            for w in [1u32, 2, 3, 5, 7, 9, 100, 255, 256] {
                cases.push((a, w, wlc_key(word(a, w)) >> WLC_AT));
            }
        }
        for &(a, wa, ka) in &cases {
            for &(b, wb, kb) in &cases {
                if ka == KEY_MAX || kb == KEY_MAX {
                    continue;
                }
                let exact =
                    ((u64::from(a) + 1) * u64::from(wb)).cmp(&((u64::from(b) + 1) * u64::from(wa)));
                assert_eq!(ka.cmp(&kb), exact, "({a}+1)/{wa} vs ({b}+1)/{wb}");
            }
        }
        // Saturated keys are never below an unsaturated one.
        assert_eq!(wlc_key(word(511, 1)), WLC_EXACT_FROM);
        assert!(wlc_key(word(510, 1)) < WLC_EXACT_FROM);
        let s = servers(&[0]);
        assert!(wlc_key(s[0].state.load().raw()) >= UNUSABLE_FROM);
        s[0].state.set_effective_weight(3);
        s[0].state.set_status(Status::Drain);
        assert!(wlc_key(s[0].state.load().raw()) >= UNUSABLE_FROM);
        assert!(lc_key(s[0].state.load().raw()) >= UNUSABLE_FROM);
        s[0].state.set_status(Status::Up);
        s[0].state.set_inflight((1 << 24) - 1);
        assert!(lc_key(s[0].state.load().raw()) < UNUSABLE_FROM);
        assert_eq!(lc_key(s[0].state.load().raw()) & POS_MASK, 0);
        assert_eq!(wlc_key(s[0].state.load().raw()) & POS_MASK, 0);
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
                    l.min_by(start, lc_key, UNUSABLE_FROM).map(|x| x.0),
                    exact,
                    "lc round {round} start {start}"
                );
                let exact =
                    crate::balancers::scan_min(&s, start, None, crate::balancers::lighter_load);
                assert_eq!(
                    l.min_by(start, wlc_key, UNUSABLE_FROM).map(|x| x.0),
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
        assert_eq!(l.min_by(0, lc_key, UNUSABLE_FROM).map(|x| x.0), Some(1));
        assert_eq!(l.min_by(2, lc_key, UNUSABLE_FROM).map(|x| x.0), Some(3));
        assert_eq!(l.min_by(4, lc_key, UNUSABLE_FROM).map(|x| x.0), Some(6));
        assert_eq!(l.min_by(7, lc_key, UNUSABLE_FROM).map(|x| x.0), Some(10));
        assert_eq!(
            l.min_by(11 + 7, lc_key, UNUSABLE_FROM).map(|x| x.0),
            Some(10)
        );
        s[10].state.set_status(Status::Down);
        assert_eq!(l.min_by(7, lc_key, UNUSABLE_FROM).map(|x| x.0), Some(1));
        s[1].state.set_effective_weight(0);
        assert_eq!(l.min_by(7, lc_key, UNUSABLE_FROM).map(|x| x.0), Some(3));
        for x in s.iter() {
            x.state.set_status(Status::Maint);
        }
        assert_eq!(l.min_by(0, lc_key, UNUSABLE_FROM).map(|x| x.0), None);
        assert_eq!(l.min_by(0, wlc_key, UNUSABLE_FROM).map(|x| x.0), None);
    }
}
