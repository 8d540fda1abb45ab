//! `wrr`: smooth weighted round robin, nginx's algorithm. Each round every server
//! adds its weight to a running score, the highest score (first on ties) is picked
//! and loses the total weight. Weights 5, 1, 1 give `a a b a c a a`: the heavy
//! server is spread out, never a burst of five. Weight 0 takes no new traffic.
//!
//! The sequence (one period, `sum(weights)` entries, 4 bytes each) is computed once
//! per snapshot; a pick advances an atomic cursor over it, moving past servers that
//! are unavailable so the others keep their proportions. Changing a weight at run
//! time (admin, slow start) rebuilds the snapshot, as HAProxy's static map does.

use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

use super::{Balance, PickCtx};
use crate::server::Server;

#[derive(Debug)]
pub struct Wrr {
    seq: Box<[u32]>,
    next: AtomicUsize,
}

impl Wrr {
    pub fn new(servers: &[Server]) -> Wrr {
        // The weights in effect (slow start ramps them; each ramp step builds
        // a new snapshot).
        let weights: Vec<i64> = servers.iter().map(|s| super::weight(s) as i64).collect();
        let total: i64 = weights.iter().sum();
        let mut current = vec![0i64; servers.len()];
        let mut seq = Vec::with_capacity(total as usize);
        for _ in 0..total {
            let mut best = 0;
            for i in 0..servers.len() {
                current[i] += weights[i];
                if current[i] > current[best] {
                    best = i;
                }
            }
            current[best] -= total;
            seq.push(best as u32);
        }
        Wrr {
            seq: seq.into_boxed_slice(),
            next: AtomicUsize::new(0),
        }
    }
}

impl Balance for Wrr {
    fn static_weights(&self) -> bool {
        true
    }

    fn pick(&self, servers: &[Server], ctx: &PickCtx<'_>) -> Option<usize> {
        let len = self.seq.len();
        if len == 0 {
            return None;
        }
        let mut start = self.next.load(Relaxed);
        loop {
            let mut found = None;
            let mut fallback = None;
            for k in 0..len {
                let pos = (start + k) % len;
                let i = self.seq[pos] as usize;
                if !servers[i].eligible() {
                    continue;
                }
                if Some(i) == ctx.avoid {
                    fallback = fallback.or(Some((pos, i)));
                    continue;
                }
                found = Some((pos, i));
                break;
            }
            let (pos, i) = found.or(fallback)?;
            match self
                .next
                .compare_exchange_weak(start, (pos + 1) % len, Relaxed, Relaxed)
            {
                Ok(_) => return Some(i),
                Err(now) => start = now,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balancers::testing::{ctx, histogram, servers};
    use crate::server::Status;

    #[test]
    fn smooth_like_nginx() {
        let s = servers(&[5, 1, 1]);
        let w = Wrr::new(&s);
        let picks: String = (0..14)
            .map(|_| ["a", "b", "c"][w.pick(&s, &ctx()).unwrap()])
            .collect();
        assert_eq!(picks, "aabacaaaabacaa");
    }

    #[test]
    fn proportional_and_weight_zero_gets_nothing() {
        let s = servers(&[3, 2, 0, 5]);
        let w = Wrr::new(&s);
        let h = histogram(&w, &s, 100_000, |_| ctx());
        assert_eq!(h, [30_000, 20_000, 0, 50_000]);
    }

    #[test]
    fn unavailable_servers_keep_the_others_in_proportion() {
        let s = servers(&[5, 1, 1]);
        s[0].state.set_status(Status::Down);
        let w = Wrr::new(&s);
        let h = histogram(&w, &s, 10_000, |_| ctx());
        assert_eq!(h, [0, 5_000, 5_000]);
    }
}
