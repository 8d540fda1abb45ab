//! `lblcr`: LVS's locality-based least-connection with replication. Each
//! destination maps to a *set* of servers; a connection goes to the set's member
//! with the least in-flight ÷ weight. When that member is overloaded (the `lblc`
//! rule) or the set has no usable member, a server is picked by `wlc` over the
//! whole backend and added to the set, so a hot destination spreads over several
//! servers. When a set has not changed for `shrink` (default 24h, LVS's
//! `lblcr_expiration`), it sheds its most loaded member, so a destination that
//! cooled down shrinks back; a destination unused for `expire` (default 6m, LVS's
//! entry timeout) is forgotten.
//!
//! Fixed direct-mapped table of 4096 slots of atomics (32 bytes each, 128 KiB);
//! a set holds up to 5 servers, among the first 4095 of the backend.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use super::dh::destination_key;
use super::lblc::{SLOTS, overloaded, wlc};
use super::least::Least;
use super::{Balance, PickCtx, lighter};
use crate::server::Server;

const MAX_MEMBERS: usize = 5;
const NONE: u64 = 0xfff;

/// Up to 5 server indices of 12 bits, packed with the count in the low 4 bits.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Set(u64);

impl Set {
    fn len(self) -> usize {
        (self.0 & 0xf) as usize
    }
    fn get(self, k: usize) -> usize {
        ((self.0 >> (4 + 12 * k)) & 0xfff) as usize
    }
    fn iter(self) -> impl Iterator<Item = usize> {
        (0..self.len().min(MAX_MEMBERS)).map(move |k| self.get(k))
    }
    fn contains(self, i: usize) -> bool {
        self.iter().any(|m| m == i)
    }
    fn from_members(members: impl Iterator<Item = usize>) -> Set {
        let mut v = 0u64;
        let mut n = 0;
        for m in members.take(MAX_MEMBERS) {
            v |= (m as u64 & 0xfff) << (4 + 12 * n);
            n += 1;
        }
        Set(v | n as u64)
    }
    fn without(self, i: usize) -> Set {
        Set::from_members(self.iter().filter(|&m| m != i))
    }
    fn with(self, i: usize) -> Set {
        Set::from_members(self.iter().chain(std::iter::once(i)))
    }
}

#[derive(Debug, Default)]
struct Slot {
    key: AtomicU64,
    set: AtomicU64,
    used_ms: AtomicU64,
    modified_ms: AtomicU64,
}

#[derive(Debug)]
pub struct Lblcr {
    slots: Box<[Slot]>,
    epoch: Instant,
    expire_ms: u64,
    shrink_ms: u64,
    least: Least,
}

impl Lblcr {
    pub fn new(servers: &[Server], expire: Duration, shrink: Duration) -> Lblcr {
        Lblcr {
            slots: (0..SLOTS).map(|_| Slot::default()).collect(),
            epoch: Instant::now(),
            expire_ms: expire.as_millis() as u64,
            shrink_ms: shrink.as_millis() as u64,
            least: Least::new(servers),
        }
    }
}

/// The member of `set` with the most (`most`) or least in-flight ÷ weight.
fn extreme(servers: &[Server], set: Set, most: bool, avoid: Option<usize>) -> Option<usize> {
    let mut best: Option<usize> = None;
    for m in set.iter() {
        let Some(s) = servers.get(m) else { continue };
        if !most && (!s.eligible() || Some(m) == avoid) {
            continue;
        }
        let better = match best {
            None => true,
            Some(b) if most => lighter(&servers[b], s),
            Some(b) => lighter(s, &servers[b]),
        };
        if better {
            best = Some(m);
        }
    }
    best
}

impl Balance for Lblcr {
    fn pick(&self, servers: &[Server], ctx: &PickCtx<'_>) -> Option<usize> {
        let key = destination_key(ctx) | 1;
        let slot = &self.slots[(key % SLOTS as u64) as usize];
        let now = ctx.now.saturating_duration_since(self.epoch).as_millis() as u64;
        let known = slot.key.load(Relaxed) == key
            && now.saturating_sub(slot.used_ms.load(Relaxed)) <= self.expire_ms;
        let mut set = if known {
            Set(slot.set.load(Relaxed))
        } else {
            Set::default()
        };
        let mut modified = slot.modified_ms.load(Relaxed);
        if !known {
            modified = now;
        }
        // A quiet set sheds its most loaded member.
        if set.len() > 1 && now.saturating_sub(modified) > self.shrink_ms {
            if let Some(m) = extreme(servers, set, true, None) {
                set = set.without(m);
            }
            modified = now;
        }
        let member = extreme(servers, set, false, ctx.avoid);
        let chosen = match member {
            Some(m) if !overloaded(servers, &servers[m]) => m,
            _ => {
                let i = wlc(servers, &self.least, ctx.avoid)?;
                if !set.contains(i) && (i as u64) < NONE {
                    if set.len() == MAX_MEMBERS
                        && let Some(m) = extreme(servers, set, true, None)
                    {
                        set = set.without(m);
                    }
                    set = set.with(i);
                    modified = now;
                }
                i
            }
        };
        slot.key.store(key, Relaxed);
        slot.set.store(set.0, Relaxed);
        slot.used_ms.store(now, Relaxed);
        slot.modified_ms.store(modified, Relaxed);
        Some(chosen)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balancers::testing::{ctx, servers};

    fn to(at: Instant) -> PickCtx<'static> {
        let mut c = ctx();
        c.host = Some("hot.example");
        c.now = at;
        c
    }

    #[test]
    fn set_packing() {
        let s = Set::default().with(3).with(4094).with(0);
        assert_eq!(s.iter().collect::<Vec<_>>(), [3, 4094, 0]);
        assert_eq!(s.without(4094).iter().collect::<Vec<_>>(), [3, 0]);
        let full = (0..7).fold(Set::default(), |s, i| s.with(i));
        assert_eq!(full.len(), 5);
    }

    #[test]
    fn grows_when_overloaded_and_shrinks_when_quiet() {
        let s = servers(&[2, 2, 2, 2]);
        let b = Lblcr::new(&s, Duration::from_secs(60), Duration::from_secs(30));
        let t = Instant::now();
        let first = b.pick(&s, &to(t)).unwrap();
        assert_eq!(b.pick(&s, &to(t)), Some(first));
        // The only member is overloaded (3 > 2, others idle): a second joins.
        s[first].state.set_inflight(3);
        let second = b.pick(&s, &to(t)).unwrap();
        assert_ne!(second, first);
        // Now the least-loaded member serves: the new one, while it is lighter.
        assert_eq!(b.pick(&s, &to(t)), Some(second));
        s[second].state.set_inflight(1);
        s[first].state.set_inflight(0);
        // first (1/2) is lighter than second (2/2): both are members, first wins.
        assert_eq!(b.pick(&s, &to(t + Duration::from_secs(1))), Some(first));
        // 31 s without a change: the most loaded member (second) is shed.
        assert_eq!(b.pick(&s, &to(t + Duration::from_secs(32))), Some(first));
        s[first].state.set_inflight(1);
        s[second].state.set_inflight(0);
        assert_eq!(
            b.pick(&s, &to(t + Duration::from_secs(33))),
            Some(first),
            "second left the set"
        );
    }
}
