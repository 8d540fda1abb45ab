//! `lblc`: LVS's locality-based least-connection, for cache clusters. Each
//! destination (Host in http mode, the local address:port in tcp mode) remembers
//! the server it was last sent to and keeps it, unless that server is unavailable
//! (down, draining, full, weight 0, or just failed) or overloaded — its in-flight
//! count exceeds its weight AND some other server has `in-flight × 2 < weight` —
//! in which case the destination is re-picked by `wlc` and the new server
//! remembered. A destination unused for `expire` (default 24h, LVS's
//! `lblc_expiration`) is forgotten.
//!
//! The memory is a fixed, direct-mapped table of 4096 slots (24 bytes each, 96 KiB)
//! of atomics, so picks never lock or allocate; two destinations that share a slot
//! evict each other, which costs locality, never correctness.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use super::dh::destination_key;
use super::least::{self, Least, UNUSABLE_FROM, WLC_EXACT_FROM, wlc_key};
use super::{Balance, PickCtx, lighter_load};
use crate::server::Server;

pub(crate) const SLOTS: usize = 4096;

#[derive(Debug, Default)]
struct Slot {
    key: AtomicU64,
    server: AtomicU32,
    used_ms: AtomicU64,
}

#[derive(Debug)]
pub struct Lblc {
    slots: Box<[Slot]>,
    epoch: Instant,
    expire_ms: u64,
    least: Least,
}

/// LVS's overload test: `s` has more in flight than its weight, and some other
/// eligible server is under half its weight.
pub(crate) fn overloaded(servers: &[Server], s: &Server) -> bool {
    u64::from(s.state.inflight()) > super::weight(s)
        && servers
            .iter()
            .any(|t| t.eligible() && u64::from(t.state.inflight()) * 2 < super::weight(t))
}

/// A `wlc` pick with a rotating start.
pub(crate) fn wlc(servers: &[Server], least: &Least, avoid: Option<usize>) -> Option<usize> {
    let start = least::next_start();
    least::pick(
        least,
        servers,
        start,
        avoid,
        wlc_key,
        (UNUSABLE_FROM, WLC_EXACT_FROM),
        lighter_load,
    )
}

impl Lblc {
    pub fn new(servers: &[Server], expire: Duration) -> Lblc {
        Lblc {
            slots: (0..SLOTS).map(|_| Slot::default()).collect(),
            epoch: Instant::now(),
            expire_ms: expire.as_millis() as u64,
            least: Least::new(servers),
        }
    }
}

impl Balance for Lblc {
    fn pick(&self, servers: &[Server], ctx: &PickCtx<'_>) -> Option<usize> {
        let key = destination_key(ctx) | 1;
        let slot = &self.slots[(key % SLOTS as u64) as usize];
        let now = ctx.now.saturating_duration_since(self.epoch).as_millis() as u64;
        if slot.key.load(Relaxed) == key {
            let i = slot.server.load(Relaxed) as usize;
            let fresh = now.saturating_sub(slot.used_ms.load(Relaxed)) <= self.expire_ms;
            if fresh
                && let Some(s) = servers.get(i)
                && s.eligible()
                && Some(i) != ctx.avoid
                && !overloaded(servers, s)
            {
                slot.used_ms.store(now, Relaxed);
                return Some(i);
            }
        }
        let i = wlc(servers, &self.least, ctx.avoid)?;
        slot.key.store(key, Relaxed);
        slot.server.store(i as u32, Relaxed);
        slot.used_ms.store(now, Relaxed);
        Some(i)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balancers::testing::{ctx, servers};
    use crate::server::Status;

    fn to(host: &'static str, at: Instant) -> PickCtx<'static> {
        let mut c = ctx();
        c.host = Some(host);
        c.now = at;
        c
    }

    #[test]
    fn keeps_the_remembered_server_until_overloaded() {
        let s = servers(&[4, 4, 4]);
        let b = Lblc::new(&s, Duration::from_secs(60));
        let t = Instant::now();
        let home = b.pick(&s, &to("a.example", t)).unwrap();
        // Busier than its siblings but not overloaded (in-flight ≤ weight): stays.
        s[home].state.set_inflight(4);
        assert_eq!(b.pick(&s, &to("a.example", t)), Some(home));
        // in-flight 5 > weight 4, and another server has 0 × 2 < 4: re-pick by wlc.
        s[home].state.set_inflight(5);
        let moved = b.pick(&s, &to("a.example", t)).unwrap();
        assert_ne!(moved, home);
        // The new server is remembered even once the old one calms down.
        s[home].state.set_inflight(0);
        assert_eq!(b.pick(&s, &to("a.example", t)), Some(moved));
    }

    #[test]
    fn overload_needs_a_lightly_loaded_alternative() {
        let s = servers(&[2, 2]);
        let b = Lblc::new(&s, Duration::from_secs(60));
        let t = Instant::now();
        let home = b.pick(&s, &to("x", t)).unwrap();
        s[home].state.set_inflight(9);
        s[1 - home].state.set_inflight(1); // 1 × 2 = 2, not < 2: nobody is light
        assert_eq!(b.pick(&s, &to("x", t)), Some(home));
    }

    #[test]
    fn unavailable_and_expired_entries_are_repicked() {
        let s = servers(&[1, 1, 1]);
        let b = Lblc::new(&s, Duration::from_secs(10));
        let t = Instant::now();
        let home = b.pick(&s, &to("y", t)).unwrap();
        s[home].state.set_status(Status::Drain);
        let other = b.pick(&s, &to("y", t)).unwrap();
        assert_ne!(other, home);
        s[home].state.set_status(Status::Up);
        assert_eq!(
            b.pick(&s, &to("y", t + Duration::from_secs(9))),
            Some(other)
        );
        // Idle 11 s > expire: forgotten, picked afresh by wlc (some server; the
        // rotor decides which), and that choice is then remembered.
        let fresh = b.pick(&s, &to("y", t + Duration::from_secs(20))).unwrap();
        assert_eq!(
            b.pick(&s, &to("y", t + Duration::from_secs(21))),
            Some(fresh)
        );
    }
}
