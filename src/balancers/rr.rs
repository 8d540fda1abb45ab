//! `rr`: strict rotation over the eligible servers; weights are ignored (use `wrr`
//! for weights). Ineligible servers are skipped without disturbing the order of the
//! rest. As LVS `rr` and nginx's unweighted round robin.

use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

use super::{Balance, PickCtx};
use crate::server::Server;

/// Strict rotation: an atomic cursor, advanced once per pick.
#[derive(Debug, Default)]
pub struct RoundRobin {
    next: AtomicUsize,
}

impl Balance for RoundRobin {
    fn pick(&self, servers: &[Server], ctx: &PickCtx<'_>) -> Option<usize> {
        let n = servers.len();
        if n == 0 {
            return None;
        }
        let mut start = self.next.load(Relaxed);
        loop {
            let i = scan(servers, start % n, ctx.avoid)?;
            // Move the cursor just past the chosen server, so skipped servers do not
            // make the next one take two turns; if another thread moved it first,
            // scan again from where it left it.
            match self
                .next
                .compare_exchange_weak(start, i + 1, Relaxed, Relaxed)
            {
                Ok(_) => return Some(i),
                Err(now) => start = now,
            }
        }
    }
}

/// First eligible server from `start` on (wrapping), preferring one that is not `avoid`.
fn scan(servers: &[Server], start: usize, avoid: Option<usize>) -> Option<usize> {
    let n = servers.len();
    let mut fallback = None;
    for k in 0..n {
        let i = (start + k) % n;
        if !servers[i].eligible() {
            continue;
        }
        if Some(i) != avoid {
            return Some(i);
        }
        fallback = Some(i);
    }
    fallback
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balancers::testing::{ctx, servers};
    use crate::server::Status;

    #[test]
    fn rotates_strictly() {
        let s = servers(&[1, 5, 1]);
        let rr = RoundRobin::default();
        let picks: Vec<_> = (0..6).map(|_| rr.pick(&s, &ctx()).unwrap()).collect();
        assert_eq!(picks, [0, 1, 2, 0, 1, 2]);
    }

    #[test]
    fn skips_unavailable_and_honours_avoid() {
        let s = servers(&[1, 1, 1]);
        s[1].state.set_status(Status::Down);
        let rr = RoundRobin::default();
        let picks: Vec<_> = (0..4).map(|_| rr.pick(&s, &ctx()).unwrap()).collect();
        assert_eq!(picks, [0, 2, 0, 2]);
        let mut c = ctx();
        c.avoid = Some(0);
        for _ in 0..4 {
            assert_eq!(rr.pick(&s, &c), Some(2));
        }
        s[2].state.set_status(Status::Maint);
        assert_eq!(rr.pick(&s, &c), Some(0), "avoid is a preference, not a ban");
        s[0].state.set_status(Status::Drain);
        assert_eq!(rr.pick(&s, &c), None);
    }
}
