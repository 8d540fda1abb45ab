//! `lc`: least connections. The eligible server with the fewest in-flight
//! connections (active plus connecting or queued for it) wins; weights are
//! ignored (use `wlc`). Ties rotate — each pick starts its scan one server further
//! — instead of always taking the first, as LVS `lc` would.

use super::least::{self, Least, UNUSABLE_FROM, lc_key};
use super::{Balance, PickCtx};
use crate::server::Server;

#[derive(Debug)]
pub struct Lc {
    least: Least,
}

impl Lc {
    pub fn new(servers: &[Server]) -> Lc {
        Lc {
            least: Least::new(servers),
        }
    }
}

impl Balance for Lc {
    fn pick(&self, servers: &[Server], ctx: &PickCtx<'_>) -> Option<usize> {
        let start = least::next_start();
        least::pick(
            &self.least,
            servers,
            start,
            ctx.avoid,
            lc_key,
            (UNUSABLE_FROM, UNUSABLE_FROM),
            |a, b| a.inflight() < b.inflight(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balancers::testing::{ctx, servers};

    #[test]
    fn follows_live_counts() {
        let s = servers(&[1, 9, 1]);
        s[0].state.set_inflight(4);
        s[1].state.set_inflight(2);
        s[2].state.set_inflight(3);
        let lc = Lc::new(&s);
        for _ in 0..5 {
            assert_eq!(lc.pick(&s, &ctx()), Some(1));
        }
        s[1].state.set_inflight(9);
        assert_eq!(lc.pick(&s, &ctx()), Some(2));
    }

    #[test]
    fn ties_rotate() {
        let s = servers(&[1, 1, 1]);
        let lc = Lc::new(&s);
        let picks: Vec<_> = (0..6).map(|_| lc.pick(&s, &ctx()).unwrap()).collect();
        assert_eq!(picks, [0, 1, 2, 0, 1, 2]);
    }
}
