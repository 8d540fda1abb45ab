//! Power of two choices: draw two distinct servers at random, keep the better one.
//! Near-least-loaded results for the cost of two reads, no scan (Mitzenmacher).
//!
//! - `p2c` compares in-flight ÷ weight (the `wlc` comparison).
//! - `p2c_ewma` compares `peak-EWMA response time × (in-flight + 1) ÷ weight`, the
//!   latency-aware pick of service-mesh sidecars: a server that slows down gets
//!   less traffic before it fails. It learns from `observe` (in tcp mode the time
//!   to connect). A server with no sample yet costs 0, so it is tried at once.
//!
//! If a draw lands on an unavailable server it is redrawn (4 times), then a full
//! `wlc` scan decides.

use std::time::{Duration, Instant};

use super::ewma::PeakEwma;
use super::hash::mix;
use super::{Balance, PickCtx, lighter, lighter_load, scan_min};
use crate::server::Server;

/// Two distinct indices in `0..n` (n ≥ 2) from one draw.
#[inline]
fn two(draw: u64, n: usize) -> (usize, usize) {
    let a = (draw % n as u64) as usize;
    let b = (a + 1 + ((draw >> 32) % (n as u64 - 1)) as usize) % n;
    (a, b)
}

/// Shared driver: `better(a, b)` decides between two eligible servers.
#[inline]
fn choose(
    servers: &[Server],
    ctx: &PickCtx<'_>,
    better: impl Fn(usize, usize) -> bool,
) -> Option<usize> {
    let n = servers.len();
    let ok = |i: usize| servers[i].eligible() && Some(i) != ctx.avoid;
    if n >= 2 {
        let mut draw = ctx.rand;
        for _ in 0..4 {
            let (a, b) = two(draw, n);
            match (ok(a), ok(b)) {
                (true, true) => return Some(if better(b, a) { b } else { a }),
                (true, false) => return Some(a),
                (false, true) => return Some(b),
                (false, false) => draw = mix(draw.wrapping_add(1)),
            }
        }
    }
    scan_min(servers, ctx.rand as usize, ctx.avoid, lighter_load)
}

#[derive(Debug, Default)]
pub struct P2c;

impl Balance for P2c {
    fn pick(&self, servers: &[Server], ctx: &PickCtx<'_>) -> Option<usize> {
        choose(servers, ctx, |a, b| lighter(&servers[a], &servers[b]))
    }
}

#[derive(Debug)]
pub struct P2cEwma {
    ewma: Box<[PeakEwma]>,
}

impl P2cEwma {
    pub fn new(servers: &[Server], decay: Duration) -> P2cEwma {
        let epoch = Instant::now();
        P2cEwma {
            ewma: servers
                .iter()
                .map(|_| PeakEwma::new(decay, epoch))
                .collect(),
        }
    }

    /// Cost of sending one more connection to server `i`.
    #[inline]
    fn cost(&self, servers: &[Server], i: usize) -> f64 {
        let s = &servers[i];
        let w = s.state.effective_weight().max(1) as f64;
        self.ewma[i].get() * (f64::from(s.state.inflight()) + 1.0) / w
    }
}

impl Balance for P2cEwma {
    fn pick(&self, servers: &[Server], ctx: &PickCtx<'_>) -> Option<usize> {
        choose(servers, ctx, |a, b| {
            self.cost(servers, a) < self.cost(servers, b)
        })
    }

    fn observe(&self, server: usize, latency: Duration, now: Instant) {
        if let Some(e) = self.ewma.get(server) {
            e.observe(latency, now);
        }
    }

    fn learns(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balancers::testing::{ctx, histogram, servers};
    use crate::server::Status;

    fn drawn(k: usize) -> PickCtx<'static> {
        let mut c = ctx();
        c.rand = mix(k as u64);
        c
    }

    #[test]
    fn two_is_always_distinct() {
        for n in 2..20 {
            for d in 0..1000u64 {
                let (a, b) = two(mix(d), n);
                assert!(a < n && b < n && a != b);
            }
        }
    }

    #[test]
    fn p2c_avoids_the_loaded_server() {
        let s = servers(&[1, 1, 1, 1]);
        s[2].state.set_inflight(50);
        let h = histogram(&P2c, &s, 10_000, drawn);
        // Server 2 wins only when drawn against... nothing lighter: never.
        assert_eq!(h[2], 0, "{h:?}");
        assert!(
            h.iter()
                .enumerate()
                .filter(|(i, _)| *i != 2)
                .all(|(_, &c)| c > 2_500),
            "{h:?}"
        );
    }

    #[test]
    fn p2c_skips_unavailable() {
        let s = servers(&[1, 1, 1]);
        s[0].state.set_status(Status::Down);
        s[1].state.set_status(Status::Down);
        let h = histogram(&P2c, &s, 1000, drawn);
        assert_eq!(h, [0, 0, 1000]);
    }

    #[test]
    fn ewma_sends_less_to_the_slow_server() {
        let s = servers(&[1, 1, 1]);
        let b = P2cEwma::new(&s, Duration::from_secs(10));
        let now = Instant::now();
        b.observe(0, Duration::from_millis(1), now);
        b.observe(1, Duration::from_millis(1), now);
        b.observe(2, Duration::from_millis(20), now);
        let h = histogram(&b, &s, 9_000, drawn);
        // The slow server is chosen only when drawn against... never (both others cheaper).
        assert_eq!(h[2], 0, "{h:?}");
        // Load changes the picture: 30 in flight on server 0 makes it the costliest.
        s[0].state.set_inflight(30);
        let h = histogram(&b, &s, 9_000, drawn);
        assert!(h[1] > h[2] && h[2] > h[0], "{h:?}");
    }
}
