//! `wlc`: weighted least connections. The eligible server with the smallest
//! `(in-flight + 1) / weight` wins, compared exactly in integers by
//! cross-multiplication: `(a.inflight + 1) × b.weight < (b.inflight + 1) × a.weight`.
//! The `+ 1` (HAProxy's form; LVS uses `in-flight / weight`) makes weights count
//! when servers are idle: with nothing in flight a weight-3 server is chosen over a
//! weight-1 one. Weights are the effective ones (slow start). Ties rotate.

use super::least::{self, Least, UNUSABLE_FROM, WLC_EXACT_FROM, wlc_key};
use super::{Balance, PickCtx, lighter_load};
use crate::server::Server;

#[derive(Debug)]
pub struct Wlc {
    least: Least,
}

impl Wlc {
    pub fn new(servers: &[Server]) -> Wlc {
        Wlc {
            least: Least::new(servers),
        }
    }
}

impl Balance for Wlc {
    fn pick(&self, servers: &[Server], ctx: &PickCtx<'_>) -> Option<usize> {
        let start = least::next_start();
        least::pick(
            &self.least,
            servers,
            start,
            ctx.avoid,
            wlc_key,
            (UNUSABLE_FROM, WLC_EXACT_FROM),
            lighter_load,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balancers::testing::{ctx, servers};

    #[test]
    fn divides_by_weight() {
        let s = servers(&[1, 3]);
        let wlc = Wlc::new(&s);
        assert_eq!(wlc.pick(&s, &ctx()), Some(1), "idle: the heavier server");
        // (2+1)/3 = 1 vs (0+1)/1 = 1: a tie, rotating.
        s[1].state.set_inflight(2);
        let a = wlc.pick(&s, &ctx()).unwrap();
        let b = wlc.pick(&s, &ctx()).unwrap();
        assert_ne!(a, b);
        s[1].state.set_inflight(3);
        assert_eq!(wlc.pick(&s, &ctx()), Some(0), "4/3 > 1/1");
    }

    #[test]
    fn fills_in_proportion_to_weight() {
        // Hold every pick open: in-flight ends up proportional to weight.
        let s = servers(&[1, 2, 5]);
        let wlc = Wlc::new(&s);
        for _ in 0..800 {
            let i = wlc.pick(&s, &ctx()).unwrap();
            s[i].state.set_inflight(s[i].state.inflight() + 1);
        }
        let got: Vec<u32> = s.iter().map(|x| x.state.inflight()).collect();
        assert!((99..=101).contains(&got[0]), "{got:?}");
        assert!((199..=201).contains(&got[1]), "{got:?}");
        assert!((499..=501).contains(&got[2]), "{got:?}");
    }
}
